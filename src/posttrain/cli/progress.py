"""The CLI's progress display: one rich bar per phase (done/total, rows/s, tokens/s, ETA) from job events."""

from __future__ import annotations

import time
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from posttrain.cli.options import err_console
from posttrain.progress import ProgressEvent


class Bars:
    """A callable `on_progress` for jobs; a context manager around the run. Disabled: draws nothing."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.description}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}{task.fields[units]} · {task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err_console,
            transient=False,
            disable=not enabled,
        )
        self._tasks: dict[str, Any] = {}
        self._stats: dict[str, list[float]] = {}
        self._units: dict[str, list[int | None]] = {}  # phase -> [work units done, of how many]
        self._unit_of: dict[str, str] = {}

    def __enter__(self) -> Bars:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def __call__(self, event: ProgressEvent) -> None:
        if event.message and self.enabled:
            self._progress.console.log(Text(event.message))
        task = self._tasks.get(event.phase)
        if task is None:
            task = self._tasks[event.phase] = self._progress.add_task(
                event.phase, total=event.total, unit=event.unit, rate="", units=""
            )
            self._stats[event.phase] = [time.perf_counter(), 0.0, 0.0]
            self._units[event.phase] = [0, None]
            self._unit_of[event.phase] = event.unit
        elif event.total is not None:
            self._progress.update(task, total=event.total)
        if event.units or event.units_total is not None:
            units = self._units[event.phase]
            units[0] = int(units[0] or 0) + event.units
            if event.units_total is not None:
                units[1] = event.units_total
            done = f" · units {units[0]:,}" + (f"/{units[1]:,}" if units[1] is not None else "")
            self._progress.update(task, units=done)
        if event.advance or event.tokens:
            stats = self._stats[event.phase]
            stats[1] += event.advance
            stats[2] += event.tokens
            dt = max(time.perf_counter() - stats[0], 1e-9)
            rate = f"{stats[1] / dt:,.0f} {self._unit_of[event.phase]}/s"  # the unit its first event named
            if stats[2]:
                rate += f" · {token_rate(stats[2] / dt)}"
            self._progress.update(task, advance=event.advance, rate=rate)


def token_rate(per_second: float) -> str:
    """Tokens per second as a person reads it: millions for data jobs, plain numbers for generation.

    >>> token_rate(2_345_678.0), token_rate(72.4)
    ('2.35M tokens/s', '72 tokens/s')
    """
    if per_second >= 1e6:
        return f"{per_second / 1e6:,.2f}M tokens/s"
    return f"{per_second:,.0f} tokens/s"
