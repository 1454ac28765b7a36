"""THE syntax pool: the code check's fence scan and `ast.parse` in a worker process, beside the other checks.

Parsing Python is the code check's cost (about 1 s per 10 MB of code) and holds the GIL the whole
time, so on validate's judging threads it stalls the Arrow and regex work of every other check. A
worker process parses while this process goes on; only the answers' texts travel (pickled over a
pipe) and only one finding per answer comes back, computed by the same function
(`syntax.code_findings`), so the findings are those of an in-process run.

Not multiprocessing: a spawned multiprocessing child imports the module of its target, and
importing anything under `posttrain.stages.checks` loads the whole checks package (Arrow, pandas:
~0.5 s of CPU). The worker is `python -c WORKER_BOOT`, which loads `syntax.py` (standard library
only) by its path. It ends with its driver: `die_with_parent`, and the end of its input pipe.

When parsing here is as good: inside a worker of the processes engine (its siblings already use
the cores), on one core, or for a batch with little text (less than a worker's start) — there
`code_findings` runs in this process. A worker that dies mid-request (killed, out of memory) is
replaced and the request sent again; if the fresh one dies too, the request is parsed here.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import posttrain
from posttrain.io.cores import usable_cores
from posttrain.stages.checks import syntax
from posttrain.stages.checks.syntax import code_findings, gc_paused

#: loads syntax.py by path (not through the checks package) and serves stdin; argv: parent pid, src root, file
WORKER_BOOT = (
    "import sys, importlib.util as u; sys.path.insert(0, sys.argv[2]); "
    "s = u.spec_from_file_location('posttrain_syntax_worker', sys.argv[3]); m = u.module_from_spec(s); "
    "s.loader.exec_module(m); m.main(sys.argv[1:2])"
)
#: a batch with less answer text than this is scanned here: ~0.1 s of parsing, about what a worker's start
#: (~0.05 s of CPU, and its latency) and the round trip cost; the bundled sample's code batches stay below it
MIN_CHARS = 1_000_000


class _Worker:
    """One worker process and its two pipes."""

    def __init__(self) -> None:
        src_root = str(Path(posttrain.__file__).resolve().parents[1])
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER_BOOT, str(os.getpid()), src_root, str(Path(syntax.__file__).resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )

    @classmethod
    def start(cls) -> _Worker | None:
        """A new worker; None when no process can start here (the caller parses in this process)."""
        try:
            return cls()
        except OSError:
            return None

    def ask(self, texts: list[str | None]) -> list[str | None]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        pickle.dump(texts, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.flush()
        reply = pickle.load(self.proc.stdout)
        if not isinstance(reply, list) or len(reply) != len(texts):
            raise EOFError("a malformed reply")
        return reply

    def stop(self) -> None:
        """Close its input (it exits at the end of it); kill it if it does not."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        try:
            self.proc.wait(2)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
            pass


def _ask(worker: _Worker, texts: list[str | None]) -> list[str | None] | None:
    """The worker's findings; None when it died (it is killed and reaped). Any other error kills it too."""
    try:
        return worker.ask(texts)
    except (EOFError, OSError, pickle.UnpicklingError):
        worker.kill()
        return None
    except BaseException:
        worker.kill()
        raise


def _stop_all(idle: list[_Worker]) -> None:
    while idle:
        idle.pop().stop()


class SyntaxPool:
    """Up to `workers` syntax worker processes (default: the CPU count, at most 8), each started when a call
    finds no idle one: judging threads that parse at once parse in parallel (two code batches in flight
    otherwise queue behind one worker while the judging threads, blocked, leave their cores idle).
    Picklable (the processes are not).

    `findings(texts)` is `syntax.code_findings(texts)`, computed in a worker. Calls may come from any
    thread; `close()` stops the workers (the pool stays usable and starts them again when needed).
    """

    def __init__(self, workers: int | None = None, min_chars: int = MIN_CHARS) -> None:
        self.workers = max(1, workers if workers is not None else min(usable_cores(), 8))
        self.min_chars = min_chars
        self._no_workers()

    def __getstate__(self) -> dict[str, Any]:
        return {"workers": self.workers, "min_chars": self.min_chars}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._no_workers()

    def _no_workers(self) -> None:
        self._idle: list[_Worker] = []
        self._threads: ThreadPoolExecutor | None = None  # waits on the workers for `submit`
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.workers)  # several judging threads share the pool
        # the workers stop when the pool is collected, even if nobody called close()
        self._finalizer = weakref.finalize(self, _stop_all, self._idle)

    def findings(self, texts: list[str | None]) -> list[str | None]:
        """`code_findings(texts)`: in a worker process, or here when that would not help (see the module doc)."""
        if not self._worth_a_worker(texts):
            return _here(texts)
        with self._slots:
            for fresh in (False, True):  # a worker that died is replaced once
                worker = _Worker.start() if fresh else self._take()
                reply = _ask(worker, texts) if worker is not None else None
                if reply is not None:
                    with self._lock:
                        self._idle.append(worker)  # type: ignore[arg-type]
                    return reply
        return _here(texts)  # no worker could start, or the fresh one died as well

    def submit(self, texts: list[str | None]) -> Callable[[], list[str | None]]:
        """`findings(texts)` started now, on a thread of the pool when a worker will do it (the caller goes on
        meanwhile), else deferred to the call; the returned function gives the findings."""
        if not self._worth_a_worker(texts):
            return lambda: _here(texts)
        with self._lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="syntax")
            future = self._threads.submit(self.findings, texts)
        return future.result

    def _worth_a_worker(self, texts: list[str | None]) -> bool:
        # on one usable core a worker process only adds its start and the round trips
        if multiprocessing.parent_process() is not None or usable_cores() < 2:
            return False
        return sum(len(t) for t in texts if t) >= self.min_chars

    def _take(self) -> _Worker | None:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _Worker.start()

    def close(self) -> None:
        """Stop the idle workers (a busy one goes back to the idle list, and to the next close)."""
        with self._lock:
            idle, self._idle[:] = list(self._idle), []
            threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False)  # its threads end when their requests do (each returns its worker)
        _stop_all(idle)


def _here(texts: list[str | None]) -> list[str | None]:
    with gc_paused:
        return code_findings(texts)
