"""Worker processes that never outlive the process that started them.

`die_with_parent` is the initializer of every process pool posttrain starts (the `processes`
engine, the math-verify pool; the syntax pool's `python -c` workers call it too): a daemon thread in the worker checks twice a second that its parent
is still the process that started it, and ends the worker at once when it is not (the driver was
killed with `kill -9`, or crashed). Without it the workers and multiprocessing's resource tracker
(which exits once no process holds its pipe) would run on, hundreds of MB each.

A thread and not Linux's `PR_SET_PDEATHSIG`: the kernel sends that signal when the *thread* that
spawned the worker exits, and pools are grown from whichever thread submits work (validate's
judging threads start the math-verify pool), so it would kill healthy workers; the watchdog
watches the process, and works on every POSIX system.
"""

from __future__ import annotations

import os
import threading
import time

POLL_S = 0.5


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker as soon as `parent_pid` is no longer its parent."""
    if os.getppid() != parent_pid:  # the parent died before the worker got here
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(POLL_S)
            if os.getppid() != parent_pid:
                os._exit(1)  # no cleanup to do: the driver that wanted the results is gone

    threading.Thread(target=watch, name="posttrain-parent-watchdog", daemon=True).start()
