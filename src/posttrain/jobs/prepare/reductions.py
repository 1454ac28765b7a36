"""What prepare's reduce steps decide, and where the rows they drop are written.

A reduce step (dedup, mixing) returns a `Reduction`: a mask over the run's `RunIndex` of the
documents that go and the reason code; `collect_rejects` writes one row per dropped input row into
`OUT/rejects/reduce.parquet` and copies the map phase's per-unit reject files beside it.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.io.outdir import remove_owned
from posttrain.io.spool import unit_dir
from posttrain.jobs.prepare.run_index import RunIndex

REDUCE_REJECT_SCHEMA = pa.schema(
    [("uuid", pa.string()), ("category", pa.string()), ("reasons", pa.list_(pa.string())), ("detail", pa.string())]
)


@dataclass
class Reduction:
    """What a reduce step decided: which documents (positions in the RunIndex) go, and why."""

    drop: np.ndarray  # bool mask over the RunIndex
    reason: str
    detail: list[str] | None = None  # per dropped document, e.g. the twin it duplicates
    report: dict[str, Any] | None = None
    rows: int | None = None  # rows (uuids) dropped; documents can be more when rows were split




def collect_rejects(work: Path, units: list[int], reductions: list[Reduction], index: RunIndex, out: Path) -> Counter:
    """Copy the units' reject files into `out/rejects/` and write the reduce-phase rejects."""
    rej_dir = out / "rejects"
    if rej_dir.exists():
        remove_owned(rej_dir)  # the run's claim on OUT proved every file there is posttrain's
    rej_dir.mkdir(parents=True)
    for u in units:
        src = unit_dir(work, u) / "rejects.parquet"
        if src.exists():
            shutil.copyfile(src, rej_dir / f"rows-{u:06d}.parquet")
    counts: Counter = Counter()
    rows: dict[str, list] = {"uuid": [], "category": [], "reasons": [], "detail": []}
    for red in reductions:
        seen: set[str] = set()
        for k, i in enumerate(np.flatnonzero(red.drop)):
            u = index.uuid_at(i)  # names are read back only for the dropped documents
            if u in seen:  # several documents of one split row: the row is listed once
                continue
            seen.add(u)
            rows["uuid"].append(u)
            rows["category"].append(index.category_at(i))
            rows["reasons"].append([red.reason])
            rows["detail"].append(red.detail[k] if red.detail else None)
        counts[red.reason] += len(seen)
    if rows["uuid"]:
        pq.write_table(pa.Table.from_pydict(rows, schema=REDUCE_REJECT_SCHEMA), rej_dir / "reduce.parquet")
    return counts
