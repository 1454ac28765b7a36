"""Judging one batch of `validate`: run the checks, route rows to accepted or rejected (with a
snippet), count codes per split and keep the first examples; `judged_stream` does it for a stream
of batches, in input order, on threads.

This is the pure part of the job (the same batch and checks give the same `Judged`); `validate.py`
owns the outputs, the units and the summary.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.io.parquet import conform
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stage import REASONS, REASONS_TYPE, Severity, rejected_mask, severity_of, with_reasons
from posttrain.stages.checks import Check, check_for_code, mask_private
from posttrain.stages.checks._base import final_answer_of_row, shorten

ACCEPTED_SCHEMA = NEMOTRON_SCHEMA.append(pa.field(REASONS, REASONS_TYPE))
REJECTS_SCHEMA = ACCEPTED_SCHEMA.append(pa.field("snippet", pa.string()))
EXAMPLES_PER_CODE = 3


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


def judge_batch(
    batch: pa.RecordBatch, checks: list[Check], overrides: dict[str, Severity] | None = None
) -> Judged:
    """Run the checks over one batch and route its rows (pure: the same batch gives the same result)."""
    batch = conform(with_reasons(batch), ACCEPTED_SCHEMA)
    pre_rejected = rejected_mask(batch, overrides)
    # rows the source could not read arrive already rejected (source.*): nothing to check
    if batch.num_rows and not pre_rejected.all():
        # a check that can work elsewhere starts now (the code check's parse, in a worker process) and
        # finishes at its turn, so the reasons come in the order of `checks` as with `process` alone
        finishers = [check.begin(batch) for check in checks]
        for check, finish in zip(checks, finishers, strict=True):
            batch = finish(batch) if finish is not None else check.process(batch)
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
