"""Output folders that posttrain owns: an ownership record, one run at a time, never over an input.

Every job that writes a folder claims it first, through one call (`owns_output` on the job's
function, or `claim` directly):

- `--out` must not equal, contain or sit inside any input (a source file or folder, a rehydration
  source, a hub mirror): refused with one line naming both paths;
- `--out` must be new, empty, or a folder posttrain owns: `OUT/.posttrain/owner.json` (the
  ownership record) lists every file posttrain wrote there. A non-empty folder without it, or one
  holding files the record does not list, is refused: posttrain deletes or overwrites only files
  it can prove it wrote;
- one run at a time: `OUT/.posttrain/lock` is held with `flock` for the whole run (the kernel drops
  it when the process dies, however it dies); a second run is refused with the holder's pid, or
  waits for it with `--wait`;
- the record says `running` while a run writes and `complete` with the list of files once it is
  done, so a run that crashed is known to have left only posttrain's files behind.

A folder posttrain owns is never read back as input: `inside_owned_output` lets source
discovery skip such folders below the directory it lists.

>>> import tempfile
>>> out = Path(tempfile.mkdtemp()) / "out"
>>> with claim(out, "validate", []):
...     _ = (out / "summary.json").write_text("{}")
>>> read_record(out)["files"], read_record(out)["state"]
(['summary.json'], 'complete')
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import glob as globlib
import inspect
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from posttrain.errors import PosttrainError

RECORD_DIR = ".posttrain"
RECORD = "owner.json"
LOCK = "lock"
#: folders inside OUT that hold posttrain's bookkeeping, never user data (not listed in the record)
BOOKKEEPING = (RECORD_DIR, ".work", ".units")

#: Set by the CLI's `--wait`: wait for another run's lock instead of refusing.
WAIT = {"on": False}

F = TypeVar("F", bound=Callable[..., Any])

# out folders this process holds now (resolved path -> depth), so a job calling another job on the
# same folder (export_source -> export_batches) does not lock itself out
_HELD: dict[str, int] = {}


def read_record(out: Path) -> dict[str, Any] | None:
    """The ownership record of `out`, or None (missing or unreadable: not owned)."""
    try:
        data = json.loads((Path(out) / RECORD_DIR / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == "posttrain" else None


def is_owned(folder: Path) -> bool:
    return (Path(folder) / RECORD_DIR / RECORD).is_file()


def inside_owned_output(path: str | Path, root: str | Path) -> bool:
    """Whether `path` lies in an output folder posttrain owns strictly below `root` (or in bookkeeping).

    Source discovery lists `root`; a folder posttrain wrote under it (`D/val` of `validate D --out
    D/val`) is never read back as input. A root that is itself (inside) an owned folder is read:
    `posttrain dedup out/validate/accepted` reads what validate wrote, on purpose.

    >>> inside_owned_output("/d/x.parquet", "/d")
    False
    """
    p, r = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    try:
        rel = p.relative_to(r)
    except ValueError:
        return False
    parts = rel.parts[:-1]  # the folders between root and the file
    if any(part in BOOKKEEPING for part in parts):
        return True
    folder = r
    for part in parts:
        folder = folder / part
        if is_owned(folder):
            return True
    return False


def input_paths(*items: Any) -> list[Path]:
    """Local paths of what a job reads: path strings, globs, opened sources (`.spec`, `.files`), lists.

    Hub ids and remote files are not local paths and are left out.
    """
    found: list[Path] = []

    def add(item: Any) -> None:
        if item is None:
            return
        if isinstance(item, (str, Path)):
            text = os.path.expanduser(str(item))
            if any(ch in text for ch in "*?[") and not os.path.exists(text):
                for p in globlib.glob(text, recursive=True):
                    found.append(Path(p))
            elif text and os.path.exists(text):
                found.append(Path(text))
            return
        if isinstance(item, dict):
            for v in item.values():
                add(v)
            return
        if isinstance(item, (list, tuple, set)):
            for v in item:
                add(v)
            return
        spec = getattr(item, "spec", None)
        if isinstance(spec, (str, Path)):
            add(spec)
        for f in getattr(item, "files", None) or []:
            if getattr(f, "fs", None) is None or os.path.exists(str(getattr(f, "path", ""))):
                add(getattr(f, "path", None))

    for item in items:
        add(item)
    return found


def _resolved(p: Path) -> Path:
    return Path(os.path.realpath(os.path.expanduser(str(p))))


def check_overlap(out: Path, inputs: Iterable[Path], what: str = "output folder") -> None:
    """Refuse an `out` folder that equals, contains or sits inside an input (an output file: that is one)."""
    o = _resolved(out)
    for inp in inputs:
        i = _resolved(inp)
        if o == i or (what == "output folder" and (o in i.parents or i in o.parents)):
            how = "is" if o == i else ("holds" if o in i.parents else "is inside")
            raise PosttrainError(
                f"the {what} {how} the input {inp}",
                place=str(out),
                fix=f"choose a {'path' if what != 'output folder' else '--out'} outside every input "
                    "(posttrain never writes over or inside its inputs)",
            )


def _user_files(out: Path) -> list[str]:
    """Files (and links) in `out` outside the bookkeeping folders, as sorted relative POSIX paths."""
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(out):
        rel_dir = Path(dirpath).relative_to(out)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in BOOKKEEPING]
        files.extend((rel_dir / name).as_posix() for name in filenames)
        files.extend((rel_dir / d).as_posix() for d in dirnames if os.path.islink(os.path.join(dirpath, d)))
    return sorted(f[2:] if f.startswith("./") else f for f in files)


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


def _write_record(out: Path, data: dict[str, Any]) -> None:
    from posttrain.io.spool import write_atomic

    write_atomic(out / RECORD_DIR / RECORD, json.dumps(data, indent=1, sort_keys=True) + "\n")


class Claim:
    """A held output folder (see the module docstring); use as a context manager or through `claim`."""

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
        if out.is_dir() and not is_owned(out) and _user_files(out):
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
        present = _user_files(self.out)
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
            _write_record(self.out, {"tool": "posttrain", "command": self.command, "state": "running",
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
                _write_record(self.out, {"tool": "posttrain", "command": self.command, "state": "complete",
                                         "files": _user_files(self.out)})
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
    """Hold `out` for a run of `command` that reads `inputs` (see the module docstring).

    `fresh` (row jobs): files an earlier run wrote and this one did not rewrite are removed once it
    succeeds; resumable jobs (prepare) manage theirs. Nested claims of one folder in one process are one
    claim.
    """
    key = str(_resolved(Path(out)))
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
    p = _resolved(Path(path))
    if not any(p == Path(k) or Path(k) in p.parents for k in _HELD) or p.name == RECORD_DIR:
        raise PosttrainError("posttrain removes only files in an output folder it holds", place=str(path),
                             fix="this is a bug in posttrain; please report it")
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink(missing_ok=True)
