"""Fenced blocks and whether their Python parses: the code check's findings for one answer, and the
loop of a syntax worker process (`syntax_pool.SyntaxPool`).

>>> python_syntax_error("def f(:\\n  pass\\n")
'line 1: invalid syntax'
>>> code_findings(["```python\\nx = (\\n```\\n", "no fence", None, "```py\\nx = 1\\n```\\n"])
['code.syntax_error', 'code.no_block', 'code.no_block', None]

This module imports only the standard library, so that a worker process can load it by its path
(see `syntax_pool.WORKER_BOOT`) without importing the checks package (Arrow, pandas: ~0.5 s of CPU
on each start); only the worker loop imports `posttrain.io.lifetime` (cheap).
"""

from __future__ import annotations

import ast
import gc
import os
import pickle
import re
import sys
import threading
import warnings
from typing import BinaryIO

PYTHON_LANGUAGES = frozenset({"python", "python3", "py", "py3"})
# The body is matched a whole line at a time (`(?:[^\n]*\n)*?`), which is what `(?s:.*?)` followed by a
# multiline `^` can only match: the same matches, without retrying the closing fence after every character.
FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+#.-]*)[^\n]*\n((?:[^\n]*\n)*?)^[ \t]*\1", re.MULTILINE)

NO_BLOCK = "code.no_block"
SYNTAX_ERROR = "code.syntax_error"


class _GcPause:
    """Pause the cyclic garbage collector while any thread is inside (reference counting still frees
    acyclic garbage); the last thread out restores the collector's state from before the first.
    The trees `ast.parse` builds hold no cycles, and the collector's passes over each half-built tree
    took about a third of the parse time."""

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


def code_finding(text: str | None) -> str | None:
    """The code check's finding for one non-blank answer: NO_BLOCK, SYNTAX_ERROR or None.

    `text` is None when Arrow already found no fence line in the answer (no block, nothing to scan).
    Python blocks parse in order, up to the first that does not.
    """
    if text is None:
        return NO_BLOCK
    found = False
    for m in FENCE.finditer(text):
        found = True
        if m.group(2).lower() in PYTHON_LANGUAGES and python_syntax_error(m.group(3)):
            return SYNTAX_ERROR
    return None if found else NO_BLOCK


def code_findings(texts: list[str | None]) -> list[str | None]:
    """`code_finding` of each text, in order."""
    return [code_finding(t) for t in texts]


def serve(parent_pid: int, requests: BinaryIO, replies: BinaryIO) -> None:
    """Worker loop: read a pickled list of texts, write back the pickled list of their findings, until
    the input ends (the pool closed it, or the driver died and the kernel closed it)."""
    from posttrain.io.lifetime import die_with_parent

    die_with_parent(parent_pid)
    gc.disable()  # this process only parses, and the trees hold no cycles (see `gc_paused`)
    while True:
        try:
            texts = pickle.load(requests)
        except (EOFError, OSError, pickle.UnpicklingError):
            return
        pickle.dump(code_findings(texts), replies, protocol=pickle.HIGHEST_PROTOCOL)
        replies.flush()


def main(argv: list[str]) -> None:
    """`serve` on stdin, replies on a copy of stdout; stdout itself goes to stderr, so that a stray print
    cannot corrupt a reply. Ctrl-C reaches the whole process group: the worker leaves it to its driver
    (and ends with it) instead of printing a traceback of its own."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve(int(argv[0]), sys.stdin.buffer, replies)
