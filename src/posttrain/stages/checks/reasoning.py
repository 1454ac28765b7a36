"""Reasoning-trace checks: `<think>` ... `</think>` as the `reasoning` flag promises.

`reasoning == "on"`: the final assistant turn opens with exactly one closed, non-empty trace and a
non-empty answer follows. `"off"`: no trace, or an empty `<think></think>`. Any other tag count in
any assistant turn is a stray tag. Everything is Arrow string compute on the flattened messages;
each faulty row gets the first matching code only, in the order of `_ON_RULES` / `_OFF_RULES`.

>>> classify("on", "<think>why</think>42"), classify("on", "<think>why"), classify("off", "<think></think>42")
(None, 'think.unclosed', None)
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.stage import add_reasons, register_reason
from posttrain.stages.checks._base import (
    THINK_CLOSE,
    THINK_OPEN,
    Check,
    blank,
    flat_messages,
    last_index_of,
    shorten,
    tag_counts,
    take_or_null,
    to_bool,
)

register_reason("think.missing", "error", "reasoning is on but the answer does not open with <think>")
register_reason("think.unclosed", "error", "the reasoning trace is never closed with </think>")
register_reason("think.empty", "error", "reasoning is on but the trace is empty")
register_reason("think.in_off_mode", "error", "reasoning is off but the answer carries a trace")
register_reason("think.stray_tag", "error", "a <think> or </think> tag is duplicated or out of place")
register_reason("answer.empty", "error", "nothing follows the reasoning trace")

_OPENS = r"^\s*<think>"
_EMPTY_TRACE = r"^\s*<think>\s*</think>"
_EMPTY_ANSWER = r"</think>\s*$"


def classify(reasoning: str | None, content: str | None) -> str | None:
    """The code for one final assistant turn (Python twin of the vectorized rule, for docs and tests)."""
    if not content or not content.strip() or reasoning not in ("on", "off"):
        return None
    n_open, n_close = content.count(THINK_OPEN), content.count(THINK_CLOSE)
    opens = re.match(_OPENS, content) is not None
    empty_trace = re.match(_EMPTY_TRACE, content) is not None
    empty_answer = re.search(_EMPTY_ANSWER, content) is not None
    if reasoning == "on":
        if not opens:
            return "think.missing"
        if n_close == 0:
            return "think.unclosed"
        if n_open > 1 or n_close > 1:
            return "think.stray_tag"
        if empty_trace:
            return "think.empty"
        return "answer.empty" if empty_answer else None
    if n_open == 0 and n_close == 0:
        return None
    if opens and n_open == 1 and n_close <= 1 and not empty_trace:
        return "think.in_off_mode"
    if n_open != 1 or n_close != 1 or not opens:
        return "think.stray_tag"
    return "answer.empty" if empty_answer else None


class ThinkTagCheck(Check):
    """The final assistant turn's trace matches `reasoning`; no stray tags in earlier assistant turns."""

    name = "think_tags"
    family = "reasoning"
    codes: ClassVar[tuple[str, ...]] = (
        "think.missing",
        "think.unclosed",
        "think.empty",
        "think.in_off_mode",
        "think.stray_tag",
        "answer.empty",
    )

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        fm = flat_messages(batch)
        is_asst = to_bool(pc.equal(fm.role, "assistant"))
        last = last_index_of(fm, is_asst)
        content = take_or_null(fm.content, last)
        reasoning = batch.column("reasoning")
        on = to_bool(pc.equal(reasoning, "on"))
        off = to_bool(pc.equal(reasoning, "off"))
        present = ~blank(content)
        n_open, n_close = tag_counts(content, THINK_OPEN), tag_counts(content, THINK_CLOSE)
        opens = to_bool(pc.match_substring_regex(content, _OPENS))
        empty_trace = to_bool(pc.match_substring_regex(content, _EMPTY_TRACE))
        empty_answer = to_bool(pc.match_substring_regex(content, _EMPTY_ANSWER))
        one_each = (n_open == 1) & (n_close == 1)
        tags = (n_open > 0) | (n_close > 0)
        on_rules = [
            ("think.missing", ~opens),
            ("think.unclosed", n_close == 0),
            ("think.stray_tag", (n_open > 1) | (n_close > 1)),
            ("think.empty", empty_trace),
            ("answer.empty", empty_answer),
        ]
        off_rules = [
            ("", ~tags),
            ("think.in_off_mode", opens & (n_open == 1) & (n_close <= 1) & ~empty_trace),
            ("think.stray_tag", ~(one_each & opens)),
            ("answer.empty", empty_answer),
        ]
        codes = np.full(batch.num_rows, "", dtype=object)
        _first_match(codes, on & present, on_rules)
        _first_match(codes, off & present, off_rules)
        # earlier assistant turns (tool conversations): only unbalanced or repeated tags
        earlier = is_asst.copy()
        earlier[last[last >= 0]] = False
        idx = np.nonzero(earlier)[0]
        stray = np.zeros(batch.num_rows, dtype=bool)
        if len(idx):
            prior = pc.take(fm.content, pa.array(idx))
            m_open, m_close = tag_counts(prior, THINK_OPEN), tag_counts(prior, THINK_CLOSE)
            bad = (m_open > 1) | (m_close > 1) | (m_open != m_close)
            stray[fm.parent[idx[bad]]] = True
        codes[stray & (codes == "")] = "think.stray_tag"
        return add_reasons(batch, [c or None for c in codes.tolist()])

    def describe(self, row: dict[str, Any], code: str) -> str:
        content = ""
        for m in row.get("messages") or []:
            if m and m.get("role") == "assistant":
                content = m.get("content") or ""
        if code in ("answer.empty", "think.unclosed"):
            return shorten("…" + content[-200:])
        return shorten(content)


def _first_match(codes: np.ndarray, rows: np.ndarray, rules: list[tuple[str, np.ndarray]]) -> None:
    """Give each row in `rows` the code of the first rule that holds for it ("" = judged fine)."""
    todo = rows.copy()
    for code, cond in rules:
        hit = todo & cond
        codes[hit] = code
        todo &= ~hit
