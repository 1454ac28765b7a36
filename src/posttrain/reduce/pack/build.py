"""Turn tokenized rows into packed sequences (an Arrow table, one row per pack).

Input: the tokenize contract — `uuid`, `category`, `input_ids: list<int32>`, `loss_mask:
list<int8>` (1 = the token is a training target). Everything below is numpy over the flat token
arrays (Arrow list `take` in pack order, cumsum for positions) and Arrow offsets; nothing loops over
tokens in Python.

Label convention (the one transformers models and `DataCollatorWithFlattening` use): the model
shifts labels itself, so `labels[t]` is the target predicted from position t-1. `labels[t] =
input_ids[t]` where `loss_mask[t] == 1`, else -100, and always -100 at the first token of every
document, so no document is trained to predict across a boundary. `loss_mask` (when stored)
follows the same rule. Determinism: documents are first put in a canonical order by the xxh64 of
their uuid, so the packs depend on the rows and the seed, never on batch order.

>>> rows = pa.table({"uuid": ["a", "b", "c"], "category": ["math", "code", "math"],
...     "input_ids": pa.array([[1, 2, 3], [4, 5], [6, 7, 8, 9]], pa.list_(pa.int32())),
...     "loss_mask": pa.array([[0, 1, 1], [1, 1], [0, 0, 1, 1]], pa.list_(pa.int8()))})
>>> packs = build_packs(rows, PackConfig(seq_len=5))
>>> sorted(packs.column("seq_lens").to_pylist())
[[3, 2], [4]]
>>> p = packs.to_pylist()[[s for s in packs.column("seq_lens").to_pylist()].index([3, 2])]
>>> p["input_ids"], p["labels"], p["position_ids"], p["uuids"]
([1, 2, 3, 4, 5], [-100, 2, 3, -100, 5], [0, 1, 2, 0, 1], ['a', 'b'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.config import PackConfig
from posttrain.errors import PosttrainError
from posttrain.hashing import splitmix64, uuid_keys
from posttrain.reduce.pack.algorithms import ALGORITHMS, segment_reduce, shuffle_bins
from posttrain.schema import IGNORE_INDEX

REQUIRED_COLUMNS = ("uuid", "category", "input_ids", "loss_mask")


@dataclass
class PackStats:
    """Counts for the manifest and the progress line; `merge` adds work units together."""

    documents: int = 0
    packs: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    capacity_tokens: int = 0
    tokens_by_category: dict[str, int] = field(default_factory=dict)
    trained_by_category: dict[str, int] = field(default_factory=dict)

    @property
    def efficiency(self) -> float:
        return self.tokens / self.capacity_tokens if self.capacity_tokens else 1.0

    def merge(self, other: PackStats) -> PackStats:
        out = PackStats(
            self.documents + other.documents,
            self.packs + other.packs,
            self.tokens + other.tokens,
            self.trained_tokens + other.trained_tokens,
            self.capacity_tokens + other.capacity_tokens,
        )
        for mine, theirs, dest in (
            (self.tokens_by_category, other.tokens_by_category, out.tokens_by_category),
            (self.trained_by_category, other.trained_by_category, out.trained_by_category),
        ):
            for k in sorted(set(mine) | set(theirs)):
                dest[k] = mine.get(k, 0) + theirs.get(k, 0)
        return out

    def to_dict(self) -> dict:
        return {
            "documents": self.documents,
            "packs": self.packs,
            "tokens": self.tokens,
            "trained_tokens": self.trained_tokens,
            "capacity_tokens": self.capacity_tokens,
            "efficiency": self.efficiency,
            "tokens_by_category": dict(self.tokens_by_category),
            "trained_by_category": dict(self.trained_by_category),
        }


def _as_table(rows: pa.Table | pa.RecordBatch) -> pa.Table:
    table = pa.Table.from_batches([rows]) if isinstance(rows, pa.RecordBatch) else rows
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise PosttrainError(
            f"tokenized rows lack column(s) {missing}",
            place="pack",
            fix="pack the output of posttrain.stages.tokenize (uuid, category, input_ids, loss_mask)",
        )
    keep = list(REQUIRED_COLUMNS) + (["part"] if "part" in table.column_names else [])
    return table.select(keep).combine_chunks()


def doc_keys(table: pa.Table) -> np.ndarray:
    """Stable per-document keys: xxh64 of the uuid, mixed with `part` for rows split at turns.

    >>> t = pa.table({"uuid": ["a", "a"], "part": [0, 1]})
    >>> k = doc_keys(t); bool(k[0] != k[1])
    True
    """
    keys = uuid_keys(table.column("uuid").to_pylist())
    if "part" in table.column_names:
        parts = table.column("part").to_numpy(zero_copy_only=False).astype(np.uint64)
        keys = splitmix64(keys ^ splitmix64(parts))
    return keys


def _flat_values(lists: pa.Array, dtype: type) -> np.ndarray:
    """The flattened values of a list array as numpy `dtype` (zero-copy when the type already matches)."""
    values = pc.list_flatten(lists).to_numpy(zero_copy_only=False)
    return values.astype(dtype, copy=False)


def restart_positions(seg_lens: np.ndarray) -> np.ndarray:
    """Position ids counting 0, 1, ... within each segment, by one cumsum (no per-token repeat).

    >>> restart_positions(np.array([3, 1, 2])).tolist()
    [0, 1, 2, 0, 0, 1]
    """
    seg_lens = np.asarray(seg_lens, dtype=np.int64)
    steps = np.ones(int(seg_lens.sum()), dtype=np.int32)
    if steps.size:  # segments are non-empty (packing refuses empty documents)
        starts = np.cumsum(seg_lens) - seg_lens
        steps[starts[0]] = 0
        steps[starts[1:]] = 1 - seg_lens[:-1]  # brings the running sum back to 0 at each start
    return np.cumsum(steps, out=steps)  # in place: one token-sized allocation in all


def _list_array(values: np.ndarray, offsets: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, value_type))


def plan_bins(lengths: np.ndarray, keys: np.ndarray, config: PackConfig, seed: int) -> list[np.ndarray]:
    """Bins of document indices: canonical order by key, pack, then shuffle by (seed, key).

    >>> [b.tolist() for b in plan_bins(np.array([2, 2]), np.array([7, 3], np.uint64), PackConfig(seq_len=4), 0)]
    [[1, 0]]
    """
    canonical = np.lexsort((np.arange(lengths.size), keys))
    bins = ALGORITHMS[config.algorithm](lengths[canonical], config.seq_len)
    return shuffle_bins([canonical[b] for b in bins], keys, seed)


def token_columns(config: PackConfig) -> int:
    """How many per-token columns a pack stores (each 4 bytes a token before compression).

    >>> token_columns(PackConfig()), token_columns(PackConfig(targets="both")), token_columns(PackConfig(layout="megatron"))
    (3, 4, 2)
    """
    if config.layout == "megatron":
        return 2  # input_ids, loss_mask
    targets = 2 if config.targets == "both" else 1
    return 2 + targets  # input_ids, position_ids, labels and/or loss_mask


def plan_shards(bins: list[np.ndarray], lengths: np.ndarray, config: PackConfig) -> list[slice]:
    """Cut the planned packs into shards: a shard closes at `shard_packs` packs or, when set, once it
    holds `shard_bytes` of uncompressed token columns, whichever comes first (never an empty shard).

    The cut depends on the packs only, so every engine and thread count gives the same shards.

    >>> bins = [np.array([0]), np.array([1]), np.array([2])]
    >>> plan_shards(bins, np.array([10, 10, 10]), PackConfig(seq_len=16, shard_packs=2))
    [slice(0, 2, None), slice(2, 3, None)]
    >>> plan_shards(bins, np.array([10, 10, 10]), PackConfig(seq_len=16, shard_bytes=200))
    [slice(0, 2, None), slice(2, 3, None)]
    """
    if config.padded:
        sizes = np.full(len(bins), config.seq_len, np.int64)
    else:
        sizes = segment_reduce(np.add, np.asarray(lengths, np.int64), bins)
    # bytes held before each pack: a shard [start, end) holds held[end] - held[start]; one
    # searchsorted per shard (not a step per pack) finds where it reaches shard_bytes
    held = np.concatenate([[0], np.cumsum(sizes * 4 * token_columns(config))])
    cuts, start, n = [], 0, len(bins)
    while start < n:
        end = min(start + config.shard_packs, n)
        if config.shard_bytes is not None:
            full = int(np.searchsorted(held, held[start] + config.shard_bytes, side="left"))
            end = min(end, max(full, start + 1))
        cuts.append(slice(start, end))
        start = end
    return cuts


def build_packs(rows: pa.Table | pa.RecordBatch, config: PackConfig, seed: int = 0) -> pa.Table:
    """Pack one work unit of tokenized rows; returns one row per pack.

    Columns (layout "hf"): `input_ids`, `labels` and/or `loss_mask`, `position_ids`, `seq_lens`,
    `uuids`, `categories` (+ `parts` when rows were split); (layout "megatron"): `input_ids`,
    `loss_mask`, `seq_start_id`. Both also carry `num_tokens`, `num_trained`, `num_docs`, which the
    shard writer counts and does not store.
    """
    return build_packs_with_stats(rows, config, seed)[0]


def build_packs_with_stats(
    rows: pa.Table | pa.RecordBatch, config: PackConfig, seed: int = 0
) -> tuple[pa.Table, PackStats]:
    """`build_packs` plus the counts of what was packed (tokens and trained tokens per category)."""
    table = _as_table(rows)
    ids_col = table.column("input_ids").chunk(0) if table.num_rows else pa.array([], pa.list_(pa.int32()))
    mask_col = table.column("loss_mask").chunk(0) if table.num_rows else pa.array([], pa.list_(pa.int8()))
    lengths = pc.list_value_length(ids_col).to_numpy(zero_copy_only=False).astype(np.int64)
    mask_lengths = pc.list_value_length(mask_col).to_numpy(zero_copy_only=False).astype(np.int64)
    if not np.array_equal(lengths, mask_lengths):
        bad = int(np.flatnonzero(lengths != mask_lengths)[0])
        raise PosttrainError(
            f"row {table.column('uuid')[bad].as_py()!r}: loss_mask has {mask_lengths[bad]} entries for "
            f"{lengths[bad]} tokens",
            place="pack",
            fix="tokenize must emit one loss_mask entry per token",
        )
    return assemble_packs(table, plan_bins(lengths, doc_keys(table), config, seed), config, lengths)


def assemble_packs(
    rows: pa.Table | pa.RecordBatch, bins: list[np.ndarray], config: PackConfig, lengths: np.ndarray | None = None
) -> tuple[pa.Table, PackStats]:
    """Build the pack columns for already planned `bins` (lists of row indices into `rows`).

    `prepare` plans bins over a whole run and calls this once per shard with that shard's documents.
    """
    table = _as_table(rows)
    ids_col = table.column("input_ids").chunk(0) if table.num_rows else pa.array([], pa.list_(pa.int32()))
    mask_col = table.column("loss_mask").chunk(0) if table.num_rows else pa.array([], pa.list_(pa.int8()))
    if lengths is None:
        lengths = pc.list_value_length(ids_col).to_numpy(zero_copy_only=False).astype(np.int64)
    uuids = table.column("uuid").to_pylist()
    categories = table.column("category").to_pylist()
    padded_total = len(bins) * config.seq_len if config.padded else int(lengths.sum())
    if padded_total >= 2**31:  # list<int32> offsets (what HF datasets and TRL read) top out there
        raise PosttrainError(
            f"one work unit holds {padded_total:,} tokens, more than a list<int32> column can (2**31 - 1)",
            place="pack",
            fix="use smaller work units (fewer rows per fragment)",
        )

    doc_order = np.concatenate(bins) if bins else np.zeros(0, np.int64)
    docs_per_pack = np.array([b.size for b in bins], dtype=np.int64)
    seg_lens = lengths[doc_order]
    # Arrow's list `take` copies whole documents (memcpy per list), cheaper than a per-token gather index.
    order_arr = pa.array(doc_order, pa.int64())
    ids = _flat_values(ids_col.take(order_arr), np.int32)  # read-only view of Arrow's buffer
    mask = (_flat_values(mask_col.take(order_arr), np.int8) != 0).view(np.int8)  # a fresh, writable copy
    out_doc_starts = np.cumsum(seg_lens) - seg_lens
    mask[out_doc_starts] = 0  # the first token of a document is never a target (no cross-boundary loss)
    position_ids = restart_positions(seg_lens)

    pack_of_doc = np.repeat(np.arange(len(bins)), docs_per_pack)
    pack_tokens = np.bincount(pack_of_doc, weights=seg_lens, minlength=len(bins)).astype(np.int64)
    # per document, not per token: count_nonzero on each slice allocates nothing token-sized
    doc_mask_sums = np.fromiter(
        (
            np.count_nonzero(mask[a : a + n])
            for a, n in zip(out_doc_starts.tolist(), seg_lens.tolist(), strict=True)
        ),
        dtype=np.int64,
        count=seg_lens.size,
    )
    pack_trained = np.bincount(pack_of_doc, weights=doc_mask_sums, minlength=len(bins)).astype(np.int64)

    if config.padded:
        ids, mask, position_ids, token_offsets = _pad(ids, mask, position_ids, pack_tokens, config)
    else:
        token_offsets = np.concatenate([[0], np.cumsum(pack_tokens)])
    doc_offsets = np.concatenate([[0], np.cumsum(docs_per_pack)])
    pack_starts = np.cumsum(pack_tokens) - pack_tokens
    doc_starts_in_pack = out_doc_starts - np.repeat(pack_starts, docs_per_pack)
    columns = _pack_columns(
        ids, mask, position_ids, token_offsets, seg_lens, doc_offsets, doc_starts_in_pack, config
    )
    if config.layout == "hf":
        columns["uuids"] = _list_array(np.array(uuids, dtype=object)[doc_order], doc_offsets, pa.string())
        columns["categories"] = _list_array(
            np.array(categories, dtype=object)[doc_order], doc_offsets, pa.string()
        )
        if "part" in table.column_names:  # rows split at turns: which part of the uuid each doc is
            parts = table.column("part").to_numpy(zero_copy_only=False)[doc_order]
            columns["parts"] = _list_array(parts, doc_offsets, pa.int32())
    columns["num_tokens"] = pa.array(pack_tokens, pa.int32())
    columns["num_trained"] = pa.array(pack_trained, pa.int32())
    columns["num_docs"] = pa.array(docs_per_pack, pa.int32())
    stats = _stats(lengths, doc_order, doc_mask_sums, categories, len(bins), config)
    return pa.table(columns), stats


def _pad(ids, mask, position_ids, pack_tokens, config: PackConfig):
    """Place each pack at the start of its own `seq_len` slot; padding is untrained.

    Padding position_ids count 0, 1, ... on their own, so a flattening collator or varlen
    attention sees the padding as a separate sequence, never as part of a document.
    """
    n_packs, seq_len = pack_tokens.size, config.seq_len
    pack_starts = np.cumsum(pack_tokens) - pack_tokens
    within = np.arange(ids.size, dtype=np.int64) - np.repeat(pack_starts, pack_tokens)
    dest = np.repeat(np.arange(n_packs, dtype=np.int64) * seq_len, pack_tokens) + within
    out_ids = np.full(n_packs * seq_len, config.pad_token_id, dtype=np.int32)
    out_mask = np.zeros(n_packs * seq_len, dtype=np.int8)
    slot = np.arange(n_packs * seq_len, dtype=np.int64) % seq_len
    fill = np.repeat(pack_tokens, seq_len)
    out_pos = (slot - np.where(slot >= fill, fill, 0)).astype(np.int32)
    out_ids[dest], out_mask[dest], out_pos[dest] = ids, mask, position_ids
    return out_ids, out_mask, out_pos, np.arange(n_packs + 1, dtype=np.int64) * seq_len


def _pack_columns(
    ids, mask, position_ids, token_offsets, seg_lens, doc_offsets, doc_starts_in_pack, config
) -> dict:
    cols: dict[str, pa.Array] = {"input_ids": _list_array(ids, token_offsets, pa.int32())}
    if config.layout == "megatron":
        cols["loss_mask"] = _list_array(mask.astype(np.uint8), token_offsets, pa.uint8())
        cols["seq_start_id"] = _list_array(doc_starts_in_pack, doc_offsets, pa.int32())
        return cols
    if config.targets in ("labels", "both"):
        cols["labels"] = _list_array(
            np.where(mask.view(np.bool_), ids, np.int32(IGNORE_INDEX)), token_offsets, pa.int32()
        )
    if config.targets in ("loss_mask", "both"):
        cols["loss_mask"] = _list_array(mask, token_offsets, pa.int8())
    cols["position_ids"] = _list_array(position_ids, token_offsets, pa.int32())
    cols["seq_lens"] = _list_array(seg_lens, doc_offsets, pa.int32())
    return cols


def _stats(lengths, doc_order, doc_trained, categories, n_packs, config: PackConfig) -> PackStats:
    stats = PackStats(
        documents=int(doc_order.size),
        packs=n_packs,
        tokens=int(lengths.sum()),
        trained_tokens=int(doc_trained.sum()),
        capacity_tokens=n_packs * config.seq_len,
    )
    if doc_order.size:
        cats = np.array(categories, dtype=object)[doc_order]
        names, inverse = np.unique(cats.astype(str), return_inverse=True)
        tok = np.bincount(inverse, weights=lengths[doc_order])
        tr = np.bincount(inverse, weights=doc_trained)
        stats.tokens_by_category = {str(n): int(t) for n, t in zip(names, tok, strict=True)}
        stats.trained_by_category = {str(n): int(t) for n, t in zip(names, tr, strict=True)}
    return stats
