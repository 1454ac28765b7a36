"""`KeyedSource`: one restoration source addressable by key without loading it.

Streaming join: each source gets a key index (xxh64 of the key -> file, row group or byte offset,
row), built from the key columns only; rows are fetched per batch, one row group at a time, so a
source is never loaded whole. A code source is keyed `split/index`: by the ROW POSITION in its
split (positions counted in file order within the split), or, for a table with an integer `index`
column (or APPS' `problem_id`), by that value, so a subset or re-ordered copy stays correct; on a
full source the value is checked against the position (on the real APPS files `problem_id` IS the
row position, 0..4999 in each split, so both rules give the same prompt). A split keyed by
position must have exactly the rows restoration expects (`check_rows` against
`EXPECTED_SPLIT_ROWS`), else the positions point at other problems. The split comes from a
`split` column, else from the layout (file names), else from the path. A chat source
(lmsys-chat-1m) is keyed by `conversation_id`.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from posttrain.errors import SourceError
from posttrain.stages.rehydrate.prompt_text import CODE_TEXT_COLUMNS
from posttrain.stages.rehydrate.source_files import SourceFile, resolve_files, spec_label, split_of_path

_KEY_COLUMNS = ("conversation_id", "split", "index", "problem_id")


def _hashes(keys: list[str]) -> np.ndarray:
    """xxh64 of each key. A Python loop, but only over key strings while indexing or looking up."""
    return np.fromiter((xxhash.xxh64_intdigest(k.encode("utf-8")) for k in keys), np.uint64, count=len(keys))


def _chunks(items: Any, size: int) -> Any:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class KeyedSource:
    """One external table, addressable by key without loading it: a sorted xxh64 index + row-group reads.

    `kind` is "code" (key `split/index`) or "chat" (key `conversation_id`). After the index is
    built, `split_rows` holds the rows per split and `split_keys` the key used per split
    (`index` / `problem_id`: the column's value; `position`: the row's rank in its split).
    """

    def __init__(self, spec: str | Path, kind: str, name: str, hub_mirror: str | Path | None = None,
                 *, examples: str = "reference") -> None:  # fmt: skip
        self.spec, self.kind, self.name = str(spec), kind, name
        self.examples = examples
        from posttrain.io.sources.discover import parse_hub_id

        self.files = resolve_files(spec, name, hub_mirror)
        hub = parse_hub_id(self.spec)
        self.revision = (hub[1] or "main") if hub else None
        self._index: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self.split_rows: dict[str, int] = {}
        self.split_keys: dict[str, str] = {}
        self.key_is_position: dict[str, bool] = {}

    def __getstate__(self) -> dict[str, Any]:
        # the index is rebuilt in each process on first lookup (it can be large: lmsys has 1M keys)
        return {**self.__dict__, "_index": None}

    def describe(self) -> dict[str, Any]:
        """Spec, revision, files, rows per split and the key used per split (builds the index)."""
        if self.kind == "code" and self._index is None:
            self._index = self._build_index()
        out: dict[str, Any] = {"spec": spec_label(self.spec), "revision": self.revision, "files": len(self.files)}
        if self.kind == "code":
            out["rows"] = dict(sorted(self.split_rows.items()))
            out["key"] = {s: k + (" (= row position)" if k != "position" and self.key_is_position.get(s) else "")
                          for s, k in sorted(self.split_keys.items())}  # fmt: skip
        return out

    def check_rows(self, expected: dict[str, int] | None) -> None:
        """Refuse a positionally keyed split whose row count is not the one restoration expects."""
        for split, key in sorted(self.split_keys.items()):
            want = (expected or {}).get(split)
            have = self.split_rows.get(split, 0)
            if key == "position" and want is not None and have != want:
                raise SourceError(
                    f"split '{split}' has {have:,} rows where restoration by row position expects {want:,}",
                    place=f"{self.name} source {self.spec}",
                    fix="give the dataset's default config with all of its files (the revision NVIDIA used), "
                    "or set rehydrate.expected_rows for a copy you have checked",
                )

    # -- the index: key columns only, one row group at a time ------------------------------------
    def _keys_of(self, table: pa.Table, f: SourceFile, counters: Counter, n: int) -> list[str]:
        if self.kind == "chat":
            return [str(k) for k in table.column("conversation_id").to_pylist()]
        splits = (table.column("split").to_pylist() if "split" in table.column_names
                  else [f.split or split_of_path(f.path)] * n)  # fmt: skip
        positions = []
        for s in splits:  # the row's rank within its split, in file order
            positions.append(counters[s])
            counters[s] += 1
        # Only an integer column is a row key: open-r1/codeforces' `index` is the problem letter ("A").
        col = next((c for c in ("index", "problem_id")
                    if c in table.column_names and pa.types.is_integer(table.schema.field(c).type)), None)  # fmt: skip
        for s in set(splits):
            kind = col or "position"
            self.split_keys[s] = kind if self.split_keys.get(s, kind) == kind else "mixed"
        if col is None:
            return [f"{s}/{p}" for s, p in zip(splits, positions, strict=True)]
        values = table.column(col).to_pylist()
        for s, v, p in zip(splits, values, positions, strict=True):
            self.key_is_position[s] = self.key_is_position.get(s, True) and v == p
        return [f"{s}/{v}" for s, v in zip(splits, values, strict=True)]

    def _key_columns(self, names: list[str]) -> list[str]:
        wanted = ("conversation_id",) if self.kind == "chat" else ("split", "index", "problem_id")
        missing = "conversation_id" if self.kind == "chat" and "conversation_id" not in names else None
        if self.kind == "code" and not any(c in names for c in CODE_TEXT_COLUMNS):
            missing = "question/description"
        if missing:
            raise SourceError(f"no '{missing}' column (has {', '.join(names)})", place=f"{self.name} source {self.spec}",
                              fix="point at the right dataset")  # fmt: skip
        return [c for c in wanted if c in names]

    def _build_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sorted key hashes and, aligned, (file, row group or byte offset, row in group; -1 for JSONL)."""
        parts: list[tuple[np.ndarray, int, np.ndarray, np.ndarray]] = []
        counters: Counter = Counter()
        self.split_keys, self.key_is_position = {}, {}
        for fi, f in enumerate(self.files):
            if f.kind == "parquet":
                pf = self._parquet(f)
                cols = self._key_columns(pf.schema_arrow.names)
                for rg in range(pf.num_row_groups):
                    group = pf.read_row_group(rg, columns=cols)
                    keys = self._keys_of(group, f, counters, pf.metadata.row_group(rg).num_rows)
                    n = len(keys)
                    parts.append((_hashes(keys), fi, np.full(n, rg, np.int64), np.arange(n, dtype=np.int32)))
            else:
                for chunk in _chunks(self._jsonl(f), 4096):
                    cols = self._key_columns(list(chunk[0][1]))
                    # a JSONL file without key columns is keyed by line position (n rows, no columns)
                    table = pa.Table.from_pylist([{c: rec.get(c) for c in cols} for _, rec in chunk]) if cols else pa.table({})
                    keys = self._keys_of(table, f, counters, len(chunk))
                    offsets = np.array([off for off, _ in chunk], np.int64)
                    parts.append((_hashes(keys), fi, offsets, np.full(len(keys), -1, np.int32)))
        self.split_rows = dict(counters)
        if not parts:
            return (np.zeros(0, np.uint64), np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int32))
        h = np.concatenate([p[0] for p in parts])
        files = np.concatenate([np.full(len(p[0]), p[1], np.int32) for p in parts])
        units, rows = np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts])
        order = np.argsort(h, kind="stable")  # first occurrence of a duplicated key wins
        return h[order], files[order], units[order], rows[order]

    def _parquet(self, f: SourceFile) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(f.fs.open(f.path, "rb") if f.fs else f.path)
        except Exception as exc:
            raise SourceError(f"cannot read parquet ({exc})", place=f"{self.name} source {f.path}",
                              fix="check the file") from None  # fmt: skip

    def _jsonl(self, f: SourceFile):
        """(byte offset or line number for .gz, record) per line."""
        opener = f.fs.open if f.fs else open
        with opener(f.path, "rb") as raw:
            fh = gzip.open(raw) if f.path.endswith(".gz") else raw
            offset, line_no = 0, 0
            for line in fh:
                if line.strip():
                    try:
                        yield (line_no if f.path.endswith(".gz") else offset), json.loads(line)
                    except json.JSONDecodeError:
                        raise SourceError(f"line {line_no + 1} is not JSON", place=f"{self.name} source {f.path}",
                                          fix="check the file") from None  # fmt: skip
                offset += len(line)
                line_no += 1

    # -- lookups ----------------------------------------------------------------------------------
    def lookup(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Records for the keys found (missing keys are absent). Each row group is read once per call."""
        if self._index is None:
            self._index = self._build_index()
        h, files, units, rows = self._index
        want = _hashes(keys)
        pos = np.minimum(np.searchsorted(h, want), max(len(h) - 1, 0))
        groups: dict[tuple[int, int], list[tuple[str, int]]] = {}
        for key, p, hv in zip(keys, pos.tolist(), want.tolist(), strict=True):
            if len(h) and int(h[p]) == hv:
                groups.setdefault((int(files[p]), int(units[p])), []).append((key, int(rows[p])))
        found: dict[str, dict[str, Any]] = {}
        gz_lines = self._gz_lines(groups)
        for (fi, unit), wanted in sorted(groups.items()):
            f = self.files[fi]
            if f.kind == "jsonl":
                record = gz_lines.get((fi, unit)) if f.path.endswith(".gz") else self._fetch_jsonl(f, unit)
                records = [record] * len(wanted)
            else:
                pf = self._parquet(f)
                cols = [c for c in pf.schema_arrow.names if c in (*CODE_TEXT_COLUMNS, "conversation", *_KEY_COLUMNS)]
                group = pf.read_row_group(unit, columns=cols)
                records = group.take(pa.array([r for _, r in wanted], pa.int64())).to_pylist()
            for (key, _), record in zip(wanted, records, strict=True):
                if record is not None and self._same_key(key, record):
                    found[key] = record
        return found

    def _same_key(self, key: str, record: dict[str, Any]) -> bool:
        """Guard against a 64-bit hash collision where the record carries its key."""
        if self.kind == "chat":
            return str(record.get("conversation_id")) == key
        index = record.get("index", record.get("problem_id"))
        return not isinstance(index, int) or key.endswith(f"/{index}")  # positional keys: nothing to compare

    def _fetch_jsonl(self, f: SourceFile, offset: int) -> dict[str, Any] | None:
        opener = f.fs.open if f.fs else open
        with opener(f.path, "rb") as fh:
            fh.seek(offset)
            return json.loads(fh.readline())

    def _gz_lines(self, groups: dict[tuple[int, int], Any]) -> dict[tuple[int, int], dict[str, Any]]:
        """Wanted lines of gzipped JSONL files (no seeking into gzip): one scan per file, stopping early."""
        out: dict[tuple[int, int], dict[str, Any]] = {}
        for fi in sorted({fi for fi, _ in groups if self.files[fi].path.endswith(".gz")}):
            need = {unit for f2, unit in groups if f2 == fi}
            for line_no, record in self._jsonl(self.files[fi]):
                if line_no in need:
                    out[(fi, line_no)] = record
                    need.discard(line_no)
                    if not need:
                        break
        return out
