"""`posttrain dedup` on the processes and ray engines: the same bytes as the local run.

One work unit per source fragment; every pass runs on the job's one engine:

1. find (one unit per fragment): read the fragment, keep its readable rows, make their dedup
   records, shingles and uuids (`UnitSignatures`);
2. decide (`posttrain.jobs.dedup_passes`): exact keys and prompt keys by key-hash partition, near
   band buckets by band-hash partition (pairs verified on the workers), the union-find over the
   verified pairs on the driver, the members' similarity in chunks;
3. write (one unit per fragment): read the fragment again, route each row to `kept` or `removed`
   (reason, twin uuid, cluster id) into the unit's folder;
4. the driver merges the units' files in unit order through the one parquet writer, and writes
   `clusters.parquet` and `summary.json`.

Rows are numbered in unit order, which is the stream order of a local run, and every decision is
the one the serial `ExactDedup` / `NearDedup` make, so the files are the local run's bytes.
`summary.json`'s `peak_buffer_bytes` is what the local run's exact-dedup buffer would have held
(replayed from the batch sizes), so it matches too.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa

from posttrain.config import DedupConfig
from posttrain.errors import PosttrainError
from posttrain.io.outdir import owns_output
from posttrain.io.parquet import PartWriter, conform
from posttrain.jobs.dedup import (
    REMOVED_SCHEMA,
    DedupSummary,
    _near_summary,
    _prepare_out,
    _readable,
    _removed_rows,
    _unreadable_batch,
    _write_clusters,
)
from posttrain.jobs.dedup_passes import decide
from posttrain.jobs.passes import Passes
from posttrain.progress import OnProgress, reporter
from posttrain.reduce.dedup.exact import CODES, KEY_RECORD
from posttrain.reduce.dedup.lsh import bands_rows
from posttrain.reduce.dedup.partition import RowUuids, SignatureLayout, UnitSignatures, signature_pass_meta
from posttrain.runner.session import open_engine
from posttrain.runner.units import WORK_DIR, FragmentRows, UnitOutput, remove_work, unit_batches
from posttrain.schema import NEMOTRON_SCHEMA

FIND, WRITE = "dedup: find", "dedup: write"


@dataclass
class FindUnit:
    """Pass 1 of one fragment: the dedup records of its readable rows."""

    rows: FragmentRows
    work: Path
    config: DedupConfig

    def __call__(self, u: int) -> dict[str, Any]:
        from posttrain.io.spool import UnitWriter

        sig = UnitSignatures(self.config)
        unreadable = 0
        for batch, bad in _readable(self.rows.batches(u)):
            unreadable += bad.num_rows if bad is not None else 0
            sig.add(batch)
        writer = UnitWriter(self.work, u)
        try:
            result = {"unit": u, **sig.write(writer.tmp), "unreadable": unreadable}
            result["rows_in"] = result["rows"] + unreadable
            writer.commit(result)
        except BaseException:
            writer.abort()
            raise
        return result


def _lookup(rows: np.ndarray, codes: np.ndarray, twins: np.ndarray, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(code, twin row) of rows start..start+n-1 from decisions sorted by row; 0 / -1 where kept."""
    want = np.arange(start, start + n, dtype=np.int64)
    if len(rows) == 0:
        return np.zeros(n, np.uint8), np.full(n, -1, np.int64)
    lo, hi = np.searchsorted(rows, [start, start + n])
    r, c, t = np.asarray(rows[lo:hi]), np.asarray(codes[lo:hi]), np.asarray(twins[lo:hi])
    if len(r) == 0:
        return np.zeros(n, np.uint8), np.full(n, -1, np.int64)
    idx = np.minimum(np.searchsorted(r, want), len(r) - 1)
    hit = r[idx] == want
    return np.where(hit, c[idx], 0).astype(np.uint8), np.where(hit, t[idx], -1)


@dataclass
class WriteUnit:
    """Pass 2 of one fragment: its rows routed to `kept` / `removed` as the local run routes them."""

    rows: FragmentRows
    work: Path
    decided: Path  # the driver's decisions (.npy files), see `_save_decisions`
    layout: SignatureLayout

    def __call__(self, u: int) -> dict[str, Any]:
        k = int(np.searchsorted(self.layout.units(), u))
        seen = int(self.layout.offsets()[k])
        stages = [tuple(np.load(self.decided / f"{s}-{f}.npy", mmap_mode="r") for f in ("rows", "codes", "twins"))
                  for s in ("exact", "near")]
        c_rows = np.load(self.decided / "cluster-rows.npy", mmap_mode="r")
        near = SimpleNamespace(clusters=SimpleNamespace(rows=c_rows, rep_ranks=np.load(self.decided / "cluster-ranks.npy",
                                                                                        mmap_mode="r")))
        uuids = RowUuids(self.layout)
        writer = UnitOutput(self.work, u)
        by_reason: dict[str, int] = {}
        try:
            for batch, bad in _readable(self.rows.batches(u)):
                if bad is not None:
                    writer.write("removed", _unreadable_batch(bad, by_reason))
                n = batch.num_rows
                codes = np.zeros(n, np.uint8)
                twins = np.full(n, -1, np.int64)
                for rows, cds, tws in stages:
                    c, t = _lookup(rows, cds, tws, seen, n)
                    first = (codes == 0) & (c > 0)
                    codes[first], twins[first] = c[first], t[first]
                seen += n
                batch = conform(batch, NEMOTRON_SCHEMA)
                gone = codes > 0
                writer.write("kept", batch.filter(pa.array(~gone)))
                if gone.any():
                    writer.write("removed", _removed_rows(batch, codes, twins, uuids, near, seen - n))
            result = {"unit": u, "rows_in": seen - int(self.layout.offsets()[k]), "unreadable": by_reason}
            writer.commit(result)
        except BaseException:
            writer.abort()
            raise
        return result


