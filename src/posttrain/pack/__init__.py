"""Packing: algorithms, pack construction, parquet shards.

>>> from posttrain.pack import PackConfig, build_packs, ShardWriter
"""

from posttrain.pack.algorithms import (
    pack_best_fit_decreasing,
    pack_first_fit_decreasing,
    pack_none,
    packing_efficiency,
    shuffle_bins,
)
from posttrain.pack.build import IGNORE_INDEX, PackStats, build_packs, build_packs_with_stats, pack_batches
from posttrain.pack.writers import PackConfig, ShardInfo, ShardWriter, summarize_shards, write_shard

__all__ = [
    "IGNORE_INDEX",
    "PackConfig",
    "PackStats",
    "ShardInfo",
    "ShardWriter",
    "build_packs",
    "build_packs_with_stats",
    "pack_batches",
    "pack_best_fit_decreasing",
    "pack_first_fit_decreasing",
    "pack_none",
    "packing_efficiency",
    "shuffle_bins",
    "summarize_shards",
    "write_shard",
]
