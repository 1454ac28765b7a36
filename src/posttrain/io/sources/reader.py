"""Read fragments (file x row-group range) into bounded Arrow batches of the v1 schema.

A fragment is the unit of work: listed up front from parquet metadata (rows and bytes known
before any data is read), so engines can split work and progress bars have a total.
Broken rows are reported with their place and the rest of the file is read.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.errors import SourceError
from posttrain.io.sources.discover import DataFile
from posttrain.io.sources.normalize import (
    RowError,
    check_v1_schema,
    convert_row,
    detect_format,
    detect_row_format,
    fill_category,
    normalize_v1,
)
from posttrain.schema import NEMOTRON_SCHEMA

#: Rows per fragment: consecutive row groups of one file are grouped up to about this many rows.
DEFAULT_UNIT_ROWS = 10_000
#: Stored characters of a broken row's raw text, enough to recognise it in a rejects file.
RAW_SNIPPET_CHARS = 500


@dataclass(frozen=True)
class Fragment:
    """A unit of work: some row groups of one parquet file, or one whole JSONL file."""

    index: int
    file: DataFile
    row_groups: tuple[int, ...] | None  # None: the whole file (JSONL)
    num_rows: int | None  # None when unknown without reading (JSONL)
    num_bytes: int  # uncompressed bytes from parquet metadata, file size for JSONL
    format: str

    @property
    def path(self) -> str:
        return self.file.path

    @property
    def split(self) -> str:
        return self.file.split

    @property
    def place(self) -> str:
        if self.row_groups is None:
            return self.path
        rg = self.row_groups
        return f"{self.path} (row groups {rg[0]}-{rg[-1]})" if len(rg) > 1 else f"{self.path} (row group {rg[0]})"


@dataclass
class BadRow:
    """A row that could not be read or converted; it goes to rejects with `code`."""

    place: str
    code: str
    message: str
    raw: str = ""
    split: str | None = None
    rows: int = 1  # rows lost: more than one when a whole corrupt row group is skipped


@dataclass
class ReadLog:
    """What went wrong while reading, bounded: counts always, details for the first `keep` rows."""

    keep: int = 1000
    bad_rows: list[BadRow] = field(default_factory=list)
    bad_count: int = 0

    def add(self, bad: BadRow) -> None:
        self.bad_count += bad.rows
        if len(self.bad_rows) < self.keep:
            self.bad_rows.append(bad)


def _open(file: DataFile):
    if file.fs is None:
        return file.path
    return file.fs.open(file.path, "rb")


def _parquet_file(file: DataFile) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(_open(file))
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(
            f"not a readable parquet file ({exc})",
            place=file.path,
            fix="the file is corrupt or truncated; download it again",
        ) from exc


def list_fragments(
    files: list[DataFile], format: str | None = None, unit_rows: int = DEFAULT_UNIT_ROWS
) -> list[Fragment]:
    """Fragments of every file, from metadata only; checks each parquet file's schema."""
    out: list[Fragment] = []
    for file in files:
        if file.kind == "jsonl":
            out.append(Fragment(len(out), file, None, None, file.size, format or "auto"))
            continue
        pf = _parquet_file(file)
        schema = pf.schema_arrow
        fmt = format or detect_format_at(schema, file.path)
        if fmt == "nemotron-v1":
            check_v1_schema(schema, file.path)
        meta = pf.metadata
        group: list[int] = []
        rows = nbytes = 0
        for rg in range(meta.num_row_groups):
            group.append(rg)
            rows += meta.row_group(rg).num_rows
            nbytes += meta.row_group(rg).total_byte_size
            if rows >= unit_rows or rg == meta.num_row_groups - 1:
                out.append(Fragment(len(out), file, tuple(group), rows, nbytes, fmt))
                group, rows, nbytes = [], 0, 0
    return out


def detect_format_at(schema: pa.Schema, place: str) -> str:
    try:
        return detect_format(schema)
    except SourceError as exc:
        raise SourceError(exc.message, place=place, fix=exc.fix) from None


