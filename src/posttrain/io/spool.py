"""Per-unit work directories: written under a temporary name, renamed atomically when complete.

A unit directory holds what the map phase produced for one fragment:

- `docs.arrow`   tokenized documents (Arrow IPC, uncompressed, so the pack phase can memory-map
                 it and gather documents by index without reading the whole file; ids at the
                 vocabulary's width and masks as spans: `posttrain.io.spool_codec`);
- `index.parquet` one small row per document (uuid, category, tokens, dedup/mix keys);
- `rejects.parquet` the rows rejected in this unit, with their reasons;
- `result.json`  counts; its presence inside the renamed directory is the done marker.

A crash leaves at most a `.tmp-*` directory behind, which the next run removes and redoes.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

RESULT = "result.json"


def unit_dir(work: Path, index: int) -> Path:
    return work / f"unit-{index:06d}"


def is_done(work: Path, index: int) -> bool:
    return (unit_dir(work, index) / RESULT).is_file()


def read_result(work: Path, index: int) -> dict[str, Any]:
    return json.loads((unit_dir(work, index) / RESULT).read_text())


class UnitWriter:
    """Collects a unit's outputs in a temporary directory; `commit` renames it into place."""

    def __init__(self, work: Path, index: int) -> None:
        self.final = unit_dir(work, index)
        self.tmp = work / f".tmp-unit-{index:06d}-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self._docs: ipc.RecordBatchFileWriter | None = None
        self._writers: dict[str, pq.ParquetWriter] = {}

    def write_docs(self, batch: pa.RecordBatch, id_bytes: int | None = None) -> None:
        """Spool tokenized documents; with `id_bytes`, in the compact layout of `posttrain.io.spool_codec`
        (ids at that width, masks as spans) instead of 5 bytes a token."""
        if batch.num_rows == 0:
            return
        if id_bytes is not None:
            from posttrain.io.spool_codec import encode_docs

            batch = encode_docs(batch, id_bytes)
        if self._docs is None:
            self._docs = ipc.new_file(str(self.tmp / "docs.arrow"), batch.schema)
        self._docs.write_batch(batch)

    def write(self, name: str, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        w = self._writers.get(name)
        if w is None:
            w = pq.ParquetWriter(str(self.tmp / f"{name}.parquet"), batch.schema, compression="zstd")
            self._writers[name] = w
        w.write_batch(batch)

    def commit(self, result: dict[str, Any]) -> None:
        if self._docs is not None:
            self._docs.close()
        for w in self._writers.values():
            w.close()
        write_atomic(self.tmp / RESULT, json.dumps(result, indent=1, sort_keys=True))
        if self.final.exists():  # a stale copy from an interrupted earlier commit
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        for w in [self._docs, *self._writers.values()]:
            close_quietly(w)  # a writer left open would fail again, with a traceback, at exit (disk full)
        self._docs, self._writers = None, {}
        shutil.rmtree(self.tmp, ignore_errors=True)


def close_quietly(writer: object | None) -> None:
    """Close a writer of a failed file without raising; a failed close is not tried again at exit."""
    if writer is None:
        return
    try:
        writer.close()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - the file is being dropped anyway
        if hasattr(writer, "is_open"):
            writer.is_open = False  # type: ignore[attr-defined]  # pyarrow's ParquetWriter.__del__ would retry


def write_atomic(path: Path, text: str) -> None:
    """Write a control file under a temporary name and rename it into place.

    A crash or a full disk mid-write leaves the old file (or none), never a torn one that every
    later run would trip over.
    """
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def clean_partial(work: Path) -> None:
    """Remove temporary unit directories left by a crash."""
    for p in work.glob(".tmp-unit-*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in work.glob(".tmp-*"):  # a control file torn by a crash
        if p.is_file():
            p.unlink(missing_ok=True)


def open_docs(work: Path, index: int) -> pa.Table | None:
    """The unit's tokenized documents, memory-mapped (nothing is read until used)."""
    path = unit_dir(work, index) / "docs.arrow"
    if not path.exists():
        return None
    return ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def take_docs(work: Path, index: int, rows: pa.Array | list[int]) -> pa.Table:
    """Documents `rows` of the unit's spool, in that order, with `input_ids` / `loss_mask` decoded.

    Taken record batch by record batch: `Table.take` over the whole memory-mapped spool would
    first concatenate every chunk of it (a copy of the unit's tokens per call, which made the pack
    phase's memory grow with the unit and its time with units x shards).
    """
    from posttrain.io.spool_codec import decode_docs

    path = unit_dir(work, index) / "docs.arrow"
    if not path.exists():
        raise FileNotFoundError(f"{path}: the unit's spool is missing")
    reader = ipc.open_file(pa.memory_map(str(path), "r"))
    st = path.stat()
    starts = _batch_starts(str(path), st.st_mtime_ns, st.st_size)
    want = np.asarray(rows.to_numpy(zero_copy_only=False) if isinstance(rows, pa.Array) else rows, np.int64)
    which = np.searchsorted(starts, want, side="right") - 1
    pieces, order = [], []
    for b in np.unique(which).tolist():
        sel = np.flatnonzero(which == b)
        pieces.append(reader.get_batch(b).take(pa.array(want[sel] - starts[b])))
        order.append(sel)
    table = pa.Table.from_batches(pieces, schema=reader.schema)
    if len(order) > 1:  # back to the order asked for
        table = table.take(pa.array(np.argsort(np.concatenate(order), kind="stable")))
    return decode_docs(table)


@functools.lru_cache(maxsize=256)
def _batch_starts(path: str, mtime_ns: int, size: int) -> np.ndarray:
    """First row of every record batch of a spool (and the row count at the end); cached per file
    version, since a pack phase gathers from the same spools once per group of packs."""
    reader = ipc.open_file(pa.memory_map(path, "r"))
    sizes = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def read_parquet(work: Path, index: int, name: str, columns: list[str] | None = None) -> pa.Table | None:
    path = unit_dir(work, index) / f"{name}.parquet"
    return pq.read_table(path, columns=columns) if path.exists() else None
