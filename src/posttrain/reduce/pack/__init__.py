"""Packing: algorithms, pack construction, parquet shards.

>>> from posttrain.reduce.pack import build_packs, plan_shards
"""

from posttrain.config import PackConfig
from posttrain.io.shards import ShardInfo, summarize_shards, write_shard
from posttrain.reduce.pack.algorithms import (
    pack_best_fit_decreasing,
    pack_first_fit_decreasing,
    pack_none,
    packing_efficiency,
    shuffle_bins,
)
from posttrain.reduce.pack.build import (
    IGNORE_INDEX,
    PackStats,
    build_packs,
    build_packs_with_stats,
    plan_shards,
)

__all__ = [
    "IGNORE_INDEX",
    "PackConfig",
    "PackStats",
    "ShardInfo",
    "build_packs",
    "build_packs_with_stats",
    "pack_best_fit_decreasing",
    "pack_first_fit_decreasing",
    "pack_none",
    "packing_efficiency",
    "plan_shards",
    "shuffle_bins",
    "summarize_shards",
    "write_shard",
]
