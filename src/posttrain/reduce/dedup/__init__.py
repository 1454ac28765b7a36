"""Dedup and decontamination: exact keys, MinHash LSH near dedup, benchmark n-gram overlap.

Import-light on purpose: `posttrain.stages.decontaminate` must not pull in the dedup machinery.
The names below load their module on first use.

- `DedupConfig` (`posttrain.config`): the recipe section and CLI flags.
- `ExactDedup` (`posttrain.reduce.dedup.exact`), `NearDedup` (`posttrain.reduce.dedup.near`): two-pass stages.
- `run_dedup`, `DedupSummary` (`posttrain.jobs.dedup`): the `posttrain dedup` runner.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "DedupConfig": "posttrain.config",
    "ExactDedup": "posttrain.reduce.dedup.exact",
    "NearDedup": "posttrain.reduce.dedup.near",
    "run_dedup": "posttrain.jobs.dedup",
    "DedupSummary": "posttrain.jobs.dedup",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'posttrain.reduce.dedup' has no attribute {name!r}")
