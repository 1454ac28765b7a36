"""Bounded counters for the report: fixed-bin log histograms and key counters with a cap.

>>> h = LogHistogram(); h.add(np.array([0, 5, 5, 500])); h.count, h.mean()
(4, 127.5)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Histogram edges: bin 0 is exactly empty ([0, 1)), then 16 bins per decade from 1 to 10**6; the last bin is open.
LENGTH_EDGES = np.concatenate([[0.0], np.logspace(0, 6, 97)])


class LogHistogram:
    """Counts of non-negative lengths in the fixed `LENGTH_EDGES` bins, with an exact sum.

    >>> h = LogHistogram(); h.add(np.array([0, 5, 5, 500])); h.count, h.mean()
    (4, 127.5)
    """

    def __init__(self) -> None:
        self.counts = np.zeros(len(LENGTH_EDGES), dtype=np.int64)
        self.total = 0.0

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def add(self, values: np.ndarray) -> None:
        if len(values) == 0:
            return
        bins = np.searchsorted(LENGTH_EDGES, values, side="right") - 1
        self.counts += np.bincount(bins, minlength=len(LENGTH_EDGES))
        self.total += float(np.sum(values))

    def mean(self) -> float | None:
        return None if self.count == 0 else self.total / self.count

    def quantile(self, q: float) -> float | None:
        """Upper edge of the bin holding the q-quantile (bins are ~15% wide, so this is approximate)."""
        if self.count == 0:
            return None
        i = int(np.searchsorted(np.cumsum(self.counts), q * self.count, side="left"))
        return round(float(LENGTH_EDGES[min(i + 1, len(LENGTH_EDGES) - 1)]), 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count, "mean": self.mean(), "p50": self.quantile(0.5),
            "p90": self.quantile(0.9), "counts": self.counts.tolist(),
        }  # fmt: skip


class CappedCounter(Counter):
    """A Counter that keeps at most `max_keys` keys; later new keys are counted under '(other)'."""

    def __init__(self, max_keys: int = 1000) -> None:
        super().__init__()
        self.max_keys = max_keys

    def add(self, key: str, n: int = 1) -> None:
        if key not in self and len(self) >= self.max_keys:
            key = "(other)"
        self[key] += n

    def add_counts(self, arr: pa.Array) -> None:
        for item in pc.value_counts(arr).to_pylist():
            self.add(str(item["values"]), int(item["counts"]))
