"""Dedup and decontamination: exact keys, MinHash LSH near dedup, benchmark n-gram overlap.

Import-light on purpose: `posttrain.dedup.decontaminate` must not pull in the dedup machinery.
The names below load their module on first use.

- `DedupConfig` (`posttrain.dedup.config`): the recipe section and CLI flags.
- `ExactDedup` (`posttrain.dedup.exact`), `NearDedup` (`posttrain.dedup.near`): two-pass stages.
- `run_dedup`, `DedupSummary` (`posttrain.dedup.run`): the `posttrain dedup` runner.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DedupConfig": "posttrain.dedup.config",
    "ExactDedup": "posttrain.dedup.exact",
    "NearDedup": "posttrain.dedup.near",
    "run_dedup": "posttrain.dedup.run",
    "DedupSummary": "posttrain.dedup.run",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'posttrain.dedup' has no attribute {name!r}")
