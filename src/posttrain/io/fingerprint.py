"""What a work unit read, as a short fingerprint: a changed input is redone on resume, never reused.

A fragment's fingerprint covers where it is (path, row groups, format, rows) and what the file
holds: its size, its mtime and a hash of its first and last megabyte (a parquet file's footer,
with every row group's offsets and statistics, is at its end). Remote files (the hub) are known
by path and size from the listing. Equal fingerprints are not a proof of equal bytes, but every
edit that keeps size, mtime and both ends of a file is needed to fool it.

>>> import tempfile, os
>>> p = os.path.join(tempfile.mkdtemp(), "x.jsonl")
>>> _ = open(p, "w").write("{}\\n")
>>> a = file_fingerprint(p); _ = open(p, "w").write("{} \\n"); a == file_fingerprint(p)
False
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

EDGE_BYTES = 1 << 20


def file_fingerprint(path: str) -> str:
    """size, mtime and a hash of the first and last MB of a local file."""
    st = os.stat(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(EDGE_BYTES))
        if st.st_size > EDGE_BYTES:
            f.seek(max(EDGE_BYTES, st.st_size - EDGE_BYTES))
            h.update(f.read(EDGE_BYTES))
    return f"{st.st_size}:{st.st_mtime_ns}:{h.hexdigest()[:16]}"


def fragment_fingerprint(frag: Any, cache: dict[str, str] | None = None) -> str:
    """The fingerprint of one `posttrain.io.sources.Fragment` (files hashed once per `cache`)."""
    file = frag.file
    path = str(file.path)
    if getattr(file, "fs", None) is None or os.path.exists(path):
        if cache is not None and path in cache:
            content = cache[path]
        else:
            try:
                content = file_fingerprint(path)
            except OSError:
                content = "missing"
            if cache is not None:
                cache[path] = content
    else:
        content = f"remote:{getattr(file, 'size', '')}"
    ident = f"{path}|{frag.row_groups}|{frag.format}|{frag.num_rows}|{content}"
    return hashlib.sha256(ident.encode("utf-8", "surrogatepass")).hexdigest()[:24]
