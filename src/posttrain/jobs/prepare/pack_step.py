"""The pack phase of `prepare`: global bins over every kept document, then shards.

Only the length index (unit, row, tokens, uuid key) of all documents is held in memory — about
24 bytes a document — never the tokens. Each shard gathers its documents from the memory-mapped
unit spools, so memory stays at one shard's worth of tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from posttrain.config import PackConfig
from posttrain.io.shards import ShardInfo, write_shard
from posttrain.io.spool import open_docs
from posttrain.jobs.prepare.doc_index import DocIndex
from posttrain.jobs.prepare.mix_step import rename_copies
from posttrain.reduce.pack.build import PackStats, assemble_packs, plan_bins, plan_shards


def _gather(work: Path, index: DocIndex, doc_ids: np.ndarray) -> pa.Table:
    """The documents `doc_ids` (positions in `index`), in that order, from the unit spools."""
    units = index.unit[doc_ids]
    pieces: list[pa.Table] = []
    order_parts: list[np.ndarray] = []
    for u in np.unique(units):
        sel = np.flatnonzero(units == u)
        docs = open_docs(work, int(u))  # memory-mapped: opening is cheap, pages are read on take
        pieces.append(docs.take(pa.array(index.row[doc_ids[sel]])))
        order_parts.append(sel)
    table = pa.concat_tables(pieces)
    where = np.concatenate(order_parts)
    return table.take(pa.array(np.argsort(where, kind="stable")))


def _write_one_shard(
    work: Path, out_dir: Path, index: DocIndex, shard_bins: list[np.ndarray], config: PackConfig, s: int
) -> tuple[ShardInfo, PackStats]:
    doc_ids = np.concatenate(shard_bins)
    docs = _gather(work, index, doc_ids)
    if index.copy is not None:
        docs = rename_copies(docs, index.copy[doc_ids])
    local, pos = [], 0
    for b in shard_bins:
        local.append(np.arange(pos, pos + b.size))
        pos += b.size
    table, st = assemble_packs(docs, local, config)
    return write_shard(table, out_dir / f"shard-{s:05d}.parquet", config), st


def write_packed_shards(
    work: Path, out_dir: Path, index: DocIndex, config: PackConfig, seed: int, threads: int = 2
) -> tuple[list[ShardInfo], PackStats]:
    """Plan bins over every document, then write shards (`shard_packs` packs or `shard_bytes`, whichever first).

    Shards are independent once the bins are planned, so `threads` of them are built at once:
    Arrow's take, numpy and the parquet encoder release the GIL, so threads use the cores without
    copying the plan to other processes. At most `threads` shards are in memory; results are
    collected in shard order, so bytes and the manifest do not depend on the thread count.
    """
    from concurrent.futures import ThreadPoolExecutor

    out_dir.mkdir(parents=True, exist_ok=True)
    bins = plan_bins(index.length, index.key, config, seed)
    groups = [bins[cut] for cut in plan_shards(bins, index.length, config)]
    shards: list[ShardInfo] = []
    stats = PackStats()
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="pack") as pool:
        pending = []
        for s, group in enumerate(groups):
            pending.append(pool.submit(_write_one_shard, work, out_dir, index, group, config, s))
            if len(pending) > threads:  # bounded: finished shards are consumed in order
                info, st = pending.pop(0).result()
                shards.append(info)
                stats = stats.merge(st)
        for fut in pending:
            info, st = fut.result()
            shards.append(info)
            stats = stats.merge(st)
    return shards, stats
