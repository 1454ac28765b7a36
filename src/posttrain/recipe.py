"""The recipe: one YAML file drives `posttrain prepare` (pydantic models, unknown keys are errors).

>>> r = default_recipe()
>>> r.pack.seq_len, r.render.template, r.tokenize.max_length
(16384, 'nemotron-super-v1.5', 16384)
>>> len(r.hash())
16
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from posttrain.dedup.config import DedupConfig
from posttrain.dedup.decontaminate import DecontamConfig
from posttrain.errors import RecipeError
from posttrain.pack.writers import PackConfig
from posttrain.render.config import RenderConfig
from posttrain.select import SelectConfig
from posttrain.tokenize import TokenizeConfig


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


class ValidateSection(_Section):
    """Row checks; error-level reasons reject the row, warnings are counted."""

    enabled: bool = True
    checks: list[str] | None = Field(None, description="check families; null = all but length")
    severity: dict[str, Literal["error", "warn"]] = Field(
        default_factory=lambda: {"prompt.withheld": "error"},
        description="per-code severity overrides; a withheld prompt is an error in training data",
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
        err = exc.errors()[0]
        path = _error_path(err["loc"])
        if err["type"] == "extra_forbidden":
            raise RecipeError(f"unknown key '{path}'", place=place, fix="check the spelling; `posttrain recipe --default` lists every key") from None
        raise RecipeError(f"'{path}': {err['msg']}", place=place, fix="see `posttrain recipe --default` for the expected shape") from None


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
    return recipe_from_dict(data, "command line")
