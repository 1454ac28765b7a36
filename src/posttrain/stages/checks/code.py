"""Code answers: fenced code present; Python blocks parse (with `ast.parse`, never executed).

>>> [(b.language, b.code) for b in code_blocks("x\\n```python\\nprint(1)\\n```\\n")]
[('python', 'print(1)\\n')]
>>> python_syntax_error("def f(:\\n  pass\\n")
'line 1: invalid syntax'

Parsing is the cost of this check (ast.parse builds every node as a Python object): the cyclic
garbage collector is paused while blocks parse (`gc_paused`), since the trees hold no cycles and
the collector's passes over each half-built tree took about a third of the time.
"""

from __future__ import annotations

import ast
import gc
import re
import threading
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
# The body is matched a whole line at a time (`(?:[^\n]*\n)*?`), which is what `(?s:.*?)` followed by a
# multiline `^` can only match: the same matches, without retrying the closing fence after every character.
FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+#.-]*)[^\n]*\n((?:[^\n]*\n)*?)^[ \t]*\1", re.MULTILINE)


@dataclass(frozen=True)
class CodeBlock:
    """One fenced block: the fence's language tag (lower case, may be "") and its code."""

    language: str
    code: str


def code_blocks(text: str) -> list[CodeBlock]:
    """Fenced blocks of a Markdown answer."""
    return [CodeBlock(m.group(2).lower(), m.group(3)) for m in FENCE.finditer(text)]


class _GcPause:
    """Pause the cyclic garbage collector while any thread is inside (reference counting still frees
    acyclic garbage); the last thread out restores the collector's state from before the first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            self._inside += 1
            if self._inside == 1:
                self._was_enabled = gc.isenabled()
                gc.disable()

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._inside -= 1
            if self._inside == 0 and self._was_enabled:
                gc.enable()


#: `with gc_paused:` around parsing; one for the process, so that threads share the count
gc_paused = _GcPause()


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
        texts = answer.to_pylist()
        with gc_paused:
            for k in np.nonzero(present)[0]:
                i = int(rows[k])
                blocks = code_blocks(texts[k]) if fenced[k] else []
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