def read_fragment(
    frag: Fragment, batch_size: int = 1024, columns: list[str] | None = None, log: ReadLog | None = None
) -> Iterator[pa.RecordBatch]:
    """Batches of one fragment in the v1 schema (or its `columns` projection, v1 files only)."""
    log = log if log is not None else ReadLog()
    if frag.file.kind == "jsonl":
        yield from _read_jsonl(frag, batch_size, log)
        return
    pf = _parquet_file(frag.file)
    project = columns if (columns and frag.format == "nemotron-v1") else None
    done = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_size, row_groups=list(frag.row_groups or ()), columns=project):
            done += batch.num_rows
            if not project:  # a string that is not UTF-8 is a reject with its bytes, never a crash or a guess
                batch = _valid_utf8(batch, frag, log, offset=done - batch.num_rows)
            if project:
                yield batch
            elif frag.format == "nemotron-v1":
                yield fill_category(normalize_v1(batch), frag.split)
            else:
                yield from _convert_rows(batch.to_pylist(), frag, log, offset=done - batch.num_rows)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        # A corrupt page: the footer was fine, the data is not. The unit's remaining rows are
        # reported (counted from metadata) and the next fragment is read as usual.
        lost = max((frag.num_rows or 0) - done, 1)
        log.add(BadRow(frag.place, "source.unreadable", f"corrupt data after {done} rows: {exc}", split=frag.split, rows=lost))


def _convert_rows(rows: list[dict], frag: Fragment, log: ReadLog, offset: int) -> Iterator[pa.RecordBatch]:
    good = []
    for i, row in enumerate(rows):
        try:
            good.append(convert_row(row, frag.format))
        except RowError as exc:
            where = f"{frag.place} row {offset + i}"
            log.add(BadRow(where, "source.bad_row", str(exc), json.dumps(row, default=str)[:RAW_SNIPPET_CHARS], frag.split))
    if good:
        yield fill_category(pa.RecordBatch.from_pylist(good, schema=NEMOTRON_SCHEMA), frag.split)


def _lines(frag: Fragment) -> Iterator[tuple[int, str]]:
    fh = _open(frag.file)
    raw = open(fh, "rb") if isinstance(fh, str) else fh
    try:
        stream = gzip.open(raw) if frag.path.endswith(".gz") else raw
        # bytes that are not UTF-8 come through as lone surrogates, so the row is rejected with its raw bytes
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="surrogateescape")
        for lineno, line in enumerate(text, start=1):
            if line.strip():
                yield lineno, line
    except (OSError, EOFError) as exc:
        raise SourceError(f"cannot read the file ({exc})", place=frag.path, fix="the file is corrupt or truncated") from exc
    finally:
        raw.close()


def _read_jsonl(frag: Fragment, batch_size: int, log: ReadLog) -> Iterator[pa.RecordBatch]:
    fmt = None if frag.format == "auto" else frag.format
    pending: list[dict] = []
    for lineno, line in _lines(frag):
        place = f"{frag.path}:{lineno}"
        bad = _bad_encoding(line)
        if bad is not None:
            log.add(BadRow(place, "source.bad_encoding", bad, _raw_bytes(line), frag.split))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            log.add(BadRow(place, "source.bad_json", f"not JSON ({exc.msg} at column {exc.colno})", line[:RAW_SNIPPET_CHARS], frag.split))
            continue
        except (ValueError, RecursionError) as exc:  # nested too deep, an integer too long to convert
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            log.add(BadRow(place, "source.bad_json", f"not readable JSON ({why})", line[:RAW_SNIPPET_CHARS], frag.split))
            continue
        if _ESCAPED_SURROGATE.search(line) and not _encodable(obj):
            log.add(BadRow(place, "source.bad_encoding", "a \\u escape gives a lone surrogate, which is not text",
                           _raw_bytes(line), frag.split))
            continue
        if not isinstance(obj, dict):
            log.add(BadRow(place, "source.bad_json", "the line is JSON but not an object", line[:RAW_SNIPPET_CHARS], frag.split))
            continue
        if fmt is None:
            try:
                fmt = detect_row_format(obj)
            except SourceError as exc:
                raise SourceError(exc.message, place=place, fix=exc.fix) from None
        try:
            pending.append(convert_row(obj, fmt))
        except RowError as exc:
            log.add(BadRow(place, "source.bad_row", str(exc), line[:RAW_SNIPPET_CHARS], frag.split))
            continue
        if len(pending) >= batch_size:
            yield fill_category(pa.RecordBatch.from_pylist(pending, schema=NEMOTRON_SCHEMA), frag.split)
            pending = []
    if pending:
        yield fill_category(pa.RecordBatch.from_pylist(pending, schema=NEMOTRON_SCHEMA), frag.split)


