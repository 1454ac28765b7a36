"""Where a run's dedup records live and how partition units read them (see `partition`).

`SignatureLayout` names the signature units' folder and the pass's metadata; `PartitionSlices`
reads one record kind partition by partition; `ShingleReader` and `RowUuids` read a row's
shingles and uuid from the unit that holds it.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from posttrain.io.spool import unit_dir
from posttrain.reduce.dedup.exact import KEY_RECORD
from posttrain.reduce.dedup.near import BAND_RECORD
from posttrain.reduce.dedup.shingles import jaccard_sorted, shingle_set

#: Hash partitions of the record files (top bits of the hash). A partition unit decides a
#: contiguous range of them, one at a time (so its memory is one partition's records).
PARTS = 256
KINDS = {"exact": KEY_RECORD, "prompt": KEY_RECORD, "bands": BAND_RECORD}
HASH_FIELD = {"exact": "hi", "prompt": "hi", "bands": "h"}
NODE_RECORD = np.dtype([("row", "<i8"), ("err", "u1"), ("rank", "<u8")])
_SHIFT = np.uint64(64 - (PARTS.bit_length() - 1))


def partition_of(hashes: np.ndarray) -> np.ndarray:
    """The partition of each 64-bit hash (its top bits).

    >>> partition_of(np.array([0, 1 << 63, (1 << 64) - 1], np.uint64)).tolist()
    [0, 128, 255]
    """
    return (np.asarray(hashes, np.uint64) >> _SHIFT).astype(np.int64)


def write_partitioned(path: Path, records: np.ndarray, field: str) -> list[int]:
    """Write `records` grouped by the partition of `field` (stable inside a partition); return the
    PARTS + 1 record offsets of the partitions in the file."""
    part = partition_of(records[field])
    order = np.argsort(part, kind="stable")
    records[order].tofile(path)
    return np.searchsorted(part[order], np.arange(PARTS + 1)).tolist()


@dataclass
class SignatureLayout:
    """Where the signature units of a run are: their work folder and the pass's metadata folder."""

    sig_work: Path
    meta_dir: Path

    def units(self) -> np.ndarray:
        return np.load(self.meta_dir / "units.npy")

    def offsets(self) -> np.ndarray:
        return np.load(self.meta_dir / "offsets.npy")

    def unit_path(self, u: int) -> Path:
        return unit_dir(self.sig_work, int(u))

    def load_partition(self, kind: str, p: int) -> np.ndarray:
        """Partition `p` of record file `kind` over every unit, in unit order, rows made global."""
        return PartitionSlices(self, kind).load(p)


class PartitionSlices:
    """Record kind `kind` of every signature unit, partition by partition, for a unit that decides a
    range of partitions: the pass metadata (unit list, row offsets, bounds) is read once, not once
    a partition (256 times for the one unit of a single process: ~0.1 s of header parsing)."""

    def __init__(self, layout: SignatureLayout, kind: str) -> None:
        self.dtype = KINDS[kind]
        self.files = [layout.unit_path(u) / f"{kind}.bin" for u in layout.units().tolist()]
        self.offsets = layout.offsets()
        self.bounds = np.load(layout.meta_dir / f"bounds-{kind}.npy")

    def load(self, p: int) -> np.ndarray:
        """Partition `p` over every unit, in unit order, rows made global."""
        parts = []
        for k, path in enumerate(self.files):
            lo, hi = int(self.bounds[k, p]), int(self.bounds[k, p + 1])
            if hi > lo:
                rec = np.fromfile(path, dtype=self.dtype, count=hi - lo, offset=lo * self.dtype.itemsize)
                rec["row"] += self.offsets[k]
                parts.append(rec)
        return np.concatenate(parts) if parts else np.zeros(0, self.dtype)


class ShingleReader:
    """Global row -> its shingle set (sorted, unique), read (pread) from the unit that holds it.

    At most `max_open` units' files are open at once; the last rows read are cached.
    """

    def __init__(self, layout: SignatureLayout, max_open: int = 64, cache: int = 4096) -> None:
        self.layout = layout
        self.units = layout.units()
        self.offsets = layout.offsets()
        self.max_open = max_open
        self._fds: dict[int, tuple[int, int]] = {}
        self.read = functools.lru_cache(maxsize=cache)(self._read)

    def _files(self, k: int) -> tuple[int, int]:
        fds = self._fds.pop(k, None)
        if fds is None:
            if len(self._fds) >= self.max_open:
                old = next(iter(self._fds))
                for fd in self._fds.pop(old):
                    os.close(fd)
            d = self.layout.unit_path(int(self.units[k]))
            fds = (os.open(d / "offsets.bin", os.O_RDONLY), os.open(d / "shingles.bin", os.O_RDONLY))
        self._fds[k] = fds  # most recently used last
        return fds

    def _read(self, row: int) -> np.ndarray:
        k = int(np.searchsorted(self.offsets, row, side="right")) - 1
        off_fd, sh_fd = self._files(k)
        local = row - int(self.offsets[k])
        lo, hi = np.frombuffer(os.pread(off_fd, 16, local * 8), dtype=np.int64)
        raw = np.frombuffer(os.pread(sh_fd, int(hi - lo) * 8, int(lo) * 8), dtype=np.uint64)
        return shingle_set(raw)

    def jaccard(self, a: int, b: int) -> float:
        return jaccard_sorted(self.read(a), self.read(b))

    def close(self) -> None:
        self.read.cache_clear()
        for fds in self._fds.values():
            for fd in fds:
                os.close(fd)
        self._fds.clear()


class RowUuids:
    """uuids of global rows, from the signature units' memory-mapped `uuids.arrow`."""

    def __init__(self, layout: SignatureLayout) -> None:
        self.layout = layout
        self.units = layout.units()
        self.offsets = layout.offsets()

    def get(self, rows: np.ndarray) -> pa.Array:
        """uuids of `rows` in that order (null where a row is -1)."""
        rows = np.asarray(rows, np.int64)
        out: list[Any] = [None] * len(rows)
        if len(rows) == 0:
            return pa.array([], pa.string())
        unit_of = np.searchsorted(self.offsets, rows, side="right") - 1
        for k in np.unique(unit_of[rows >= 0]).tolist():
            sel = np.flatnonzero((unit_of == k) & (rows >= 0))
            with pa.memory_map(str(self.layout.unit_path(int(self.units[k])) / "uuids.arrow")) as src:
                col = pa.ipc.open_file(src).read_all().column("uuid")
                got = col.take(pa.array(rows[sel] - self.offsets[k])).to_pylist()
            for i, u in zip(sel.tolist(), got, strict=True):
                out[i] = u
        return pa.array(out, pa.string())
