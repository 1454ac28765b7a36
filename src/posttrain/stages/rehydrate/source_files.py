"""The files a restoration source serves, and what the restoration expects of them.

NVIDIA restores `load_dataset(name)[split][int(index)]`: the ROW POSITION in the default config's
split. So only the default config's files of each split are listed (the card's `configs`, see
`posttrain.io.sources.hub_layouts`: TACO's `ALL/`, codeforces' `data/` and never its `verifiable`
config), in the order `load_dataset` reads them, each with its split (from the layout, else from
the path: `train`/`test`/`valid`). `EXPECTED_SPLIT_ROWS` holds the rows per split that a source
keyed by position must have (checked by `KeyedSource.check_rows`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from posttrain.errors import SourceError

#: Split names as they appear in paths and layouts -> the split a row belongs to.
SPLIT_WORDS = {"train": "train", "test": "test", "valid": "valid", "validation": "valid", "dev": "valid"}
#: Rows per split of each code source's default config, as restoration by row position expects them.
EXPECTED_SPLIT_ROWS: dict[str, dict[str, int]] = {
    "taco": {"train": 25_443, "test": 1_000},
    "codeforces": {"train": 9_556, "test": 468},
    "apps": {"train": 5_000, "test": 5_000},
    "code_contests": {"train": 13_328, "valid": 117, "test": 165},
}
#: The default config's folder, for a mirror without its README (TACO's loader reads `ALL/`).
DEFAULT_FOLDERS = {"taco": "ALL/"}


def split_of_path(path: str) -> str:
    """The split a source file belongs to, from its path (`train` when it says nothing).

    >>> split_of_path("apps/test.jsonl"), split_of_path("ALL/train/0000.parquet"), split_of_path("t.parquet")
    ('test', 'train', 'train')
    """
    for part in reversed(re.split(r"[/\\._-]+", path.lower())):
        if part in SPLIT_WORDS:
            return SPLIT_WORDS[part]
    return "train"


@dataclass(frozen=True)
class SourceFile:
    """One file of a restoration source, with the split its rows belong to."""

    path: str
    kind: str  # "parquet" | "jsonl"
    fs: Any = None  # fsspec filesystem for hub files; None for local
    split: str | None = None  # from the repo layout; a `split` column wins, then the path


def _layout_files(layout: Any, name: str, base: str, fs: Any) -> list[SourceFile]:
    """The default config's files of a layout (TACO without its card: `ALL/` only), each with its split."""
    from posttrain.io.sources.discover import file_kind

    files = layout.files
    folder = DEFAULT_FOLDERS.get(name)
    if layout.kind in ("flat", "data-dir") and folder and any(f.path.startswith(folder) for f in files):
        files = [f for f in files if f.path.startswith(folder)]
    out = []
    for f in files:
        path = f"{base.rstrip('/')}/{f.path}"
        split = SPLIT_WORDS.get(f.split) or split_of_path(f.path)
        out.append(SourceFile(path, file_kind(path) or "parquet", fs, split))
    return out


def resolve_files(spec: str | Path, name: str, hub_mirror: str | Path | None = None) -> list[SourceFile]:
    """The parquet/JSONL files a restoration source serves: a file, a glob, or a repo's default config.

    A directory or hub id is read as a hub repo (`posttrain.io.sources.hub_layouts`, default config
    only): the files `load_dataset(repo)[split]` would read, in the order it reads them.
    """
    from posttrain.io.sources.discover import discover_local, hub_filesystem, parse_hub_id
    from posttrain.io.sources.hub_layouts import fs_layout, local_layout

    spec = str(spec)
    place = f"{name} source {spec}"
    hub = parse_hub_id(spec)
    try:
        if hub is None:
            local = Path(spec).expanduser()
            if local.is_dir() and not any(ch in spec for ch in "*?["):
                found = _layout_files(local_layout(local, default_only=True), name, str(local), None)
            else:
                found = [SourceFile(f.path, f.kind, None, split_of_path(f.path)) for f in discover_local(spec)]
        else:
            mirror = hub_mirror
            if mirror is not None and (Path(mirror) / hub[0]).is_dir():
                mirror = Path(mirror) / hub[0]  # one mirror directory can hold several repos as owner/name
            # A revision such as refs/convert/parquet (the hub's parquet export) must be URL-quoted in a path.
            revision = quote(hub[1], safe="") if hub[1] else None
            fs, root = hub_filesystem(hub[0], revision, mirror)
            found = _layout_files(fs_layout(fs, root, default_only=True), name, root, fs)
    except SourceError as exc:
        raise SourceError(exc.message, place=place, fix=exc.fix or "check the path") from None
    except Exception as exc:  # hub errors come in many types
        raise SourceError(f"cannot list files ({type(exc).__name__}: {exc})", place=place,
                          fix="check the repo id, network and HF_TOKEN, or give a local path") from exc  # fmt: skip
    if not found:
        raise SourceError("no parquet or JSONL file", place=place,
                          fix="check the repo id; for a repo without parquet use its export, ID@refs/convert/parquet")  # fmt: skip
    return found


def spec_label(spec: str) -> str:
    """How a source is named in summaries: as given, or relative to the package for the bundled fixtures."""
    from posttrain.sample import fixtures_root

    try:
        return "bundled:" + Path(spec).resolve().relative_to(fixtures_root().resolve()).as_posix()
    except ValueError:
        return spec
