"""Exact dedup: drop exact copies (`dedup.exact`) and cap responses per prompt (`dedup.prompt_quota`).

Two passes over the same stream, so the kept row of a group depends on neither batch size nor row
order:

1. `observe(batch)`: per row one 33-byte record ``(key 128-bit, error flag, rank, row)`` where
   rank = xxh3_64(uuid, seed). Records live in numpy arrays and spill to 64 disk partitions by the
   key's top bits when over `memory_budget_mb`; so memory is min(33 B x rows, budget).
2. `finish()`: per group of partitions, sort by (key, error flag, rank, row); in each key group
   the first row is kept (rows without error reasons first when `prefer_clean`, then smallest
   rank) and the others are removed with the kept row as their twin. The prompt quota then runs
   on the rows that survived, keeping the first K of each prompt group the same way.
3. `process(batch)`: the same stream again, in the same order; appends the reason codes.

The decisions kept in memory are 17 bytes per *removed* row (row, code, twin row).

Why 33 bytes per row and not a 16-byte set of distinct keys: the kept copy must not depend on
row order, so the whole group has to be seen before choosing (a set that keeps the first key seen
would keep the first row). Per-row records also give each removed row its twin.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pyarrow as pa

from posttrain.config import DedupConfig
from posttrain.reduce.dedup.keys import exact_key_text, hash128, rank_hash
from posttrain.reduce.dedup.spill import PartitionedSpill
from posttrain.stage import REASONS, Stage, add_reasons, register_reason, rejected_mask

EXACT = register_reason("dedup.exact", "error", "exact duplicate of a kept row")
QUOTA = register_reason("dedup.prompt_quota", "error", "over the max_responses_per_prompt quota")

KEY_RECORD = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("err", "u1"), ("rank", "<u8"), ("row", "<i8")])
#: Decision codes: index into CODES.
CODES = (None, EXACT.code, QUOTA.code, "dedup.near")


def error_flags(batch: pa.RecordBatch) -> np.ndarray:
    """1 for rows that already carry an error-severity reason (so a clean copy is preferred)."""
    if REASONS not in batch.schema.names:
        return np.zeros(batch.num_rows, dtype=np.uint8)
    return rejected_mask(batch).astype(np.uint8)


def in_sorted(values: np.ndarray, sorted_values: np.ndarray) -> np.ndarray:
    """Membership of `values` in an already sorted array, by binary search (np.isin would re-sort it).

    >>> in_sorted(np.array([3, 4, 9]), np.array([1, 3, 9])).tolist()
    [True, False, True]
    """
    if len(sorted_values) == 0:
        return np.zeros(len(values), bool)
    idx = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[idx] == values


def group_ranks(records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort records by (key, err, rank, row); return them and each one's position in its key group.

    >>> r = np.array([(1, 1, 0, 9, 0), (1, 1, 0, 3, 1), (2, 2, 0, 5, 2)], dtype=KEY_RECORD)
    >>> s, pos = group_ranks(r)
    >>> s["row"].tolist(), pos.tolist()
    ([1, 0, 2], [0, 1, 0])
    """
    order = np.lexsort((records["row"], records["rank"], records["err"], records["lo"], records["hi"]))
    s = records[order]
    n = len(s)
    if n == 0:
        return s, np.zeros(0, np.int64)
    new = np.ones(n, dtype=bool)
    new[1:] = (s["hi"][1:] != s["hi"][:-1]) | (s["lo"][1:] != s["lo"][:-1])
    starts = np.flatnonzero(new)
    group = np.cumsum(new) - 1
    return s, np.arange(n) - starts[group]


def _key_records(batch: pa.RecordBatch, scope: str, start: int, rank: np.ndarray, err: np.ndarray) -> np.ndarray:
    hi, lo = hash128(exact_key_text(batch, scope))
    rec = np.empty(batch.num_rows, dtype=KEY_RECORD)
    rec["hi"], rec["lo"], rec["rank"], rec["err"] = hi, lo, rank, err
    rec["row"] = np.arange(start, start + batch.num_rows, dtype=np.int64)
    return rec


