"""THE math-verify pool: comparisons in worker processes, a time limit per item, a timeout its own outcome.

Validation's math check and eval's math grader both use `VerifyPool`. math-verify bounds its sympy
work with `signal.alarm`, which only works on a process's main thread and only between Python
bytecodes: called from a thread it raises, and a long C-level sympy or big-integer operation ignores
it. So every comparison runs on the main thread of a worker process (where the alarm works), and the
caller waits with a deadline of its own; a worker past it is killed alone and replaced, and the item
is reported as `timeout` instead of stalling the run.

Not a `ProcessPoolExecutor`, because (1) a future's timeout would also count the time it spent queued,
so one slow item would time out the ones behind it, and (2) an executor cannot kill one stuck worker,
only terminate them all. Here each worker has its own pipe: the deadline starts when the item is sent,
after the worker has started and imported math-verify (a cold start on a loaded machine takes seconds).

Outcomes: "ok", "mismatch", "unverifiable" (math-verify cannot read an answer; a crashed worker) and
"timeout" (math-verify used up its time, or the worker was killed at the deadline). math-verify reports
its own timeout as a plain False, so `verify_answer` times each step to tell a timeout from a mismatch.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from posttrain.errors import PosttrainError
from posttrain.io.lifetime import die_with_parent

OK, MISMATCH, UNVERIFIABLE, TIMEOUT = "ok", "mismatch", "unverifiable", "timeout"
WINDOW = 4  # items sent ahead to a worker: it goes on to the next without waiting for the caller to wake up
STARTUP_S = 120.0  # a worker's start (spawn + importing sympy) is not an item's time; this only catches a broken start


class Outcome(NamedTuple):
    """One comparison: `verdict` is OK, MISMATCH, UNVERIFIABLE or TIMEOUT; `detail` says why when not plain."""

    verdict: str
    detail: str = ""


def verify_answer(gold: str, pred: str, timeout: int) -> str:
    """math-verify on two answers, on a process's main thread: "ok", "mismatch", "unverifiable" or "timeout".

    A parse or comparison that used up its `timeout` (whole seconds, math-verify's alarm) is "timeout".

    >>> verify_answer(r"\\frac{1}{2}", "0.5", 5), verify_answer("3", "4", 5), verify_answer("3", "", 5)
    ('ok', 'mismatch', 'unverifiable')
    """
    from math_verify import parse, verify

    def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, bool]:
        start = time.monotonic()
        try:
            value = fn(*args, **kwargs)
        except Exception:  # math-verify/sympy raise many types on odd input: all mean "cannot tell"
            value = None
        return value, time.monotonic() - start >= timeout

    # no_fallback: an answer math-verify cannot read gives [] (unverifiable), not a raw string
    g, slow_g = timed(parse, f"\\boxed{{{gold}}}", fallback_mode="no_fallback", parsing_timeout=timeout)
    p, slow_p = timed(parse, f"\\boxed{{{pred}}}", fallback_mode="no_fallback", parsing_timeout=timeout)
    if not g or not p:
        return TIMEOUT if slow_g or slow_p else UNVERIFIABLE
    same, slow = timed(verify, g, p, timeout_seconds=timeout)
    if same is None:
        return UNVERIFIABLE
    return OK if same else TIMEOUT if slow else MISMATCH


def _serve(conn: Connection, parent_pid: int) -> None:
    """Worker loop: import math-verify, say "ready", then answer (gold, pred, timeout) with ("ok", verdict)
    or ("error", message) until the pipe closes or None arrives."""
    die_with_parent(parent_pid)
    import math_verify  # noqa: F401  (imported before "ready", so the first item's deadline is its own)

    conn.send("ready")
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            return
        if args is None:
            return
        try:
            conn.send(("ok", verify_answer(*args)))
        except BaseException as err:  # e.g. MemoryError: this item cannot be told; the worker lives on
            conn.send(("error", f"{type(err).__name__}: {err}"[:500]))


class _Worker:
    """One worker process and its pipe."""

    def __init__(self) -> None:
        # spawn, not fork: the parent holds Arrow, tokenizer or torch threads that fork would copy mid-flight;
        # daemon: the interpreter's exit ends idle workers instead of waiting on them
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, os.getpid()), daemon=True, name="posttrain-math-verify")
        self.proc.start()
        child.close()
        try:
            ready = self.conn.poll(STARTUP_S) and self.conn.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self.proc.join(1)  # a worker that died at start: reap it, so its exit code is known
            code = self.proc.exitcode  # None while it runs: it hung
            self.kill()
            why = f"exited with code {code}" if code is not None else f"hung for {STARTUP_S:.0f}s"
            raise PosttrainError(f"the worker {why} while starting (its error is above)", place="math-verify",
                                 fix="check that `python -c 'import math_verify'` works here")  # fmt: skip

    def kill(self) -> None:
        self.proc.kill()
        self.proc.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(2)
        if self.proc.is_alive():
            self.kill()
        else:
            self.conn.close()


def _inside_worker_main_thread() -> bool:
    return multiprocessing.parent_process() is not None and threading.current_thread() is threading.main_thread()


class VerifyPool:
    """Up to `workers` math-verify processes, started on first use; picklable (the processes are not pickled).

    `timeout` is math-verify's own limit per parse and comparison (whole seconds: it is an alarm); past
    `deadline_s` (default: two parses and a comparison, plus 5 s) the caller stops waiting, kills that
    worker and reports "timeout". Calls may come from any thread.

    >>> pool = VerifyPool(timeout=5)
    >>> [o.verdict for o in pool.verify_many([("x+1", "1+x"), ("2", "3")])]
    ['ok', 'mismatch']
    >>> pool.close()
    """

    def __init__(self, timeout: float = 5.0, workers: int = 1, deadline_s: float | None = None) -> None:
        self.timeout = max(1, round(timeout))
        self.workers = max(1, workers)
        self.deadline_s = deadline_s if deadline_s is not None else 3 * self.timeout + 5
        self._no_workers()

    def __getstate__(self) -> dict[str, Any]:
        return {"timeout": self.timeout, "workers": self.workers, "deadline_s": self.deadline_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._no_workers()

    def _no_workers(self) -> None:
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.workers)  # several judging threads share one pool

    def verify_many(self, pairs: list[tuple[str, str]]) -> list[Outcome]:
        """One `Outcome` per (gold, pred), in order; up to `workers` lanes (every `workers`-th pair) at once."""
        if not pairs:
            return []
        if _inside_worker_main_thread():
            # already a disposable worker process (the processes engine) on its main thread: math-verify's
            # alarm works here, and workers inside a worker would only add processes
            return [Outcome(verify_answer(g, p, self.timeout)) for g, p in pairs]
        lanes = min(self.workers, len(pairs))
        if lanes == 1:
            return self._lane(pairs)
        out: list[Outcome] = [Outcome(UNVERIFIABLE)] * len(pairs)
        with ThreadPoolExecutor(lanes, thread_name_prefix="math-verify") as threads:
            for j, done in enumerate(threads.map(lambda j: self._lane(pairs[j::lanes]), range(lanes))):
                out[j::lanes] = done
        return out

    def verify(self, gold: str, pred: str) -> Outcome:
        """One comparison (see `verify_many`)."""
        return self.verify_many([(gold, pred)])[0]

    def _lane(self, pairs: list[tuple[str, str]]) -> list[Outcome]:
        """`pairs` through one worker, WINDOW sent ahead so the worker never waits on this thread. The deadline
        of the oldest item in flight starts when the answer before it arrived (the worker started it then, or
        later); past it the worker is killed, and the items queued behind go to a fresh worker."""
        out: list[Outcome] = []
        todo, inflight = deque(pairs), 0
        with self._slots:
            worker = self._take()
            while todo:
                try:
                    while inflight < min(WINDOW, len(todo)):
                        worker.conn.send((*todo[inflight], self.timeout))
                        inflight += 1
                    if not worker.conn.poll(self.deadline_s):
                        outcome = Outcome(TIMEOUT, f"worker killed at the {self.deadline_s:g}s deadline")
                    else:
                        status, value = worker.conn.recv()
                        out.append(Outcome(value) if status == "ok" else Outcome(UNVERIFIABLE, value))
                        todo.popleft()
                        inflight -= 1
                        continue
                except (EOFError, OSError):  # the worker died (e.g. killed for memory)
                    outcome = Outcome(UNVERIFIABLE, "math-verify worker process died")
                worker.kill()
                out.append(outcome)
                todo.popleft()
                inflight = 0  # the rest were sent to the dead worker: they go again to a fresh one
                if not todo:
                    return out
                worker = _Worker()
            self._give_back(worker)
        return out

    def close(self) -> None:
        """Stop the idle workers (a busy one is killed by its own deadline)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()

    def _take(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _Worker()

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass
