"""The map phase of `prepare`: one fragment in, one unit directory out.

Rows flow: read (unreadable rows become reject rows) -> row stages (rehydrate, checks,
decontamination, filters: they only add reason codes) -> rows with an error reason go to
`rejects` -> render -> tokenize (+ mask verification; more reasons) -> the documents are spooled
for packing and one small index row per document is kept for the reduce phase (dedup, mixing).

Everything a unit needs is in a picklable `UnitPlan`; tokenizers and renderers are built once
per process on first use, so the same plan runs in this process, a pool or a Ray worker.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.io.sources import SourceSpec
from posttrain.io.spool import UnitWriter
from posttrain.jobs.prepare.uuids import duplicate_marker
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stage import REASONS, REASONS_TYPE, Stage, rejected_mask, severity_of, with_reasons

KEPT_SCHEMA = NEMOTRON_SCHEMA.append(pa.field(REASONS, REASONS_TYPE))
REJECT_SCHEMA = KEPT_SCHEMA.append(pa.field("stage", pa.string()))
DOC_COLUMNS = ("uuid", "category", "input_ids", "loss_mask")
TOKENIZE_CHUNK = 64  # rows a tokenize call takes: small enough that a unit's last wait is short


@dataclass
class UnitPlan:
    """Everything the map phase needs, picklable."""

    source: SourceSpec
    work: Path
    row_stages: list[Stage]
    render_stage: Stage
    tokenize_stage: Stage
    index_stages: list[Any] = field(default_factory=list)  # objects with .index_columns(batch) -> dict
    unit_limits: list[int | None] = field(default_factory=list)
    severity: dict[str, str] = field(default_factory=dict)
    batch_size: int = 512
    duplicate_uuids: dict[int, dict[str, bool]] = field(default_factory=dict)  # set by jobs.prepare.uuids
    # names this run's listing of the source in a process's cache: another run in the same process
    # (files changed since, or another source whose spec object got the same id) never reuses it
    run_token: str = field(default_factory=lambda: os.urandom(8).hex())

    def __call__(self, index: int) -> dict[str, Any]:
        return process_unit(self, index)


_SOURCE_CACHE: dict[str, Any] = {}


def _source_for(plan: UnitPlan):
    key = plan.run_token
    if key not in _SOURCE_CACHE:
        _SOURCE_CACHE.clear()
        _SOURCE_CACHE[key] = plan.source.open()
    return _SOURCE_CACHE[key]


def _reject_rows(batch: pa.RecordBatch, stage: str) -> pa.RecordBatch:
    batch = with_reasons(batch)
    cols = [batch.column(n) if n in batch.schema.names else pa.nulls(batch.num_rows, f.type) for n, f in
            ((f.name, f) for f in REJECT_SCHEMA if f.name != "stage")]
    cols.append(pa.array([stage] * batch.num_rows, pa.string()))
    return pa.RecordBatch.from_arrays([c.cast(f.type) for c, f in zip(cols, REJECT_SCHEMA, strict=True)], schema=REJECT_SCHEMA)


def _count_reasons(batch: pa.RecordBatch, counts: Counter) -> None:
    if REASONS not in batch.schema.names or batch.num_rows == 0:
        return
    col = batch.column(REASONS)
    flat = pc.list_flatten(col)
    if len(flat) == 0:
        return
    cats = pc.take(batch.column("category"), pc.list_parent_indices(col)).to_pylist()
    for code, cat in zip(flat.to_pylist(), cats, strict=True):
        counts[f"{cat}\t{code}"] += 1


def process_unit(plan: UnitPlan, index: int) -> dict[str, Any]:
    """Run the map phase over fragment `index`; returns the unit's counts (also in result.json)."""
    delay = float(os.environ.get("POSTTRAIN_FAULT_UNIT_DELAY_S", "0") or 0)
    if delay:  # fault injection for the crash/resume test: slow units down so a kill lands mid-run
        time.sleep(delay)
    src = _source_for(plan)
    frag = src.fragments[index]
    limit = plan.unit_limits[index] if plan.unit_limits else None
    writer = UnitWriter(plan.work, index)
    take_render_counts = getattr(plan.render_stage, "take_counts", dict)
    take_render_counts()  # counts start with this unit (a failed earlier attempt left its own)
    counts = {"rows_in": 0, "rejected": 0, "docs": 0, "tokens": 0, "trained_tokens": 0}
    reasons: Counter = Counter()
    first_reasons: Counter = Counter()
    rows_in_by_split: Counter = Counter()
    dups = duplicate_marker(plan, index)
    try:
        # Tokenizing (tiktoken, which releases the GIL) runs on a thread while this one reads, checks
        # and renders the next batch: on two cores that hides most of the encoding. It goes in chunks
        # of TOKENIZE_CHUNK rows, so that little is left to wait for when a unit's last batch is
        # rendered. Outputs are written in the serial order (batch k's tokenized rows, then batch
        # k+1's row rejects), so the unit's files hold the same rows in the same order.
        with ThreadPoolExecutor(1, thread_name_prefix="tokenize") as pool:
            tok = plan.tokenize_stage
            pool.submit(getattr, tok, "tokenizer", None)  # loads while the first batch is checked
            pending: deque[_Chunk] = deque()
            for n_batch, batch in enumerate(src.iter_fragment(frag, plan.batch_size, with_reasons=True)):
                if limit is not None:
                    if counts["rows_in"] >= limit:
                        break
                    batch = batch.slice(0, limit - counts["rows_in"])
                counts["rows_in"] += batch.num_rows
                rows_in_by_split.update(batch.column("category").to_pylist())
                # A unit's first batch goes through the row stages a chunk at a time, so the tokenize
                # thread starts after one chunk instead of idling through the whole batch (units of a
                # few hundred rows are mostly that start and the wait at their end). The stages judge
                # row by row: slicing changes no reason.
                step = TOKENIZE_CHUNK if n_batch == 0 else max(batch.num_rows, 1)
                submitted: list[_Chunk] = []
                rejected_parts = []
                for at in range(0, batch.num_rows, step):
                    rejected = _judge_and_submit(plan, batch.slice(at, step), dups, pool, submitted, reasons)
                    if rejected is not None:
                        rejected_parts.append(rejected)
                while pending:
                    rows, toks = _take(pending, tok)
                    _process_tokenized(plan, rows, toks, writer, counts, reasons, first_reasons)
                if rejected_parts:
                    rejected = pa.concat_batches(rejected_parts)
                    writer.write("rejects", rejected)
                    first_reasons.update(first_error_reasons(rejected, plan.severity))
                    counts["rejected"] += rejected.num_rows
                pending.extend(submitted)
            while pending:
                rows, toks = _take(pending, tok)
                _process_tokenized(plan, rows, toks, writer, counts, reasons, first_reasons)
        result = {
            "unit": index,
            "fragment": frag.place,
            "split": frag.split,
            **counts,
            "rows_in_by_split": dict(sorted(rows_in_by_split.items(), key=lambda kv: str(kv[0]))),
            "reasons": dict(sorted(reasons.items())),
            "rejected_by_reason": dict(sorted(first_reasons.items())),
            "render": take_render_counts(),  # reasoning-off cases and rows losing content (render stage)
        }
        writer.commit(result)
        return result
    except BaseException:
        writer.abort()
        raise


