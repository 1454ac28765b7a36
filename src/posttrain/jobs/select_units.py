"""`posttrain select` on the processes and ray engines: the same bytes as the local run.

The local run streams its source three times (count, refine, draw). Here each pass is one work
unit per fragment on the job's one engine:

1. count: per-group rows, tokens and hash histograms of the unit's candidate rows; the driver adds
   the units up in unit order (so groups keep the order a stream meets them) and plans the draw;
2. refine (only when a group's boundary falls inside a histogram bin): the hashes in that bin;
3. draw: filters and the per-row hash threshold (`select_batch`, the local run's own code) write
   the unit's rejected rows and chosen rows into its folder;

then the driver merges the units' files in unit order: rejects through the one parquet writer,
chosen rows through the shuffle (ordered by hash(seed, uuid), so it does not matter where a row
was drawn) or straight to `kept/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from posttrain.config import SelectConfig
from posttrain.io.outdir import owns_output
from posttrain.io.parquet import PartWriter
from posttrain.io.spool import unit_dir
from posttrain.jobs.passes import Passes
from posttrain.jobs.select import finish_select, make_shuffler, new_counts, select_batch
from posttrain.progress import OnProgress, reporter
from posttrain.reduce.dedup.partition import commit_unit
from posttrain.reduce.mix import (
    GroupStats,
    KeyPlan,
    count_batch,
    finish_refine,
    gathered_refined,
    make_plan,
    merged_unit_stats,
    plan_keys,
    refined_arrays,
    stats_to_arrays,
)
from posttrain.runner.session import open_engine
from posttrain.runner.units import WORK_DIR, FragmentRows, UnitOutput, remove_work, unit_batches

PHASE = "select"


@dataclass
class SelectUnit:
    """One pass of `select` over fragment `u` (see the module docstring)."""

    rows: FragmentRows
    work: Path
    config: SelectConfig
    step: Literal["count", "refine", "draw"]
    plans: dict[str, KeyPlan] | None = None
    refine: dict[str, int] | None = None

    def __call__(self, u: int) -> dict[str, Any]:
        if self.step == "count":
            stats: dict[str, GroupStats] = {}
            nbytes = n = 0
            for batch in self.rows.batches(u):
                b, r = count_batch(batch, self.config, stats)
                nbytes, n = nbytes + b, n + r
            result = {"unit": u, "keys": list(stats), "nbytes": nbytes, "rows": n}
            return commit_unit(self.work, u, result, stats_to_arrays(stats))
        if self.step == "refine":
            assert self.plans is not None and self.refine is not None
            keys, arrays = refined_arrays(self.rows.batches(u), self.config, self.plans, self.refine)
            return commit_unit(self.work, u, {"unit": u, "keys": keys}, arrays)
        return self._draw(u)

    def _draw(self, u: int) -> dict[str, Any]:
        writer = UnitOutput(self.work, u)
        achieved: dict[str, list[int]] = {}
        counts = new_counts()
        try:
            for batch in self.rows.batches(u):
                if not (writer.dir / "schema.arrow").exists():  # the stream's schema, for empty outputs
                    (writer.dir / "schema.arrow").write_bytes(batch.schema.serialize().to_pybytes())
                rejected, chosen = select_batch(batch, self.config, self.plans or {}, achieved, counts)
                writer.write("rejects", rejected)
                if chosen is not None:
                    writer.write("chosen", chosen)
            result = {"unit": u, "counts": counts, "achieved": [[k, v[0], v[1]] for k, v in achieved.items()],
                      "rows_in": counts["rows_in"]}
            writer.commit(result)
        except BaseException:
            writer.abort()
            raise
        return result


@owns_output("select")
def run_select_on_engine(source: Any, out_dir: str | Path, config: SelectConfig | None = None, *,
                         on_progress: OnProgress | None = None, engine: str = "processes", workers: int = 2,
                         address: str | None = None, source_spec: Any = None) -> dict[str, Any]:
    """`run_select` with its passes as work units on `engine` (see the module docstring); `source_spec`
    reopens the source in the workers."""
    from posttrain.runner.units import fragment_rows

    config = config or SelectConfig()
    out = Path(out_dir)
    report = reporter(on_progress)
    work = out / WORK_DIR
    rows = fragment_rows(source, source_spec, config.batch_size)
    units = list(range(len(source.fragments)))

    def unit(step: str, **kw: Any) -> SelectUnit:
        return SelectUnit(rows, work / step, config, step, **kw)  # type: ignore[arg-type]

    with open_engine(engine, workers, address) as eng:
        passes = Passes(eng, report)
        report(PHASE, total=getattr(source, "num_rows", None))
        stats: dict[str, GroupStats] = {}
        row_bytes = 0.0
        if config.mix is not None or config.shuffle:
            results = passes.run("count", unit("count"), units, work / "count", phase="select: count")
            stats = merged_unit_stats(work / "count", units, config)
            nbytes, n = sum(r["nbytes"] for r in results), sum(r["rows"] for r in results)
            row_bytes = nbytes / n if n else 0.0
        plans: dict[str, KeyPlan] = {}
        if config.mix is None and stats:
            plans = make_plan(None, config, stats)  # every candidate once: no pass over the source
        elif config.mix is not None:
            plans, refine = plan_keys(config, stats)
            if refine:
                passes.run("refine", unit("refine", plans=plans, refine=refine), units, work / "refine",
                           phase="select: count")
                finish_refine(plans, refine, gathered_refined(work / "refine", units, refine), stats)
        drawn = passes.run("draw", unit("draw", plans=plans), units, work / "draw", phase=PHASE, rows="rows_in")
    shuffler = make_shuffler(out, config, plans, stats, row_bytes)
    kept, rejects = PartWriter(out / "kept"), PartWriter(out / "rejects")
    achieved: dict[str, list[int]] = {}
    counts = new_counts()
    for r in drawn:
        for k, v in r["counts"].items():
            counts[k] += v
        for key, n_rows, n_tokens in r["achieved"]:
            got = achieved.setdefault(key, [0, 0])
            got[0] += n_rows
            got[1] += n_tokens
    in_schema = None
    for u in units:
        path = unit_dir(work / "draw", u) / "schema.arrow"
        if path.exists():
            in_schema = pa.ipc.read_schema(pa.py_buffer(path.read_bytes()))
            break
    for batch in unit_batches(work / "draw", units, "rejects"):
        rejects.write(batch)
    for batch in unit_batches(work / "draw", units, "chosen"):
        chosen = pa.Table.from_batches([batch])
        shuffler.write(chosen) if shuffler else kept.write(chosen)
    summary = finish_select(out, config, plans, achieved, counts, kept, rejects, shuffler, in_schema)
    remove_work(work)
    return summary
