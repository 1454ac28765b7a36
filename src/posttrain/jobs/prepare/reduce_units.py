"""The work units of `prepare`'s reduce and pack phases (each picklable, deterministic, one directory).

- `KeysUnit` (one per map unit): the unit's dedup records (`UnitSignatures`), the row key of every
  kept row and, per document, its length, packing key and row key (`docs.npy`);
- `MixUnit` (one per map unit, three steps): the mixing counts of the unit's surviving rows, the
  hashes in a key's boundary bin, then the draw (copies per document) under the run's plans;
- `ShardUnit` (one per shard): gathers the shard's documents from the memory-mapped spools and
  writes the shard, one row group of packs at a time (memory: a row group, not a shard).

Every unit reads only files under the run's output folder (the map units' `kept.parquet`,
`index.parquet`, `docs.arrow`; the pass metadata the driver wrote) and writes its own unit
directory (and, for a shard, its shard file).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from posttrain.config import DedupConfig, PackConfig, SelectConfig
from posttrain.hashing import uuid_keys
from posttrain.io.shards import write_shard_groups
from posttrain.io.sources.reader import prefetch
from posttrain.io.spool import UnitWriter, take_docs, unit_dir
from posttrain.jobs.prepare.run_index import DOC_RECORD
from posttrain.reduce.dedup.exact import in_sorted
from posttrain.reduce.dedup.partition import UnitSignatures, commit_unit
from posttrain.reduce.mix import (
    GroupStats,
    KeyPlan,
    count_batch,
    draw_inputs,
    group_indices,
    refined_arrays,
    stats_to_arrays,
)
from posttrain.reduce.pack.build import PackStats, assemble_packs, doc_keys

KEPT_BATCH = 1024


def _kept_batches(work: Path, u: int) -> Iterator[pa.RecordBatch]:
    path = unit_dir(work, u) / "kept.parquet"
    if path.exists():
        yield from pq.ParquetFile(path).iter_batches(batch_size=KEPT_BATCH)


def _row_keys(uuids: pa.Array) -> np.ndarray:
    return uuid_keys(pc.fill_null(uuids.cast(pa.string()), "").to_pylist())


@dataclass
class KeysUnit:
    """What the reduce phase needs of map unit `u`, computed where the unit's files are."""

    work: Path  # the map phase's work folder
    out: Path  # this pass's work folder
    dedup: DedupConfig | None

    def __call__(self, u: int) -> dict[str, Any]:
        sig = UnitSignatures(self.dedup) if self.dedup is not None else None
        ukeys: list[np.ndarray] = []
        rows = 0
        for batch in _kept_batches(self.work, u):
            rows += batch.num_rows
            ukeys.append(_row_keys(batch.column("uuid")))
            if sig is not None:
                sig.add(batch)
        index = pq.read_table(unit_dir(self.work, u) / "index.parquet") if (unit_dir(self.work, u) / "index.parquet").exists() else None
        docs = np.zeros(index.num_rows if index is not None else 0, DOC_RECORD)
        if index is not None and index.num_rows:
            docs["length"] = index.column("num_tokens").to_numpy().astype(np.int64)
            docs["key"] = doc_keys(index)
            docs["ukey"] = _row_keys(index.column("uuid"))
        writer = UnitWriter(self.out, u)
        try:
            np.save(writer.tmp / "docs.npy", docs)
            np.save(writer.tmp / "rows_ukey.npy", np.concatenate(ukeys) if ukeys else np.zeros(0, np.uint64))
            result: dict[str, Any] = {"unit": u, "rows": rows, "docs": int(len(docs)), "rows_in": rows}
            if sig is not None:
                result.update(sig.write(writer.tmp))
            writer.commit(result)
        except BaseException:
            writer.abort()
            raise
        return result


def _alive_rows(work: Path, keys_work: Path, u: int, dropped: np.ndarray) -> Iterator[pa.RecordBatch]:
    """The unit's kept rows that still have a document after the dedup drops (by row key), each with
    `num_tokens`: the tokens of its surviving documents (rows split at turns have several)."""
    docs = np.load(unit_dir(keys_work, u) / "docs.npy")
    alive = ~in_sorted(docs["ukey"], dropped)
    ukey, length = docs["ukey"][alive], docs["length"][alive]
    order = np.argsort(ukey, kind="stable")
    ukey, length = ukey[order], length[order]
    first = np.ones(len(ukey), bool)
    first[1:] = ukey[1:] != ukey[:-1]
    starts = np.flatnonzero(first)
    keys = ukey[starts]
    tokens = np.add.reduceat(length, starts) if len(starts) else np.zeros(0, np.int64)
    row_ukey = np.load(unit_dir(keys_work, u) / "rows_ukey.npy")
    start = 0
    for batch in _kept_batches(work, u):
        rk = row_ukey[start : start + batch.num_rows]
        start += batch.num_rows
        if not len(keys):
            continue
        pos = np.minimum(np.searchsorted(keys, rk), len(keys) - 1)
        ok = keys[pos] == rk
        if not ok.any():
            continue
        yield batch.filter(pa.array(ok)).append_column("num_tokens", pa.array(tokens[pos[ok]], pa.int64()))


