"""The run's document index on the driver: numbers only, about 36 bytes a document.

Where every kept document lives (unit, row in the unit's spool), how long it is, its packing key
(xxh64 of the uuid, mixed with `part` for rows split at turns) and its row key (xxh64 of the uuid:
the documents of one row share it, and the reduce steps decide by it). The per-unit arrays are
computed on the workers by the keys pass (`jobs/prepare/reduce_units.KeysUnit`); the driver only
concatenates them. uuid and category strings are read back from a unit's `index.parquet` only for
the few documents that need a name (the reduce rejects).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from posttrain.hashing import splitmix64
from posttrain.io.spool import read_parquet, unit_dir

DOC_RECORD = np.dtype([("length", "<i8"), ("key", "<u8"), ("ukey", "<u8")])


@dataclass
class RunIndex:
    """Every document of the run in canonical (unit, row) order; see the module docstring."""

    unit: np.ndarray  # int32
    row: np.ndarray  # int64, row within the unit's docs.arrow
    length: np.ndarray  # int64 tokens
    key: np.ndarray  # uint64 packing key
    ukey: np.ndarray  # uint64 xxh64(uuid): the row the document belongs to
    work: Path  # the map phase's work folder (index.parquet per unit), for names
    copy: np.ndarray | None = None  # int64 repeat number when a mix repeats rows (epochs > 1)
    _names: dict[int, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, keys_work: Path, work: Path, units: list[int]) -> RunIndex:
        parts = [(u, np.load(unit_dir(keys_work, u) / "docs.npy")) for u in units]
        parts = [(u, d) for u, d in parts if len(d)]
        docs = np.concatenate([d for _, d in parts]) if parts else np.zeros(0, DOC_RECORD)
        unit = np.concatenate([np.full(len(d), u, np.int32) for u, d in parts]) if parts else np.zeros(0, np.int32)
        row = np.concatenate([np.arange(len(d), dtype=np.int64) for _, d in parts]) if parts else np.zeros(0, np.int64)
        return cls(unit, row, docs["length"].astype(np.int64), docs["key"].copy(), docs["ukey"].copy(), work)

    def subset(self, keep: np.ndarray) -> RunIndex:
        copy = self.copy[keep] if self.copy is not None else None
        return RunIndex(self.unit[keep], self.row[keep], self.length[keep], self.key[keep], self.ukey[keep],
                        self.work, copy, self._names)

    def repeat(self, copies: np.ndarray) -> RunIndex:
        """Each document `copies` times; copy j > 0 gets another packing key (so repeats land in other
        packs) and is renamed `uuid#rj` when its shard is written."""
        reps = np.repeat(np.arange(copies.size), copies)
        starts = np.cumsum(copies) - copies
        copy_no = np.arange(reps.size) - np.repeat(starts, copies)
        key = self.key[reps].copy()
        rep = copy_no > 0
        key[rep] = splitmix64(key[rep] ^ splitmix64(copy_no[rep].astype(np.uint64)))
        return RunIndex(self.unit[reps], self.row[reps], self.length[reps], key, self.ukey[reps], self.work,
                        copy_no.astype(np.int64), self._names)

    def distinct_rows(self, mask: np.ndarray) -> int:
        """How many rows (distinct uuids) the documents under `mask` come from."""
        return int(np.unique(self.ukey[mask]).size)

    def _unit_names(self, u: int) -> tuple[list[str], list[str]]:
        if u not in self._names:  # one unit at a time: callers walk the index in unit order
            self._names.clear()
            t = read_parquet(self.work, u, "index", ["uuid", "category"])
            self._names[u] = (t.column("uuid").to_pylist(), t.column("category").to_pylist()) if t else ([], [])
        return self._names[u]

    def uuid_at(self, i: int) -> str:
        return str(self._unit_names(int(self.unit[i]))[0][int(self.row[i])])

    def category_at(self, i: int) -> str:
        return self._unit_names(int(self.unit[i]))[1][int(self.row[i])]
