"""The threads engine: units on a few threads of this process, results in unit order.

For work that spends its time in code that releases the GIL (Arrow take, numpy, the parquet
encoder): `prepare` writes its shards this way under the `local` engine, so a one-process run
still uses a few cores for its last phase. At most `2 * threads` units are in flight.

>>> eng = ThreadEngine(2)
>>> list(eng.map_units(abs, [-3, 1, -2]))
[3, 1, 2]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from posttrain.runner.local import run_with_retries


class ThreadEngine:
    name = "threads"

    def __init__(self, threads: int = 2, retries: int = 2) -> None:
        self.workers = max(1, int(threads))
        self.retries = retries

    def map_units(self, fn: Callable[[Any], Any], units: Iterable[Any]) -> Iterator[Any]:
        with ThreadPoolExecutor(self.workers, thread_name_prefix="unit") as pool:
            pending: deque[Future] = deque()
            for unit in units:
                pending.append(pool.submit(run_with_retries, fn, unit, self.retries))
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    def close(self) -> None:
        pass
