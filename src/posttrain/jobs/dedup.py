"""`run_dedup`: exact then near dedup over a source, written as kept / removed / clusters / summary.

Two streaming passes over the source (it must give the same rows in the same order twice, which
every `posttrain.io.sources.Source` does): pass 1 feeds `ExactDedup.observe` and `NearDedup.observe`
and writes each row's uuid to a memory-mapped Arrow file (to name twins later); then both stages
decide (`finish`); pass 2 routes each row to `kept/` or `removed/`.

Outputs under `out_dir`:

- ``kept/part-00000.parquet``...: NEMOTRON_SCHEMA rows, in input order;
- ``removed/part-00000.parquet``...: the removed rows plus ``reason`` (dedup.exact,
  dedup.prompt_quota, dedup.near), ``twin_uuid`` (the kept row it duplicates; the cluster
  representative for near) and ``cluster_id`` (near only);
- ``clusters.parquet``: every row of every near cluster: uuid, cluster_id, representative_uuid,
  similarity (exact Jaccard to the representative), removed;
- ``summary.json``: rows_in == kept + removed, counts by reason, the LSH parameters and S-curve.

Files are written in fixed row groups, so the bytes do not depend on the batch size.

One process, every core: each pass reads ahead on a thread (parquet decoding releases the GIL);
pass 1 makes each batch's records (`exact_records`, `near_records`, per row) on `_threads()`
threads and adds them in stream order; pass 2 writes the kept rows on a thread of their own. The
order of everything written is the stream's, so the bytes are those of a serial run.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from posttrain.config import DedupConfig
from posttrain.errors import PosttrainError
from posttrain.io.cores import usable_cores
from posttrain.io.outdir import owns_output
from posttrain.io.parquet import PartWriter, conform
from posttrain.io.sources import source_batches
from posttrain.progress import OnProgress, tracked
from posttrain.reduce.dedup.exact import CODES, ExactDedup, exact_records
from posttrain.reduce.dedup.lsh import s_curve_table
from posttrain.reduce.dedup.near import NearDedup, near_records
from posttrain.runner.threads import ThreadEngine
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stage import REASONS, rejected_mask

REMOVED_SCHEMA = NEMOTRON_SCHEMA.append(pa.field("reason", pa.string())).append(
    pa.field("twin_uuid", pa.string())
).append(pa.field("cluster_id", pa.string()))
CLUSTERS_SCHEMA = pa.schema(
    [
        ("uuid", pa.string()),
        ("cluster_id", pa.string()),
        ("representative_uuid", pa.string()),
        ("similarity", pa.float32()),
        ("removed", pa.bool_()),
    ]
)


class BatchSource(Protocol):
    def iter_batches(self, batch_size: int = ...) -> Any: ...


class DedupSummary(BaseModel):
    """What a dedup run did; `rows_in == kept + removed` always."""

    rows_in: int
    kept: int
    removed: int
    removed_by_reason: dict[str, int]
    near: dict[str, Any] | None = None
    exact: dict[str, Any] | None = None
    seconds: float = 0.0
    config: dict[str, Any]


def _prepare_out(out_dir: Path) -> None:
    for sub in ("kept", "removed"):
        d = out_dir / sub
        if d.exists():
            for f in d.glob("part-*.parquet"):
                f.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


@owns_output("dedup")
def run_dedup(
    source: BatchSource,
    out_dir: str | Path,
    config: DedupConfig | None = None,
    *,
    batch_size: int = 1024,
    on_progress: OnProgress | None = None,
) -> DedupSummary:
    """Exact then near dedup of `source` into `out_dir` (see the module doc for the layout).

    On the processes/ray engines: `posttrain.jobs.dedup_units.run_dedup_on_engine` (the same bytes).
    """
    config = config or DedupConfig()
    if config.exact_key not in ("prompt", "conversation") and config.exact_key not in NEMOTRON_SCHEMA.names:
        raise PosttrainError(
            f"unknown exact key {config.exact_key!r}",
            place="exact_key",
            fix=f"use prompt, conversation or a column: {', '.join(NEMOTRON_SCHEMA.names)}",
        )
    out = Path(out_dir)
    _prepare_out(out)
    t0 = time.perf_counter()
    work = tempfile.mkdtemp(prefix=".dedup-work-", dir=out)
    total = getattr(source, "num_rows", None)
    # the objects alive now (modules, classes) outlive the run: frozen, full collections skip them
    # (unless the caller froze some: unfreeze would undo theirs)
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    try:
        use_exact = config.exact or bool(config.max_responses_per_prompt)
        exact = ExactDedup(config, os.path.join(work, "exact")) if use_exact else None
        near = NearDedup(config, os.path.join(work, "near")) if config.near else None
        uuid_path = os.path.join(work, "uuids.arrow")
        rows_in = unreadable = 0
        # pass 1: records made on a few threads (see the module doc), added here in stream order
        batches = _numbered(_readable(tracked(source_batches(source, batch_size, prefetch_depth=2),
                                              on_progress, "dedup: find", total)))
        records = _BatchRecords(config if exact else None, config if near else None,
                                near.bands if near else 0, near.rows if near else 0)
        with pa.OSFile(uuid_path, "wb") as sink, pa.ipc.new_file(sink, pa.schema([("uuid", pa.string())])) as w:
            for rows, key_recs, near_recs in ThreadEngine(_threads(), retries=0).map_units(records, batches):
                unreadable += rows.unreadable
                rows_in += rows.batch.num_rows
                if exact:
                    exact.add(rows.batch.num_rows, *key_recs)
                if near:
                    near.add(rows.batch.num_rows, *near_recs)
                w.write_batch(pa.record_batch([rows.batch.column("uuid")], names=["uuid"]))
        if exact:
            exact.finish()
        if near:
            near.finish(excluded=exact.decisions.rows if exact else None)
        needed = [stage.decisions.twins for stage in (exact, near) if stage is not None]
        if near is not None and near.clusters is not None:
            needed += [near.clusters.rows, near.clusters.rep_rows]
        uuids = UuidLookup(uuid_path, np.concatenate(needed) if needed else np.zeros(0, np.int64))

        kept_w = PartWriter(out / "kept", NEMOTRON_SCHEMA)
        by_reason_read: dict[str, int] = {}
        removed_w = PartWriter(out / "removed", REMOVED_SCHEMA)
        seen = 0

        def routed() -> Iterator[_Write]:
            """Pass 2: each batch's rows routed: removed rows written here, kept rows handed on."""
            nonlocal seen
            for batch, bad in _readable(tracked(source_batches(source, batch_size, prefetch_depth=2),
                                                on_progress, "dedup: write", total)):
                if bad is not None:  # rows the source could not read (or that have no uuid) go with their code
                    removed_w.write(_unreadable_batch(bad, by_reason_read))
                n = batch.num_rows
                codes = np.zeros(n, np.uint8)
                twins = np.full(n, -1, np.int64)
                for stage in (exact, near):
                    if stage is not None:
                        c, t = stage.decisions.lookup(seen, n)
                        first = (codes == 0) & (c > 0)
                        codes[first], twins[first] = c[first], t[first]
                seen += n
                batch = conform(batch, NEMOTRON_SCHEMA)
                gone = codes > 0
                yield _Write(kept_w, _kept_rows(batch, gone))
                if gone.any():
                    removed_w.write(_removed_rows(batch, codes, twins, uuids, near, seen - n))

        # the kept rows (most of the bytes; zstd releases the GIL) are written on their own thread
        for _ in ThreadEngine(1, retries=0).map_units(_write, routed()):
            pass
        if seen != rows_in:
            raise PosttrainError(
                f"the source gave {rows_in} rows on the first pass and {seen} on the second",
                fix="dedup reads its source twice; use a source that does not change while it runs",
            )
        kept_w.close()
        removed_w.close()
        _write_clusters(out / "clusters.parquet", near, uuids)
    finally:
        if freeze:
            gc.unfreeze()
        shutil.rmtree(work, ignore_errors=True)

    by_reason: dict[str, int] = dict(by_reason_read)
    for stage in (exact, near):
        if stage is not None:
            for c, k in zip(*np.unique(stage.decisions.codes, return_counts=True), strict=True):
                by_reason[CODES[int(c)]] = by_reason.get(CODES[int(c)], 0) + int(k)
    summary = DedupSummary(
        rows_in=rows_in + unreadable,
        kept=kept_w.rows,
        removed=removed_w.rows,
        removed_by_reason=dict(sorted(by_reason.items())),
        exact=({"peak_buffer_bytes": exact.peak_buffer_bytes, "bytes_per_row": 33} if exact else None),
        near=_near_summary(near),
        seconds=round(time.perf_counter() - t0, 3),
        config=config.model_dump(),
    )
    if summary.rows_in != summary.kept + summary.removed:  # the house rule, checked where it is made
        raise AssertionError(f"rows lost: {summary.rows_in} != {summary.kept} + {summary.removed}")
    (out / "summary.json").write_text(json.dumps(summary.model_dump(), indent=2) + "\n")
    return summary


