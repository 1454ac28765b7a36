"""The ownership record of an output folder, and what the folder holds besides posttrain's bookkeeping.

`OUT/.posttrain/owner.json` lists every file posttrain wrote in OUT and whether the run that wrote
them is `running` or `complete`; `OUT/.posttrain/lock` is the run's lock. `inside_owned_output`
keeps source discovery out of folders posttrain owns.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RECORD_DIR = ".posttrain"
RECORD = "owner.json"
LOCK = "lock"
#: folders inside OUT that hold posttrain's bookkeeping, never user data (not listed in the record)
BOOKKEEPING = (RECORD_DIR, ".work", ".units")


def read_record(out: Path) -> dict[str, Any] | None:
    """The ownership record of `out`, or None (missing or unreadable: not owned)."""
    try:
        data = json.loads((Path(out) / RECORD_DIR / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == "posttrain" else None


def is_owned(folder: Path) -> bool:
    """Whether `folder` has an ownership record (posttrain wrote it)."""
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


def user_files(out: Path) -> list[str]:
    """Files (and links) in `out` outside the bookkeeping folders, as sorted relative POSIX paths."""
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(out):
        rel_dir = Path(dirpath).relative_to(out)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in BOOKKEEPING]
        files.extend((rel_dir / name).as_posix() for name in filenames)
        files.extend((rel_dir / d).as_posix() for d in dirnames if os.path.islink(os.path.join(dirpath, d)))
    return sorted(f[2:] if f.startswith("./") else f for f in files)


def write_record(out: Path, data: dict[str, Any]) -> None:
    """Write the ownership record of `out` atomically (sorted keys: the same record, the same bytes)."""
    from posttrain.io.spool import write_atomic

    write_atomic(out / RECORD_DIR / RECORD, json.dumps(data, indent=1, sort_keys=True) + "\n")