def exact_records(
    batch: pa.RecordBatch, config: DedupConfig, start: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The records pass 1 collects for `batch` (rows numbered from `start`): (exact key, prompt quota),
    each None when its policy is off. Per row only, so any split of the stream gives the same records."""
    rank = rank_hash(batch.column("uuid"), config.seed)
    err = error_flags(batch) if config.prefer_clean else np.zeros(batch.num_rows, np.uint8)
    key = _key_records(batch, config.exact_key, start, rank, err) if config.exact else None
    prompt = _key_records(batch, "prompt", start, rank, err) if config.max_responses_per_prompt else None
    return key, prompt


class Decisions:
    """Per removed row: the code (index into CODES) and the twin row it was removed for, sorted by row.

    >>> d = Decisions()
    >>> d.extend(np.array([7, 2]), 1, np.array([0, 1]))
    >>> [a.tolist() for a in d.lookup(1, 3)]
    [[0, 1, 0], [-1, 1, -1]]
    """

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._rows = np.zeros(0, np.int64)
        self._codes = np.zeros(0, np.uint8)
        self._twins = np.zeros(0, np.int64)

    def extend(self, rows: np.ndarray, code: int, twins: np.ndarray) -> None:
        """Add removed rows (sorted once, on first read, not on every call)."""
        self._parts.append((rows.astype(np.int64), np.full(len(rows), code, np.uint8), twins.astype(np.int64)))

    def _seal(self) -> None:
        if not self._parts:
            return
        rows = np.concatenate([self._rows, *(p[0] for p in self._parts)])
        codes = np.concatenate([self._codes, *(p[1] for p in self._parts)])
        twins = np.concatenate([self._twins, *(p[2] for p in self._parts)])
        self._parts = []
        order = np.argsort(rows, kind="stable")
        self._rows, self._codes, self._twins = rows[order], codes[order], twins[order]

    @property
    def rows(self) -> np.ndarray:
        self._seal()
        return self._rows

    @property
    def twins(self) -> np.ndarray:
        self._seal()
        return self._twins

    @property
    def codes(self) -> np.ndarray:
        self._seal()
        return self._codes

    def lookup(self, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(code, twin row) for rows start..start+n-1; code 0 / twin -1 where kept."""
        self._seal()
        rows = np.arange(start, start + n, dtype=np.int64)
        if len(self._rows) == 0:
            return np.zeros(n, np.uint8), np.full(n, -1, np.int64)
        idx = np.minimum(np.searchsorted(self._rows, rows), len(self._rows) - 1)
        hit = self._rows[idx] == rows
        return np.where(hit, self._codes[idx], 0).astype(np.uint8), np.where(hit, self._twins[idx], -1)


class ExactDedup(Stage):
    """Marks exact duplicates of `config.exact_key` and rows over the per-prompt quota."""

    name = "dedup.exact"

    def __init__(self, config: DedupConfig, workdir: str | None = None) -> None:
        self.config = config
        self.workdir = workdir or tempfile.mkdtemp(prefix="posttrain-exact-")
        budget = config.memory_budget_mb * 2**20 // 4  # half the budget, for two policies
        self._key = PartitionedSpill(os.path.join(self.workdir, "key"), KEY_RECORD, "hi", budget_bytes=budget)
        self._prompt = PartitionedSpill(
            os.path.join(self.workdir, "prompt"), KEY_RECORD, "hi", budget_bytes=budget
        )
        self.decisions = Decisions()
        self._observed = 0
        self._marked = 0
        self.finished = False

    def observe(self, batch: pa.RecordBatch) -> None:
        """Pass 1: collect one key record per row (per policy)."""
        self.add(batch.num_rows, *exact_records(batch, self.config, self._observed))

    def add(self, n: int, key: np.ndarray | None, prompt: np.ndarray | None) -> None:
        """Pass 1 for the next `n` rows, from their `exact_records` (made elsewhere, e.g. on a
        thread, with rows numbered from the rows added before)."""
        self._observed += n
        if key is not None:
            self._key.add(key)
        if prompt is not None:
            self._prompt.add(prompt)

    def finish(self) -> Decisions:
        """Decide, group of partitions by group, which rows are removed and for which twin."""
        for part in self._key.partitions():
            s, pos = group_ranks(part)
            losers = pos >= 1
            self.decisions.extend(s["row"][losers], 1, s["row"][np.flatnonzero(losers) - pos[losers]])
        k = self.config.max_responses_per_prompt
        if k:
            removed = self.decisions.rows
            for part in self._prompt.partitions():
                alive = part[~in_sorted(part["row"], removed)]
                s, pos = group_ranks(alive)
                losers = pos >= k
                self.decisions.extend(s["row"][losers], 2, s["row"][np.flatnonzero(losers) - pos[losers]])
        self.finished = True
        return self.decisions

    @property
    def peak_buffer_bytes(self) -> int:
        return self._key.peak_buffer_bytes + self._prompt.peak_buffer_bytes

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Pass 2: append `dedup.exact` / `dedup.prompt_quota` (same stream, same order as observe)."""
        if not self.finished:
            raise RuntimeError("ExactDedup.process called before finish(): run observe over the stream first")
        codes, _ = self.decisions.lookup(self._marked, batch.num_rows)
        self._marked += batch.num_rows
        return add_reasons(batch, [CODES[c] for c in codes.tolist()])
