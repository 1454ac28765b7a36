"""Tokenization with assistant-only loss masks that are verified on every row.

>>> from posttrain.stages.tokenize import TokenizeConfig
>>> TokenizeConfig().max_length
16384
"""

from __future__ import annotations

import threading
from typing import Any

import pyarrow as pa

from posttrain.config import TokenizeConfig
from posttrain.io.tokenizer import Tokenizer, default_tokenizer_dir, resolve_tokenizer_dir
from posttrain.stage import Stage
from posttrain.stages.tokenize.batch import TOKENIZED_SCHEMA, cut_points, tokenize_batch, trained_mask

# One tokenizer load at a time in a process: a stage preloading on a thread and a first batch asking
# for the tokenizer must get the same object, not build two (each ~0.6 s and ~160 MB).
_LOAD_LOCK = threading.Lock()


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
        return self._load()

    def _load(self, reference_process: bool = False) -> Tokenizer:
        if self._tokenizer is None:
            with _LOAD_LOCK:
                if self._tokenizer is None:
                    self._tokenizer = Tokenizer(self.config.tokenizer, fast_path=self.config.fast_path,
                                                reference_process=reference_process)
        return self._tokenizer

    def preload(self) -> None:
        """Start loading the tokenizer on a daemon thread, for a stage that runs in this process: the
        load overlaps what the caller does next, and the fast path's check against the HF tokenizer
        runs in a child process (`posttrain.io.tokenizer_reference`), so this process never builds
        the HF tokenizer (~0.35 s holding the GIL). A load that fails there is tried again, and
        raises, where the tokenizer is first used."""

        def load() -> None:
            try:
                self._load(reference_process=True)
            except Exception:  # noqa: BLE001 - reported by the first real use
                pass

        threading.Thread(target=load, name="tokenizer-preload", daemon=True).start()

    @property
    def ready(self) -> bool:
        """Whether the tokenizer is loaded and its fast path settled (verified on the first batch), so
        that batches may be tokenized on several threads at once with the serial run's ids."""
        tok = self._tokenizer
        return tok is not None and (tok.verified or not tok.uses_fast_path)

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
