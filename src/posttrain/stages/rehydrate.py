"""Restoring withheld prompts: code rows from TACO/APPS/CodeContests/open-r1 codeforces, chat rows from lmsys.

Rows whose prompt came from an outside dataset ship with a placeholder user turn (`"-"` in code,
`""` in chat). `RestorePrompts` joins them back by key:

- code: metadata `{"dataset", "split", "index"}` against a table with `question` (TACO, APPS),
  `description` (CodeContests) or description + input/output format + examples + note
  (open-r1/codeforces), the text built exactly as NVIDIA's OpenCodeReasoning `get_question` builds
  it (`code_prompt`). NVIDIA restores `load_dataset(name)[split][int(index)]`: the ROW POSITION in
  the default config's split. So only the default config's files of each split are indexed (the
  card's `configs`, see `posttrain.io.sources.hub_layouts`: TACO's `ALL/`, codeforces' `data/` and
  never its `verifiable` config), positions counted in file order within the split, and a source
  keyed by position must have exactly the rows the restoration expects (`EXPECTED_SPLIT_ROWS`:
  TACO train 25,443 / test 1,000, codeforces 9,556 / 468, APPS 5,000 / 5,000, CodeContests
  13,328 / 117 / 165): another count means the positions point at other problems, and the source
  is refused with one line naming both counts. A table with an integer `index` column (or APPS'
  `problem_id`) is keyed by that value instead: a subset or re-ordered copy stays correct, and on a
  full source the value is checked against the position (on the real APPS files `problem_id` IS
  the row position, 0..4999 in each split, so both rules give the same prompt). The key used per
  split, the rows per split and the revision are in `summary()["sources"]`. The split comes from a
  `split` column, else from the layout (file names), else from the path (`train`/`test`/`valid`).
- chat: metadata `conversation_id` against lmsys-chat-1m's `conversation_id`; every empty user turn
  gets the lmsys user turn of the same rank; a row with more user turns than the conversation
  cannot be restored, and non-empty user turns that differ from lmsys are counted as mismatches.

Streaming join: each source gets a key index (xxh64 of the key -> file, row group or byte offset,
row), built from the key columns only; rows are fetched per batch, one row group at a time, so a
source is never loaded whole. Rows that cannot be restored get `prompt.unrecoverable` and the
failing key in the `rehydrate_key` column (set for every withheld row, null otherwise); with
`keep_unrecoverable=True` they keep their placeholder and no reason. Given a hash list
(`verify_hashes`: key -> sha256 of the restored text, e.g. published beside a release), every
restored row whose key is listed is compared, and a different text is `prompt.hash_mismatch`.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from posttrain.errors import SourceError
from posttrain.stage import Stage, add_reasons, register_reason

register_reason("prompt.hash_mismatch", "error", "the restored prompt differs from the published hash of it")

KEY_COLUMN = "rehydrate_key"
MAX_KEYS_LISTED = 1000
CODE_PLACEHOLDER, CHAT_PLACEHOLDER = "-", ""
CODE_TEXT_COLUMNS = ("question", "description", "input_format", "output_format", "examples", "note")
_SPLIT_WORDS = {"train": "train", "test": "test", "valid": "valid", "validation": "valid", "dev": "valid"}
#: Rows per split of each code source's default config, as restoration by row position expects them.
EXPECTED_SPLIT_ROWS: dict[str, dict[str, int]] = {
    "taco": {"train": 25_443, "test": 1_000},
    "codeforces": {"train": 9_556, "test": 468},
    "apps": {"train": 5_000, "test": 5_000},
    "code_contests": {"train": 13_328, "valid": 117, "test": 165},
}
#: The default config's folder, for a mirror without its README (TACO's loader reads `ALL/`).
DEFAULT_FOLDERS = {"taco": "ALL/"}


def prompt_digest(texts: list[str]) -> str:
    """sha256 of restored user text(s) (several chat turns joined by U+001E): what a hash list holds.

    >>> prompt_digest(["Add two numbers."])[:12]
    '000821b4f8d9'
    """
    import hashlib

    return hashlib.sha256("\x1e".join(texts).encode("utf-8")).hexdigest()


def code_prompt(record: dict[str, Any], dataset: str | None = None, examples: str = "reference") -> str | None:
    """The prompt of a code-source record, as OpenCodeReasoning's `get_question` builds it (None: no prompt).

    CodeContests gives its `description` (None when empty); TACO and APPS their `question`;
    open-r1/codeforces its description, then input format, output format, the examples and the
    note, each under a heading (None without a description). `examples="reference"` writes each
    example's input and output as they are (NVIDIA's text, trailing newlines included);
    `"stripped"` strips them (posttrain before issue 12). `dataset` None: told from the columns.

    >>> code_prompt({"question": "Add two numbers."})
    'Add two numbers.'
    >>> print(code_prompt({"description": "Add.", "input_format": "a b", "output_format": "a+b",
    ...                    "examples": [{"input": "1 2", "output": "3"}], "note": None}))
    Add.
    <BLANKLINE>
    Input
    <BLANKLINE>
    a b
    <BLANKLINE>
    Output
    <BLANKLINE>
    a+b
    <BLANKLINE>
    Examples
    <BLANKLINE>
    Input
    <BLANKLINE>
    1 2
    <BLANKLINE>
    Output
    <BLANKLINE>
    3
    >>> code_prompt({"description": "Add.", "examples": [{"input": "1 2\\n", "output": "3\\n"}]}).endswith("3\\n")
    True
    """
    name = dataset_name(dataset) if dataset else None
    if name == "code_contests":
        return record.get("description") or None
    if name in ("taco", "apps"):
        return record.get("question") or None
    if name == "codeforces" or record.get("input_format") is not None or record.get("examples") is not None:
        return _codeforces_text(record, examples)
    return record.get("question") or record.get("description") or None  # another dataset: its text column


def _codeforces_text(record: dict[str, Any], examples: str) -> str | None:
    """open-r1/codeforces: description, Input, Output, Examples (Input/Output pairs), Note."""
    if not record.get("description"):
        return None
    fix = (lambda t: (t or "").strip()) if examples == "stripped" else (lambda t: t or "")
    text = record["description"]
    if record.get("input_format"):
        text += "\n\nInput\n\n" + record["input_format"]
    if record.get("output_format"):
        text += "\n\nOutput\n\n" + record["output_format"]
    if record.get("examples"):
        text += "\n\nExamples"
        for ex in record["examples"]:
            if "input" in ex:
                text += "\n\nInput\n\n" + fix(ex["input"])
            if "output" in ex:
                text += "\n\nOutput\n\n" + fix(ex["output"])
    if record.get("note"):
        text += "\n\nNote\n\n" + record["note"]
    return text


def dataset_name(name: str) -> str:
    """A dataset name without its hub owner, lower-case: how `--code-source` names are matched.

    >>> dataset_name("open-r1/codeforces"), dataset_name("deepmind/code_contests"), dataset_name("TACO")
    ('codeforces', 'code_contests', 'taco')
    """
    return name.rsplit("/", 1)[-1].strip().lower()


def split_of_path(path: str) -> str:
    """The split a source file belongs to, from its path (`train` when it says nothing).

    >>> split_of_path("apps/test.jsonl"), split_of_path("ALL/train/0000.parquet"), split_of_path("t.parquet")
    ('test', 'train', 'train')
    """
    for part in reversed(re.split(r"[/\\._-]+", path.lower())):
        if part in _SPLIT_WORDS:
            return _SPLIT_WORDS[part]
    return "train"


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


@dataclass(frozen=True)
class _File:
    path: str
    kind: str  # "parquet" | "jsonl"
    fs: Any = None  # fsspec filesystem for hub files; None for local
    split: str | None = None  # from the repo layout; a `split` column wins, then the path


def _layout_files(layout: Any, name: str, base: str, fs: Any) -> list[_File]:
    """The default config's files of a layout (TACO without its card: `ALL/` only), each with its split."""
    from posttrain.io.sources.discover import file_kind

    files = layout.files
    folder = DEFAULT_FOLDERS.get(name)
    if layout.kind in ("flat", "data-dir") and folder and any(f.path.startswith(folder) for f in files):
        files = [f for f in files if f.path.startswith(folder)]
    out = []
    for f in files:
        path = f"{base.rstrip('/')}/{f.path}"
        split = _SPLIT_WORDS.get(f.split) or split_of_path(f.path)
        out.append(_File(path, file_kind(path) or "parquet", fs, split))
    return out


