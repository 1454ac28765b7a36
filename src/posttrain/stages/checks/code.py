"""Code answers: fenced code present; Python blocks parse (with `ast.parse`, never executed).

>>> [(b.language, b.code) for b in code_blocks("x\\n```python\\nprint(1)\\n```\\n")]
[('python', 'print(1)\\n')]
>>> python_syntax_error("def f(:\\n  pass\\n")
'line 1: invalid syntax'

Parsing is the cost of this check (ast.parse builds every node as a Python object, holding the
GIL): the fence scan and the parse of a batch's answers run in a worker process
(`syntax_pool.SyntaxPool`) while the other checks go on; `syntax.py` holds what both sides run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
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
    shorten,
    to_bool,
    unique_codes,
)
from posttrain.stages.checks.syntax import FENCE, PYTHON_LANGUAGES, gc_paused, python_syntax_error
from posttrain.stages.checks.syntax_pool import SyntaxPool

__all__ = ["FENCE", "PYTHON_LANGUAGES", "CodeBlock", "CodeBlockCheck", "code_blocks", "gc_paused", "python_syntax_error"]

register_reason("code.no_block", "error", "the code answer has no fenced code block")
register_reason("code.syntax_error", "error", "a Python code block does not parse")


@dataclass(frozen=True)
class CodeBlock:
    """One fenced block: the fence's language tag (lower case, may be "") and its code."""

    language: str
    code: str


def code_blocks(text: str) -> list[CodeBlock]:
    """Fenced blocks of a Markdown answer."""
    return [CodeBlock(m.group(2).lower(), m.group(3)) for m in FENCE.finditer(text)]


class CodeBlockCheck(Check):
    """Code rows: at least one fenced block; every Python block parses."""

    name = "code_block"
    family = "code"
    codes: ClassVar[tuple[str, ...]] = ("code.no_block", "code.syntax_error")

    def __init__(self, syntax_workers: int | None = None) -> None:
        self.syntax = SyntaxPool(workers=syntax_workers)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        finish = self.begin(batch)
        return finish(batch) if finish is not None else batch

    def begin(self, batch: pa.RecordBatch) -> Callable[[pa.RecordBatch], pa.RecordBatch] | None:
        """Send the batch's code answers to the syntax pool now; `finish` adds the findings (validate's judge
        runs the checks ahead of this one, and this batch's rows are parsed meanwhile)."""
        rows, answer = category_answers(batch, "code")
        if not len(rows):
            return None
        present = np.nonzero(~blank(answer))[0]
        fenced = to_bool(pc.match_substring_regex(answer, r"(?m)^[ \t]*(```|~~~)"))
        texts = answer.to_pylist()
        # an answer without a fence line has no block: it needs no scan, and does not travel to the worker
        asked = [texts[k] if fenced[k] else None for k in present]
        pending = self.syntax.submit(asked)

        def finish(at_turn: pa.RecordBatch) -> pa.RecordBatch:
            codes: list[list[str]] = [[] for _ in range(at_turn.num_rows)]
            for k, finding in zip(present, pending(), strict=True):
                if finding is not None:
                    codes[int(rows[k])].append(finding)
            return add_reasons(at_turn, [unique_codes(c) for c in codes])

        return finish

    def close(self) -> None:
        self.syntax.close()

    def describe(self, row: dict[str, Any], code: str) -> str:
        answer = final_answer_of_row(row)
        if code == "code.syntax_error":
            for b in code_blocks(answer):
                err = python_syntax_error(b.code) if b.language in PYTHON_LANGUAGES else None
                if err:
                    line = _line_of(b.code, err)
                    return shorten(f"{err}: {line}")
        return shorten(answer)


def _line_of(code: str, err: str) -> str:
    m = re.match(r"line (\d+)", err)
    lines = code.splitlines()
    if m and 0 < int(m.group(1)) <= len(lines):
        return lines[int(m.group(1)) - 1].strip()
    return ""