def _threads() -> int:
    """Threads that make pass 1's records: the cores this process may use, at most 4."""
    return max(1, min(4, usable_cores()))


@dataclass
class _Rows:
    """Readable rows of pass 1, numbered from `start` in the stream (a unit of the record threads)."""

    start: int
    batch: pa.RecordBatch
    unreadable: int

    def __repr__(self) -> str:
        return f"rows {self.start}-{self.start + self.batch.num_rows - 1}"


def _numbered(batches: Iterator[tuple[pa.RecordBatch, pa.RecordBatch | None]]) -> Iterator[_Rows]:
    start = 0
    for batch, bad in batches:
        yield _Rows(start, batch, bad.num_rows if bad is not None else 0)
        start += batch.num_rows


@dataclass
class _BatchRecords:
    """A batch's exact and near records (`exact_records`, `near_records`): per row, so any thread may
    make them; None for a policy that is off."""

    exact: DedupConfig | None
    near: DedupConfig | None
    bands: int
    rows: int

    def __call__(self, item: _Rows) -> tuple[_Rows, Any, Any]:
        key = exact_records(item.batch, self.exact, item.start) if self.exact else None
        near = near_records(item.batch, self.near, self.bands, self.rows, item.start) if self.near else None
        return item, key, near


@dataclass
class _Write:
    """Rows for an output writer (a unit of the writer thread)."""

    writer: PartWriter
    batch: pa.RecordBatch | pa.Table

    def __repr__(self) -> str:
        return f"{self.batch.num_rows} rows for {self.writer.directory}"


