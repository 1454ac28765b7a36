"""The local engine: units one after another in this process."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from posttrain.errors import PosttrainError, UnitFailed

log = logging.getLogger("posttrain.runner.engines")
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES)


def run_with_retries(fn: Callable[[Any], Any], unit: Any, retries: int) -> Any:
    """fn(unit), retried `retries` times; the last failure is raised as UnitFailed naming the unit."""

    for attempt in range(retries + 1):
        try:
            return fn(unit)
        except PosttrainError:
            raise  # a user error (bad recipe, bad path) does not get better by retrying
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in _DISK_ERRORS:
                raise  # a full disk or a read-only folder does not either: the CLI names the path and the fix
            log.warning("unit %s failed (attempt %d/%d): %s: %s", unit, attempt + 1, retries + 1, type(exc).__name__, exc)
            if attempt == retries:
                raise UnitFailed(
                    f"work unit {unit} failed {retries + 1} times: {type(exc).__name__}: {exc}",
                    fix="rerun the same command to resume; finished units are kept (--debug shows the traceback)",
                ) from exc
    raise AssertionError("unreachable")


class LocalEngine:
    name = "local"

    def __init__(self, retries: int = 2) -> None:
        self.workers = 1
        self.retries = retries

    def map_units(self, fn: Callable[[Any], Any], units: Iterable[Any]) -> Iterator[Any]:
        for unit in units:
            yield run_with_retries(fn, unit, self.retries)

    def close(self) -> None:
        pass
