"""Engines: where the per-unit work runs. The work itself (a picklable function of a unit index)
knows nothing of the engine, and results always come back in unit order, so output bytes never
depend on which worker finished first.

- `local`: one process, streaming (the default).
- `processes`: a local process pool with a bounded number of units in flight.
- `ray`: Ray Data over the unit indices, on a running cluster (`address`) or a local one.

>>> list(get_engine("local").map_units(abs, [-2, 1, -3]))
[2, 1, 3]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from posttrain.errors import PosttrainError

ENGINES = ("local", "processes", "ray")


class Engine(Protocol):
    name: str
    workers: int

    def map_units(self, fn: Callable[[Any], Any], units: Iterable[Any]) -> Iterator[Any]:
        """fn(unit) for every unit, yielded in the order of `units`."""
        ...

    def close(self) -> None: ...


def get_engine(name: str = "local", workers: int = 1, address: str | None = None, retries: int = 2) -> Engine:
    """An engine by name; `workers` is the process count (processes) or CPU count (ray)."""
    if name == "local":
        from posttrain.runner.local import LocalEngine

        return LocalEngine(retries=retries)
    if name == "processes":
        from posttrain.runner.processes import ProcessEngine

        return ProcessEngine(workers=workers, retries=retries)
    if name == "ray":
        from posttrain.runner.ray_engine import RayEngine

        return RayEngine(workers=workers, address=address, retries=retries)
    raise PosttrainError(f"unknown engine {name!r}", fix=f"choose one of {', '.join(ENGINES)}")
