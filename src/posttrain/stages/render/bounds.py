"""Bounds on a user chat template: a time limit and an output-size limit per row.

The sandbox (`ImmutableSandboxedEnvironment`) stops a template from reaching Python; it does not
stop it from looping for hours or building a string larger than memory
(`{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}`). Here every
place a template can spend time or grow data checks the row's budget:

- the output, streamed (`Template.generate`) and counted as it is written;
- `range` (an iterator that checks the clock every 1,024 items), every call, attribute and item
  lookup, the `*`, `**` and `+` operators (a size check *before* the result is built), every
  filter (width arguments and results), and `namespace` assignments (the `ns.s = ns.s ~ ns.s`
  doubling);
- recursion (a macro calling itself) counts as exceeding the budget too.

A template over a limit stops the run once, with one line naming the template and the limit: the
same template would exceed it again on the next row, so the rows are not rejected one by one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from posttrain.errors import PosttrainError

#: seconds one row may take to render (every render of the row: prefixes included)
TIME_LIMIT_S = 10.0
#: characters one render of a row may write: this many, or 8 x the row's own text, whichever is more
MAX_OUTPUT_CHARS = 4_000_000
CLOCK_EVERY = 1024
MAX_RANGE = 100_000
MAX_EXPONENT_BITS = 4096


class TemplateLimitError(PosttrainError):
    """A chat template went over its time or size limit (the run stops: it is the template, not the row)."""


class _Budget(threading.local):
    deadline: float | None = None
    max_chars: int = MAX_OUTPUT_CHARS
    template: str = "the chat template"
    ticks: int = 0


_BUDGET = _Budget()


def _over(what: str, fix: str) -> TemplateLimitError:
    return TemplateLimitError(what, place=f"render.template {_BUDGET.template}", fix=fix)


def _time_over() -> TemplateLimitError:
    return _over(f"the template ran past the limit of {TIME_LIMIT_S:g} s for one row",
                 "fix the template (an unbounded loop?); posttrain stops rather than hang")


def _size_over(n: int) -> TemplateLimitError:
    return _over(f"the template wrote or built {n:,} characters for one row, over the limit of "
                 f"{_BUDGET.max_chars:,}", "fix the template (a loop that repeats output?)")


def check_clock() -> None:
    if _BUDGET.deadline is not None and time.monotonic() > _BUDGET.deadline:
        raise _time_over()


def check_size(value: Any) -> None:
    if isinstance(value, (str, bytes, list, tuple)) and len(value) > _BUDGET.max_chars:
        raise _size_over(len(value))


@contextmanager
def row_budget(template: str, row_chars: int = 0) -> Iterator[None]:
    """Every render of one row inside this block shares one time and size budget."""
    old = (_BUDGET.deadline, _BUDGET.max_chars, _BUDGET.template)
    _BUDGET.deadline = time.monotonic() + TIME_LIMIT_S
    _BUDGET.max_chars = max(MAX_OUTPUT_CHARS, 8 * row_chars)
    _BUDGET.template = template
    try:
        yield
    except RecursionError:
        raise _over("the template recursed deeper than Python allows", "fix the template (a macro that calls "
                    "itself without end?)") from None
    finally:
        _BUDGET.deadline, _BUDGET.max_chars, _BUDGET.template = old


def render_bounded(template: Any, **kwargs: Any) -> str:
    """`template.render(**kwargs)`, streamed and stopped at the size or time limit."""
    parts: list[str] = []
    size = 0
    for chunk in template.generate(**kwargs):
        size += len(chunk)
        if size > _BUDGET.max_chars:
            raise _size_over(size)
        parts.append(chunk)
        _BUDGET.ticks += 1
        if _BUDGET.ticks % CLOCK_EVERY == 0:
            check_clock()
    return "".join(parts)


class _BoundedRange:
    def __init__(self, rng: range) -> None:
        self.rng = rng

    def __iter__(self) -> Iterator[int]:
        for k, i in enumerate(self.rng):
            if k % CLOCK_EVERY == 0:
                check_clock()
            yield i

    def __len__(self) -> int:
        return len(self.rng)


def bounded_range(*args: int) -> _BoundedRange:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise _over(f"range() of {len(rng):,} items, over the limit of {MAX_RANGE:,}", "fix the template")
    return _BoundedRange(rng)


class BoundedNamespace(Namespace):
    """`namespace()` whose attributes cannot grow past the size limit."""

    def __setitem__(self, name: str, value: Any) -> None:
        check_size(value)
        check_clock()
        super().__setitem__(name, value)


def _bounded_filter(fn: Any) -> Any:
    def run(*args: Any, **kwargs: Any) -> Any:
        for a in (*args[1:], *kwargs.values()):
            if isinstance(a, int) and not isinstance(a, bool) and a > _BUDGET.max_chars:
                raise _size_over(a)
        check_clock()
        out = fn(*args, **kwargs)
        check_size(out)
        return out

    for attr in ("jinja_pass_arg",):  # pass_context / pass_environment markers
        if hasattr(fn, attr):
            setattr(run, attr, getattr(fn, attr))
    return run


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with the checks of this module (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.globals["range"] = bounded_range
        self.globals["namespace"] = BoundedNamespace
        self.filters = {name: _bounded_filter(f) for name, f in self.filters.items()}

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_clock()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > _BUDGET.max_chars:
                    raise _size_over(len(seq) * n)
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and \
                    abs(left).bit_length() * right > MAX_EXPONENT_BITS:
                raise _over(f"{left} ** {right} is too large a number", "fix the template")
        elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, type(left)):
            check_size_n(len(left) + len(right))
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - jinja's signature
        check_clock()
        out = super().call(__context, __obj, *args, **kwargs)
        check_size(out)
        return out

    def getattr(self, obj: Any, attribute: str) -> Any:
        check_clock()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        check_clock()
        return super().getitem(obj, argument)


def check_size_n(n: int) -> None:
    if n > _BUDGET.max_chars:
        raise _size_over(n)
