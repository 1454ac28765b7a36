"""Multiple-choice answers: the letter in the answer agrees with `expected_answer` (`\\text{A}` style).

>>> choice_letter(r"\\text{ b }"), choice_letter("(C)"), choice_letter("42")
('B', 'C', None)
>>> answer_letter(r"... so the answer is \\boxed{\\text{D}}"), answer_letter("Answer: (a) because"), answer_letter("no")
('D', 'A', None)
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import pyarrow as pa

from posttrain.stage import add_reasons, register_reason
from posttrain.stages.checks._base import (
    Check,
    category_answers,
    final_answer_of_row,
    metadata_dict,
    shorten,
)
from posttrain.stages.checks.math import boxed_answers

register_reason("stem.no_choice", "error", "no multiple-choice letter found in the answer")
register_reason("stem.mismatch", "error", "the chosen letter disagrees with expected_answer")

# a lone letter, optionally wrapped in \text{}/\textbf{}/\mathrm{}/\mathbf{}, parentheses or brackets
_LETTER = re.compile(
    r"^\s*(?:\\(?:text|textbf|mathrm|mathbf|mathbf)\s*\{\s*)?[\(\[]?\s*([A-Za-z])\s*[\)\]]?\s*\}?\s*[.:)]?\s*$"
)
_PHRASE = re.compile(
    r"(?:answer|choice|option)\s*(?:is|:)?\s*[:\-]?\s*(?:\*\*)?\s*[\(\[]?\s*([A-J])\s*[\)\]]?(?![A-Za-z])",
    re.IGNORECASE,
)


def choice_letter(text: str) -> str | None:
    """The letter when `text` is just a (wrapped) choice letter, upper-cased; else None."""
    m = _LETTER.match(text)
    return m.group(1).upper() if m else None


def answer_letter(answer: str) -> str | None:
    """The chosen letter: the last boxed answer's letter, else the last "answer is X" phrase."""
    boxes = boxed_answers(answer)
    if boxes:
        letter = choice_letter(boxes[-1])
        # "\boxed{B: 42}": a leading letter followed by its label
        if letter is None:
            m = re.match(r"^\s*(?:\\text\s*\{)?\s*\(?([A-J])\)?\s*[:.)]", boxes[-1])
            letter = m.group(1) if m else None
        if letter is not None:
            return letter.upper()
    found = _PHRASE.findall(answer)
    return found[-1].upper() if found else None


class ChoiceLetterCheck(Check):
    """Stem rows whose `expected_answer` is a choice letter: the answer picks that letter."""

    name = "choice_letter"
    family = "stem"
    codes: ClassVar[tuple[str, ...]] = ("stem.no_choice", "stem.mismatch")

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        rows, answer = category_answers(batch, "stem")
        metadata = batch.column("metadata")
        codes: list[str | None] = [None] * batch.num_rows
        for k, text in enumerate(answer.to_pylist()):
            i = int(rows[k])
            if not text or not text.strip():
                continue  # no answer at all: the reasoning/structure checks report it
            expected = metadata_dict(metadata[i].as_py()).get("expected_answer")
            want = choice_letter(str(expected)) if expected is not None else None
            if want is None:
                continue  # not a multiple-choice row
            got = answer_letter(text)
            if got is None:
                codes[i] = "stem.no_choice"
            elif got != want:
                codes[i] = "stem.mismatch"
        return add_reasons(batch, codes)

    def describe(self, row: dict[str, Any], code: str) -> str:
        answer = final_answer_of_row(row)
        expected = metadata_dict(row.get("metadata")).get("expected_answer")
        return shorten(f"chose {answer_letter(answer)!r}, expected {expected!r}: …{answer[-160:]}")
