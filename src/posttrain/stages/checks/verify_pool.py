"""math-verify in worker processes, with a per-answer time limit.

math-verify bounds its own sympy work with `signal.alarm`, which only works on a process's main
thread; validation may run on any thread (a Ray actor, a thread pool), and a pathological answer
can still wedge sympy. So comparisons run in a small `ProcessPoolExecutor` created on first use
(never pickled with the check), and a comparison that outlives its time limit is reported as
`unverifiable` and its worker is replaced.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from posttrain.io.lifetime import die_with_parent

#: Outcome names double as the suffix of the math reason codes (`math.mismatch`, ...).
OK, MISMATCH, UNVERIFIABLE = "ok", "mismatch", "unverifiable"


def verify_pair(gold: str, pred: str, timeout: int = 5) -> str:
    """Compare two LaTeX answers with math-verify; runs inside a worker process.

    >>> verify_pair(r"\\frac{1}{2}", "0.5"), verify_pair("3", "4")
    ('ok', 'mismatch')
    """
    from math_verify import parse, verify

    try:
        # no_fallback: an answer math-verify cannot read gives [] (unverifiable), not a raw string
        g = parse(f"\\boxed{{{gold}}}", fallback_mode="no_fallback", parsing_timeout=timeout)
        p = parse(f"\\boxed{{{pred}}}", fallback_mode="no_fallback", parsing_timeout=timeout)
        if not g or not p:
            return UNVERIFIABLE
        return OK if verify(g, p, timeout_seconds=timeout) else MISMATCH
    except Exception:  # math-verify/sympy raise many types on odd input: all mean "cannot tell"
        return UNVERIFIABLE


def _inside_worker_main_thread() -> bool:
    return multiprocessing.parent_process() is not None and threading.current_thread() is threading.main_thread()


class MathVerifier:
    """Compares (gold, pred) pairs in a lazily created process pool; picklable (the pool is not)."""

    def __init__(self, timeout: float = 5.0, workers: int = 1) -> None:
        self.timeout = timeout
        self.workers = max(1, workers)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # checks may run on several threads at once

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_pool"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def verify_many(self, pairs: list[tuple[str, str]]) -> list[str]:
        """Outcome per pair, in order: "ok", "mismatch" or "unverifiable"."""
        if _inside_worker_main_thread():
            # already a disposable worker process on its main thread: math-verify's alarm works here,
            # and a pool inside a pool worker would only add processes (and can deadlock at exit)
            return [verify_pair(g, p, int(max(1, self.timeout))) for g, p in pairs]
        results: list[str] = []
        todo = list(pairs)
        while todo:
            pool = self._ensure_pool()
            limit = int(max(1, self.timeout))
            futures: list[Future[str]] = [pool.submit(verify_pair, g, p, limit) for g, p in todo]
            done = 0
            for fut in futures:
                try:
                    # parse twice + verify, each bounded by `limit` inside the worker; generous backstop
                    results.append(fut.result(timeout=3 * self.timeout + 5))
                    done += 1
                except FutureTimeout:
                    results.append(UNVERIFIABLE)
                    done += 1
                    self.close()
                    break
                except Exception:  # a crashed worker (BrokenProcessPool): this answer cannot be told
                    results.append(UNVERIFIABLE)
                    done += 1
                    self.close()
                    break
            todo = todo[done:]
        return results

    def close(self) -> None:
        """Stop the worker processes (killing one stuck in sympy)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # ProcessPoolExecutor has no public "kill" before Python 3.14; a stuck sympy call ignores shutdown
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)

    def _ensure_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                # spawn, not fork: the parent holds Arrow and tokenizer threads that fork would copy mid-flight
                ctx = multiprocessing.get_context("spawn")
                self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,  # ends with this process
                                                 initializer=die_with_parent, initargs=(os.getpid(),))
            return self._pool

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass
