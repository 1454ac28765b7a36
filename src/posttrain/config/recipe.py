"""The recipe: the run's own sections (source, rehydrate, validate, output, engine), every other
section as a field, and the one way to read a recipe (`load_recipe`) and change it (`override`).

>>> r = override(default_recipe(), {"train.lora.r": 8, "output.dir": "out/p"})
>>> r.train.lora.alpha, r.train_config().shards
(16.0, 'out/p')
>>> r.hash() == default_recipe().hash()  # neither where it goes nor how it is trained is hashed
True
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from posttrain.config.sections import (
    DecontamConfig,
    DedupConfig,
    PackConfig,
    RenderConfig,
    SelectConfig,
    TokenizeConfig,
)
from posttrain.config.train import TrainConfig
from posttrain.errors import RecipeError


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
    heldout: float = Field(
        0.0, ge=0.0, lt=1.0, description="share of rows (by a salted uuid hash) left out of training as "
        "`heldout.eval` rejects, for `posttrain eval heldout/...` with the same heldout_fraction; 0 = none"
    )
    train: TrainConfig | None = Field(
        None, description="`posttrain train` settings; not hashed: they change no byte of the shards"
    )

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
        d = self.model_dump(mode="json", by_alias=True)
        if d["train"] is None:  # a recipe without a train section reads and records as it always did
            del d["train"]
        if not d["heldout"]:  # nor one without a held-out slice (so its hash is what it always was)
            del d["heldout"]
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def hash(self) -> str:
        """Hash of what determines prepare's output bytes (not where it goes, which engine runs it,
        or how the shards are then trained)."""
        d = self.to_dict()
        for key in ("output", "engine", "train"):
            d.pop(key, None)
        blob = json.dumps(d, sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def train_config(self) -> TrainConfig:
        """The train section (defaults when absent), its `shards` defaulting to this recipe's `output.dir`."""
        train = self.train or TrainConfig()
        return train if train.shards else train.model_copy(update={"shards": self.output.dir})


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
                              fix=f"check the spelling; {_key_list(unknown[0])} lists every key") from None
        err = exc.errors()[0]
        path = _error_path(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        text = msg if not err["loc"] else f"'{path}': {msg}"
        raise RecipeError(text, place=place, fix=f"see {_key_list(path)} for the expected shape") from None


def _key_list(path: str) -> str:
    """What lists the keys of the section that `path` is in.

    >>> _key_list("train.lora.rank"), _key_list("pack.seq_length")
    ('`posttrain.config.TrainConfig`', '`posttrain recipe --default`')
    """
    # the default recipe has no train section, so it cannot show the train keys
    return "`posttrain.config.TrainConfig`" if path.split(".")[0] == "train" else "`posttrain recipe --default`"


#: Top-level keys that are sections; `seed` is the only other one, and a train key too.
SECTIONS = frozenset(f.alias or name for name, f in Recipe.model_fields.items() if name != "seed")


def load_recipe(path: str | Path | None, *, bare: Literal["train"] | None = None) -> Recipe:
    """Load a recipe YAML (None: the default recipe).

    `bare="train"`: a file whose top level names no section is read as the `train:` section, so
    `python -m posttrain.train train.yaml` takes a file of train keys (or the JSON a TrainConfig
    dumps) as well as a whole recipe; `seed` in such a file is the train seed.
    """
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
    if bare is not None and data and not SECTIONS & set(data):
        data = {bare: data}
    return recipe_from_dict(data, str(p))


def parse_assignments(items: Iterable[str], prefix: str = "") -> dict[str, Any]:
    """`key=value` arguments as {dotted key path: value}; values are read as YAML.

    >>> parse_assignments(["lora.r=8", "report_to=[tensorboard]", "out=runs/a=b"], prefix="train.")
    {'train.lora.r': 8, 'train.report_to': ['tensorboard'], 'train.out': 'runs/a=b'}
    """
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"expected key=value, got {item!r}", place="command line", fix="e.g. max_steps=100")
        try:
            settings[prefix + key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise RecipeError(f"{key}: not a YAML value ({getattr(exc, 'problem', exc)})", place="command line",
                              fix="quote it") from None
    return settings


def override(recipe: Recipe, settings: Mapping[str, Any], place: str = "command line") -> Recipe:
    """`recipe` with keys set by their dotted paths ({"train.lora.r": 8}), validated again.

    The paths apply to what the recipe set, not to its filled-in defaults, so a default derived from
    another key (LoRA's alpha from its rank) follows the new value instead of keeping the old one.
    """
    data = recipe.model_dump(mode="json", by_alias=True, exclude_unset=True)
    for path, value in settings.items():
        *parents, last = path.split(".")
        node = data
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return recipe_from_dict(data, place)


#: `posttrain prepare`'s flags and the key path each sets.
FLAG_PATHS = {
    "source": "source.path", "split": "source.splits", "limit": "source.limit", "hub_mirror": "source.hub_mirror",
    "format": "source.format", "out": "output.dir", "engine": "engine.name", "workers": "engine.workers",
    "address": "engine.address", "seq_len": "pack.seq_len", "seed": "seed",
}


def apply_overrides(recipe: Recipe, **flags: Any) -> Recipe:
    """Command-line flags override the recipe (None = not given)."""
    settings = {FLAG_PATHS[flag]: value for flag, value in flags.items() if value is not None}
    seq_len = flags.get("seq_len")
    if seq_len is not None and recipe.tokenize.max_length > seq_len:
        # a row longer than a pack can never be packed: --seq-len alone must be enough
        settings["tokenize.max_length"] = seq_len
    return override(recipe, settings)
