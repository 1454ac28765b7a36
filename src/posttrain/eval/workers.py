"""Worker processes with a hard deadline per call: for math-verify, whose own timeout is `signal.alarm`.

`signal.alarm` only works on a process's main thread, and only between Python bytecodes: called
from a thread it raises, and a long C-level sympy or big-integer operation ignores it. So every
comparison runs on the main thread of a worker process (where math-verify's alarm works), and the
parent waits with a deadline of its own; a worker past it is killed and replaced, and the call is
reported as `timeout` instead of stalling the run. Calls may come from any thread.

Unlike a `ProcessPoolExecutor`, each worker has its own pipe, so the deadline is per call (a
future's timeout would also count the time it spent queued) and a stuck worker can be killed alone.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any


def _serve(conn: Connection, fn: Callable[..., Any]) -> None:
    """Worker loop: receive an argument tuple, send back ("ok", result) or ("error", message)."""
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            return
        if args is None:
            return
        try:
            conn.send(("ok", fn(*args)))
        except BaseException as err:  # the caller decides what an error means; the worker lives on
            conn.send(("error", f"{type(err).__name__}: {err}"[:500]))


class _Worker:
    def __init__(self, fn: Callable[..., Any]) -> None:
        # spawn, not fork: the parent holds torch/tokenizer threads that a fork would copy mid-flight
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, fn), daemon=True)
        self.proc.start()
        child.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class TimedWorkers:
    """`workers` processes running `fn` (a module-level, picklable function), started on first use.

    >>> import math
    >>> pool = TimedWorkers(math.sqrt, workers=1)
    >>> pool.map([(16.0,), (-1.0,)], deadline_s=30)
    [('ok', 4.0), ('error', 'ValueError: math domain error')]
    >>> pool.close()
    """

    def __init__(self, fn: Callable[..., Any], workers: int = 1) -> None:
        self.fn = fn
        self.workers = max(1, workers)
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _Worker(self.fn)

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def call(self, args: tuple[Any, ...], deadline_s: float) -> tuple[str, Any]:
        """("ok", result), ("error", message) or ("timeout", None) after `deadline_s` (the worker is killed)."""
        worker = self._take()
        try:
            worker.conn.send(args)
            if worker.conn.poll(deadline_s):
                result = worker.conn.recv()
                self._give_back(worker)
                return result
        except (EOFError, OSError, BrokenPipeError):  # the worker died (e.g. killed for memory)
            worker.kill()
            return "error", "worker process died"
        worker.kill()
        return "timeout", None

    def map(self, calls: list[tuple[Any, ...]], deadline_s: float) -> list[tuple[str, Any]]:
        """`call` for each argument tuple, up to `workers` at once; results in input order."""
        if not calls:
            return []
        if self.workers == 1 or len(calls) == 1:
            return [self.call(args, deadline_s) for args in calls]
        with ThreadPoolExecutor(min(self.workers, len(calls))) as pool:
            return list(pool.map(lambda args: self.call(args, deadline_s), calls))

    def close(self) -> None:
        """Stop the idle workers (busy ones are killed by their own deadline)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            try:
                worker.conn.send(None)
            except OSError:
                pass
            worker.proc.join(2)
            if worker.proc.is_alive():
                worker.kill()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass
