"""The validate runner: stream a source through the checks, write accepted/ and rejects/ parquet and
summary.json, and prove that no row was lost (`rows_in == accepted + rejected`).

Batches are judged in order, on this thread or on a pool of threads (`workers > 1`);
results are consumed in input order with a bounded number in flight, so the output bytes do not
depend on the worker count and memory does not grow with the input.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.errors import PosttrainError
from posttrain.io.outdir import owns_output
from posttrain.io.parquet import PartWriter, conform
from posttrain.io.sources import SourceSpec, source_batches
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
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stage import (
    REASONS,
    REASONS_TYPE,
    Severity,
    reason_codes,
    rejected_mask,
    severity_of,
    with_reasons,
)
from posttrain.stages.checks import Check, check_for_code, default_checks, mask_private
from posttrain.stages.checks._base import final_answer_of_row, shorten

ACCEPTED_SCHEMA = NEMOTRON_SCHEMA.append(pa.field(REASONS, REASONS_TYPE))
REJECTS_SCHEMA = ACCEPTED_SCHEMA.append(pa.field("snippet", pa.string()))
EXAMPLES_PER_CODE = 3
SEVERITIES = ("error", "warn")


@dataclass
class Judged:
    """One judged batch: the rows to keep, the rows to reject (with snippets), and its counts."""

    accepted: pa.RecordBatch
    rejected: pa.RecordBatch
    rows: dict[str, int]  # split -> rows in
    rejected_rows: dict[str, int]
    warn_rows: int
    counts: dict[tuple[str, str], int]  # (code, split) -> rows carrying the code
    examples: dict[tuple[str, str], list[dict[str, str]]]


@dataclass
class ValidateSummary:
    """What `summary.json` holds."""

    rows_in: int = 0
    accepted: int = 0
    rejected: int = 0
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    severity: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    examples: dict[str, dict[str, list[dict[str, str]]]] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    fail_on: dict[str, float] = field(default_factory=dict)
    exceeded: list[dict[str, Any]] = field(default_factory=list)
    rows_with_warnings: int = 0
    seconds: float = 0.0

    def rate(self, key: str) -> float:
        """Share of input rows flagged by a code, or by any code of a severity ("error"/"warn")."""
        if not self.rows_in:
            return 0.0
        if key == "error":
            return self.rejected / self.rows_in
        if key == "warn":
            return self.rows_with_warnings / self.rows_in
        return sum(self.counts.get(key, {}).values()) / self.rows_in

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False, sort_keys=False)


# ---------------------------------------------------------------- judging one batch


def judge_batch(
    batch: pa.RecordBatch, checks: list[Check], overrides: dict[str, Severity] | None = None
) -> Judged:
    """Run the checks over one batch and route its rows (pure: the same batch gives the same result)."""
    batch = conform(with_reasons(batch), ACCEPTED_SCHEMA)
    pre_rejected = rejected_mask(batch, overrides)
    # rows the source could not read arrive already rejected (source.*): nothing to check
    if batch.num_rows and not pre_rejected.all():
        for check in checks:
            batch = check.process(batch)
    reject = rejected_mask(batch, overrides)
    splits = pc.fill_null(batch.column("category"), "unknown").to_pylist()
    row_codes = [list(dict.fromkeys(r or [])) for r in batch.column(REASONS).to_pylist()]
    counts: dict[tuple[str, str], int] = defaultdict(int)
    examples: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    warn_rows = 0
    rows_by_split: dict[str, int] = defaultdict(int)
    rejected_by_split: dict[str, int] = defaultdict(int)
    pylist_cache: dict[int, dict[str, Any]] = {}

    def row_at(i: int) -> dict[str, Any]:
        if i not in pylist_cache:
            pylist_cache[i] = batch.slice(i, 1).to_pylist()[0]
        return pylist_cache[i]

    for i, (split, codes) in enumerate(zip(splits, row_codes, strict=True)):
        rows_by_split[split] += 1
        rejected_by_split[split] += int(reject[i])
        if any(severity_of(c, overrides) == "warn" for c in codes):
            warn_rows += 1
        for code in codes:
            counts[(code, split)] += 1
            if len(examples[(code, split)]) < EXAMPLES_PER_CODE:
                row = row_at(i)
                examples[(code, split)].append({"uuid": row.get("uuid") or "", "snippet": snippet(row, code, checks)})
    snippets = []
    for i in np.nonzero(reject)[0]:
        codes = row_codes[int(i)]
        first = next((c for c in codes if severity_of(c, overrides) == "error"), codes[0])
        snippets.append(snippet(row_at(int(i)), first, checks))
    mask = pa.array(reject)
    rejected = batch.filter(mask)
    rejected = rejected.append_column(pa.field("snippet", pa.string()), pa.array(snippets, pa.string()))
    return Judged(
        accepted=batch.filter(pc.invert(mask)),
        rejected=rejected,
        rows=dict(rows_by_split),
        rejected_rows=dict(rejected_by_split),
        warn_rows=warn_rows,
        counts=dict(counts),
        examples=dict(examples),
    )


def snippet(row: dict[str, Any], code: str, checks: Iterable[Check]) -> str:
    """The offending part of `row` for `code`, private spans masked."""
    check = check_for_code(checks, code)
    if check is not None:
        text = check.describe(row, code)
    elif row.get("metadata") and str(row["metadata"]).startswith('{"source_error"'):
        text = shorten(str(row["metadata"]))
    else:
        text = shorten(final_answer_of_row(row))
    return mask_private(text)


# ---------------------------------------------------------------- parallel judging


def judged_stream(
    batches: Iterable[pa.RecordBatch],
    checks: list[Check],
    overrides: dict[str, Severity] | None,
    workers: int = 1,
) -> Iterator[tuple[int, Judged]]:
    """(rows in, judged) per batch, in input order; `workers > 1` judges batches on threads.

    Threads, not processes: the heavy part of every check is Arrow compute, which releases the GIL,
    so threads use the cores without pickling 20 MB batches to and fro or paying a process start
    (measured: a spawn pool was slower than one thread on the 6,000-row benchmark). math-verify
    still runs in its own processes (see `posttrain.stages.checks.verify_pool`).
    """
    if workers <= 1:
        for b in batches:
            yield b.num_rows, judge_batch(b, checks, overrides)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="validate") as pool:
        inflight: deque[tuple[int, Future[Judged]]] = deque()
        for b in batches:
            inflight.append((b.num_rows, pool.submit(judge_batch, b, checks, overrides)))
            if len(inflight) >= 2 * workers:  # bounded: at most 2 batches per worker in memory
                n, fut = inflight.popleft()
                yield n, fut.result()
        while inflight:
            n, fut = inflight.popleft()
            yield n, fut.result()


# ---------------------------------------------------------------- the run


@dataclass
class _Totals:
    """What summary.json adds up over batches (or units, merged in unit order): counts add, and the
    first EXAMPLES_PER_CODE examples per code and split are kept, as one stream would keep them."""

    rows_in: int = 0
    warn_rows: int = 0
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    examples: dict[str, dict[str, list[dict[str, str]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )

    def add(self, n: int, judged: Judged) -> None:
        self._fold(n, judged.warn_rows, {s: (k, judged.rejected_rows.get(s, 0)) for s, k in judged.rows.items()},
                   judged.counts.items(), judged.examples.items())

    def merge(self, unit: dict[str, Any]) -> None:
        """Fold in a unit's `to_json()`."""
        counts = [((c, s), k) for c, by in unit["counts"].items() for s, k in by.items()]
        examples = [((c, s), ex) for c, by in unit["examples"].items() for s, ex in by.items()]
        splits = {s: (v["rows_in"], v["rejected"]) for s, v in unit["splits"].items()}
        self._fold(unit["rows_in"], unit["warn_rows"], splits, counts, examples)

    def _fold(self, n: int, warn_rows: int, splits: dict[str, tuple[int, int]], counts: Iterable, examples: Iterable) -> None:
        self.rows_in += n
        self.warn_rows += warn_rows
        for split, (k, rejected) in splits.items():
            s = self.splits.setdefault(split, {"rows_in": 0, "accepted": 0, "rejected": 0})
            s["rows_in"] += k
            s["rejected"] += rejected
            s["accepted"] = s["rows_in"] - s["rejected"]
        for (code, split), k in counts:
            self.counts[code][split] += k
        for (code, split), ex in examples:
            room = EXAMPLES_PER_CODE - len(self.examples[code][split])
            self.examples[code][split].extend(ex[: max(0, room)])

    def to_json(self) -> dict[str, Any]:
        return {"rows_in": self.rows_in, "warn_rows": self.warn_rows, "splits": self.splits,
                "counts": {c: dict(v) for c, v in self.counts.items()},
                "examples": {c: dict(v) for c, v in self.examples.items()}}


@dataclass
class ValidateUnit:
    """One work unit of `validate` on the processes/ray engines: judge fragment `index` into a unit dir."""

    rows: FragmentRows
    work: Path
    checks: list[Check]
    overrides: dict[str, Severity] | None = None

    def __call__(self, index: int) -> dict[str, Any]:
        writer = UnitOutput(self.work, index)
        totals = _Totals()
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
        finally:
            for check in self.checks:  # a worker may hold math-verify processes: stop them per unit
                check.close()


def parse_fail_on(specs: Iterable[str] | None) -> dict[str, float]:
    """`["error=0.05", "think.unclosed=0"]` -> {key: rate}; a key is a reason code or a severity.

    >>> parse_fail_on(["error=0.05", "math.mismatch=0.1%"])
    {'error': 0.05, 'math.mismatch': 0.001}
    """
    out: dict[str, float] = {}
    for spec in specs or []:
        for item in spec.split(","):
            key, sep, value = item.strip().partition("=")
            try:
                rate = float(value.rstrip("%")) / (100 if value.endswith("%") else 1)
            except ValueError:
                rate = -1.0
            if not sep or not key or not 0 <= rate <= 1:
                raise PosttrainError(
                    f"bad --fail-on {item.strip()!r}", place="--fail-on", fix="write CODE_OR_SEVERITY=RATE, e.g. error=0.05"
                )
            out[key.strip()] = rate
    return out


def parse_severity(specs: Iterable[str] | None) -> dict[str, Severity]:
    """`["privacy.email=error"]` -> {code: severity}.

    >>> parse_severity(["privacy.email=error,math.mismatch=warn"])
    {'privacy.email': 'error', 'math.mismatch': 'warn'}
    """
    out: dict[str, Severity] = {}
    for spec in specs or []:
        for item in spec.split(","):
            code, _, sev = item.strip().partition("=")
            if sev not in SEVERITIES or not code:
                raise PosttrainError(f"bad --severity {item.strip()!r}", place="--severity", fix="write CODE=error or CODE=warn")
            out[code.strip()] = sev  # type: ignore[assignment]
    return out


def check_codes(keys: Iterable[str], place: str) -> None:
    """Refuse reason codes nobody declared (a typo would otherwise be ignored without a word)."""
    import difflib

    known = reason_codes()
    unknown = [k for k in keys if k not in known and k not in SEVERITIES]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(known), n=3)
        raise PosttrainError(
            f"unknown reason code{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}", place=place,
            fix=(f"did you mean {', '.join(close)}? " if close else "") + "codes are listed in summary.json's messages",
        )


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
) -> ValidateSummary:
    """Validate `source` (a `posttrain.io.sources.Source`, or anything with `iter_batches`) into `out_dir`.

    `engine="local"` streams here, judging batches on `workers` threads; `processes`/`ray` run one
    unit per fragment on `workers` processes/CPUs (`source_spec` reopens the source there) and merge
    the units in order, so the files are the same bytes as a local run's.
    """
    checks = default_checks() if checks is None else checks
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    accepted = PartWriter(out / "accepted", ACCEPTED_SCHEMA, rows_per_file=rows_per_part)
    rejects = PartWriter(out / "rejects", REJECTS_SCHEMA, rows_per_file=rows_per_part)
    summary = ValidateSummary(checks=[type(c).__name__ for c in checks], fail_on=dict(fail_on or {}))
    totals = _Totals()
    started = time.perf_counter()
    report = reporter(on_progress)
    report("validate", total=getattr(source, "num_rows", None))

    def advance(n: int) -> None:
        report("validate", advance=n)

    with _closing(checks):
        if engine == LOCAL:
            for n, judged in judged_stream(source_batches(source, batch_size, prefetch_depth=2), checks, severity_overrides, workers):
                accepted.write(judged.accepted)
                rejects.write(judged.rejected)
                totals.add(n, judged)
                advance(n)
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
    _finish(summary, checks, totals.counts, totals.examples, severity_overrides, started)
    (out / "summary.json").write_text(summary.to_json() + "\n", encoding="utf-8")
    return summary


@contextmanager
def _closing(checks: list[Check]) -> Iterator[None]:
    """Stop the checks' helper processes (math-verify) when the run ends, however it ends."""
    try:
        yield
    finally:
        for check in checks:
            check.close()


def _finish(
    summary: ValidateSummary,
    checks: list[Check],
    counts: dict[str, dict[str, int]],
    examples: dict[str, dict[str, list[dict[str, str]]]],
    overrides: dict[str, Severity] | None,
    started: float,
) -> None:
    declared = reason_codes()
    codes = sorted({c for check in checks for c in check.codes} | set(counts))
    summary.counts = {c: dict(sorted(counts.get(c, {}).items())) for c in codes}
    summary.severity = {c: severity_of(c, overrides) for c in codes}
    summary.messages = {c: declared[c].message for c in codes if c in declared}
    summary.examples = {c: {s: v for s, v in sorted(examples[c].items())} for c in codes if c in examples}
    summary.splits = dict(sorted(summary.splits.items()))
    for key, limit in summary.fail_on.items():
        rate = summary.rate(key)
        if rate > limit:
            summary.exceeded.append({"key": key, "rate": round(rate, 6), "limit": limit})
    summary.seconds = round(time.perf_counter() - started, 3)