@dataclass
class MixUnit:
    """One step of the mixing draw over map unit `u`'s surviving rows (see the module docstring)."""

    work: Path
    keys_work: Path
    out: Path
    config: SelectConfig
    dropped: Path  # sorted row keys the dedup steps dropped (.npy)
    step: Literal["count", "refine", "draw"]
    plans: dict[str, KeyPlan] | None = None
    refine: dict[str, int] | None = None

    def __call__(self, u: int) -> dict[str, Any]:
        dropped = np.load(self.dropped)
        rows = _alive_rows(self.work, self.keys_work, u, dropped)
        if self.step == "count":
            stats: dict[str, GroupStats] = {}
            for batch in rows:
                count_batch(batch, self.config, stats)
            return commit_unit(self.out, u, {"unit": u, "keys": list(stats)}, stats_to_arrays(stats))
        if self.step == "refine":
            assert self.plans is not None and self.refine is not None
            keys, arrays = refined_arrays(rows, self.config, self.plans, self.refine)
            return commit_unit(self.out, u, {"unit": u, "keys": keys}, arrays)
        return self._draw(u, rows, dropped)

    def _draw(self, u: int, rows: Iterator[pa.RecordBatch], dropped: np.ndarray) -> dict[str, Any]:
        assert self.plans is not None
        plans = self.plans
        copies_of: dict[int, int] = {}
        achieved: dict[str, list[int]] = {}
        for batch in rows:
            keys, hashes, tokens = draw_inputs(batch, self.config)
            ukeys = _row_keys(batch.column("uuid")).tolist()
            for key, idx in group_indices(keys).items():
                c = plans[key].copies(hashes[idx]) if key in plans else np.zeros(len(idx), np.int64)
                got = achieved.setdefault(key, [0, 0])
                got[0] += int(c.sum())
                got[1] += int((c * tokens[idx]).sum())
                for i, k in zip(idx.tolist(), c.tolist(), strict=True):
                    copies_of[ukeys[i]] = k
        docs = np.load(unit_dir(self.keys_work, u) / "docs.npy")
        alive = ~in_sorted(docs["ukey"], dropped)
        copies = np.array([copies_of.get(k, 0) if a else 0 for k, a in zip(docs["ukey"].tolist(), alive, strict=True)],
                          np.int64)
        result = {
            "unit": u,
            "achieved": [[k, v[0], v[1]] for k, v in achieved.items()],
            "unsampled": sum(1 for k in copies_of.values() if k == 0),
            "rows_out": int(sum(copies_of.values())),
        }
        return commit_unit(self.out, u, result, {"copies": copies})


@dataclass
class ShardUnit:
    """Shard `s` of the planned bins: its documents gathered from the spools, packed, written."""

    work: Path  # the map phase's work folder (the spools)
    plan: Path  # the pack plan folder (see `write_pack_plan`)
    out_dir: Path  # OUT/shards
    units_work: Path  # this pass's work folder
    config: PackConfig
    read_ahead: bool = True  # gather the next row groups on a thread while one is written

    def __call__(self, s: int) -> dict[str, Any]:
        shards = np.load(self.plan / "shards.npy")
        b0, b1 = int(shards[s]), int(shards[s + 1])
        stats = PackStats()

        def gathered() -> Iterator[tuple[pa.Table, PackStats]]:
            for g0 in range(b0, b1, self.config.row_group_packs):
                yield self._packs(g0, min(g0 + self.config.row_group_packs, b1))

        def pieces() -> Iterator[pa.Table]:
            # a row group of packs at a time (a shard's tokens are never all in memory at once). With
            # `read_ahead`, the next ones are gathered on a thread (`prefetch`) while this one is
            # compressed and written (both mostly without the GIL: 0.38 -> ~0.25 s a shard of 334
            # packs), at most three groups held: one written, one queued, one gathered. The same
            # pieces in the same order either way.
            nonlocal stats
            for table, st in prefetch(gathered(), depth=1) if self.read_ahead else gathered():
                stats = stats.merge(st)
                yield table

        info = write_shard_groups(pieces(), self.out_dir / f"shard-{s:05d}.parquet", self.config)
        result = {"unit": s, "shard": info.to_dict(), "stats": stats.to_dict(), "packs": info.packs,
                  "tokens": info.tokens}
        return commit_unit(self.units_work, s, result, {})

    def _packs(self, b0: int, b1: int) -> tuple[pa.Table, PackStats]:
        """Packs b0..b1 of the plan, built from their documents."""
        bin_off = np.load(self.plan / "bin_offsets.npy", mmap_mode="r")
        d0, d1 = int(bin_off[b0]), int(bin_off[b1])
        unit = np.asarray(np.load(self.plan / "unit.npy", mmap_mode="r")[d0:d1])
        row = np.asarray(np.load(self.plan / "row.npy", mmap_mode="r")[d0:d1])
        copy = np.asarray(np.load(self.plan / "copy.npy", mmap_mode="r")[d0:d1])
        docs = _gather(self.work, unit, row)
        if (copy > 0).any():
            docs = _rename_copies(docs, copy)
        local = [np.arange(int(bin_off[b]) - d0, int(bin_off[b + 1]) - d0) for b in range(b0, b1)]
        return assemble_packs(docs, local, self.config)


def _gather(work: Path, unit: np.ndarray, row: np.ndarray) -> pa.Table:
    """Documents (unit, row), in that order, from the memory-mapped unit spools."""
    pieces: list[pa.Table] = []
    where: list[np.ndarray] = []
    for u in np.unique(unit).tolist():
        sel = np.flatnonzero(unit == u)
        pieces.append(take_docs(work, int(u), pa.array(row[sel])))
        where.append(sel)
    if not pieces:
        raise ValueError("a shard with no documents")
    table = pa.concat_tables(pieces)
    return table.take(pa.array(np.argsort(np.concatenate(where), kind="stable")))


def _rename_copies(docs: pa.Table, copy_no: np.ndarray) -> pa.Table:
    """Repeated documents (copy j > 0 of a mix with epochs > 1) are named `uuid#rj`."""
    uuids = docs.column("uuid").to_pylist()
    named = [u if k == 0 else f"{u}#r{k}" for u, k in zip(uuids, copy_no.tolist(), strict=True)]
    return docs.set_column(docs.schema.get_field_index("uuid"), "uuid", pa.array(named, pa.string()))
