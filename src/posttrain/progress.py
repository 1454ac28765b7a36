"""How a job reports progress: one callback, called with small events; the job never prints.

A notebook user passes nothing (or their own function); the CLI passes `posttrain.cli.progress.Bars`,
which draws one bar per phase. Events are plain data so any front end can render them.

>>> seen = []
>>> report = reporter(seen.append)
>>> report("map", total=10, unit="rows")
>>> report("map", advance=4, tokens=900)
>>> [(e.phase, e.advance, e.total, e.tokens) for e in seen]
[('map', 0, 10, 0), ('map', 4, None, 900)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProgressEvent:
    """`advance` more `unit`s of `phase` are done (with `tokens` more tokens); `total` when known."""

    phase: str
    advance: int = 0
    total: int | None = None
    unit: str = "rows"
    tokens: int = 0
    message: str | None = None  # a line worth telling the user (a phase note), not an error
    units: int = 0  # work units of the phase finished with this event
    units_total: int | None = None  # work units the phase has (grows as a phase plans more passes)


OnProgress = Callable[[ProgressEvent], None]


def reporter(on_progress: OnProgress | None) -> Callable[..., None]:
    """A `report(phase, advance=..., total=..., ...)` function that is a no-op without a callback."""
    if on_progress is None:
        return lambda *_a, **_k: None

    def report(phase: str, advance: int = 0, total: int | None = None, unit: str = "rows", tokens: int = 0,
               message: str | None = None, units: int = 0, units_total: int | None = None) -> None:
        on_progress(ProgressEvent(phase, advance, total, unit, tokens, message, units, units_total))

    return report


def tracked(batches: Iterable[Any], on_progress: OnProgress | None, phase: str, total: int | None = None) -> Iterator[Any]:
    """`batches` unchanged, reporting each one's rows as progress of `phase`."""
    report = reporter(on_progress)
    report(phase, total=total)
    for batch in batches:
        report(phase, advance=batch.num_rows)
        yield batch


def unit_progress(on_progress: OnProgress | None, phase: str, total: int | None = None) -> Callable[[dict], None]:
    """An `on_result` for the unit runner: each finished unit's `rows_in` as progress of `phase`."""
    report = reporter(on_progress)
    report(phase, total=total)
    return lambda result: report(phase, advance=int(result.get("rows_in", 0)), tokens=int(result.get("tokens", 0)),
                                 units=1)
