"""The pack phase of `prepare`: global bins over every kept document, then shards.

Only the length index (unit, row, tokens, uuid key) of all documents is held in memory — about
24 bytes a document — never the tokens. Each shard gathers its documents from the memory-mapped
unit spools, so memory stays at one shard's worth of tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from posttrain.pack.build import PackStats, assemble_packs, doc_keys, plan_bins
from posttrain.pack.writers import PackConfig, ShardInfo, write_shard
from posttrain.pipeline.spool import open_docs, read_parquet


@dataclass
class DocIndex:
    """Where every kept document lives and how long it is, in canonical (unit, row) order."""

    unit: np.ndarray  # int32
    row: np.ndarray  # int64, row within the unit's docs.arrow
    length: np.ndarray  # int64 tokens
    key: np.ndarray  # uint64 hash of the uuid
    uuid: np.ndarray  # object, only for reduce decisions and reports
    copy: np.ndarray | None = None  # int64 repeat number when a mix repeats rows (epochs > 1)

    @classmethod
    def load(cls, work: Path, units: list[int]) -> DocIndex:
        parts = []
        for u in units:
            t = read_parquet(work, u, "index")
            if t is None or t.num_rows == 0:
                continue
            parts.append((u, t))
        if not parts:
            z = np.zeros(0, np.int64)
            return cls(z.astype(np.int32), z, z, z.astype(np.uint64), np.zeros(0, object))
        unit = np.concatenate([np.full(t.num_rows, u, np.int32) for u, t in parts])
        row = np.concatenate([np.arange(t.num_rows, dtype=np.int64) for _, t in parts])
        length = np.concatenate([t.column("num_tokens").to_numpy().astype(np.int64) for _, t in parts])
        uuids = np.concatenate([np.array(t.column("uuid").to_pylist(), dtype=object) for _, t in parts])
        keys = np.concatenate([doc_keys(t) for _, t in parts])
        return cls(unit, row, length, keys, uuids)

    def subset(self, keep: np.ndarray) -> DocIndex:
        copy = self.copy[keep] if self.copy is not None else None
        return DocIndex(self.unit[keep], self.row[keep], self.length[keep], self.key[keep], self.uuid[keep], copy)


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
        from posttrain.pipeline.mix import rename_copies

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
    """Plan bins over every document, then write shards of `config.shard_packs` packs each.

    Shards are independent once the bins are planned, so `threads` of them are built at once:
    Arrow's take, numpy and the parquet encoder release the GIL, so threads use the cores without
    copying the plan to other processes. At most `threads` shards are in memory; results are
    collected in shard order, so bytes and the manifest do not depend on the thread count.
    """
    from concurrent.futures import ThreadPoolExecutor

    out_dir.mkdir(parents=True, exist_ok=True)
    bins = plan_bins(index.length, index.key, config, seed)
    groups = [bins[start : start + config.shard_packs] for start in range(0, len(bins), config.shard_packs)]
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
