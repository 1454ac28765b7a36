"""Holding an output folder for a run: the checks, the lock, the take-over of an owned folder, the record
kept up to date, and stale files removed after a successful rerun (`Claim`, `claim`, `owns_output`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import inspect
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from posttrain.errors import PosttrainError
from posttrain.io.outdir.overlap import check_overlap, input_paths, resolved_path
from posttrain.io.outdir.record import (
    BOOKKEEPING,
    LOCK,
    RECORD_DIR,
    is_owned,
    read_record,
    user_files,
    write_record,
)

#: Set by the CLI's `--wait`: wait for another run's lock instead of refusing.
WAIT = {"on": False}

F = TypeVar("F", bound=Callable[..., Any])

# out folders this process holds now (resolved path -> depth), so a job calling another job on the
# same folder (export_source -> export_batches) does not lock itself out
_HELD: dict[str, int] = {}


def _os_error(exc: OSError, out: Path) -> PosttrainError:
    where = exc.filename or str(out)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PosttrainError(f"cannot write here ({exc.strerror})", place=str(where),
                              fix="choose an --out you can write to")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return PosttrainError(f"cannot write: {exc.strerror}", place=str(where),
                              fix="free space (or raise the file size limit) and rerun; finished work is kept")
    return PosttrainError(f"cannot write the output folder ({exc.strerror or exc})", place=str(where),
                          fix="check the path")


class Claim:
    """A held output folder (see `posttrain.io.outdir`); use as a context manager or through `claim`."""

    def __init__(self, out: Path, command: str, inputs: Iterable[Any], *, wait: bool | None = None,
                 fresh: bool = True, on_wait: Callable[[str], None] | None = None) -> None:
        self.out = Path(os.path.expanduser(str(out)))
        self.command = command
        self.inputs = input_paths(list(inputs))
        self.wait = WAIT["on"] if wait is None else wait
        self.fresh = fresh
        self.on_wait = on_wait
        self._fd: int | None = None
        self.owned: set[str] = set()  # files of earlier runs posttrain may remove or overwrite
        self._before: dict[str, tuple[int, int, int] | None] = {}

    # -- before anything is written ---------------------------------------------------------------
    def _check_folder(self) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise PosttrainError("exists and is not a folder", place=str(out), fix="choose a folder for --out")
        check_overlap(out, self.inputs)
        if out.is_dir() and not is_owned(out) and user_files(out):
            raise PosttrainError(
                "the output folder is not empty and posttrain did not write it (no .posttrain/owner.json)",
                place=str(out),
                fix="choose a new or empty --out; posttrain never writes into a folder of other files",
            )

    def _lock(self) -> None:
        lock_path = self.out / RECORD_DIR / LOCK
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(lock_path)
            if not self.wait:
                os.close(fd)
                raise PosttrainError(
                    f"another posttrain run{holder} is writing to this folder",
                    place=str(self.out),
                    fix="wait for it to finish (or pass --wait), or choose another --out",
                ) from None
            (self.on_wait or _say)(f"waiting for the posttrain run{holder} that holds {self.out}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def __enter__(self) -> Claim:
        self._check_folder()
        try:
            (self.out / RECORD_DIR).mkdir(parents=True, exist_ok=True)
            self._lock()
        except OSError as exc:
            raise _os_error(exc, self.out) from None
        try:
            self._take_over()
        except BaseException:
            self._unlock()
            raise
        return self

    def _take_over(self) -> None:
        """Under the lock: check the record again (another run may have finished meanwhile), mark running."""
        record = read_record(self.out)
        present = user_files(self.out)
        if record is None or record.get("state") != "complete":
            # new, empty, or left by a run that died while holding the lock: everything here is posttrain's
            if record is None and present:
                raise PosttrainError(
                    "the output folder is not empty and posttrain did not write it", place=str(self.out),
                    fix="choose a new or empty --out; posttrain never writes into a folder of other files",
                )
            self.owned = set(present)
        else:
            listed = set(record.get("files") or [])
            foreign = [f for f in present if f not in listed]
            if foreign:
                more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
                raise PosttrainError(
                    f"the output folder holds files posttrain did not write: {foreign[0]}{more}",
                    place=str(self.out),
                    fix="move them out of this folder, or choose another --out",
                )
            self.owned = set(present)
        try:
            write_record(self.out, {"tool": "posttrain", "command": self.command, "state": "running",
                                     "pid": os.getpid(), "files": sorted(self.owned)})
        except OSError as exc:
            raise _os_error(exc, self.out) from None
        self._before = {rel: _stamp(self.out / rel) for rel in self.owned} if self.fresh else {}

    def _remove_earlier_outputs(self) -> None:
        """After a successful rerun: what the last run wrote and this one did not rewrite goes (a stale
        part file never lingers beside new ones). A failed run removes nothing."""
        for rel, stamp in sorted(self._before.items()):
            p = self.out / rel
            if stamp is not None and _stamp(p) == stamp:
                p.unlink(missing_ok=True)
        _remove_empty_dirs(self.out)

    # -- after the run ----------------------------------------------------------------------------
    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc_type is None:
                self._remove_earlier_outputs()
                write_record(self.out, {"tool": "posttrain", "command": self.command, "state": "complete",
                                         "files": user_files(self.out)})
        finally:
            self._unlock()

    def _unlock(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _say(message: str) -> None:
    logging.getLogger("posttrain").warning(message)


def _stamp(p: Path) -> tuple[int, int, int] | None:
    """(inode, mtime, size) of a file: a file rewritten (a new file renamed over it) has another one."""
    try:
        st = os.lstat(p)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _holder(lock_path: Path) -> str:
    try:
        pid = lock_path.read_text().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def _remove_empty_dirs(out: Path) -> None:
    for dirpath, _dirs, _files in sorted(os.walk(out), key=lambda t: -len(t[0])):
        p = Path(dirpath)
        if p == out or p.relative_to(out).parts[0] in BOOKKEEPING:
            continue
        with contextlib.suppress(OSError):
            p.rmdir()  # only empty folders go


@contextlib.contextmanager
def claim(out: str | Path, command: str, inputs: Iterable[Any], *, wait: bool | None = None, fresh: bool = True,
          on_wait: Callable[[str], None] | None = None) -> Iterator[Claim | None]:
    """Hold `out` for a run of `command` that reads `inputs` (see `posttrain.io.outdir`).

    `fresh` (row jobs): files an earlier run wrote and this one did not rewrite are removed once it
    succeeds; resumable jobs (prepare) manage theirs. Nested claims of one folder in one process are one
    claim.
    """
    key = str(resolved_path(Path(out)))
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield None
        finally:
            _HELD[key] -= 1
        return
    with Claim(Path(out), command, inputs, wait=wait, fresh=fresh, on_wait=on_wait) as held:
        _HELD[key] = 1
        try:
            yield held
        finally:
            _HELD.pop(key, None)


def owns_output(command: str, *, out: str | Callable[[dict[str, Any]], Any] = "out_dir",
                inputs: Callable[[dict[str, Any]], Iterable[Any]] | None = None, fresh: bool = True) -> Callable[[F], F]:
    """Decorate a job function so that it runs holding its output folder (one call per job).

    `out` names the argument that is the output folder (or computes it from the arguments);
    `inputs` computes what the job reads (default: the `source` argument).
    """

    def deco(fn: F) -> F:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            a = dict(bound.arguments)
            folder = out(a) if callable(out) else a[out]
            reads = list(inputs(a)) if inputs is not None else [a.get("source")]
            with claim(folder, command, reads, fresh=fresh):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco


def remove_owned(path: Path) -> None:
    """Remove a folder or file inside an output folder this process holds (posttrain's own files only).

    The claim checked that every file in the folder is posttrain's; a path outside a held folder is
    refused rather than removed.
    """
    p = resolved_path(Path(path))
    if not any(p == Path(k) or Path(k) in p.parents for k in _HELD) or p.name == RECORD_DIR:
        raise PosttrainError("posttrain removes only files in an output folder it holds", place=str(path),
                             fix="this is a bug in posttrain; please report it")
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)
