"""Read packed shards for training: a map-style dataset, a rank-aware sampler, a flattening collator.

- `PackedDataset(dir)` indexes every pack of `dir/shard-*.parquet` (global index, shard order then
  row order) and reads one row group at a time, cached, so random access stays cheap.
- `PackedSampler` (or `dataset.sampler()`) gives rank r of W a disjoint, deterministic slice:
  the global order is a permutation keyed by a hash of (seed, epoch, pack index); rank r takes
  positions r, r + W, r + 2W, ... of it. Every rank gets the same number of packs: with
  `drop_last=True` (default) the last `num_packs % W` packs of the epoch's order are dropped
  (a different few each epoch); with `drop_last=False` the order is wrapped around so that the
  first few packs are seen twice. `start_index` skips the samples this rank already consumed,
  so a resumed run continues exactly where it stopped.
- The order is made in the main process by the sampler, so it is the same whatever the number of
  DataLoader workers.
- `collate_packed` flattens a batch into one row with position_ids restarting per document and
  `cu_seq_lens_q/k`, `max_length_q/k` — what transformers' `DataCollatorWithFlattening(
  return_flash_attn_kwargs=True)` returns for the same documents.

torch is imported lazily: `import posttrain.io.packed` works without it.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from posttrain.errors import PosttrainError
from posttrain.hashing import splitmix64
from posttrain.io.shards import SHARD_GLOB
from posttrain.schema import IGNORE_INDEX


def epoch_order(num_packs: int, seed: int, epoch: int) -> np.ndarray:
    """The global order of packs for one epoch: a permutation from a hash of (seed, epoch, index).

    >>> sorted(epoch_order(5, seed=0, epoch=0).tolist())
    [0, 1, 2, 3, 4]
    >>> epoch_order(5, 0, 0).tolist() == epoch_order(5, 0, 0).tolist()
    True
    """
    salt = splitmix64(
        np.array([seed & 0xFFFFFFFFFFFFFFFF], np.uint64) ^ splitmix64(np.array([epoch], np.uint64))
    )
    keys = splitmix64(np.arange(num_packs, dtype=np.uint64) ^ salt[0])
    return np.argsort(keys, kind="stable")


def rank_indices(
    num_packs: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    epoch: int = 0,
    start_index: int = 0,
    drop_last: bool = True,
) -> np.ndarray:
    """The pack indices rank `rank` reads this epoch, after skipping `start_index` of them.

    >>> a, b = rank_indices(7, 0, 2), rank_indices(7, 1, 2)
    >>> len(a) == len(b) == 3 and not set(a) & set(b)
    True
    >>> rank_indices(7, 1, 2, start_index=1).tolist() == b[1:].tolist()
    True
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise PosttrainError(f"rank {rank} is not in [0, {world_size})", fix="pass 0 <= rank < world_size")
    order = epoch_order(num_packs, seed, epoch)
    if drop_last:
        per_rank = num_packs // world_size
    else:
        per_rank = -(-num_packs // world_size)
        need = per_rank * world_size - num_packs
        if need and num_packs:
            order = np.concatenate([order, np.resize(order, need)])
    mine = order[rank::world_size][:per_rank]
    return mine[start_index:]


class PackedSampler:
    """A torch-compatible sampler (iterable of indices with a length) over this rank's slice.

    Call `set_epoch(e)` at the start of every epoch, as with `DistributedSampler`.
    """

    def __init__(
        self,
        num_packs: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        epoch: int = 0,
        start_index: int = 0,
        drop_last: bool = True,
    ) -> None:
        self.num_packs, self.rank, self.world_size = num_packs, rank, world_size
        self.seed, self.epoch, self.start_index, self.drop_last = seed, epoch, start_index, drop_last

    def indices(self) -> np.ndarray:
        return rank_indices(
            self.num_packs,
            self.rank,
            self.world_size,
            self.seed,
            self.epoch,
            self.start_index,
            self.drop_last,
        )

    def set_epoch(self, epoch: int) -> None:
        """Move to another epoch; `start_index` only applies to the epoch the run resumed in."""
        if epoch != self.epoch:
            self.start_index = 0
        self.epoch = epoch

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return int(self.indices().size)


class PackedDataset:
    """A torch map-style dataset over packed shards (items are dicts of torch tensors).

    Items: `input_ids`, `labels`, `position_ids` (int64, as transformers expects), `seq_lens` and
    `cu_seqlens` (int32, `cu_seqlens = [0, *cumsum(seq_lens)]`), `num_tokens` (real tokens; the
    rest is padding when the shards were padded). Shards in either layout ("hf" or "megatron")
    are read; labels are derived from `loss_mask` when only that was stored.
    """

    def __init__(
        self,
        dir: str | Path,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        epoch: int = 0,
        start_index: int = 0,
        drop_last: bool = True,
        cache_row_groups: int = 4,
    ) -> None:
        self.dir = Path(dir)
        self.files = sorted(self.dir.glob(SHARD_GLOB))
        if not self.files:
            raise PosttrainError(
                f"no {SHARD_GLOB} files",
                place=str(self.dir),
                fix="point at the --out DIR of `posttrain prepare`",
            )
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, epoch
        self.start_index, self.drop_last = start_index, drop_last
        self.cache_row_groups = cache_row_groups
        # (file index, row group index, first global row) for every row group, from footers only.
        groups: list[tuple[int, int]] = []
        sizes: list[int] = []
        for fi, path in enumerate(self.files):
            meta = pq.ParquetFile(path).metadata
            for gi in range(meta.num_row_groups):
                groups.append((fi, gi))
                sizes.append(meta.row_group(gi).num_rows)
        self._groups = groups
        self._group_starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
        self._cache: OrderedDict[int, dict[str, Any]] = OrderedDict()

    def __len__(self) -> int:
        return int(self._group_starts[-1])

    def sampler(self) -> PackedSampler:
        """This rank's sampler (use with `DataLoader(ds, sampler=ds.sampler(), ...)`)."""
        return PackedSampler(
            len(self), self.rank, self.world_size, self.seed, self.epoch, self.start_index, self.drop_last
        )

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = OrderedDict()  # each worker reads for itself
        return state

    def _row_group(self, g: int) -> dict[str, Any]:
        if g in self._cache:
            self._cache.move_to_end(g)
            return self._cache[g]
        fi, gi = self._groups[g]
        table = pq.ParquetFile(self.files[fi]).read_row_group(gi)
        data: dict[str, Any] = {}
        for name in table.column_names:
            col = table.column(name).combine_chunks()
            if name in ("input_ids", "labels", "loss_mask", "position_ids", "seq_lens", "seq_start_id"):
                data[name] = (col.offsets.to_numpy(), col.values.to_numpy(zero_copy_only=False))
        self._cache[g] = data
        if len(self._cache) > self.cache_row_groups:
            self._cache.popitem(last=False)
        return data

    def item_arrays(self, index: int) -> dict[str, np.ndarray]:
        """The pack at global `index` as numpy arrays (what `__getitem__` turns into tensors)."""
        if not 0 <= index < len(self):
            raise IndexError(index)
        g = int(np.searchsorted(self._group_starts, index, side="right") - 1)
        row = index - int(self._group_starts[g])
        data = self._row_group(g)

        def get(name: str) -> np.ndarray | None:
            if name not in data:
                return None
            offsets, values = data[name]
            return values[offsets[row] : offsets[row + 1]]

        ids = get("input_ids").astype(np.int64)
        seq_lens = get("seq_lens")
        if seq_lens is None:  # megatron layout (never padded): lengths from the start offsets
            starts = get("seq_start_id").astype(np.int64)
            seq_lens = np.diff(np.append(starts, ids.size))
        seq_lens = seq_lens.astype(np.int32)
        labels = get("labels")
        if labels is None:
            mask = get("loss_mask")
            labels = np.where(mask == 1, ids, IGNORE_INDEX)
        labels = labels.astype(np.int64)
        position_ids = get("position_ids")
        if position_ids is None:
            position_ids = _positions(seq_lens, ids.size)
        return {
            "input_ids": ids,
            "labels": labels,
            "position_ids": position_ids.astype(np.int64),
            "seq_lens": seq_lens,
            "cu_seqlens": np.concatenate([[0], np.cumsum(seq_lens)]).astype(np.int32),
            "num_tokens": np.int64(seq_lens.sum()),
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        return {k: torch.as_tensor(v) for k, v in self.item_arrays(int(index)).items()}


def _positions(seq_lens: np.ndarray, total: int) -> np.ndarray:
    """Position ids restarting at every document; any padding tail counts from 0 on its own.

    >>> _positions(np.array([2, 3]), 7).tolist()
    [0, 1, 0, 1, 2, 0, 1]
    """
    lens = np.append(seq_lens.astype(np.int64), total - int(seq_lens.sum()))
    starts = np.cumsum(lens) - lens
    return np.arange(total, dtype=np.int64) - np.repeat(starts, lens)


def collate_packed(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Flatten packs into one row of real tokens (padding dropped), transformers-style.

    Returns `input_ids`, `labels`, `position_ids` of shape [1, T] (int64), `cu_seq_lens_q` /
    `cu_seq_lens_k` (int32, document boundaries across the whole batch) and `max_length_q` /
    `max_length_k` (python ints) — the keys `DataCollatorWithFlattening(return_flash_attn_kwargs=
    True)` produces, with the same values for the same documents.
    """
    import torch

    ids, labels, pos, lens = [], [], [], []
    for it in items:
        n = int(it["num_tokens"])
        ids.append(torch.as_tensor(it["input_ids"])[:n])
        labels.append(torch.as_tensor(it["labels"])[:n])
        pos.append(torch.as_tensor(it["position_ids"])[:n])
        lens.append(torch.as_tensor(it["seq_lens"]))
    seq_lens = torch.cat(lens).to(torch.int32)
    cu = torch.cat([torch.zeros(1, dtype=torch.int32), torch.cumsum(seq_lens, 0).to(torch.int32)])
    max_len = int(seq_lens.max()) if seq_lens.numel() else 0
    return {
        "input_ids": torch.cat(ids).to(torch.int64).unsqueeze(0),
        "labels": torch.cat(labels).to(torch.int64).unsqueeze(0),
        "position_ids": torch.cat(pos).to(torch.int64).unsqueeze(0),
        "cu_seq_lens_q": cu,
        "cu_seq_lens_k": cu,
        "max_length_q": max_len,
        "max_length_k": max_len,
    }
