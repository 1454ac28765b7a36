"""`tokenize_batch`: rendered rows -> token ids with an assistant-only loss mask, verified per row.

How a row is encoded: its text is cut at every template special token and every trained-span
boundary. Special ranges become their ids; the pieces between are encoded as ordinary text, all
pieces of the batch in one `encode_ordinary_batch` call. Cutting at span starts is also what
inference does: the prompt ends at the assistant header and generation starts a fresh token there.

The mask does not come from the pieces but independently from the ids: a lookup table of token
byte lengths, a cumulative sum for token start offsets, and a `searchsorted` in-span test, over
the whole batch at once. Then, per row, every contiguous run of trained tokens is decoded and must
equal its trained span's bytes (`mask.mismatch` otherwise); a row must train at least one token
(`mask.no_trained`) and every complete span must end on a template special token, the end of turn
(`mask.eot_untrained`). Nothing is passed on unverified.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa

from posttrain.io.tokenizer import Tokenizer
from posttrain.stage import REASONS, REASONS_TYPE, register_reason
from posttrain.stages.tokenize.normalized import normalize_rows
from posttrain.stages.tokenize.verify import verified_rows

Overflow = Literal["drop", "truncate", "split"]

register_reason("mask.no_trained", "error", "no token of the row is trained")
register_reason("mask.eot_untrained", "error", "a trained turn does not end on a trained end-of-turn token")
register_reason("mask.mismatch", "error", "the trained tokens do not decode to the trained text")

TOKENIZED_SCHEMA = pa.schema(
    [
        ("uuid", pa.string()),
        ("category", pa.string()),
        ("part", pa.int32()),
        ("input_ids", pa.list_(pa.int32())),
        ("loss_mask", pa.list_(pa.int8())),
        ("num_tokens", pa.int32()),
        ("num_trained", pa.int32()),
        (REASONS, REASONS_TYPE),
    ]
)

_VERIFY_SAMPLE = 64
# Each sampled piece is compared on its first characters only: the HF tokenizer on the 32 longest
# whole pieces of a batch (~100 KB each on real rows) took 0.75 s, most of a small run's tokenizer
# cost; 4 KB of real text still holds hundreds of pre-tokens, the unit both encoders split on.
_VERIFY_CHARS = 4096


def _ranges(column: pa.Array) -> list[list[tuple[int, int]]]:
    return [[(d["start"], d["end"]) for d in row or []] for row in column.to_pylist()]


def cut_points(size: int, spans: list[tuple[int, int]], specials: list[tuple[int, int]]) -> list[int]:
    """Sorted byte offsets where a row's text is cut into separately encoded pieces.

    >>> cut_points(10, [(4, 10)], [(0, 2), (8, 10)])
    [0, 2, 4, 8, 10]
    """
    cuts = {0, size}
    for a, b in spans:
        cuts.add(a)
        cuts.add(b)
    for a, b in specials:
        cuts.add(a)
        cuts.add(b)
    return sorted(c for c in cuts if 0 <= c <= size)


def _encode_rows(datas: list[bytes], spans, specials, tok: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Flat ids of all rows and the row offsets into them."""
    ordinary: list[str] = []
    plan: list[int] = []  # >= 0: index into `ordinary`; < 0: -(special id) - 1
    row_plan_end: list[int] = []
    for data, sp, sc in zip(datas, spans, specials, strict=True):
        special_at = dict(sc)
        cuts = cut_points(len(data), sp, sc)
        for a, b in zip(cuts, cuts[1:], strict=False):
            if special_at.get(a) == b:
                plan.append(-tok.special_id(data[a:b].decode("utf-8")) - 1)
            else:
                plan.append(len(ordinary))
                ordinary.append(data[a:b].decode("utf-8"))
        row_plan_end.append(len(plan))
    if tok.uses_fast_path and not tok.verified:
        # The longest pieces (real content) plus the first ones (template literals).
        longest = sorted(ordinary, key=len, reverse=True)[: _VERIFY_SAMPLE // 2]
        tok.verify_fast_path([t[:_VERIFY_CHARS] for t in longest + ordinary[: _VERIFY_SAMPLE // 2]])
    encoded = tok.encode_ordinary_arrays(ordinary)
    chunks = [encoded[p] if p >= 0 else np.array([-p - 1], np.int32) for p in plan]
    counts = np.array([len(c) for c in chunks], dtype=np.int64)
    plan_off = np.concatenate([[0], np.cumsum(counts)])
    row_off = plan_off[np.array([0, *row_plan_end], dtype=np.int64)]
    flat = np.concatenate(chunks) if chunks else np.zeros(0, np.int32)
    return flat, row_off


def trained_mask(starts: np.ndarray, span_starts: np.ndarray, span_ends: np.ndarray) -> np.ndarray:
    """Whether each token start offset lies in one of the sorted, disjoint spans.

    >>> trained_mask(np.array([0, 3, 5, 9]), np.array([3, 9]), np.array([5, 10])).tolist()
    [False, True, False, True]
    """
    idx = np.searchsorted(span_starts, starts, side="right") - 1
    safe = np.clip(idx, 0, None)
    inside = (idx >= 0) & (starts < (span_ends[safe] if len(span_ends) else starts))
    return inside


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges of the True runs of a boolean array."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def tokenize_batch(
    batch: pa.RecordBatch, tokenizer: Tokenizer, max_length: int = 16384, overflow: Overflow = "drop"
) -> pa.RecordBatch:
    """Tokenize a rendered batch (`posttrain.stages.render.RENDERED_SCHEMA`) into ids + verified loss masks.

    One output row per input row, except with `overflow="split"`, where a long multi-turn row
    becomes parts (`part` 0, 1, ...) cut at turn starts.
    """
    n = batch.num_rows
    names = batch.schema.names
    datas = [(t or "").encode("utf-8") for t in batch.column("text").to_pylist()]
    spans = _ranges(batch.column("spans"))
    specials = _ranges(batch.column("specials"))
    turns = batch.column("turns").to_pylist() if "turns" in names else [[] for _ in range(n)]
    old = batch.column(REASONS).to_pylist() if REASONS in names else [[] for _ in range(n)]
    uuids = batch.column("uuid").to_pylist()
    cats = batch.column("category").to_pylist() if "category" in names else [None] * n
    if tokenizer.normalizes:  # offsets on the text the tokenizer sees (Qwen: NFC), not the rendered one
        datas, spans, specials, turns = normalize_rows(datas, spans, specials, turns, tokenizer, cut_points)

    flat, row_off = _encode_rows(datas, spans, specials, tokenizer)
    lengths = tokenizer.token_bytes[flat]
    ends = np.cumsum(lengths)
    starts = ends - lengths
    base = np.concatenate([[0], ends])[row_off[:-1]]  # global byte offset where each row begins
    span_counts = np.array([len(s) for s in spans], dtype=np.int64)
    sa = np.array([a for s in spans for a, _ in s], dtype=np.int64) + np.repeat(base, span_counts)
    sb = np.array([b for s in spans for _, b in s], dtype=np.int64) + np.repeat(base, span_counts)
    mask = trained_mask(starts, sa, sb)
    local = starts - np.repeat(base, np.diff(row_off))
    # rows whose masks verify over the whole batch at once; the others are checked row by row below
    passed = verified_rows(flat, mask, starts, row_off, datas, spans, specials, tokenizer)

    out = _Collector()
    for r in range(n):
        a, b = int(row_off[r]), int(row_off[r + 1])
        ids, m, loc = flat[a:b], mask[a:b], local[a:b]
        reasons = list(old[r] or [])
        size = b - a
        if size and int(loc[-1] + lengths[b - 1]) != len(datas[r]):
            reasons.append("mask.mismatch")  # the ids do not even cover the text: nothing to trust
        if size <= max_length:
            parts = [(0, size)]
        elif overflow == "truncate":
            parts = [(0, max_length)]
        elif overflow == "split":
            parts = _split(loc, turns[r] or [], size, max_length)
        else:
            parts = None
        if parts is None:
            out.add(uuids[r], cats[r], 0, ids[:0], m[:0], size, reasons + ["length.over_max"])
            continue
        if passed[r] and parts == [(0, size)]:
            out.add(uuids[r], cats[r], 0, ids, m, size, reasons)
            continue
        ctx = _RowCheck(datas[r], spans[r], {e for _, e in specials[r]}, tokenizer)
        for k, (s, e) in enumerate(parts):
            found = ctx.check(ids[s:e], m[s:e], loc[s:e], lengths[a + s : a + e])
            out.add(uuids[r], cats[r], k, ids[s:e], m[s:e], e - s, reasons + found)
    return out.build()


def _split(loc: np.ndarray, turn_bytes: list[int], size: int, max_length: int) -> list[tuple[int, int]] | None:
    """Greedy cut of a row's tokens at turn starts into parts of at most `max_length`; None if impossible."""
    cuts = np.searchsorted(loc, np.array(turn_bytes, dtype=np.int64))
    cuts = sorted({int(c) for c, t in zip(cuts, turn_bytes, strict=True) if c < size and loc[c] == t and c > 0})
    parts, start = [], 0
    while size - start > max_length:
        fitting = [c for c in cuts if start < c <= start + max_length]
        if not fitting:
            return None
        parts.append((start, fitting[-1]))
        start = fitting[-1]
    parts.append((start, size))
    return parts


class _RowCheck:
    """Mask verification for one row (or one part of it)."""

    def __init__(self, data: bytes, spans: list[tuple[int, int]], special_ends: set[int], tok: Tokenizer):
        self.data, self.spans, self.special_ends, self.tok = data, spans, special_ends, tok

    def check(self, ids: np.ndarray, m: np.ndarray, loc: np.ndarray, lengths: np.ndarray) -> list[str]:
        if not m.any():
            return ["mask.no_trained"]
        lo, hi = int(loc[0]), int(loc[-1] + lengths[-1])
        want = [(max(a, lo), min(b, hi)) for a, b in self.spans if max(a, lo) < min(b, hi)]
        runs = _runs(m)
        reasons = []
        got = [(int(loc[s]), self.tok.decode_bytes(ids[s:e].tolist())) for s, e in runs]
        if got != [(a, self.data[a:b]) for a, b in want]:
            reasons.append("mask.mismatch")
        if any(b <= hi and b not in self.special_ends for a, b in self.spans if a >= lo):
            reasons.append("mask.eot_untrained")
        return reasons


class _Collector:
    """Accumulates output rows and builds the Arrow batch with vectorized list arrays."""

    def __init__(self) -> None:
        self.uuid: list[str] = []
        self.cat: list[str | None] = []
        self.part: list[int] = []
        self.ids: list[np.ndarray] = []
        self.mask: list[np.ndarray] = []
        self.num: list[int] = []
        self.reasons: list[list[str]] = []

    def add(self, uuid, cat, part, ids, mask, num, reasons) -> None:
        self.uuid.append(uuid)
        self.cat.append(cat)
        self.part.append(part)
        self.ids.append(ids)
        self.mask.append(mask)
        self.num.append(num)
        self.reasons.append(reasons)

    def build(self) -> pa.RecordBatch:
        sizes = np.array([len(x) for x in self.ids], dtype=np.int32)
        offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
        ids = np.concatenate(self.ids).astype(np.int32) if self.ids else np.zeros(0, np.int32)
        mask = np.concatenate(self.mask).astype(np.int8) if self.mask else np.zeros(0, np.int8)
        trained = np.array([int(x.sum()) for x in self.mask], dtype=np.int32)
        return pa.RecordBatch.from_arrays(
            [
                pa.array(self.uuid, pa.string()),
                pa.array(self.cat, pa.string()),
                pa.array(self.part, pa.int32()),
                pa.ListArray.from_arrays(offsets, pa.array(ids, pa.int32())),
                pa.ListArray.from_arrays(offsets, pa.array(mask, pa.int8())),
                pa.array(self.num, pa.int32()),
                pa.array(trained, pa.int32()),
                pa.array(self.reasons, REASONS_TYPE),
            ],
            schema=TOKENIZED_SCHEMA,
        )
