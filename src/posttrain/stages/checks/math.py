"""Math answers: a final `\\boxed{...}` outside the trace that agrees with `expected_answer`.

Arrow finds the math rows and whether their answer has `\\boxed` at all; Python extracts the boxed
contents (nested braces need a small scanner: no regex balances braces); answers equal to the
expected one after light normalization are accepted on the spot, and only the rest go to
math-verify in `verify_pool.VerifyPool` (math-verify's timeouts use `signal.alarm`, which only works on a
process's main thread, and a runaway sympy call must not stall validation). A comparison that runs out of
time is `math.verify_timeout`, a warning: it says nothing about the answer, so it must not read as a mismatch.

>>> boxed_answers(r"so \\boxed{\\frac{1}{2}} and \\boxed{\\{1,2\\}}")
['\\\\frac{1}{2}', '\\\\{1,2\\\\}']
>>> same_answer(r"\\dfrac{1}{2}", r"$\\frac {1}{2}$.")
True

Real `expected_answer` values are not always plain answers (`$V=\\frac{2}{3}m^3=\\frac{m^3}{3}$`,
`x = 5`, `\\boxed{12}`): both sides are reduced to their core (`answer_core`: the last boxed
content, then the right-hand side of the last top-level `=`) before they are compared.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.stage import add_reasons, register_reason
from posttrain.stages.checks._base import (
    Check,
    blank,
    category_answers,
    final_answer_of_row,
    metadata_dict,
    shorten,
    to_bool,
    unique_codes,
)
from posttrain.stages.checks.verify_pool import OK, VerifyPool

register_reason("math.no_boxed", "error", "the math answer has no \\boxed{} answer")
register_reason("math.multiple_boxed", "warn", "the math answer boxes several different answers")
register_reason("math.mismatch", "error", "the boxed answer disagrees with expected_answer")
register_reason("math.unverifiable", "warn", "math-verify cannot parse or compare the answers")
register_reason("math.verify_timeout", "warn", "math-verify ran out of time comparing the answers")

_BOXED_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")
_FRACTION = re.compile(r"^(?P<sign>-)?(?:\\frac\{(?P<num>\d+)\}\{(?P<den>\d+)\}|(?P<n2>\d+)/(?P<d2>\d+))$")
_SPACING = re.compile(r"\\[,;:! ]|\\left|\\right|\s+")


def boxed_answers(text: str) -> list[str]:
    """Contents of every `\\boxed{...}` / `\\fbox{...}` in `text`, braces balanced, `\\{` skipped.

    >>> boxed_answers(r"\\boxed{a{b}c} x \\boxed{unclosed")
    ['a{b}c']
    """
    out: list[str] = []
    for m in _BOXED_START.finditer(text):
        depth, j, n = 1, m.end(), len(text)
        while j < n:
            ch = text[j]
            if ch == "\\":
                j += 2
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    out.append(text[m.end() : j])
                    break
            j += 1
    return out


def normalize_answer(text: str) -> str:
    """A canonical spelling for the exact-match shortcut (never used to declare a mismatch).

    >>> normalize_answer(r" $\\left( 1,\\ 2 \\right)$. ")
    '(1,2)'
    """
    text = text.strip().strip("$").strip()
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _SPACING.sub("", text)
    return text.rstrip(".").strip("$")


def same_answer(expected: str, got: str) -> bool:
    """Exact agreement after normalization (also with the expected answer's own `\\boxed`)."""
    return quick_verdict(expected, got) == "ok"


def exact_value(text: str) -> Fraction | None:
    """The value of a plain number or integer fraction (`-12`, `0.25`, `\\frac{3}{4}`, `7/2`); else None.

    >>> exact_value(r"-\\frac{6}{8}"), exact_value("2.50"), exact_value("x+1")
    (Fraction(-3, 4), Fraction(5, 2), None)
    """
    m = _NUMBER.match(text)
    if m:
        return Fraction(m.group(0))
    m = _FRACTION.match(text)
    if not m:
        return None
    num, den = int(m.group("num") or m.group("n2")), int(m.group("den") or m.group("d2"))
    if den == 0:
        return None
    return (-1 if m.group("sign") else 1) * Fraction(num, den)


def answer_core(text: str) -> str:
    """The answer a possibly decorated expected/boxed answer states: the last `\\boxed{}` content, then the
    right-hand side of its last `=` outside any brackets (not for lists such as `a=1, b=2`).

    >>> answer_core(r"$V=\\frac{2}{3}m^3=\\frac{m^3}{3}$"), answer_core("x = 5"), answer_core(r"\\boxed{f(x)=x^2}")
    ('\\\\frac{m^3}{3}', '5', 'x^2')
    >>> answer_core("a=1, b=2"), answer_core(r"\\{x \\mid x \\ge 0\\}")
    ('a=1, b=2', '\\\\{x \\\\mid x \\\\ge 0\\\\}')
    """
    inner = boxed_answers(text)
    t = (inner[-1] if inner else text).strip().strip("$").strip()
    depth, last, comma = 0, -1, False
    i = 0
    while i < len(t):
        ch = t[i]
        if ch == "\\":  # a command or an escaped brace: skip its first character
            i += 2
            continue
        if ch in "{([":
            depth += 1
        elif ch in "})]":
            depth -= 1
        elif depth == 0 and ch == ",":
            comma = True
        elif depth == 0 and ch == "=" and t[i - 1 : i] not in ("<", ">", "!", ":"):
            last = i
        i += 1
    if last >= 0 and not comma and t[last + 1 :].strip():
        t = t[last + 1 :]
    return t.strip()


def quick_verdict(expected: str, got: str) -> str | None:
    """"ok" / "mismatch" when decidable without math-verify (same spelling, or two exact numbers), else None.

    >>> quick_verdict("0.5", r"\\frac{1}{2}"), quick_verdict("44", "45"), quick_verdict("x", "2x")
    ('ok', 'mismatch', None)
    """
    inner = boxed_answers(expected)
    gold, pred = normalize_answer(inner[-1] if inner else expected), normalize_answer(got)
    if gold == pred:
        return "ok"
    gold, pred = normalize_answer(answer_core(expected)), normalize_answer(answer_core(got))
    if gold == pred:
        return "ok"
    a, b = exact_value(gold), exact_value(pred)
    if a is None or b is None:
        return None
    return "ok" if a == b else "mismatch"


class BoxedAnswerCheck(Check):
    """Math rows: one final boxed answer, agreeing with `metadata.expected_answer` when given."""

    name = "boxed_answer"
    family = "math"
    codes: ClassVar[tuple[str, ...]] = (
        "math.no_boxed", "math.multiple_boxed", "math.mismatch", "math.unverifiable", "math.verify_timeout",
    )  # fmt: skip
    #: the pool's outcomes that are a finding, as reason codes ("ok" is none)
    OUTCOME_CODES: ClassVar[dict[str, str]] = {
        "mismatch": "math.mismatch", "unverifiable": "math.unverifiable", "timeout": "math.verify_timeout",
    }  # fmt: skip

    def __init__(self, verify_timeout: float = 5.0, verify_workers: int = 1) -> None:
        self.verifier = VerifyPool(timeout=verify_timeout, workers=verify_workers)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        rows, answer = category_answers(batch, "math")
        if not len(rows):
            return batch
        present = ~blank(answer)
        has_box = to_bool(pc.match_substring_regex(answer, r"\\(?:boxed|fbox)\s*\{"))
        codes: list[list[str]] = [[] for _ in range(batch.num_rows)]
        pending: list[tuple[int, str, str]] = []
        metadata = batch.column("metadata")
        for k in np.nonzero(present)[0]:
            i = int(rows[k])
            boxes = boxed_answers(answer[int(k)].as_py()) if has_box[k] else []
            if not boxes:
                codes[i].append("math.no_boxed")
                continue
            if len({normalize_answer(b) for b in boxes}) > 1:
                codes[i].append("math.multiple_boxed")
            expected = metadata_dict(metadata[i].as_py()).get("expected_answer")
            if expected is None or str(expected).strip() == "":
                continue
            verdict = quick_verdict(str(expected), boxes[-1])
            if verdict == "mismatch":
                codes[i].append("math.mismatch")
            elif verdict is None:  # math-verify compares the stated answers, not the decorations around them
                pending.append((i, answer_core(str(expected)), answer_core(boxes[-1])))
        outcomes = self.verifier.verify_many([(gold, pred) for _, gold, pred in pending])
        for (i, _, _), outcome in zip(pending, outcomes, strict=True):
            if outcome.verdict != OK:
                codes[i].append(self.OUTCOME_CODES[outcome.verdict])
        return add_reasons(batch, [unique_codes(c) for c in codes])

    def close(self) -> None:
        self.verifier.close()

    def describe(self, row: dict[str, Any], code: str) -> str:
        answer = final_answer_of_row(row)
        boxes = boxed_answers(answer)
        expected = metadata_dict(row.get("metadata")).get("expected_answer")
        if code == "math.no_boxed":
            return shorten("no \\boxed in: …" + answer[-200:])
        return shorten(f"boxed {boxes!r}; expected {expected!r}")
