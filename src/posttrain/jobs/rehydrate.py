"""`rehydrate`: restore withheld prompts into OUT/restored/ and OUT/rejects/ (hub layout, one file per split).

The restoring itself is `posttrain.stages.rehydrate.RestorePrompts`; this job streams a source
through it on any engine and writes the rows back in the hub's layout, so the output is a source
posttrain (or `datasets`) reads like the original.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from posttrain.io.outdir import owns_output
from posttrain.io.parquet import PartWriter
from posttrain.progress import OnProgress, tracked
from posttrain.runner.units import (
    WORK_DIR,
    UnitOutput,
    fragment_rows,
    remove_work,
    run_units,
    unit_batches,
    units_key,
)
from posttrain.schema import NEMOTRON_SCHEMA, V1_SPLIT_FILE_PREFIX
from posttrain.stage import REASONS, REASONS_TYPE, split_rejected

REJECTS_SCHEMA = NEMOTRON_SCHEMA.append(pa.field(REASONS, REASONS_TYPE)).append(pa.field("rehydrate_key", pa.string()))


class SplitFiles:
    """One parquet file per split in the hub layout (`<prefix>-00000-of-00001.parquet`), each written
    by the one parquet writer when its first row arrives."""

    def __init__(self, directory: Path, schema: pa.Schema) -> None:
        self.directory, self.schema = directory, schema
        self.writers: dict[str, PartWriter] = {}
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, split: str, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if split not in self.writers:
            name = f"{V1_SPLIT_FILE_PREFIX.get(split, split)}-00000-of-00001.parquet"
            self.writers[split] = PartWriter(self.directory, self.schema, name=name, rows_per_file=None)
        self.writers[split].write(batch)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()


@owns_output("rehydrate", out="out", inputs=lambda a: [a["source"], getattr(a["stage"], "code", None),
                                                   getattr(a["stage"], "chat", None)])
def run_rehydrate(
    source: Any,
    out: Path,
    stage: Any,
    batch_size: int = 1024,
    *,
    engine: str = "local",
    workers: int = 2,
    source_spec: Any = None,
    address: str | None = None,
    on_progress: OnProgress | None = None,
) -> dict[str, Any]:
    """Stream `source` through `stage` into OUT/restored/ and OUT/rejects/; write and return the summary.

    `engine` "processes"/"ray" restores one unit per fragment on `workers` processes/CPUs and
    merges the units in order: the same bytes and summary as a local run.
    """
    restored, rejects = SplitFiles(out / "restored", NEMOTRON_SCHEMA), SplitFiles(out / "rejects", REJECTS_SCHEMA)
    rows_in = kept = rejected = 0
    try:
        if engine == "local":
            left = source.limit
            for frag in source.fragments:
                for batch in tracked(source.iter_fragment(frag, batch_size, with_reasons=True), on_progress, "rehydrate"):
                    if left is not None:
                        batch = batch.slice(0, max(left, 0))
                        left -= batch.num_rows
                    if batch.num_rows == 0:
                        continue
                    rows_in += batch.num_rows
                    good, bad = split_rejected(stage.process(batch))
                    restored.write(frag.split, good)
                    rejects.write(frag.split, bad)
                    kept, rejected = kept + good.num_rows, rejected + bad.num_rows
                if left is not None and left <= 0:
                    break
        else:
            rows_in, kept, rejected = _run_units(source, out, stage, batch_size, engine, workers, source_spec,
                                                 address, restored, rejects)  # fmt: skip
    finally:
        restored.close()
        rejects.close()
    if rows_in != kept + rejected:  # the contract of the stage: no row is lost
        raise AssertionError(f"rows_in {rows_in} != restored {kept} + rejected {rejected}")
    if engine != "local":
        remove_work(out / WORK_DIR)
    summary = {"rows_in": rows_in, "rows_out": kept, "rejected": rejected, **stage.summary()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return summary


def _run_units(source, out, stage, batch_size, engine, workers, spec, address, restored, rejects) -> tuple[int, int, int]:
    """The processes/ray path: map the units, then merge their files and counts in unit order."""
    work = out / WORK_DIR
    unit = RehydrateUnit(fragment_rows(source, spec, batch_size), work, stage, units_key(stage))
    results = run_units(unit, len(source.fragments), work, engine=engine, workers=workers, address=address)
    stage.reset_counts()
    rows_in = kept = rejected = 0
    for u, r in enumerate(results):
        split = source.fragments[u].split
        for b in unit_batches(work, [u], "restored"):
            restored.write(split, b)
        for b in unit_batches(work, [u], "rejects"):
            rejects.write(split, b)
        rows_in, kept, rejected = rows_in + r["rows_in"], kept + r["rows_out"], rejected + r["rejected"]
        stage.merge_summary(r["summary"])
    return rows_in, kept, rejected


_STAGES: dict[str, Any] = {}


@dataclass
class RehydrateUnit:
    """One work unit of `rehydrate` on the processes/ray engines: restore fragment `index` into a unit dir."""

    rows: Any  # posttrain.runner.units.FragmentRows
    work: Path
    stage: Any  # RestorePrompts
    token: str  # names the stage in a worker's cache, so its key indexes are built once per process

    def __call__(self, index: int) -> dict[str, Any]:
        if self.token not in _STAGES:
            _STAGES.clear()
            _STAGES[self.token] = self.stage
        stage = _STAGES[self.token]
        stage.reset_counts()
        unit = UnitOutput(self.work, index)
        rows_in = kept = rejected = 0
        try:
            for batch in self.rows.batches(index):
                if batch.num_rows == 0:
                    continue
                rows_in += batch.num_rows
                good, bad = split_rejected(stage.process(batch))
                unit.write("restored", good)
                unit.write("rejects", bad)
                kept, rejected = kept + good.num_rows, rejected + bad.num_rows
            result = {"unit": index, "rows_in": rows_in, "rows_out": kept, "rejected": rejected, "summary": stage.summary()}
            unit.commit(result)
            return result
        except BaseException:
            unit.abort()
            raise
