"""One engine for a whole job: started once, used by every phase, closed at the end.

A job with several passes over work units (prepare: map, then the reduce passes, then the shards;
dedup and select: find, decide, write) opens its engine here and hands it to every
`run_units` call, so a process pool is spawned once and a Ray connection (or local Ray cluster) is
made once, instead of once per pass.

>>> with open_engine("local") as eng:
...     list(eng.map_units(abs, [-1, 2]))
[1, 2]
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from posttrain.runner.engines import Engine, get_engine


@contextmanager
def open_engine(name: str = "local", workers: int = 1, address: str | None = None, retries: int = 2) -> Iterator[Engine]:
    """The engine `name`, closed (pool shut down, Ray disconnected) when the block ends."""
    eng = get_engine(name, workers, address, retries)
    try:
        yield eng
    finally:
        eng.close()