def resolve_files(spec: str | Path, name: str, hub_mirror: str | Path | None = None) -> list[_File]:
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
                found = [_File(f.path, f.kind, None, split_of_path(f.path)) for f in discover_local(spec)]
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


def _spec_label(spec: str) -> str:
    """How a source is named in summaries: as given, or relative to the package for the bundled fixtures."""
    from posttrain.sample import fixtures_root

    try:
        return "bundled:" + Path(spec).resolve().relative_to(fixtures_root().resolve()).as_posix()
    except ValueError:
        return spec


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
        out: dict[str, Any] = {"spec": _spec_label(self.spec), "revision": self.revision, "files": len(self.files)}
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
    def _keys_of(self, table: pa.Table, f: _File, counters: Counter, n: int) -> list[str]:
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

    def _parquet(self, f: _File) -> pq.ParquetFile:
        try:
            return pq.ParquetFile(f.fs.open(f.path, "rb") if f.fs else f.path)
        except Exception as exc:
            raise SourceError(f"cannot read parquet ({exc})", place=f"{self.name} source {f.path}",
                              fix="check the file") from None  # fmt: skip

    def _jsonl(self, f: _File):
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

    def _fetch_jsonl(self, f: _File, offset: int) -> dict[str, Any] | None:
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


def _meta(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except (ValueError, TypeError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


class RestorePrompts(Stage):
    """Fill withheld user turns from the external sources; flag what cannot be restored.

    `code_sources` maps a dataset name (`taco`, `apps`, `code_contests`, `codeforces`; an owner
    prefix such as `open-r1/` is ignored) to a path or hub id; `chat_source` is lmsys-chat-1m.
    Construction indexes the code sources and refuses one keyed by row position whose rows per
    split differ from `EXPECTED_SPLIT_ROWS` (updated by `expected_rows`; `check_rows=False` skips
    the check). `codeforces_examples` is `code_prompt`'s `examples`. `verify_hashes` is a hash
    list (JSON object or JSONL of {"key", "sha256"}). `summary()` gives the counts restored,
    unrecoverable and verified per source, and each source's revision, rows and key.
    """

    name = "rehydrate"

    def __init__(self, code_sources: dict[str, str | Path] | None = None, chat_source: str | Path | None = None,
                 *, keep_unrecoverable: bool = False, hub_mirror: str | Path | None = None,
                 codeforces_examples: str = "reference", expected_rows: dict[str, dict[str, int]] | None = None,
                 check_rows: bool = True, verify_hashes: str | Path | None = None) -> None:  # fmt: skip
        self.code = {dataset_name(k): KeyedSource(v, "code", dataset_name(k), hub_mirror, examples=codeforces_examples)
                     for k, v in (code_sources or {}).items()}  # fmt: skip
        self.chat = KeyedSource(chat_source, "chat", "lmsys-chat-1m", hub_mirror) if chat_source else None
        self.keep_unrecoverable = keep_unrecoverable
        expected = {**EXPECTED_SPLIT_ROWS, **{dataset_name(k): dict(v) for k, v in (expected_rows or {}).items()}}
        self.sources = {name: src.describe() for name, src in sorted(self.code.items())}
        if self.chat is not None:
            self.sources["lmsys-chat-1m"] = self.chat.describe()
        if check_rows:
            for src in self.code.values():
                src.check_rows(expected.get(src.name))
        self.hashes = load_hash_list(verify_hashes) if verify_hashes else None
        self.counts: dict[str, Counter] = {}
        self.mismatched_turns = 0
        self.unrecoverable_keys: list[str] = []
        self.verified = self.hash_mismatch = 0
        self.reset_counts()

    def reset_counts(self) -> None:
        """Start counting afresh (a work unit reports only its own rows)."""
        self.counts = {"restored": Counter(), "unrecoverable": Counter()}
        self.mismatched_turns = 0
        self.unrecoverable_keys = []
        self.verified = self.hash_mismatch = 0

    def merge_summary(self, unit: dict[str, Any]) -> None:
        """Add a work unit's `summary()`; units merged in order list the same first keys as one stream."""
        self.counts["restored"].update(unit["restored"])
        self.counts["unrecoverable"].update(unit["unrecoverable"])
        self.mismatched_turns += unit["mismatched_user_turns"]
        self.verified += unit.get("verified", 0)
        self.hash_mismatch += unit.get("hash_mismatch", 0)
        room = max(0, MAX_KEYS_LISTED - len(self.unrecoverable_keys))
        self.unrecoverable_keys.extend(unit["unrecoverable_keys"][:room])

    def summary(self) -> dict[str, Any]:
        """Counts per source: restored, unrecoverable (first 1,000 failing keys listed), mismatches."""
        return {
            "restored": dict(sorted(self.counts["restored"].items())),
            "unrecoverable": dict(sorted(self.counts["unrecoverable"].items())),
            "restored_total": sum(self.counts["restored"].values()),
            "unrecoverable_total": sum(self.counts["unrecoverable"].values()),
            "mismatched_user_turns": self.mismatched_turns,
            "unrecoverable_keys": list(self.unrecoverable_keys),
            **({"verified": self.verified, "hash_mismatch": self.hash_mismatch} if self.hashes is not None else {}),
            "sources": self.sources,
        }

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        messages = batch.column("messages")
        flat = pc.list_flatten(messages)
        parents = pc.list_parent_indices(messages).to_numpy()
        roles, contents = pc.struct_field(flat, "role"), pc.struct_field(flat, "content")
        is_user = pc.fill_null(pc.equal(roles, "user"), False)
        withheld = pc.and_(is_user, pc.fill_null(pc.is_in(contents, pa.array([CODE_PLACEHOLDER, CHAT_PLACEHOLDER])), False))
        candidates = np.unique(parents[withheld.to_numpy(zero_copy_only=False)])
        keys: list[str | None] = [None] * batch.num_rows
        reasons: list[str | None] = [None] * batch.num_rows
        new_text: dict[int, str] = {}
        if len(candidates):
            metas = batch.column("metadata").take(pa.array(candidates)).to_pylist()
            user_pos = np.flatnonzero(is_user.to_numpy(zero_copy_only=False))
            jobs = self._plan(candidates, metas, parents, user_pos, contents, keys)
            for source, items in jobs.items():
                records = source.lookup([k for k, *_ in items]) if source else {}
                for key, row, positions, texts in items:
                    label = source.name if source else key.split("/", 1)[0]
                    filled = self._fill(source, records.get(key), positions, texts) if source else None
                    if filled is None:
                        self.counts["unrecoverable"][label] += 1
                        if len(self.unrecoverable_keys) < MAX_KEYS_LISTED:  # bounded; counts stay exact
                            self.unrecoverable_keys.append(keys[row] or key)
                        reasons[row] = None if self.keep_unrecoverable else "prompt.unrecoverable"
                        continue
                    self.counts["restored"][label] += 1
                    new_text.update(filled)
                    if self.hashes is not None and keys[row] in self.hashes:
                        if prompt_digest([filled[p] for p in sorted(filled)]) == self.hashes[keys[row]]:
                            self.verified += 1
                        else:
                            self.hash_mismatch += 1
                            reasons[row] = "prompt.hash_mismatch"
        batch = self._with_contents(batch, messages, flat, contents, new_text)
        batch = add_reasons(batch, reasons)
        key_col = pa.array(keys, type=pa.string())
        if KEY_COLUMN in batch.schema.names:
            return batch.set_column(batch.schema.get_field_index(KEY_COLUMN), KEY_COLUMN, key_col)
        return batch.append_column(KEY_COLUMN, key_col)

    def _plan(self, candidates, metas, parents, user_pos, contents, keys) -> dict[Any, list]:
        """Group the withheld rows by source: (key, row, flat positions of user turns, their texts)."""
        jobs: dict[Any, list] = {}
        for row, meta_text in zip(candidates.tolist(), metas, strict=True):
            meta = _meta(meta_text)
            pos = user_pos[parents[user_pos] == row]
            texts = [contents[int(p)].as_py() for p in pos]
            if "conversation_id" in meta and CHAT_PLACEHOLDER in texts:
                key, source = f"lmsys-chat-1m/{meta['conversation_id']}", self.chat
                lookup_key = str(meta["conversation_id"])
            elif texts and texts[0] == CODE_PLACEHOLDER and "dataset" in meta:
                name = dataset_name(str(meta["dataset"]))
                lookup_key = f"{meta.get('split') or 'train'}/{meta.get('index')}"
                key, source = f"{name}/{lookup_key}", self.code.get(name)
            else:
                continue  # an empty user turn without restoration keys is not a withheld prompt
            keys[row] = key
            jobs.setdefault(source, []).append((lookup_key if source else key, row, pos.tolist(), texts))
        return jobs

    def _fill(self, source: KeyedSource, record: dict[str, Any] | None, positions: list[int],
              texts: list[str]) -> dict[int, str] | None:  # fmt: skip
        """Flat position -> restored text, or None when the record is missing or does not fit."""
        if record is None:
            return None
        if source.kind == "code":
            prompt = code_prompt(record, source.name, source.examples)
            return {positions[0]: prompt} if prompt else None
        turns = [t.get("content") or "" for t in record.get("conversation") or [] if t.get("role") == "user"]
        if len(texts) > len(turns):
            return None
        out = {}
        for pos, have, want in zip(positions, texts, turns, strict=False):
            if have == CHAT_PLACEHOLDER:
                out[pos] = want
            elif have != want:
                self.mismatched_turns += 1
        return out if out and all(out.values()) else None

    @staticmethod
    def _with_contents(batch, messages, flat, contents, new_text: dict[int, str]) -> pa.RecordBatch:
        """The batch with `content` replaced at the given flat positions (other columns untouched)."""
        if not new_text:
            return batch
        pos = sorted(new_text)
        mask = np.zeros(len(contents), dtype=bool)
        mask[pos] = True
        replaced = pc.replace_with_mask(contents, pa.array(mask), pa.array([new_text[p] for p in pos], pa.string()))
        fields = list(flat.type)
        children = [replaced if f.name == "content" else pc.struct_field(flat, f.name) for f in fields]
        structs = pa.StructArray.from_arrays(children, fields=fields, mask=flat.is_null())
        offsets = pa.array(np.concatenate([[0], pc.list_value_length(messages).fill_null(0).to_numpy().cumsum()]),
                           pa.int32())  # fmt: skip
        rebuilt = pa.ListArray.from_arrays(offsets, structs, type=messages.type, mask=messages.is_null())
        idx = batch.schema.get_field_index("messages")
        return batch.set_column(idx, batch.schema.field(idx), rebuilt)


def load_hash_list(path: str | Path) -> dict[str, str]:
    """A hash list: a JSON object {key: sha256} or JSONL lines {"key": ..., "sha256": ...}.

    Keys are `rehydrate_key`s (`taco/train/16131`, `lmsys-chat-1m/<conversation_id>`); values
    `prompt_digest` of the restored text.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
        if text.lstrip().startswith("{") and "\n{" not in text.strip():
            data = json.loads(text)
            return {str(k): str(v) for k, v in data.items()}
        out = {}
        for line in text.splitlines():
            if line.strip():
                rec = json.loads(line)
                out[str(rec["key"])] = str(rec["sha256"])
        return out
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise SourceError(f"not a readable hash list ({type(exc).__name__}: {exc})", place=str(p),
                          fix='write a JSON object {"taco/train/0": "<sha256>"} or JSONL {"key": ..., "sha256": ...}') from None


def bundled_sources() -> tuple[dict[str, Path], Path]:
    """The fixtures that restore the bundled sample's withheld prompts."""
    from posttrain.sample import default_chat_source, default_code_sources

    return default_code_sources(), default_chat_source()