def _write(item: _Write) -> None:
    item.writer.write(item.batch)


def _kept_rows(batch: pa.RecordBatch, gone: np.ndarray) -> pa.Table:
    """The rows of `batch` where `gone` is False, as zero-copy slices (its runs of kept rows): the
    writer copies them once into its row group, where `filter` would copy them once before.

    >>> b = pa.record_batch({"x": [0, 1, 2, 3, 4]})
    >>> t = _kept_rows(b, np.array([True, False, False, True, False]))
    >>> t["x"].to_pylist(), t["x"].num_chunks
    ([1, 2, 4], 2)
    """
    edges = np.flatnonzero(np.diff(np.concatenate([[0], (~gone).astype(np.int8), [0]])))
    runs = zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True)
    return pa.Table.from_batches([batch.slice(a, b - a) for a, b in runs], schema=batch.schema)


def _readable(batches: Any) -> Any:
    """(rows, unreadable rows or None) per batch: rows the source could not read come as reject rows
    (`source.bad_json`, `source.bad_encoding`, `source.missing_uuid`, ...), so rows_in == kept + removed."""
    for batch in batches:
        if REASONS not in batch.schema.names:
            yield batch, None
            continue
        bad = rejected_mask(batch)
        rows = batch.select([n for n in batch.schema.names if n != REASONS])
        if not bad.any():
            yield rows, None
        else:
            yield rows.filter(pa.array(~bad)), batch.filter(pa.array(bad))


def _unreadable_batch(bad: pa.RecordBatch, counts: dict[str, int]) -> pa.RecordBatch:
    """Removed rows for the rows the source could not read, with their code (counted in `counts`)."""
    codes = [next(iter(rs or []), "source.unreadable") for rs in bad.column(REASONS).to_pylist()]
    for c in codes:
        counts[c] = counts.get(c, 0) + 1
    rows = conform(bad, NEMOTRON_SCHEMA)
    n = bad.num_rows
    cols = [rows.column(i) for i in range(rows.num_columns)]
    return pa.RecordBatch.from_arrays(cols + [pa.array(codes, pa.string()), pa.nulls(n, pa.string()),
                                              pa.nulls(n, pa.string())], schema=REMOVED_SCHEMA)


