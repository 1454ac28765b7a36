"""`run_prepare`: the whole pipeline, map -> reduce -> pack -> manifest, resumable.

    out/
      .work/recipe.json          the resolved recipe + hash this directory belongs to
      .work/unit-000123/         one finished work unit (see spool.py); `.tmp-*` = unfinished
      rejects/                   every rejected row with its reasons (map phase: full rows;
                                 reduce phase: uuid + reason + what it was removed for)
      shards/shard-00000.parquet packed sequences
      manifest.json              recipe + hash, counts that add up, shards with sha256
      README.md                  a dataset card for sharing the output

Determinism: units are fragments in listing order, documents are keyed by uuid hash, bins are
planned over the whole run; nothing depends on which worker finished first.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.errors import PosttrainError
from posttrain.pipeline.packing import DocIndex
from posttrain.pipeline.spool import clean_partial, is_done, read_result, unit_dir
from posttrain.pipeline.unit import UnitPlan

REDUCE_REJECT_SCHEMA = pa.schema(
    [("uuid", pa.string()), ("category", pa.string()), ("reasons", pa.list_(pa.string())), ("detail", pa.string())]
)


@dataclass
class Reduction:
    """What a reduce step decided: which documents (positions in the DocIndex) go, and why."""

    drop: np.ndarray  # bool mask over the DocIndex
    reason: str
    detail: list[str] | None = None  # per dropped document, e.g. the twin it duplicates
    report: dict[str, Any] | None = None
    rows: int | None = None  # rows (uuids) dropped; documents can be more when rows were split


Reducer = Callable[[Path, list[int], DocIndex], Reduction]


def unit_limits(fragment_rows: list[int | None], limit: int | None) -> list[int | None]:
    """Rows each unit may take so that the run stops after `limit` rows in fragment order.

    >>> unit_limits([5, 5, 5], 7)
    [5, 2, 0]
    >>> unit_limits([5, None], None)
    [None, None]
    """
    if limit is None:
        return [None] * len(fragment_rows)
    out: list[int | None] = []
    left = limit
    for n in fragment_rows:
        if n is None:  # unknown size (JSONL): it takes what is left
            out.append(left)
            left = 0
            continue
        take = min(n, left)
        out.append(take)
        left -= take
    return out


def check_work_dir(out: Path, recipe_json: dict[str, Any], recipe_hash: str) -> Path:
    """The work directory for this recipe; refuses one made by a different recipe."""
    work = out / ".work"
    marker = work / "recipe.json"
    if marker.exists():
        old = json.loads(marker.read_text())
        if old.get("hash") != recipe_hash:
            raise PosttrainError(
                f"the output directory was made by a different recipe (hash {old.get('hash')}, this one {recipe_hash})",
                place=str(out),
                fix="use a new --out directory, or delete this one to start over",
            )
    else:
        work.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"hash": recipe_hash, "recipe": recipe_json}, indent=1, sort_keys=True))
    clean_partial(work)
    return work


def run_map_phase(plan: UnitPlan, engine, units: list[int], on_unit: Callable[[dict], None] | None = None) -> list[dict]:
    """Run every unit not done yet; return all units' results in unit order."""
    todo = [u for u in units if not is_done(plan.work, u)]
    done_before = [read_result(plan.work, u) for u in units if u not in set(todo)]
    for r in done_before:
        if on_unit:
            on_unit(r)
    for r in engine.map_units(plan, todo):
        if on_unit:
            on_unit(r)
    return [read_result(plan.work, u) for u in units]


def collect_rejects(work: Path, units: list[int], reductions: list[Reduction], index: DocIndex, out: Path) -> Counter:
    """Copy the units' reject files into `out/rejects/` and write the reduce-phase rejects."""
    rej_dir = out / "rejects"
    if rej_dir.exists():
        shutil.rmtree(rej_dir)
    rej_dir.mkdir(parents=True)
    for u in units:
        src = unit_dir(work, u) / "rejects.parquet"
        if src.exists():
            shutil.copyfile(src, rej_dir / f"rows-{u:06d}.parquet")
    counts: Counter = Counter()
    rows: dict[str, list] = {"uuid": [], "category": [], "reasons": [], "detail": []}
    categories = _categories(work, units)
    for red in reductions:
        seen: set[str] = set()
        for k, i in enumerate(np.flatnonzero(red.drop)):
            u = str(index.uuid[i])
            if u in seen:  # several documents of one split row: the row is listed once
                continue
            seen.add(u)
            rows["uuid"].append(u)
            rows["category"].append(categories[i])
            rows["reasons"].append([red.reason])
            rows["detail"].append(red.detail[k] if red.detail else None)
        counts[red.reason] += len(seen)
    if rows["uuid"]:
        pq.write_table(pa.Table.from_pydict(rows, schema=REDUCE_REJECT_SCHEMA), rej_dir / "reduce.parquet")
    return counts


def _categories(work: Path, units: list[int]) -> list[str]:
    from posttrain.pipeline.spool import read_parquet

    cats: list[str] = []
    for u in units:
        t = read_parquet(work, u, "index", ["category"])
        if t is not None:
            cats.extend(t.column("category").to_pylist())
    return cats
