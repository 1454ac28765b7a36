"""The processes engine: a local pool over work units, results in unit order.

At most `2 * workers` units are in flight, so the memory held by finished-but-not-yet-consumed
results stays bounded however many units there are. Workers are started with `spawn` so that
nothing (threads, open files, tokenizer state) leaks from the parent by fork.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from posttrain.io.lifetime import die_with_parent
from posttrain.runner.local import run_with_retries


class ProcessEngine:
    name = "processes"

    def __init__(self, workers: int = 2, retries: int = 2) -> None:
        self.workers = max(1, int(workers))
        self.retries = retries
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # workers end when this process dies, however it dies (posttrain.io.lifetime)
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                             initializer=die_with_parent, initargs=(os.getpid(),))
        return self._pool

    def map_units(self, fn: Callable[[Any], Any], units: Iterable[Any]) -> Iterator[Any]:
        pool = self._get_pool()
        pending: deque[tuple[Any, Future]] = deque()
        it = iter(units)
        limit = 2 * self.workers

        def submit_next() -> bool:
            try:
                unit = next(it)
            except StopIteration:
                return False
            pending.append((unit, pool.submit(run_with_retries, fn, unit, self.retries)))
            return True

        while len(pending) < limit and submit_next():
            pass
        while pending:
            unit, fut = pending.popleft()
            result = fut.result()
            submit_next()
            yield result

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
