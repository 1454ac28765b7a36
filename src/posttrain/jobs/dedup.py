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
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from posttrain.config import DedupConfig
from posttrain.errors import PosttrainError
from posttrain.io.outdir import owns_output
from posttrain.io.parquet import PartWriter, conform
from posttrain.progress import OnProgress, tracked
from posttrain.reduce.dedup.exact import CODES, ExactDedup
from posttrain.reduce.dedup.lsh import s_curve_table
from posttrain.reduce.dedup.near import NearDedup
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
    try:
        use_exact = config.exact or bool(config.max_responses_per_prompt)
        exact = ExactDedup(config, os.path.join(work, "exact")) if use_exact else None
        near = NearDedup(config, os.path.join(work, "near")) if config.near else None
        uuid_path = os.path.join(work, "uuids.arrow")
        rows_in = unreadable = 0
        with pa.OSFile(uuid_path, "wb") as sink, pa.ipc.new_file(sink, pa.schema([("uuid", pa.string())])) as w:
            for batch, bad in _readable(tracked(_source_rows(source, batch_size), on_progress, "dedup: find",
                                                getattr(source, "num_rows", None))):
                unreadable += bad.num_rows if bad is not None else 0
                rows_in += batch.num_rows
                if exact:
                    exact.observe(batch)
                if near:
                    near.observe(batch)
                w.write_batch(pa.record_batch([batch.column("uuid")], names=["uuid"]))
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
        for batch, bad in _readable(tracked(_source_rows(source, batch_size), on_progress, "dedup: write",
                                            getattr(source, "num_rows", None))):
            if bad is not None:  # rows the source could not read (or that have no uuid) go with their code
                _write_unreadable(removed_w, bad, by_reason_read)
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
            kept_w.write(batch.filter(pa.array(~gone)))
            if gone.any():
                idx = np.flatnonzero(gone)
                reason = pa.array([CODES[c] for c in codes[idx].tolist()], pa.string())
                twin = uuids.get(twins[idx])
                cluster = [
                    f"{int(r):016x}" if c == 3 else None
                    for c, r in zip(codes[idx].tolist(), _rep_ranks(near, idx + seen - n), strict=True)
                ]
                cols = [batch.column(i).take(pa.array(idx)) for i in range(batch.num_columns)]
                removed_w.write(
                    pa.RecordBatch.from_arrays(cols + [reason, twin, pa.array(cluster, pa.string())], schema=REMOVED_SCHEMA)
                )
        if seen != rows_in:
            raise PosttrainError(
                f"the source gave {rows_in} rows on the first pass and {seen} on the second",
                fix="dedup reads its source twice; use a source that does not change while it runs",
            )
        kept_w.close()
        removed_w.close()
        _write_clusters(out / "clusters.parquet", near, uuids)
    finally:
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


def _source_rows(source: BatchSource, batch_size: int) -> Any:
    """The source's batches with their `reasons` when it has the option (a `posttrain.io.sources.Source`)."""
    try:
        return source.iter_batches(batch_size=batch_size, with_reasons=True)  # type: ignore[call-arg]
    except TypeError:  # a plain source without the reasons option
        return source.iter_batches(batch_size=batch_size)


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


def _write_unreadable(writer: PartWriter, bad: pa.RecordBatch, counts: dict[str, int]) -> None:
    codes = [next(iter(rs or []), "source.unreadable") for rs in bad.column(REASONS).to_pylist()]
    for c in codes:
        counts[c] = counts.get(c, 0) + 1
    rows = conform(bad, NEMOTRON_SCHEMA)
    n = bad.num_rows
    cols = [rows.column(i) for i in range(rows.num_columns)]
    writer.write(pa.RecordBatch.from_arrays(cols + [pa.array(codes, pa.string()), pa.nulls(n, pa.string()),
                                                    pa.nulls(n, pa.string())], schema=REMOVED_SCHEMA))


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
