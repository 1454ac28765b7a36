"""How many cores this process may use: its CPU affinity (`taskset`, a scheduler's or a container's
pinning), not the machine's count, which `os.cpu_count()` gives whatever the process may run on.
Every thread and worker count posttrain picks by itself starts from here.

>>> usable_cores() >= 1
True
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (the machine's count where the OS cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
