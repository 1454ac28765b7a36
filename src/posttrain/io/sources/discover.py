"""Turn a SOURCE spec (local path, glob, hub id) into files on a filesystem, each with its split.

One code path serves the hub and local mirrors of it: a hub id resolves to a filesystem
(`HfFileSystem`, or a local directory given as `hub_mirror`) plus a root, and the same
`data/<split>-*.parquet` layout rules apply to both. That is how the hub code is tested
offline: the bundled sample is laid out exactly like the hub repo.
"""

from __future__ import annotations

import glob as globlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from posttrain.errors import SourceError
from posttrain.io.outdir import inside_owned_output

# The file-name rules live in `naming` (shared with `hub_layouts`); re-exported here for callers.
from posttrain.io.sources.naming import DATA_SUFFIXES, PREFIX_TO_SPLIT, file_kind, split_from_filename  # noqa: F401

_HUB_ID_RE = re.compile(r"^(?:hf://)?(?:datasets/)?(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")


@dataclass(frozen=True)
class DataFile:
    """One data file of a source: where it is, how to open it, and which split it belongs to."""

    path: str
    split: str
    kind: str  # "parquet" | "jsonl"
    size: int
    fs: Any = None  # an fsspec filesystem for remote files; None for local paths
    subset: str | None = None  # the card config (Llama-Nemotron: sft / rl) the split belongs to


def parse_splits(split: Sequence[str] | str | None) -> list[str] | None:
    """Split names as given on a command line (repeated and/or comma-separated) as a list.

    >>> parse_splits(["math,code", "chat"]), parse_splits("stem"), parse_splits(None)
    (['math', 'code', 'chat'], ['stem'], None)
    """
    if not split:
        return None
    items = [split] if isinstance(split, str) else list(split)
    return [s.strip() for item in items for s in item.split(",") if s.strip()] or None


def parse_hub_id(spec: str) -> tuple[str, str | None] | None:
    """(repo_id, revision) when `spec` names a hub dataset rather than a local path.

    >>> parse_hub_id("hf://datasets/nvidia/Nemotron-Post-Training-Dataset-v1")
    ('nvidia/Nemotron-Post-Training-Dataset-v1', None)
    >>> parse_hub_id("nvidia/Nemotron-Post-Training-Dataset-v1@main")
    ('nvidia/Nemotron-Post-Training-Dataset-v1', 'main')
    """
    if spec.startswith(("/", "./", "../", "~")) or os.path.exists(spec):
        return None
    # `in/missing.parquet` is a local path that does not exist, not the repo `in`: a data file's name,
    # or a first part that is a local folder, makes it local (and the error says the path is missing)
    if not spec.startswith(("hf://", "datasets/")) and (
        spec.lower().endswith(DATA_SUFFIXES) or os.path.isdir(spec.split("/", 1)[0])
    ):
        return None
    m = _HUB_ID_RE.match(spec)
    if not m:
        return None
    return m.group("repo"), m.group("rev")


def _select_splits(files: list[DataFile], splits: list[str] | None, place: str) -> list[DataFile]:
    from posttrain.io.sources.hub_layouts import DiscoveredFiles, select

    found = files if isinstance(files, DiscoveredFiles) else DiscoveredFiles(files)
    chosen, unknown, known = select(files, splits, found.aliases)
    if unknown:
        raise SourceError(
            f"unknown split {', '.join(map(repr, unknown))}",
            place=place,
            fix=f"choose from {', '.join(known)}",
        )
    return found.with_files(chosen)


