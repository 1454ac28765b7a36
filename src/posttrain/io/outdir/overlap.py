"""What a job reads, as local paths, and the refusal of an output that equals, holds or sits inside one."""

from __future__ import annotations

import glob as globlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from posttrain.errors import PosttrainError


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


def resolved_path(p: Path) -> Path:
    """`p` with `~` expanded and every link resolved: how outputs and inputs are compared."""
    return Path(os.path.realpath(os.path.expanduser(str(p))))


def check_overlap(out: Path, inputs: Iterable[Path], what: str = "output folder") -> None:
    """Refuse an `out` folder that equals, contains or sits inside an input (an output file: that is one)."""
    o = resolved_path(out)
    for inp in inputs:
        i = resolved_path(inp)
        if o == i or (what == "output folder" and (o in i.parents or i in o.parents)):
            how = "is" if o == i else ("holds" if o in i.parents else "is inside")
            raise PosttrainError(
                f"the {what} {how} the input {inp}",
                place=str(out),
                fix=f"choose a {'path' if what != 'output folder' else '--out'} outside every input "
                    "(posttrain never writes over or inside its inputs)",
            )
