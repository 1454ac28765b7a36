"""THE parquet writer of posttrain's row outputs: fixed row groups, one codec, rotation, atomic files.

Every job that writes rows (validate's accepted/rejects, dedup's kept/removed, decontaminate,
select, rehydrate's per-split files) writes through `PartWriter`, so a fix here is a fix everywhere:

- rows are buffered to row groups of exactly `row_group_rows`, each written as one contiguous
  chunk (parquet pages break at chunk edges), so the bytes never depend on the batch size
  upstream, the engine or how work units cut the rows;
- one codec (zstd) and no timestamps: the same rows give the same bytes;
- a new file every `rows_per_file` rows (`part-00000.parquet`, `part-00001.parquet`, ...), or one
  file of a fixed name;
- each file is written under a temporary name and renamed when complete: a crash or a full disk
  never leaves a truncated `part-*.parquet` that a later run or a user would read;
- an empty stream still leaves one readable file with the schema.

Packed training shards have their own writer (`posttrain.io.shards`): their layout (packs, not
rows) and their sha256 record differ.

>>> import tempfile, pyarrow as pa
>>> d = Path(tempfile.mkdtemp())
>>> w = PartWriter(d, pa.schema([("x", pa.int64())]), rows_per_file=3, row_group_rows=2)
>>> for i in range(4): w.write(pa.record_batch({"x": [i]}))
>>> w.close()
>>> [p.name for p in w.files], pq.ParquetFile(w.files[0]).metadata.num_row_groups
(['part-00000.parquet', 'part-00001.parquet'], 2)
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.errors import PosttrainError
from posttrain.io.spool import close_quietly

ROW_GROUP_ROWS = 2048
ROWS_PER_FILE = 100_000
COMPRESSION = "zstd"


def conform(batch: pa.RecordBatch | pa.Table, schema: pa.Schema) -> pa.RecordBatch | pa.Table:
    """`batch` in exactly `schema` (a batch stays a batch, a table a table): its columns in order,
    cast; columns it lacks filled with nulls.

    Sources may hand `large_string`, extra columns (a `reasons` column riding along) or lack a
    column a job adds later (`rehydrate_key` on rows that could not be read).
    """
    if batch.schema.equals(schema):
        return batch
    cols = []
    for field in schema:
        if field.name in batch.schema.names:
            try:
                cols.append(batch.column(field.name).cast(field.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise PosttrainError(
                    f"column {field.name!r} does not fit the output schema: {err}",
                    fix="open the data with posttrain.io.sources, which brings it to the Nemotron schema",
                ) from None
        else:
            cols.append(pa.nulls(batch.num_rows, field.type))
    kind = pa.RecordBatch if isinstance(batch, pa.RecordBatch) else pa.Table
    return kind.from_arrays(cols, schema=schema)


class PartWriter:
    """Rows into `directory` as parquet files of fixed row groups (see the module docstring).

    `schema=None` takes the first batch's schema. `name` is a file-name pattern with `{part}`
    (rotation) or a fixed name (`rows_per_file=None`: one file).
    """

    def __init__(
        self,
        directory: Path,
        schema: pa.Schema | None = None,
        *,
        name: str = "part-{part:05d}.parquet",
        rows_per_file: int | None = ROWS_PER_FILE,
        row_group_rows: int = ROW_GROUP_ROWS,
    ) -> None:
        if rows_per_file is not None and "{part" not in name:
            raise ValueError("a rotating writer needs {part} in its file name")
        self.directory, self.schema, self.name = Path(directory), schema, name
        self.rows_per_file = rows_per_file
        self.row_group_rows = min(row_group_rows, rows_per_file) if rows_per_file else row_group_rows
        self.rows = 0
        self.files: list[Path] = []
        self._part = 0
        self._file_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if self.schema is None:
            self.schema = batch.schema
        if batch.num_rows == 0:
            return
        data = conform(batch, self.schema)
        self._pending.append(pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data)
        self._pending_rows += batch.num_rows
        while self._pending_rows >= self.row_group_rows:
            self._emit(self.row_group_rows)

    def _emit(self, n: int) -> None:
        table = pa.concat_tables(self._pending)
        head, rest = table.slice(0, n).combine_chunks(), table.slice(n)
        self._pending, self._pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        while head.num_rows:
            if self._writer is None:
                self._open()
            room = self.rows_per_file - self._file_rows if self.rows_per_file else head.num_rows
            take = min(head.num_rows, room)
            assert self._writer is not None
            self._writer.write_table(head.slice(0, take), row_group_size=self.row_group_rows)
            head = head.slice(take)
            self._file_rows += take
            self.rows += take
            if self.rows_per_file and self._file_rows >= self.rows_per_file:
                self._finish_file()

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / self.name.format(part=self._part)
        self._tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
        self._writer = pq.ParquetWriter(self._tmp, self.schema, compression=COMPRESSION)

    def _finish_file(self) -> None:
        assert self._writer is not None and self._tmp is not None
        self._writer.close()
        final = self.directory / self.name.format(part=self._part)
        os.replace(self._tmp, final)
        self.files.append(final)
        self._writer, self._tmp, self._part, self._file_rows = None, None, self._part + 1, 0

    def close(self, schema: pa.Schema | None = None) -> None:
        """Write what is buffered and finish the file (`schema`: for an empty output never written to)."""
        self.schema = self.schema or schema
        if self._pending_rows:
            self._emit(self._pending_rows)
        if self._writer is not None:
            self._finish_file()
        elif not self.files and self.schema is not None:  # an empty output is still a readable file
            self._open()
            self._finish_file()

    def abort(self) -> None:
        """Drop the file being written (the run failed); finished files stay."""
        if self._writer is not None:
            try:
                close_quietly(self._writer)  # the run failed, perhaps on a full disk: closing may fail too
            finally:
                if self._tmp is not None:
                    self._tmp.unlink(missing_ok=True)
                self._writer = None
