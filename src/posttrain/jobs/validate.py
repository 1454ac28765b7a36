"""The validate runner: stream a source through the checks, write accepted/ and rejects/ parquet and
summary.json, and prove that no row was lost (`rows_in == accepted + rejected`).

Batches are judged in order, on this thread or on a pool of threads (`workers > 1`);
results are consumed in input order with a bounded number in flight, so the output bytes do not
depend on the worker count and memory does not grow with the input. Judging one batch lives in
`validate_judge.py`, the summary and its parsers in `validate_summary.py`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from posttrain.io.outdir import owns_output
from posttrain.io.parquet import PartWriter
from posttrain.io.sources import SourceSpec, source_batches
from posttrain.io.sources.reader import ReadAhead
from posttrain.jobs.validate_judge import (
    ACCEPTED_SCHEMA,
    EXAMPLES_PER_CODE,
    REJECTS_SCHEMA,
    Judged,
    judge_batch,
    judged_stream,
    snippet,
)
from posttrain.jobs.validate_summary import (
    SEVERITIES,
    Totals,
    ValidateSummary,
    check_codes,
    finish_summary,
    parse_fail_on,
    parse_severity,
)
from posttrain.progress import OnProgress, reporter
from posttrain.runner.units import (
    LOCAL,
    WORK_DIR,
    FragmentRows,
    UnitOutput,
    fragment_rows,
    remove_work,
    run_units,
    unit_batches,
)
from posttrain.stage import Severity, closing
from posttrain.stages.checks import Check, default_checks

__all__ = [
    "ACCEPTED_SCHEMA",
    "EXAMPLES_PER_CODE",
    "REJECTS_SCHEMA",
    "SEVERITIES",
    "Judged",
    "ValidateSummary",
    "ValidateUnit",
    "check_codes",
    "judge_batch",
    "judged_stream",
    "parse_fail_on",
    "parse_severity",
    "run_validate",
    "snippet",
]


@dataclass
class ValidateUnit:
    """One work unit of `validate` on the processes/ray engines: judge fragment `index` into a unit dir."""

    rows: FragmentRows
    work: Path
    checks: list[Check]
    overrides: dict[str, Severity] | None = None

    def __call__(self, index: int) -> dict[str, Any]:
        writer = UnitOutput(self.work, index)
        totals = Totals()
        with closing(self.checks):  # a worker may hold math-verify processes: stop them per unit
            try:
                for n, judged in judged_stream(self.rows.batches(index), self.checks, self.overrides):
                    writer.write("accepted", judged.accepted)
                    writer.write("rejects", judged.rejected)
                    totals.add(n, judged)
                result = {"unit": index, **totals.to_json()}
                writer.commit(result)
                return result
            except BaseException:
                writer.abort()
                raise


@owns_output("validate")
def run_validate(
    source: Any,
    out_dir: str | Path,
    checks: list[Check] | None = None,
    fail_on: dict[str, float] | None = None,
    severity_overrides: dict[str, Severity] | None = None,
    on_progress: OnProgress | None = None,
    workers: int = 1,
    batch_size: int = 1024,
    rows_per_part: int = 100_000,
    engine: str = LOCAL,
    source_spec: SourceSpec | None = None,
    address: str | None = None,
    batches: Iterable[pa.RecordBatch] | None = None,
) -> ValidateSummary:
    """Validate `source` (a `posttrain.io.sources.Source`, or anything with `iter_batches`) into `out_dir`.

    `engine="local"` streams here, judging batches on `workers` threads; `processes`/`ray` run one
    unit per fragment on `workers` processes/CPUs (`source_spec` reopens the source there) and merge
    the units in order, so the files are the same bytes as a local run's. `batches`: `source`'s batches
    as `source_batches` gives them, already being read (the CLI starts reading before it imports the
    checks); used by the local engine.
    """
    checks = default_checks() if checks is None else checks
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    accepted = PartWriter(out / "accepted", ACCEPTED_SCHEMA, rows_per_file=rows_per_part)
    rejects = PartWriter(out / "rejects", REJECTS_SCHEMA, rows_per_file=rows_per_part)
    summary = ValidateSummary(checks=[type(c).__name__ for c in checks], fail_on=dict(fail_on or {}))
    totals = Totals()
    started = time.perf_counter()
    report = reporter(on_progress)
    report("validate", total=getattr(source, "num_rows", None))

    def advance(n: int) -> None:
        report("validate", advance=n)

    with closing(checks):  # the checks' helper processes stop when the run ends, however it ends
        if engine == LOCAL:
            ahead = None  # what this run starts it stops; `batches` given belong to the caller
            if batches is None:
                batches = ahead = ReadAhead(source_batches(source, batch_size), depth=2)
            try:
                for n, judged in judged_stream(batches, checks, severity_overrides, workers):
                    accepted.write(judged.accepted)
                    rejects.write(judged.rejected)
                    totals.add(n, judged)
                    advance(n)
            finally:
                if ahead is not None:
                    ahead.close()
        else:
            work = out / WORK_DIR
            unit = ValidateUnit(fragment_rows(source, source_spec, batch_size), work, checks, severity_overrides)
            n_units = len(source.fragments)

            def on_result(result: dict[str, Any]) -> None:
                totals.merge(result)
                advance(result["rows_in"])

            run_units(unit, n_units, work, engine=engine, workers=workers, address=address, on_result=on_result)
            for name, writer in (("accepted", accepted), ("rejects", rejects)):
                for batch in unit_batches(work, n_units, name):
                    writer.write(batch)
    accepted.close()
    rejects.close()
    summary.rows_in, summary.rows_with_warnings, summary.splits = totals.rows_in, totals.warn_rows, totals.splits
    summary.accepted, summary.rejected = accepted.rows, rejects.rows
    if summary.rows_in != summary.accepted + summary.rejected:  # the "nothing lost" proof
        raise AssertionError(f"rows lost: {summary.rows_in} in, {summary.accepted} + {summary.rejected} out")
    if engine != LOCAL:
        remove_work(out / WORK_DIR)
    finish_summary(summary, checks, totals.counts, totals.examples, severity_overrides, started)
    (out / "summary.json").write_text(summary.to_json() + "\n", encoding="utf-8")
    return summary

