"""Fixed-width records buffered in memory and spilled to disk partitions by hash when over a budget.

Both dedup passes collect one small record per row (exact: key + rank; near: band hash + row) and
then need every record that shares a hash together. Records are numpy structured arrays (no Python
objects per row); when the buffer exceeds `budget_bytes` it is appended to `parts` files chosen by
the top bits of a hash field. The reduce step reads them back in groups of consecutive
partitions (`partitions`), so records that share a hash always come together; a group holds up to
`GROUP_BYTES` (one partition alone when it is bigger): few, large pieces of work, and never more
than a slice of the budget at a time.

>>> import tempfile
>>> dt = np.dtype([("h", "<u8"), ("row", "<i8")])
>>> s = PartitionedSpill(tempfile.mkdtemp(), dt, "h", budget_bytes=16, parts=4)
>>> s.add(np.array([(1 << 63, 0), (5, 1)], dtype=dt)); s.add(np.array([(5, 2)], dtype=dt))
>>> sorted(int(len(p)) for p in s.partitions(group_bytes=0)), [len(p) for p in s.partitions()]
([1, 2], [3])
>>> t = PartitionedSpill(tempfile.mkdtemp(), dt, "h", budget_bytes=1 << 20, parts=4)
>>> t.add(np.array([(1 << 63, 0), (5, 1), (5, 2)], dtype=dt))
>>> [p["row"].tolist() for p in t.partitions(group_bytes=0)], t.spilled
([[1, 2], [0]], False)
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

#: A flush partitions and appends this much of the buffer at a time.
FLUSH_BYTES = 8 << 20
#: `partitions` yields consecutive partitions together up to this many bytes: one partition at a
#: time costs a fixed ~2 ms of numpy calls per partition and pass (64 partitions, several passes).
GROUP_BYTES = 4 << 20


class PartitionedSpill:
    """Append-only record store that spills to `parts` files keyed by the top bits of `hash_field`."""

    def __init__(self, directory: str, dtype: np.dtype, hash_field: str, *, budget_bytes: int, parts: int = 64):
        if parts & (parts - 1):
            raise ValueError("parts must be a power of two")
        self.directory = directory
        self.dtype = np.dtype(dtype)
        self.hash_field = hash_field
        self.budget_bytes = budget_bytes
        self.parts = parts
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self.spilled = False
        self._in_memory_sorted = False
        self._bounds = np.zeros(0, np.int64)
        self.peak_buffer_bytes = 0
        self.total_records = 0

    def add(self, records: np.ndarray) -> None:
        """Buffer records; spill everything to the partitions when the buffer passes the budget."""
        if len(records) == 0:
            return
        self._buffer.append(records)
        self._in_memory_sorted = False
        self._buffered += records.nbytes
        self.total_records += len(records)
        self.peak_buffer_bytes = max(self.peak_buffer_bytes, self._buffered)
        if self._buffered > self.budget_bytes:
            self._flush()

    def _part_of(self, records: np.ndarray) -> np.ndarray:
        shift = np.uint64(64 - max(1, self.parts.bit_length() - 1))
        h = records[self.hash_field].astype(np.uint64)
        return (h >> shift).astype(np.int64) if self.parts > 1 else np.zeros(len(records), np.int64)

    def _flush(self) -> None:
        """Append the buffer to the partition files, a slice of at most FLUSH_BYTES at a time
        (so a flush needs a few MB on top of the buffer, not a second copy of it)."""
        if not self._buffer:
            return
        os.makedirs(self.directory, exist_ok=True)
        chunks, self._buffer, self._buffered = self._buffer, [], 0
        group: list[np.ndarray] = []
        size = 0
        for i, chunk in enumerate(chunks):
            group.append(chunk)
            size += chunk.nbytes
            if size >= FLUSH_BYTES or i == len(chunks) - 1:
                self._append(np.concatenate(group))
                group, size = [], 0
            chunks[i] = None  # type: ignore[call-overload]  # free as we go
        self.spilled = True

    def _append(self, records: np.ndarray) -> None:
        part = self._part_of(records)
        order = np.argsort(part, kind="stable")
        records, part = records[order], part[order]
        bounds = np.searchsorted(part, np.arange(self.parts + 1))
        for p in range(self.parts):
            lo, hi = bounds[p], bounds[p + 1]
            if hi > lo:
                with open(self._path(p), "ab") as f:
                    records[lo:hi].tofile(f)

    def _path(self, p: int) -> str:
        return os.path.join(self.directory, f"part-{p:04d}.bin")

    def partitions(self, group_bytes: int = GROUP_BYTES) -> Iterator[np.ndarray]:
        """Yield the records in groups of consecutive partitions of at most `group_bytes` (one
        partition alone when bigger), in partition order (re-iterable). Records sharing a hash
        are always in one group.

        Unspilled records are sorted by partition once, in place of the buffer, so the reduce step
        sorts group-sized pieces instead of one budget-sized array.
        """
        if not self.spilled:
            if len(self._buffer) != 1 or not self._in_memory_sorted:
                records = np.concatenate(self._buffer) if self._buffer else np.zeros(0, self.dtype)
                part = self._part_of(records)
                order = np.argsort(part, kind="stable")
                self._buffer = [records[order]]
                self._bounds = np.searchsorted(part[order], np.arange(self.parts + 1))
                self._in_memory_sorted = True
            records = self._buffer[0]
            for lo, hi in _groups(np.diff(self._bounds) * self.dtype.itemsize, group_bytes):
                a, b = self._bounds[lo], self._bounds[hi]
                if b > a:
                    yield records[a:b]
            return
        self._flush()
        paths = [self._path(p) for p in range(self.parts)]
        sizes = [os.path.getsize(f) if os.path.exists(f) else 0 for f in paths]
        for lo, hi in _groups(np.array(sizes, np.int64), group_bytes):
            pieces = [np.fromfile(paths[p], dtype=self.dtype) for p in range(lo, hi) if sizes[p]]
            if pieces:
                yield np.concatenate(pieces) if len(pieces) > 1 else pieces[0]


def _groups(sizes: np.ndarray, limit: int) -> Iterator[tuple[int, int]]:
    """Ranges [lo, hi) of consecutive items whose sizes add up to at most `limit` (an item bigger
    than `limit` alone); empty items join any range.

    >>> list(_groups(np.array([3, 0, 2, 5, 1]), 5))
    [(0, 3), (3, 4), (4, 5)]
    """
    lo, total = 0, 0
    for i, size in enumerate(sizes.tolist()):
        if total + size > limit and i > lo and total > 0:
            yield lo, i
            lo, total = i, 0
        total += size
    if len(sizes) > lo:
        yield lo, len(sizes)
