"""Tokenization with assistant-only loss masks that are verified on every row.

>>> from posttrain.stages.tokenize import TokenizeConfig
>>> TokenizeConfig().max_length
16384
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from posttrain.config import TokenizeConfig
from posttrain.io.tokenizer import Tokenizer, default_tokenizer_dir, resolve_tokenizer_dir
from posttrain.stage import Stage
from posttrain.stages.tokenize.batch import TOKENIZED_SCHEMA, cut_points, tokenize_batch, trained_mask


class TokenizeStage(Stage):
    """Pipeline stage: rendered batch -> `TOKENIZED_SCHEMA` batch."""

    name = "tokenize"

    def __init__(self, config: TokenizeConfig | None = None) -> None:
        self.config = config or TokenizeConfig()
        self._tokenizer: Tokenizer | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self.config, "_tokenizer": None}

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(self.config.tokenizer, fast_path=self.config.fast_path)
        return self._tokenizer

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        return tokenize_batch(batch, self.tokenizer, self.config.max_length, self.config.overflow)


__all__ = [
    "TOKENIZED_SCHEMA",
    "TokenizeConfig",
    "TokenizeStage",
    "Tokenizer",
    "cut_points",
    "default_tokenizer_dir",
    "resolve_tokenizer_dir",
    "tokenize_batch",
    "trained_mask",
]
