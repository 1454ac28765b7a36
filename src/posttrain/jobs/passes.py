"""Passes of work units on one engine, with progress per phase and the seconds each pass took.

A job whose work is several passes (prepare: map, the reduce passes, the shards; dedup and select
on processes/ray: find, decide, write) runs each through `Passes.run`, which hands the job's one
engine to `posttrain.runner.units.run_units`, reports finished units (and the rows and tokens
their results name) as progress of the pass's phase, and keeps the wall seconds of every pass:
`engine_seconds` is the time the work spent on the engine, so the rest of a phase is the time the
driver spent alone (the serial part of the run).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from posttrain.runner.engines import Engine
from posttrain.runner.units import run_units


class Passes:
    """Runs passes of units on `engine`, reporting through `report` (a `posttrain.progress.reporter`)."""

    def __init__(self, engine: Engine, report: Callable[..., None] | None = None) -> None:
        self.engine = engine
        self.report = report or (lambda *_a, **_k: None)
        self.seconds: dict[str, float] = {}
        self._units_total: dict[str, int] = {}

    def run(
        self,
        name: str,
        fn: Callable[[int], dict[str, Any]],
        units: int | Sequence[int],
        work: Path,
        *,
        phase: str,
        key: str | None = None,
        fresh: bool = True,
        engine: Engine | None = None,
        rows: str | None = None,
        tokens: str | None = None,
    ) -> list[dict[str, Any]]:
        """Run `fn` over `units` in `work` (emptied first unless `fresh` is False: then finished units
        made with the same `key` are kept); results in unit order. `rows` / `tokens` name the result
        fields reported as the phase's rows and tokens."""
        indices = list(range(units)) if isinstance(units, int) else list(units)
        if fresh:
            shutil.rmtree(work, ignore_errors=True)
        self._units_total[phase] = self._units_total.get(phase, 0) + len(indices)
        self.report(phase, units_total=self._units_total[phase])

        def on_result(result: dict[str, Any]) -> None:
            self.report(phase, advance=int(result.get(rows, 0)) if rows else 0,
                        tokens=int(result.get(tokens, 0)) if tokens else 0, units=1)

        t = time.perf_counter()
        results = run_units(fn, indices, work, key=key or name, engine=engine or self.engine, on_result=on_result)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
        return results

    @property
    def engine_seconds(self) -> float:
        return sum(self.seconds.values())
