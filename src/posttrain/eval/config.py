"""`EvalConfig`: what one evaluation run does, as a pydantic model (unknown keys are errors).

This module imports only pydantic and the standard library, so a CLI or a recipe can build and
validate a config without pulling in torch, transformers or the graders.

>>> cfg = EvalConfig(model="m", out="o", reasoning="both")
>>> cfg.modes(), cfg.sampling_for("on").temperature, cfg.sampling_for("off").greedy
(['off', 'on'], 0.6, True)
>>> len(cfg.settings_hash())
16
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Mode = Literal["on", "off"]
Backend = Literal["transformers", "vllm"]

#: Benchmarks run when none are named: one math, one grade-school math, one code set, all offline.
DEFAULT_BENCHMARKS = ("gsm8k", "math500", "humaneval")


class Sampling(BaseModel):
    """Decoding for one reasoning mode; temperature 0 means greedy (top_p is then ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.0, ge=0.0, description="0 = greedy")
    top_p: float = Field(1.0, gt=0.0, le=1.0)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class EvalConfig(BaseModel):
    """One evaluation run: which model, which benchmarks, how to generate, how to grade, where to write."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a local model folder (HF layout) or a hub id")
    tokenizer: str | None = Field(None, description="tokenizer folder or hub id (default: the model's)")
    chat_template: str | None = Field(
        None, description="a Jinja chat template file replacing the tokenizer's (for models saved without one)"
    )
    benchmarks: list[str] = Field(
        default_factory=lambda: list(DEFAULT_BENCHMARKS),
        description="built-in names (humaneval, math500, aime24, aime25, gsm8k, truthfulqa_mc1, hellaswag), "
        "hub ids (openai/gsm8k, HuggingFaceH4/MATH-500, Idavidrein/gpqa, cais/mmlu, openai/openai_humaneval) "
        "or heldout / heldout/<category>",
    )
    limit: int | None = Field(None, ge=1, description="first N items of each benchmark")
    batch_size: int = Field(8, ge=1, description="prompts per generate() call (transformers backend)")
    max_new_tokens: int = Field(2048, ge=1)
    reasoning: Literal["on", "off", "both"] = "off"
    reasoning_switch: Literal["auto", "kwarg", "system", "none"] = Field(
        "auto",
        description="how reasoning is switched: a chat-template keyword (enable_thinking), a system-prompt flag, "
        "or not at all; auto = the per-model table, then the chat template's own switch",
    )
    think_on: str | None = Field(None, description="system flag for reasoning on (system switch)")
    think_off: str | None = Field(None, description="system flag for reasoning off (system switch)")
    sampling_on: Sampling = Field(
        default_factory=lambda: Sampling(temperature=0.6, top_p=0.95),
        description="Nemotron model cards: temperature 0.6, top_p 0.95 with reasoning on",
    )
    sampling_off: Sampling = Field(default_factory=Sampling, description="greedy with reasoning off")
    seed: int = 0
    out: Path
    backend: Backend = "transformers"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = Field("auto", description="transformers backend: auto (cuda if present), cpu, cuda, cuda:1, ...")
    vllm_options: dict[str, Any] = Field(
        default_factory=dict, description="extra vllm.LLM(...) arguments, e.g. tensor_parallel_size"
    )
    heldout_source: str | None = Field(None, description="prepared data for heldout/* (default: the bundled sample)")
    heldout_fraction: float = Field(0.01, gt=0.0, le=1.0, description="share of rows (by uuid hash) held out")
    math_timeout_s: float = Field(5.0, gt=0.0, description="math-verify time per answer, in a worker process")
    code_timeout_s: float = Field(10.0, gt=0.0, description="wall time per sandboxed test program")
    code_memory_mb: int = Field(1024, ge=64, description="address-space limit of a test program")
    sandbox: Literal["auto", "namespace", "audit"] = Field(
        "auto", description="network isolation: Linux namespaces (unshare) or an audit hook in the child"
    )
    grade_workers: int = Field(2, ge=1, description="math-verify processes and concurrent sandboxes")
    resume: bool = Field(True, description="reuse generations already in OUT/records.jsonl for the same settings")

    @field_validator("benchmarks")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        names = [v.strip() for v in value if v.strip()]
        if not names:
            raise ValueError("no benchmarks given")
        if len(set(names)) != len(names):
            raise ValueError("a benchmark is named twice")
        return names

    def modes(self) -> list[Mode]:
        """Reasoning modes to run, in a fixed order."""
        return ["off", "on"] if self.reasoning == "both" else [self.reasoning]  # type: ignore[list-item]

    def sampling_for(self, mode: Mode) -> Sampling:
        return self.sampling_on if mode == "on" else self.sampling_off

    def settings_hash(self) -> str:
        """Hash of everything that decides a generation; generations are reused on resume only when equal.

        Grading limits, the output folder and the benchmark list are left out: adding a benchmark or
        regrading with a longer timeout must not throw away finished generations.
        """
        keep = self.model_dump(
            mode="json",
            exclude={"out", "resume", "benchmarks", "limit", "batch_size", "math_timeout_s", "code_timeout_s",
                     "code_memory_mb", "sandbox", "grade_workers", "heldout_source", "heldout_fraction"},
        )  # fmt: skip
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]
