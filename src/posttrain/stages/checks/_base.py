"""What every check shares: the `Check` base class and vectorized views of the `messages` column.

A check judges rows and appends reason codes; it never drops a row (the stage contract). The views
here flatten `messages` once with Arrow compute so that checks look at strings column-wise and fall
back to Python only on the few rows that need it.

>>> import pyarrow as pa
>>> from posttrain.schema import NEMOTRON_SCHEMA
>>> b = pa.RecordBatch.from_pylist([{"messages": [
...     {"role": "user", "content": "hi", "tool_calls": None},
...     {"role": "assistant", "content": "<think>x</think>yo", "tool_calls": None}]}],
...     schema=NEMOTRON_SCHEMA)
>>> final_assistant_content(b).to_pylist()
['<think>x</think>yo']
>>> answer_text(final_assistant_content(b)).to_pylist()
['yo']
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.stage import Stage

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
SNIPPET_CHARS = 240


class Check(Stage):
    """A stage that appends reason codes and never changes the row count.

    `codes` lists every code the check can emit, so the validate runner knows which check to ask
    for a human snippet (`describe`) of a flagged row.
    """

    name: ClassVar[str] = "check"
    family: ClassVar[str] = "check"
    codes: ClassVar[tuple[str, ...]] = ()

    def begin(self, batch: pa.RecordBatch) -> Callable[[pa.RecordBatch], pa.RecordBatch] | None:
        """Start judging `batch` before the checks ahead of this one have run on it, for a check whose work
        can go on elsewhere meanwhile (the code check's parse, in a worker process). Returns `finish`, to
        call with the batch as it is at this check's turn (the same rows, with the earlier checks' reasons
        appended): `finish(b) == process(b)`. None (the default): `process` does the work."""
        return None

    def describe(self, row: dict[str, Any], code: str) -> str:
        """A short human snippet showing why `row` got `code` (default: the start of the answer)."""
        return shorten(final_answer_of_row(row))


@dataclass
class FlatMessages:
    """The `messages` column flattened: one entry per message, with the row it belongs to."""

    role: pa.Array
    content: pa.Array
    tool_calls: pa.Array
    parent: np.ndarray  # row index of each message
    offsets: np.ndarray  # messages of row i are flat[offsets[i]:offsets[i+1]]
    num_rows: int

    @property
    def has_calls(self) -> np.ndarray:
        n = pc.list_value_length(self.tool_calls).fill_null(0)
        return n.to_numpy(zero_copy_only=False) > 0


def flat_messages(batch: pa.RecordBatch) -> FlatMessages:
    """Flatten `batch.messages` (null lists count as empty)."""
    col = batch.column("messages")
    lengths = pc.list_value_length(col).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(batch.num_rows + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = pc.list_flatten(col)
    parent = np.repeat(np.arange(batch.num_rows, dtype=np.int64), lengths)
    return FlatMessages(
        role=pc.struct_field(flat, "role"),
        content=pc.struct_field(flat, "content"),
        tool_calls=pc.struct_field(flat, "tool_calls"),
        parent=parent,
        offsets=offsets,
        num_rows=batch.num_rows,
    )


def blank(content: pa.Array) -> np.ndarray:
    """Null, empty or whitespace-only strings (an anchored RE2 test stops at the first visible
    character, where trimming would copy every string)."""
    return to_bool(pc.match_substring_regex(content, r"^\s*$").fill_null(True))


def rows_any(fm: FlatMessages, per_message: np.ndarray) -> np.ndarray:
    """Per-row OR of a per-message boolean mask."""
    out = np.zeros(fm.num_rows, dtype=bool)
    out[fm.parent[per_message]] = True
    return out


def to_bool(arr: pa.Array) -> np.ndarray:
    """An Arrow boolean array as numpy, nulls as False."""
    return arr.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)


def last_index_of(fm: FlatMessages, per_message: np.ndarray) -> np.ndarray:
    """Per row, the flat index of the last message where `per_message` holds (-1 when none)."""
    out = np.full(fm.num_rows, -1, dtype=np.int64)
    idx = np.nonzero(per_message)[0]
    np.maximum.at(out, fm.parent[idx], idx)
    return out


def take_or_null(values: pa.Array, idx: np.ndarray) -> pa.Array:
    """`values[idx]` with null where idx < 0."""
    if len(values) == 0:
        return pa.nulls(len(idx), values.type)
    mask = idx < 0
    return pc.take(values, pa.array(np.where(mask, 0, idx), mask=mask))


def final_assistant_content(batch: pa.RecordBatch, fm: FlatMessages | None = None) -> pa.Array:
    """Content of each row's last assistant message (null when the row has none)."""
    fm = fm or flat_messages(batch)
    is_asst = to_bool(pc.equal(fm.role, "assistant"))
    return take_or_null(fm.content, last_index_of(fm, is_asst))