def check_exact_key(config: DedupConfig) -> None:
    """The local run's check of `exact_key`, before any work."""
    if config.exact_key not in ("prompt", "conversation") and config.exact_key not in NEMOTRON_SCHEMA.names:
        raise PosttrainError(
            f"unknown exact key {config.exact_key!r}",
            place="exact_key",
            fix=f"use prompt, conversation or a column: {', '.join(NEMOTRON_SCHEMA.names)}",
        )


def peak_buffer_bytes(config: DedupConfig, batch_rows: list[int]) -> int:
    """What the local run's exact-dedup buffers peak at for these batch sizes (see `PartitionedSpill.add`)."""
    budget = config.memory_budget_mb * 2**20 // 4
    policies = int(bool(config.exact)) + int(bool(config.max_responses_per_prompt))
    peak = held = 0
    for n in batch_rows:
        if n == 0:
            continue
        held += n * KEY_RECORD.itemsize
        peak = max(peak, held)
        if held > budget:
            held = 0
    return peak * policies


@owns_output("dedup")
def run_dedup_on_engine(
    source: Any,
    out_dir: str | Path,
    config: DedupConfig | None = None,
    *,
    batch_size: int = 1024,
    on_progress: OnProgress | None = None,
    engine: str = "processes",
    workers: int = 2,
    address: str | None = None,
    source_spec: Any = None,
) -> DedupSummary:
    """`run_dedup` with every pass as work units on `engine` (see the module docstring): one unit per
    fragment (`source_spec` reopens the source in the workers) and one per hash partition."""
    from posttrain.runner.units import fragment_rows

    config = config or DedupConfig()
    check_exact_key(config)
    out = Path(out_dir)
    _prepare_out(out)
    t0 = time.perf_counter()
    report = reporter(on_progress)
    work = out / WORK_DIR
    root = work / "decide"
    rows = fragment_rows(source, source_spec, batch_size)
    n_units = len(source.fragments)
    units = list(range(n_units))
    total = getattr(source, "num_rows", None)
    with open_engine(engine, workers, address) as eng:
        passes = Passes(eng, report)
        report(FIND, total=total)
        found = passes.run("find", FindUnit(rows, work / "find", config), units, work / "find", phase=FIND,
                           rows="rows_in")
        layout = SignatureLayout(work / "find", root / "meta")
        signature_pass_meta(layout.meta_dir, units, found)
        decisions = decide(passes, root, layout, config, phase=FIND, similarity=True)
        decided = root / "decided"
        _save_decisions(decided, decisions)
        report(WRITE, total=total)
        written = passes.run("write", WriteUnit(rows, work / "write", decided, layout), units, work / "write",
                             phase=WRITE, rows="rows_in")
    kept_w = PartWriter(out / "kept", NEMOTRON_SCHEMA)
    removed_w = PartWriter(out / "removed", REMOVED_SCHEMA)
    for name, sink in (("kept", kept_w), ("removed", removed_w)):
        for batch in unit_batches(work / "write", units, name):
            sink.write(batch)
    kept_w.close()
    removed_w.close()
    bands, rows_per_band = bands_rows(config)
    near = SimpleNamespace(bands=bands, rows=rows_per_band, clusters=decisions.clusters) if config.near else None
    _write_clusters(out / "clusters.parquet", near, RowUuids(layout))  # type: ignore[arg-type]

    by_reason: dict[str, int] = {}
    for r in written:
        for code, n in r["unreadable"].items():
            by_reason[code] = by_reason.get(code, 0) + n
    for stage in (decisions.exact, decisions.near):
        for c, k in zip(*np.unique(stage.codes, return_counts=True), strict=True):
            by_reason[CODES[int(c)]] = by_reason.get(CODES[int(c)], 0) + int(k)
    use_exact = config.exact or bool(config.max_responses_per_prompt)
    batch_rows = [n for r in found for n in r["batch_rows"]]
    summary = DedupSummary(
        rows_in=sum(r["rows_in"] for r in found),
        kept=kept_w.rows,
        removed=removed_w.rows,
        removed_by_reason=dict(sorted(by_reason.items())),
        exact=({"peak_buffer_bytes": peak_buffer_bytes(config, batch_rows), "bytes_per_row": 33} if use_exact else None),
        near=_near_summary(near),  # type: ignore[arg-type]
        seconds=round(time.perf_counter() - t0, 3),
        config=config.model_dump(),
    )
    if summary.rows_in != summary.kept + summary.removed:  # the house rule, checked where it is made
        raise AssertionError(f"rows lost: {summary.rows_in} != {summary.kept} + {summary.removed}")
    (out / "summary.json").write_text(json.dumps(summary.model_dump(), indent=2) + "\n")
    remove_work(work)
    return summary


def _save_decisions(decided: Path, decisions: Any) -> None:
    shutil.rmtree(decided, ignore_errors=True)
    decided.mkdir(parents=True)
    for name, stage in (("exact", decisions.exact), ("near", decisions.near)):
        np.save(decided / f"{name}-rows.npy", stage.rows)
        np.save(decided / f"{name}-codes.npy", stage.codes)
        np.save(decided / f"{name}-twins.npy", stage.twins)
    c = decisions.clusters
    np.save(decided / "cluster-rows.npy", c.rows if c is not None else np.zeros(0, np.int64))
    np.save(decided / "cluster-ranks.npy", c.rep_ranks if c is not None else np.zeros(0, np.uint64))
