"""Sources: the hub, local files and the bundled sample, all as bounded Arrow batches of the v1 schema.

>>> src = open_source()                      # the bundled sample        # doctest: +SKIP
>>> src = open_source("nvidia/Nemotron-Post-Training-Dataset-v1", split=["math"])  # doctest: +SKIP
>>> for batch in src.iter_batches(batch_size=512): ...                  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from posttrain.io.sources.discover import DataFile, discover_hub, discover_local, parse_hub_id
from posttrain.io.sources.normalize import FORMATS
from posttrain.io.sources.reader import (
    DEFAULT_UNIT_ROWS,
    BadRow,
    Fragment,
    ReadLog,
    list_fragments,
    prefetch,
    read_fragment,
)
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stage import REASONS, REASONS_TYPE, register_reason, with_reasons

register_reason("source.bad_json", "error", "a JSONL line is not a JSON object")
register_reason("source.bad_row", "error", "a row cannot be brought to the Nemotron schema")
register_reason("source.unreadable", "error", "rows lost to corrupt data in the file")
register_reason("source.bad_encoding", "error", "the row is not valid UTF-8 text (its raw bytes are kept, base64)")
register_reason("source.missing_uuid", "error", "the row has no uuid (null or empty), so it cannot be keyed")

__all__ = ["BadRow", "DataFile", "Fragment", "ReadLog", "Source", "SourceSpec", "open_source", "bad_rows_batch", "source_batches", "unit_limits"]


class Source:
    """An opened source: its files, its fragments (from metadata), and a streaming reader.

    `read_log` collects the rows that could not be read (bounded), for the rejects file.
    """

    def __init__(
        self,
        spec: str,
        files: list[DataFile],
        *,
        format: str | None = None,
        limit: int | None = None,
        columns: list[str] | None = None,
        unit_rows: int = DEFAULT_UNIT_ROWS,
    ) -> None:
        self.spec = spec
        self.files = files
        self.limit = limit
        self.columns = columns
        self.fragments: list[Fragment] = list_fragments(files, format, unit_rows)
        self.read_log = ReadLog()
        #: data files the repo holds but its card does not serve, with why (see sources.hub_layouts)
        self.skipped: list[tuple[str, str]] = list(getattr(files, "skipped", []))

    @property
    def splits(self) -> list[str]:
        return sorted({f.split for f in self.files})

    @property
    def num_rows(self) -> int | None:
        """Rows from metadata (capped by `limit`); None when a JSONL file's count is unknown."""
        counts = [f.num_rows for f in self.fragments]
        if any(c is None for c in counts):
            return self.limit
        total = sum(counts)  # type: ignore[arg-type]
        return min(total, self.limit) if self.limit is not None else total

    def iter_fragment(self, frag: Fragment, batch_size: int = 1024, with_reasons: bool = False) -> Iterator[pa.RecordBatch]:
        """Batches of one fragment; with `with_reasons`, unreadable rows come along as reject rows."""
        log = ReadLog() if with_reasons else self.read_log
        for batch in read_fragment(frag, batch_size, self.columns, log):
            yield _add_empty_reasons(batch) if with_reasons else batch
        if with_reasons and log.bad_count:
            self.read_log.bad_count += log.bad_count
            self.read_log.bad_rows.extend(log.bad_rows[: max(0, self.read_log.keep - len(self.read_log.bad_rows))])
            yield bad_rows_batch(log.bad_rows)

    def iter_batches(self, batch_size: int = 1024, with_reasons: bool = False) -> Iterator[pa.RecordBatch]:
        """All rows, fragment by fragment, in bounded batches; stops after `limit` rows."""
        left = self.limit
        for frag in self.fragments:
            for batch in self.iter_fragment(frag, batch_size, with_reasons):
                if left is not None:
                    if left <= 0:
                        return
                    if batch.num_rows > left:
                        batch = batch.slice(0, left)
                    left -= batch.num_rows
                yield batch
            if left is not None and left <= 0:
                return