def answer_text(content: pa.Array) -> pa.Array:
    """The answer outside the reasoning trace: what follows the last `</think>`.

    Content that opens a trace and never closes it has no answer (null): the reasoning check
    reports it, and answer checks (math, stem, code) skip it rather than flag it twice.
    """
    # split at the last tag and keep the tail: Arrow's literal split runs at memory speed, where a
    # `^.*</think>` regex or a list_element copy of the (long) head costs ten times more
    pieces = pc.split_pattern(content, THINK_CLOSE, max_splits=1, reverse=True)
    n = pc.list_value_length(pieces).fill_null(0).to_numpy(zero_copy_only=False)
    tails = pc.list_flatten(pc.list_slice(pieces, 1, 2))
    has_close = n == 2
    idx = np.full(len(content), -1, dtype=np.int64)
    idx[has_close] = np.arange(int(has_close.sum()))
    after = take_or_null(tails, idx)
    opens = to_bool(pc.match_substring_regex(content, THINK_OPEN))
    out = pc.if_else(pa.array(has_close), after, content)
    return pc.if_else(pa.array(opens & ~has_close), pa.nulls(len(content), pa.string()), out)


def tag_counts(content: pa.Array, tag: str) -> np.ndarray:
    """How often `tag` occurs in each string, capped at 2 (0, 1, or "more than one").

    >>> tag_counts(pa.array(["a", "<t>x", "<t><t><t>", None]), "<t>").tolist()
    [0, 1, 2, 0]
    """
    pieces = pc.split_pattern(content, tag, max_splits=2)
    return np.maximum(pc.list_value_length(pieces).fill_null(1).to_numpy(zero_copy_only=False) - 1, 0)


def category_answers(batch: pa.RecordBatch, category: str) -> tuple[np.ndarray, pa.Array]:
    """(row indices, answer text) of the rows of one category, computed on those rows only: the
    answer checks each own one split, and scanning 20 KB traces of every other split would dominate."""
    rows = np.nonzero(category_mask(batch, category))[0]
    if not len(rows):
        return rows, pa.array([], pa.string())
    # only those rows' final turns are copied out (taking the rows' whole `messages` first copied
    # every prompt and earlier turn too: ~40% of the time of the math, stem and code checks)
    fm = flat_messages(batch)
    last = last_index_of(fm, to_bool(pc.equal(fm.role, "assistant")))
    return rows, answer_text(take_or_null(fm.content, last[rows]))


def metadata_dict(text: str | None) -> dict[str, Any]:
    """The metadata JSON as a dict; {} when absent or broken (the structure check reports broken JSON).

    >>> metadata_dict('{"expected_answer": "4"}')
    {'expected_answer': '4'}
    >>> metadata_dict("not json")
    {}
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def category_mask(batch: pa.RecordBatch, category: str) -> np.ndarray:
    """Rows whose `category` equals `category`."""
    return to_bool(pc.equal(batch.column("category"), category))


def final_answer_of_row(row: dict[str, Any]) -> str:
    """The answer text of a Python row (for snippets): after the last `</think>` of the last assistant turn."""
    content = ""
    for m in row.get("messages") or []:
        if m and m.get("role") == "assistant":
            content = m.get("content") or ""
    return content.rsplit(THINK_CLOSE, 1)[-1]


def shorten(text: str, limit: int = SNIPPET_CHARS) -> str:
    """One line, at most `limit` characters.

    >>> shorten("a\\nb  c")
    'a b c'
    """
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def unique_codes(codes: list[str]) -> list[str] | None:
    """Codes in first-seen order without repeats; None when empty."""
    out = list(dict.fromkeys(codes))
    return out or None
