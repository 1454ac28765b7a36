"""One row per uuid in a `prepare` run: later rows that reuse an earlier row's uuid are rejected.

prepare keys documents, dedup decisions, mixing draws and pack order by uuid, so two rows with one
uuid cannot both go through. The rule: of the rows that pass the map phase, the first in unit
order (fragment order, then row order) keeps the uuid; every later row with it is rejected as
`source.duplicate_uuid`, in the rejects with its own content, so nothing is lost and
`rows_in == out + rejected` holds.

How: after the map phase the driver hashes the uuid of every kept row (one pass over the units'
small `index.parquet`, 8 bytes a row); only when two hashes meet does it read the uuids again to
name the duplicates. The units holding later copies are redone with those uuids marked
(`UnitPlan.duplicate_uuids`), so the reduce phase never sees a uuid twice. Rows without a uuid
never get this far: the reader marks them `source.missing_uuid`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.hashing import uuid_keys
from posttrain.io.spool import unit_dir
from posttrain.stage import add_reason, register_reason, rejected_mask

DUPLICATE_UUID = register_reason(
    "source.duplicate_uuid", "error", "an earlier row of the run has this uuid (the first in unit order is kept)"
).code


def _row_uuids(work: Path, unit: int) -> list[str]:
    """The uuid of each kept row of a unit (documents of one split row counted once)."""
    path = unit_dir(work, unit) / "index.parquet"
    if not path.exists():
        return []
    names = pq.read_schema(path).names
    t = pq.read_table(path, columns=[c for c in ("uuid", "part") if c in names])
    uuids = t.column("uuid").to_pylist()
    if "part" in t.column_names:
        uuids = [u for u, p in zip(uuids, t.column("part").to_pylist(), strict=True) if not p]
    return uuids


def find_duplicates(work: Path, units: list[int]) -> dict[int, dict[str, bool]]:
    """unit -> {uuid: whether the unit holds its first row} for every unit holding a later row of a uuid."""
    keys = [uuid_keys(_row_uuids(work, u)) for u in units]
    flat = np.concatenate(keys) if keys else np.zeros(0, np.uint64)
    values, counts = np.unique(flat, return_counts=True)
    shared = values[counts > 1]
    if shared.size == 0:
        return {}
    first: dict[str, int] = {}
    out: dict[int, dict[str, bool]] = {}
    for u, k in zip(units, keys, strict=True):
        hit = np.isin(k, shared)
        if not hit.any():
            continue
        uuids = _row_uuids(work, u)
        for i in np.flatnonzero(hit).tolist():
            uid = uuids[i]
            if uid not in first:
                first[uid] = u
            elif first[uid] == u:
                out.setdefault(u, {})[uid] = True
            else:
                out.setdefault(u, {})[uid] = False
    return out


def redo_duplicates(plan: Any, work: Path, units: list[int], say: Callable[[str], None]) -> list[int]:
    """Mark later rows of a uuid in `plan` and remove their units so that the map phase redoes them."""
    dups = find_duplicates(work, units)
    if not dups:
        return []
    rows = sum(len(v) for v in dups.values())
    say(f"{rows} uuid(s) appear in more than one row: the first row (in unit order) is kept, later ones are "
        f"rejected as {DUPLICATE_UUID}; redoing {len(dups)} work unit(s)")
    plan.duplicate_uuids = dups
    for u in dups:
        shutil.rmtree(unit_dir(work, u), ignore_errors=True)
    return sorted(dups)


class DuplicateMarker:
    """Within one unit: rows whose uuid an earlier row has get `source.duplicate_uuid` (rows already
    rejected by the row stages are left as they are and do not count as the first)."""

    def __init__(self, keep_first: dict[str, bool], severity: dict[str, str] | None = None) -> None:
        self.keep_first = keep_first
        self.severity = severity
        self.seen: set[str] = set()

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        mark = []
        rejected = rejected_mask(batch, self.severity)  # type: ignore[arg-type]
        for uid, bad in zip(batch.column("uuid").to_pylist(), rejected.tolist(), strict=True):
            if bad or uid not in self.keep_first:
                mark.append(False)
                continue
            later = uid in self.seen or not self.keep_first[uid]
            self.seen.add(uid)
            mark.append(later)
        return add_reason(batch, np.array(mark, dtype=bool), DUPLICATE_UUID) if any(mark) else batch


def duplicate_marker(plan: Any, unit: int) -> DuplicateMarker | None:
    """The marker for `unit` when the run found later copies of a uuid there, else None."""
    spec = (getattr(plan, "duplicate_uuids", None) or {}).get(unit)
    return DuplicateMarker(spec, getattr(plan, "severity", None)) if spec else None
