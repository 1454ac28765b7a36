"""`DedupConfig`: the dedup section of a recipe (and the `posttrain dedup` flags).

>>> DedupConfig().near_bands_rows()
(9, 13)
>>> DedupConfig(num_perm=64, threshold=0.5).near_bands_rows()
(14, 4)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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

    def near_bands_rows(self) -> tuple[int, int]:
        """(bands, rows): the configured ones, else those minimizing false positives + negatives."""
        if self.bands is not None and self.rows is not None:
            return self.bands, self.rows
        from posttrain.dedup.lsh import optimal_bands_rows

        return optimal_bands_rows(self.threshold, self.num_perm)