@dataclass
class _Chunk:
    """TOKENIZE_CHUNK rows: the judged rows, their rendering, the tokenize thread's future."""

    rows: pa.RecordBatch
    rendered: pa.RecordBatch
    future: Future
    done: pa.RecordBatch | None = None  # tokenized on the waiting thread instead


def _judge_and_submit(plan: UnitPlan, batch: pa.RecordBatch, dups, pool: ThreadPoolExecutor,
                      submitted: list[_Chunk], reasons: Counter) -> pa.RecordBatch | None:
    """Row stages, the rejects split and render over `batch`; its kept rows go to the tokenize thread
    in chunks (appended to `submitted`). Returns the rejected rows, or None."""
    for stage in plan.row_stages:
        batch = stage.process(batch)
    if dups is not None:  # later rows of a uuid an earlier row has (see jobs.prepare.uuids)
        batch = dups(batch)
    _count_reasons(batch, reasons)
    bad = rejected_mask(batch, plan.severity)
    rejected = _reject_rows(batch.filter(pa.array(bad)), "rows") if bad.any() else None
    if rejected is not None:
        batch = batch.filter(pa.array(~bad))
    if batch.num_rows:
        rendered = plan.render_stage.process(batch)
        for i in range(0, batch.num_rows, TOKENIZE_CHUNK):
            part = rendered.slice(i, TOKENIZE_CHUNK)
            submitted.append(_Chunk(batch.slice(i, TOKENIZE_CHUNK), part, pool.submit(plan.tokenize_stage.process, part)))
    return rejected


def _take(pending: deque[_Chunk], tok: Stage) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """The oldest chunk's rows and tokenized batch. Rather than wait for it, this thread tokenizes
    the newest chunk the tokenize thread has not started (so both threads encode at a unit's end),
    once the tokenizer is loaded and its fast path verified: before that, the first chunk of the run
    alone decides the fast path, as in a serial run. A chunk's batch is a function of its rows only,
    whichever thread makes it."""
    head = pending[0]
    while head.done is None and not head.future.done() and getattr(tok, "ready", False):
        spare = next((c for c in reversed(pending) if c.done is None and c.future.cancel()), None)
        if spare is None:
            break
        spare.done = tok.process(spare.rendered)
    pending.popleft()
    return head.rows, head.done if head.done is not None else head.future.result()


