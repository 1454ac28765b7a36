"""Shards from a packs table, cut the way `prepare` cuts them (`plan_shards`), for tests of the loader and writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from posttrain.config import PackConfig
from posttrain.io.shards import ShardInfo, write_shard
from posttrain.reduce.pack import plan_shards


def write_packs(out: Path, packs: pa.Table, cfg: PackConfig) -> list[ShardInfo]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lengths = np.asarray(packs.column("num_tokens").to_pylist(), np.int64) if packs.num_rows else np.zeros(0, np.int64)
    bins = [np.array([i]) for i in range(packs.num_rows)]
    return [
        write_shard(packs.slice(c.start, c.stop - c.start).combine_chunks(), out / f"shard-{k:05d}.parquet", cfg)
        for k, c in enumerate(plan_shards(bins, lengths, cfg))
    ]