def _add_empty_reasons(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The `reasons` column of freshly read rows: empty, but `source.missing_uuid` where a uuid is null or ""."""
    empty = pa.array([[]] * batch.num_rows, type=REASONS_TYPE)
    if "uuid" in batch.schema.names and batch.num_rows:
        uuids = batch.column("uuid").to_pylist()
        if not all(uuids):
            empty = pa.array([[] if u else ["source.missing_uuid"] for u in uuids], type=REASONS_TYPE)
    return batch.append_column(pa.field(REASONS, REASONS_TYPE), empty)


def bad_rows_batch(bad: Sequence[BadRow]) -> pa.RecordBatch:
    """Reject rows for unreadable input: uuid = the place, metadata = what went wrong and the raw text.

    A bad unit that lost n rows yields n rows, so `rows_in == out + rejected` holds against metadata.
    """
    rows = []
    for b in bad:
        meta = json.dumps({"source_error": {"place": b.place, "message": b.message, "raw": b.raw}}, ensure_ascii=False)
        for k in range(b.rows):
            uid = b.place if b.rows == 1 else f"{b.place}#{k}"
            rows.append({"uuid": uid, "category": b.split, "messages": [], "metadata": meta, REASONS: [b.code]})
    schema = NEMOTRON_SCHEMA.append(pa.field(REASONS, REASONS_TYPE))
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def open_source(
    spec: str | Path | None = None,
    *,
    split: str | Sequence[str] | None = None,
    limit: int | None = None,
    format: str | None = None,
    columns: list[str] | None = None,
    hub_mirror: str | Path | None = None,
    revision: str | None = None,
    unit_rows: int = DEFAULT_UNIT_ROWS,
) -> Source:
    """Open a source: None (the bundled sample), a local file/dir/glob, or a hub id.

    `hub_mirror` points a hub id at a local directory laid out like the hub repo (offline runs,
    tests); the listing and reading code is the same as for the hub.
    """
    from posttrain.errors import SourceError

    if format is not None and format not in FORMATS:
        raise SourceError(f"unknown format {format!r}", fix=f"choose from {', '.join(FORMATS)}")
    splits = [split] if isinstance(split, str) else (list(split) if split else None)
    if spec is None or str(spec) in ("", "sample"):
        from posttrain.sample import sample_root

        spec = str(sample_root())
    spec = str(spec)
    hub = parse_hub_id(spec)
    if hub is not None:
        files = discover_hub(hub[0], revision or hub[1], splits, hub_mirror)
    else:
        files = discover_local(spec, splits)
    return Source(spec, files, format=format, limit=limit, columns=columns, unit_rows=unit_rows)


@dataclass
class SourceSpec:
    """How to reopen the run's source in any process."""

    spec: str | None
    split: list[str] | None = None
    format: str | None = None
    hub_mirror: str | None = None
    unit_rows: int = 10_000

    def open(self) -> Source:
        return open_source(self.spec, split=self.split, format=self.format, hub_mirror=self.hub_mirror, unit_rows=self.unit_rows)


def unit_limits(fragment_rows: list[int | None], limit: int | None) -> list[int | None]:
    """Rows each unit may take so that the run stops after `limit` rows in fragment order.

    >>> unit_limits([5, 5, 5], 7)
    [5, 2, 0]
    >>> unit_limits([5, None], None)
    [None, None]
    """
    if limit is None:
        return [None] * len(fragment_rows)
    out: list[int | None] = []
    left = limit
    for n in fragment_rows:
        if n is None:  # unknown size (JSONL): it takes what is left
            out.append(left)
            left = 0
            continue
        take = min(n, left)
        out.append(take)
        left -= take
    return out


def source_batches(source: Any, batch_size: int, prefetch_depth: int = 0) -> Iterator[pa.RecordBatch]:
    """The one way a job streams a source: bounded batches, each with a `reasons` column.

    `source` is a `Source` (unreadable rows arrive as reject rows, so counts add up) or anything
    with `iter_batches(batch_size=...)`, as an API caller may pass. `prefetch_depth > 0` decodes the
    next batches on a thread while the caller works on this one.
    """
    try:
        batches = source.iter_batches(batch_size=batch_size, with_reasons=True)
    except TypeError:  # a plain source without the reasons option
        batches = source.iter_batches(batch_size=batch_size)
    if prefetch_depth > 0:
        batches = prefetch(iter(batches), depth=prefetch_depth)
    for batch in batches:
        yield with_reasons(batch)