def _removed_rows(batch: pa.RecordBatch, codes: np.ndarray, twins: np.ndarray, uuids: Any, near: Any,
                  first_row: int) -> pa.RecordBatch:
    """The rows of `batch` (rows numbered from `first_row`) with a removal code, with their reason,
    twin uuid (`uuids.get`) and cluster id (near only)."""
    idx = np.flatnonzero(codes > 0)
    reason = pa.array([CODES[c] for c in codes[idx].tolist()], pa.string())
    cluster = [f"{int(r):016x}" if c == 3 else None
               for c, r in zip(codes[idx].tolist(), _rep_ranks(near, idx + first_row), strict=True)]
    extra = [reason, uuids.get(twins[idx]), pa.array(cluster, pa.string())]
    return pa.RecordBatch.from_arrays(batch.take(pa.array(idx)).columns + extra, schema=REMOVED_SCHEMA)


def _rep_ranks(near: NearDedup | None, rows: np.ndarray) -> list[int]:
    """Cluster id (the representative's rank hash) of each row, 0 where it is in no cluster."""
    if near is None or near.clusters is None or len(near.clusters.rows) == 0:
        return [0] * len(rows)
    c = near.clusters
    at = np.minimum(np.searchsorted(c.rows, rows), len(c.rows) - 1)
    return np.where(c.rows[at] == rows, c.rep_ranks[at], 0).tolist()


class UuidLookup:
    """uuid of the rows that outputs name (twins, cluster members), found in one scan of the uuid
    file written in pass 1; memory is per named row, not per input row.

    (`ChunkedArray.take` over the whole memory-mapped column would concatenate it on every call.)
    """

    def __init__(self, path: str, rows: np.ndarray) -> None:
        self.rows = np.unique(rows[rows >= 0])
        found: list[pa.Array] = []
        start = 0
        with pa.memory_map(path) as source:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                col = reader.get_batch(i).column(0)
                lo, hi = np.searchsorted(self.rows, [start, start + len(col)])
                if hi > lo:
                    found.append(col.take(pa.array(self.rows[lo:hi] - start)))
                start += len(col)
        self.uuids = pa.concat_arrays(found) if found else pa.array([], pa.string())

    def get(self, rows: np.ndarray) -> pa.Array:
        """uuids of `rows` (null where a row is -1)."""
        if len(self.rows) == 0:
            return pa.nulls(len(rows), pa.string())
        idx = np.minimum(np.searchsorted(self.rows, rows), len(self.rows) - 1)
        return self.uuids.take(pa.array(idx, mask=rows < 0))


def _write_clusters(path: Path, near: NearDedup | None, uuids: UuidLookup) -> None:
    writer = PartWriter(path.parent, CLUSTERS_SCHEMA, name=path.name, rows_per_file=None)
    if near is None or near.clusters is None or len(near.clusters.rows) == 0:
        writer.close()
        return
    c = near.clusters
    order = np.lexsort((c.rows, c.rep_ranks))  # grouped by cluster, stable across batch sizes
    table = pa.table(
        {
            "uuid": uuids.get(c.rows[order]),
            "cluster_id": pa.array([f"{int(r):016x}" for r in c.rep_ranks[order]], pa.string()),
            "representative_uuid": uuids.get(c.rep_rows[order]),
            "similarity": pa.array(c.similarity[order], pa.float32()),
            "removed": pa.array(c.removed[order]),
        },
        schema=CLUSTERS_SCHEMA,
    )
    writer.write(table)
    writer.close()


def _near_summary(near: NearDedup | None) -> dict[str, Any] | None:
    if near is None:
        return None
    c = near.clusters
    return {
        "bands": near.bands,
        "rows": near.rows,
        "s_curve": s_curve_table(near.bands, near.rows),
        "clusters": int(len(np.unique(c.rep_rows))) if c is not None and len(c.rows) else 0,
        "candidate_pairs": c.candidate_pairs if c else 0,
        "verified_pairs": c.verified_pairs if c else 0,
    }