def discover_local(spec: str, splits: list[str] | None = None) -> list[DataFile]:
    """Files of a local file, directory (hub layout or flat) or glob, sorted by path."""
    if any(ch in spec for ch in "*?["):
        paths = sorted(globlib.glob(os.path.expanduser(spec), recursive=True))
        fixed = os.path.dirname(re.split(r"[*?\[]", os.path.expanduser(spec), maxsplit=1)[0]) or "."
        paths = [q for q in paths if not inside_owned_output(q, fixed)]  # never read posttrain's outputs back
        if not paths:
            raise SourceError("the glob matches no file", place=spec, fix="check the pattern")
    else:
        p = Path(os.path.expanduser(spec))
        if not p.exists():
            raise SourceError("no such file or directory", place=spec, fix="check the path")
        if p.is_dir():
            return _discover_dir(p, spec, splits)
        paths = [str(p)]
    files = []
    for path in paths:
        kind = file_kind(path)
        if kind is None:
            raise SourceError(
                "not a parquet or JSONL file", place=path, fix="use .parquet, .jsonl or .jsonl.gz files"
            )
        files.append(DataFile(path, split_from_filename(path), kind, os.path.getsize(path)))
    return _select_splits(files, splits, spec)


def _discover_dir(root: Path, spec: str, splits: list[str] | None) -> list[DataFile]:
    """A directory laid out like a hub repo (card configs, Llama-Nemotron, data/) or a flat folder of files."""
    from posttrain.io.sources.hub_layouts import DiscoveredFiles, local_layout

    layout = local_layout(root)
    if not layout.files:
        raise SourceError(
            "the directory holds no parquet or JSONL file" + (" that the card's configs list" if layout.skipped else ""),
            place=spec,
            fix="point at a directory with data/<split>-*.parquet or *.jsonl files",
        )
    files = []
    for f in layout.files:
        path = str(root / f.path)
        if inside_owned_output(path, root):  # a folder posttrain wrote under the source is never read back
            continue
        files.append(DataFile(path, f.split, file_kind(path) or "parquet", os.path.getsize(path), subset=f.subset))
    found = DiscoveredFiles(files, skipped=layout.skipped, aliases=layout.aliases, kind=layout.kind,
                           split_rows=layout.split_rows)  # fmt: skip
    return _select_splits(found, splits, spec)


def hub_filesystem(repo_id: str, revision: str | None = None, hub_mirror: str | Path | None = None):
    """(filesystem, root) for a hub dataset repo, or for a local directory laid out like it.

    `hub_mirror` is the switch from the hub to local files: the rest of the code path is shared.
    """
    if hub_mirror is not None:
        import fsspec

        root = Path(hub_mirror)
        if not root.is_dir():
            raise SourceError("hub mirror directory does not exist", place=str(root), fix="check the path")
        return fsspec.filesystem("file"), str(root.resolve())
    from huggingface_hub import HfFileSystem

    rev = f"@{revision}" if revision else ""
    return HfFileSystem(), f"datasets/{repo_id}{rev}"


def discover_hub(
    repo_id: str,
    revision: str | None = None,
    splits: list[str] | None = None,
    hub_mirror: str | Path | None = None,
) -> list[DataFile]:
    """Files of a hub dataset, listed without downloading them (the card's configs, see `hub_layouts`)."""
    from posttrain.io.sources.hub_layouts import DiscoveredFiles, fs_layout

    fs, root = hub_filesystem(repo_id, revision, hub_mirror)
    place = f"hf://datasets/{repo_id}" if hub_mirror is None else str(hub_mirror)
    try:
        # One recursive listing (about a thousand names on the real v1 repo) and the card give every
        # split, so an unknown split can be answered with the list of known ones.
        layout = fs_layout(fs, root)
    except Exception as exc:  # network / auth errors from the hub come in many types
        raise SourceError(
            f"cannot list the dataset files ({type(exc).__name__}: {exc})",
            place=place,
            fix="check the repo id, your network and HF_TOKEN for gated sets, or pass a local mirror",
        ) from exc
    files = []
    for f in layout.files:
        path = f"{root.rstrip('/')}/{f.path}"
        size = int(fs.info(path).get("size") or 0)
        files.append(DataFile(path, f.split, file_kind(path) or "parquet", size, fs, subset=f.subset))
    if not files:
        raise SourceError("no data/*.parquet or data/*.jsonl files found", place=place, fix="check the repo id")
    found = DiscoveredFiles(files, skipped=layout.skipped, aliases=layout.aliases, kind=layout.kind,
                           split_rows=layout.split_rows)  # fmt: skip
    return _select_splits(found, splits, place)
