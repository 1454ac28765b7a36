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
from posttrain.schema import V1_SPLIT_FILE_PREFIX

#: File prefixes whose split name differs from the prefix (v1 stores tool_calling as `data/tool-*`).
PREFIX_TO_SPLIT = {prefix: split for split, prefix in V1_SPLIT_FILE_PREFIX.items() if prefix != split}

DATA_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json", ".json.gz")
_SHARD_RE = re.compile(r"^(?P<prefix>.+?)(?:[-_]\d{5}(?:-of-\d{5})?)?$")
_HUB_ID_RE = re.compile(r"^(?:hf://)?(?:datasets/)?(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")


@dataclass(frozen=True)
class DataFile:
    """One data file of a source: where it is, how to open it, and which split it belongs to."""

    path: str
    split: str
    kind: str  # "parquet" | "jsonl"
    size: int
    fs: Any = None  # an fsspec filesystem for remote files; None for local paths


def file_kind(path: str) -> str | None:
    """'parquet', 'jsonl' or None from a file name.

    >>> file_kind("data/chat-00000-of-00001.parquet"), file_kind("x.jsonl.gz"), file_kind("notes.txt")
    ('parquet', 'jsonl', None)
    """
    p = path.lower()
    if p.endswith(".parquet"):
        return "parquet"
    if p.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        return "jsonl"
    return None


def split_from_filename(path: str) -> str:
    """The split a hub-layout file belongs to, from its name.

    >>> split_from_filename("data/tool-00000-of-00001.parquet")
    'tool_calling'
    >>> split_from_filename("data/multilingual_ja-00003-of-00010.parquet")
    'multilingual_ja'
    >>> split_from_filename("code.jsonl.gz")
    'code'
    """
    name = os.path.basename(path)
    for suffix in DATA_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    m = _SHARD_RE.match(name)
    prefix = m.group("prefix") if m else name
    return PREFIX_TO_SPLIT.get(prefix, prefix)


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
    m = _HUB_ID_RE.match(spec)
    if not m:
        return None
    return m.group("repo"), m.group("rev")


def _select_splits(files: list[DataFile], splits: list[str] | None, place: str) -> list[DataFile]:
    if not splits:
        return files
    known = sorted({f.split for f in files})
    unknown = [s for s in splits if s not in known]
    if unknown:
        raise SourceError(
            f"unknown split {', '.join(map(repr, unknown))}",
            place=place,
            fix=f"choose from {', '.join(known)}",
        )
    return [f for f in files if f.split in splits]


def discover_local(spec: str, splits: list[str] | None = None) -> list[DataFile]:
    """Files of a local file, directory (hub layout or flat) or glob, sorted by path."""
    if any(ch in spec for ch in "*?["):
        paths = sorted(globlib.glob(os.path.expanduser(spec), recursive=True))
        if not paths:
            raise SourceError("the glob matches no file", place=spec, fix="check the pattern")
    else:
        p = Path(os.path.expanduser(spec))
        if not p.exists():
            raise SourceError("no such file or directory", place=spec, fix="check the path")
        if p.is_dir():
            base = p / "data" if (p / "data").is_dir() else p
            paths = sorted(str(q) for q in base.rglob("*") if q.is_file() and file_kind(str(q)))
            if not paths:
                raise SourceError(
                    "the directory holds no parquet or JSONL file",
                    place=spec,
                    fix="point at a directory with data/<split>-*.parquet or *.jsonl files",
                )
        else:
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
    """Files of a hub dataset (`data/<prefix>-*.parquet`), listed without downloading them."""
    fs, root = hub_filesystem(repo_id, revision, hub_mirror)
    place = f"hf://datasets/{repo_id}" if hub_mirror is None else str(hub_mirror)
    try:
        # One listing of data/ (about a hundred names on the real repo) gives every split, so an
        # unknown split can be answered with the list of known ones.
        found = fs.glob(f"{root}/data/*")
    except Exception as exc:  # network / auth errors from the hub come in many types
        raise SourceError(
            f"cannot list the dataset files ({type(exc).__name__}: {exc})",
            place=place,
            fix="check the repo id, your network and HF_TOKEN for gated sets, or pass a local mirror",
        ) from exc
    files = []
    for path in sorted(set(found)):
        kind = file_kind(path)
        if kind is None:
            continue
        size = int(fs.info(path).get("size") or 0)
        files.append(DataFile(path, split_from_filename(path), kind, size, fs))
    if not files:
        raise SourceError("no data/*.parquet or data/*.jsonl files found", place=place, fix="check the repo id")
    return _select_splits(files, splits, place)
