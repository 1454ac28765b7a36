"""The run's document index: where every kept document lives, how long it is, its uuid key.

The reduce steps (dedup, mixing) decide over it and the pack phase plans bins over it; it holds
about 24 bytes a document (never the tokens), read from each unit's small `index.parquet`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from posttrain.io.spool import read_parquet, unit_dir
from posttrain.reduce.pack.build import doc_keys


@dataclass
class DocIndex:
    """Where every kept document lives and how long it is, in canonical (unit, row) order."""

    unit: np.ndarray  # int32
    row: np.ndarray  # int64, row within the unit's docs.arrow
    length: np.ndarray  # int64 tokens
    key: np.ndarray  # uint64 hash of the uuid
    uuid: np.ndarray  # object, only for reduce decisions and reports
    copy: np.ndarray | None = None  # int64 repeat number when a mix repeats rows (epochs > 1)

    @classmethod
    def load(cls, work: Path, units: list[int]) -> DocIndex:
        parts = []
        for u in units:
            t = read_parquet(work, u, "index")
            if t is None or t.num_rows == 0:
                continue
            parts.append((u, t))
        if not parts:
            z = np.zeros(0, np.int64)
            return cls(z.astype(np.int32), z, z, z.astype(np.uint64), np.zeros(0, object))
        unit = np.concatenate([np.full(t.num_rows, u, np.int32) for u, t in parts])
        row = np.concatenate([np.arange(t.num_rows, dtype=np.int64) for _, t in parts])
        length = np.concatenate([t.column("num_tokens").to_numpy().astype(np.int64) for _, t in parts])
        uuids = np.concatenate([np.array(t.column("uuid").to_pylist(), dtype=object) for _, t in parts])
        keys = np.concatenate([doc_keys(t) for _, t in parts])
        return cls(unit, row, length, keys, uuids)

    def subset(self, keep: np.ndarray) -> DocIndex:
        copy = self.copy[keep] if self.copy is not None else None
        return DocIndex(self.unit[keep], self.row[keep], self.length[keep], self.key[keep], self.uuid[keep], copy)


def kept_batches(work: Path, units: list[int]) -> Iterator[pa.RecordBatch]:
    """The rows the map phase kept (for dedup and mixing), unit by unit in unit order."""
    for u in units:
        path = unit_dir(work, u) / "kept.parquet"
        if path.exists():
            yield from pq.ParquetFile(path).iter_batches(batch_size=1024)