def first_error_reasons(rejected: pa.RecordBatch, severity: dict[str, str]) -> Counter:
    """Each rejected row counted once, under its first error-severity reason."""
    out: Counter = Counter()
    for rs in rejected.column(REASONS).to_pylist():
        out[next((r for r in rs or [] if severity_of(r, severity) == "error"), "unknown")] += 1
    return out


def _kept_rows(rows: pa.RecordBatch) -> pa.RecordBatch:
    rows = with_reasons(rows)
    return pa.RecordBatch.from_arrays([rows.column(f.name) for f in KEPT_SCHEMA], schema=KEPT_SCHEMA)


def _process_tokenized(
    plan: UnitPlan,
    rows: pa.RecordBatch,
    toks: pa.RecordBatch,
    writer: UnitWriter,
    counts: dict,
    reasons: Counter,
    first_reasons: Counter,
) -> None:
    """Route tokenize-stage rejects (by uuid, since `split` overflow can add rows) and spool the rest."""
    # Reasons the render/tokenize stages added on top of those the row already had.
    tok_bad = rejected_mask(toks, plan.severity)
    if tok_bad.any():
        bad_uuids = pc.unique(toks.column("uuid").filter(pa.array(tok_bad)))
        row_bad = pc.is_in(rows.column("uuid"), value_set=bad_uuids)
        bad_rows = rows.filter(row_bad)
        # the rejected row carries the new reasons of its tokenized piece(s)
        new = {}
        for u, rs in zip(toks.column("uuid").filter(pa.array(tok_bad)).to_pylist(),
                         toks.column(REASONS).filter(pa.array(tok_bad)).to_pylist(), strict=True):
            new.setdefault(u, [])
            new[u].extend(r for r in rs if r not in new[u])
        fixed = with_reasons(bad_rows).set_column(
            with_reasons(bad_rows).schema.get_field_index(REASONS),
            pa.field(REASONS, REASONS_TYPE),
            pa.array([new[u] for u in bad_rows.column("uuid").to_pylist()], REASONS_TYPE),
        )
        _count_reasons(_only_new_reasons(fixed, rows), reasons)
        rejected = _reject_rows(fixed, "tokenize")
        writer.write("rejects", rejected)
        first_reasons.update(first_error_reasons(rejected, plan.severity))
        counts["rejected"] += bad_rows.num_rows
        rows = rows.filter(pc.invert(row_bad))
        # every piece of a rejected row goes, so a row is never half in the output
        keep = pc.invert(pc.is_in(toks.column("uuid"), value_set=bad_uuids))
        toks = toks.filter(keep)
    if toks.num_rows == 0:
        return
    writer.write("kept", _kept_rows(rows))  # the rows behind the documents, for the reduce phase
    has_part = "part" in toks.schema.names
    writer.write_docs(toks.select(list(DOC_COLUMNS) + (["part"] if has_part else [])), id_bytes=_spool_id_bytes(plan))
    n_tok = pc.list_value_length(toks.column("input_ids")).to_numpy(zero_copy_only=False).astype(np.int64)
    n_train = pc.sum(pc.list_flatten(toks.column("loss_mask")).cast(pa.int64())).as_py() or 0
    counts["docs"] += toks.num_rows
    counts["tokens"] += int(n_tok.sum())
    counts["trained_tokens"] += int(n_train)
    cols: dict[str, pa.Array] = {
        "uuid": toks.column("uuid"),
        "category": toks.column("category"),
        "num_tokens": pa.array(n_tok, pa.int64()),
    }
    if has_part:
        cols["part"] = toks.column("part")
    for stage in plan.index_stages:
        cols.update(stage.index_columns(rows, toks))
    writer.write("index", pa.RecordBatch.from_pydict(cols))


def _spool_id_bytes(plan: UnitPlan) -> int:
    """Bytes a token id takes in the spool: the narrowest width the tokenizer's vocabulary allows."""
    from posttrain.io.spool_codec import id_width

    tokenizer = getattr(plan.tokenize_stage, "tokenizer", None)
    return id_width(getattr(tokenizer, "vocab_size", None))


def _only_new_reasons(fixed: pa.RecordBatch, rows: pa.RecordBatch) -> pa.RecordBatch:
    """The reasons the tokenize stage added (row-stage reasons were already counted)."""
    before = dict(zip(rows.column("uuid").to_pylist(), with_reasons(rows).column(REASONS).to_pylist(), strict=True))
    new = [[r for r in rs if r not in (before.get(u) or [])] for u, rs in
           zip(fixed.column("uuid").to_pylist(), fixed.column(REASONS).to_pylist(), strict=True)]
    return fixed.set_column(fixed.schema.get_field_index(REASONS), pa.field(REASONS, REASONS_TYPE), pa.array(new, REASONS_TYPE))