_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _bad_encoding(line: str) -> str | None:
    """Why a line read with `surrogateescape` is not UTF-8, or None when it is."""
    m = _SURROGATE.search(line)
    if m is None:
        return None
    byte = ord(m.group()) - 0xDC00
    return (f"not valid UTF-8 (byte 0x{byte:02x} at character {m.start() + 1}); "
            "the line's bytes are kept base64-encoded in source_error.raw")


def _raw_bytes(line: str) -> str:
    """The line exactly as it was in the file, base64 (nothing is lost, nothing is replaced)."""
    return base64.b64encode(line.encode("utf-8", "surrogateescape")).decode("ascii")


def _valid_utf8(batch: pa.RecordBatch, frag: Fragment, log: ReadLog, offset: int) -> pa.RecordBatch:
    """`batch` without its rows whose strings are not UTF-8; each goes to `log` as `source.bad_encoding`
    with the row's exact bytes (Arrow IPC, base64) kept."""
    try:
        batch.validate(full=True)
        return batch
    except pa.ArrowInvalid:
        pass
    keep = []
    for i in range(batch.num_rows):
        row = batch.slice(i, 1)
        try:
            row.validate(full=True)
            keep.append(i)
        except pa.ArrowInvalid as exc:
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, row.schema) as w:
                w.write_batch(row)
            raw = base64.b64encode(sink.getvalue().to_pybytes()).decode("ascii")
            log.add(BadRow(f"{frag.place} row {offset + i}", "source.bad_encoding",
                           f"not valid UTF-8 ({exc}); the row's bytes are kept (Arrow IPC, base64) in source_error.raw",
                           raw, frag.split))
    return batch.take(pa.array(keep, pa.int64()))


def _encodable(obj: object) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def prefetch(batches: Iterator[pa.RecordBatch], depth: int = 2) -> Iterator[pa.RecordBatch]:
    """Read ahead `depth` batches on a background thread, in order, from the first `next()` on.

    Parquet decoding releases the GIL, so the next batches are decoded while the caller works on
    this one; `depth` bounds the memory held. An error in the reader is raised in the caller.

    >>> list(prefetch(iter([1, 2, 3])))
    [1, 2, 3]
    """
    yield from ReadAhead(batches, depth)


class ReadAhead:
    """`prefetch` that starts reading at once, not at the first `next()`: a job can start the read of its
    first batches and then import and set up what judges them (validate's checks: ~0.2 s of imports that
    the parquet decoding, which releases the GIL, runs beside). Iterate it once; `close()` (also run when the
    iteration ends, however it ends) stops the reading thread: whoever starts one and may not iterate it
    must close it.

    >>> ahead = ReadAhead(iter([1, 2, 3]))
    >>> list(ahead)
    [1, 2, 3]
    """

    def __init__(self, batches: Iterator[pa.RecordBatch], depth: int = 2) -> None:
        import queue
        import threading

        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._done = object()
        self._thread = threading.Thread(target=self._run, args=(batches,), name="read-ahead", daemon=True)
        self._thread.start()

    def _run(self, batches: Iterator[pa.RecordBatch]) -> None:
        try:
            for item in batches:
                if not self._put(item):
                    return
            self._put(self._done)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put(exc)

    def _put(self, item: object) -> bool:
        """Queue `item`, waiting for room until closed; False once closed."""
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            while True:
                item = self._queue.get()
                if item is self._done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop reading (the thread ends within 0.1 s; what it read is dropped)."""
        import queue

        self._stop.set()
        try:
            while True:  # drop what was read: the batches' memory goes now, not when the thread ends
                self._queue.get_nowait()
        except queue.Empty:
            pass
