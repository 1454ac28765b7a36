"""The `select:` recipe section: filters (`where`), the mixture (`mix`) and the shuffle."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from posttrain.select.filters import Where, parse_where


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


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------
