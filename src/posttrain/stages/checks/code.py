"""Code answers: fenced code present; Python blocks parse (with `ast.parse`, never executed).

>>> [(b.language, b.code) for b in code_blocks("x\\n```python\\nprint(1)\\n```\\n")]
[('python', 'print(1)\\n')]
>>> python_syntax_error("def f(:\\n  pass\\n")
'line 1: invalid syntax'
"""

from __future__ import annotations

import ast
import re
import warnings
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

register_reason("code.no_block", "error", "the code answer has no fenced code block")
register_reason("code.syntax_error", "error", "a Python code block does not parse")

PYTHON_LANGUAGES = frozenset({"python", "python3", "py", "py3"})
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+#.-]*)[^\n]*\n(.*?)^[ \t]*\1", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class CodeBlock:
    """One fenced block: the fence's language tag (lower case, may be "") and its code."""

    language: str
    code: str


def code_blocks(text: str) -> list[CodeBlock]:
    """Fenced blocks of a Markdown answer."""
    return [CodeBlock(m.group(2).lower(), m.group(3)) for m in _FENCE.finditer(text)]


def python_syntax_error(code: str) -> str | None:
    """None when `code` parses as Python 3, else "line N: message". Never runs the code."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences etc. are not syntax errors
            ast.parse(code)
    except SyntaxError as err:
        return f"line {err.lineno}: {err.msg}"
    except (ValueError, RecursionError, MemoryError) as err:  # null bytes, absurd nesting
        return f"line ?: {type(err).__name__}"
    return None


class CodeBlockCheck(Check):
    """Code rows: at least one fenced block; every Python block parses."""

    name = "code_block"
    family = "code"
    codes: ClassVar[tuple[str, ...]] = ("code.no_block", "code.syntax_error")

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        rows, answer = category_answers(batch, "code")
        if not len(rows):
            return batch
        present = ~blank(answer)
        fenced = to_bool(pc.match_substring_regex(answer, r"(?m)^[ \t]*(```|~~~)"))
        codes: list[list[str]] = [[] for _ in range(batch.num_rows)]
        for k in np.nonzero(present)[0]:
            i = int(rows[k])
            blocks = code_blocks(answer[int(k)].as_py()) if fenced[k] else []
            if not blocks:
                codes[i].append("code.no_block")
                continue
            if any(b.language in PYTHON_LANGUAGES and python_syntax_error(b.code) for b in blocks):
                codes[i].append("code.syntax_error")
        return add_reasons(batch, [unique_codes(c) for c in codes])

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
