"""What a data file's name says: its kind (parquet / JSONL) and, by the hub's naming rules, its split.

Kept apart from `discover` (which lists files) and `hub_layouts` (which maps a repo's files to
splits), both of which use it.
"""

from __future__ import annotations

import os
import re

from posttrain.schema import V1_SPLIT_FILE_PREFIX

#: File prefixes whose split name differs from the prefix (v1 stores tool_calling as `data/tool-*`).
PREFIX_TO_SPLIT = {prefix: split for split, prefix in V1_SPLIT_FILE_PREFIX.items() if prefix != split}

DATA_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".json", ".json.gz")
# `<split>-00000-of-00006`, optionally with the hash suffix older `push_to_hub` wrote (`-5b0f2a8c3e1d4f6b`)
_SHARD_RE = re.compile(r"^(?P<prefix>.+?)(?:[-_]\d{5}(?:-of-\d{5}(?:-[0-9a-f]{8,64})?)?)?$")


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
    >>> split_from_filename("data/train-00000-of-00006-5b0f2a8c3e1d4f6b.parquet")
    'train'
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
