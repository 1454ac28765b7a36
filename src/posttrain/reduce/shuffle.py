"""The streaming global shuffle: hash-range buckets spilled to disk, each sorted on drain."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.io.parquet import PartWriter
from posttrain.reduce.mix import row_hashes


class _BucketFile:
    """One spill file of the shuffle: an Arrow IPC stream (zstd). Unlike a parquet writer, it keeps no
    per-batch footer in memory, so thousands of small appends across many buckets stay cheap."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bytes = 0  # Arrow bytes written: what sorting this bucket will hold in memory
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            opts = pa.ipc.IpcWriteOptions(compression="zstd")
            self._writer = pa.ipc.new_stream(str(self.path), table.schema, options=opts)
        self._writer.write_table(table)
        self.bytes += table.nbytes

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def batches(self) -> Iterator[pa.RecordBatch]:
        with pa.ipc.open_stream(str(self.path)) as reader:
            yield from reader


class Shuffler:
    """Streaming global shuffle: rows go to hash-range buckets on disk, each bucket is sorted on drain.

    The order is the order of xxh64(output uuid, seed'): independent of batch size, order and workers.
    Buckets partition the hash range in order, so concatenating sorted buckets is a global sort. A
    bucket larger than the memory budget (the bucket count comes from an estimate) is split into
    256 ordered sub-ranges before it is sorted, so memory stays bounded whatever the input size.
    """

    def __init__(self, directory: Path, n_buckets: int, seed: int, budget_bytes: int = 64 << 20) -> None:
        self.directory = directory
        self.n = n_buckets
        self.seed = (seed * 0x9E3779B97F4A7C15 + 1) & 0xFFFFFFFFFFFFFFFF  # a different stream from the draw
        self.budget = budget_bytes
        self.parts: dict[int, _BucketFile] = {}

    def write(self, table: pa.Table) -> None:
        key = row_hashes(table.column("uuid"), self.seed)
        bucket = ((key >> np.uint64(32)) * np.uint64(self.n)) >> np.uint64(32)
        table = table.append_column("_shuffle_key", pa.array(key, pa.uint64()))
        for b in np.unique(bucket).tolist():
            part = self.parts.setdefault(b, _BucketFile(self.directory / f"bucket-{b:05d}.arrows"))
            part.write(table.filter(pa.array(bucket == b)))

    def drain(self, sink: PartWriter) -> None:
        for b in sorted(self.parts):
            self.parts[b].close()
            self._sort_into(self.parts[b], sink, shift=32)
        if self.directory.exists():
            shutil.rmtree(self.directory)

    def _sort_into(self, part: _BucketFile, sink: PartWriter, shift: int) -> None:
        """Sort one bucket into `sink`, first splitting it on the next 8 bits when it is over budget."""
        if part.bytes > self.budget and shift >= 8:
            shift -= 8
            subs: dict[int, _BucketFile] = {}
            for batch in part.batches():
                # v = top32(key) * n orders keys the way the buckets do (bucket = v >> 32); its next
                # 8 bits below `shift` cut this bucket's range into 256 ordered sub-ranges
                v = (batch.column("_shuffle_key").to_numpy() >> np.uint64(32)) * np.uint64(self.n)
                sub = (v >> np.uint64(shift)) & np.uint64(0xFF)
                for k in np.unique(sub).tolist():
                    name = f"{part.path.stem}-{k:03d}.arrows"
                    subs.setdefault(k, _BucketFile(part.path.parent / name)).write(
                        pa.Table.from_batches([batch.filter(pa.array(sub == k))])
                    )
            part.path.unlink()
            for k in sorted(subs):
                subs[k].close()
                self._sort_into(subs[k], sink, shift)
            return
        table = pa.Table.from_batches(list(part.batches())) if part.bytes else None
        if table is not None and table.num_rows:
            order = pc.sort_indices(table, sort_keys=[("_shuffle_key", "ascending"), ("uuid", "ascending")])
            sink.write(table.take(order).drop_columns(["_shuffle_key"]))
        part.path.unlink(missing_ok=True)
