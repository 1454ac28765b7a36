"""Packs for training: rank-aware loading, categories per document, and the data position.

The data is sharded once, by posttrain: `PackedDataset(dir, rank, world_size, seed)` gives each
process a disjoint, equal slice of every epoch. The loader built here is handed to the Trainer as
is (`get_train_dataloader` is overridden), so accelerate never wraps or re-shards it; batches are
moved to the device by the Trainer's `_prepare_inputs`.

Resume: the order is a pure function of (seed, epoch, rank, world size), so the position after
optimizer step g is (epoch, micro-batches done) = divmod(g, updates_per_epoch) * grad_accum. The
Trainer skips that many micro-batches of the resumed epoch through accelerate's `SkipBatchSampler`,
which drops *indices* (no pack is read). `DataPosition` records the position and the next pack of
every rank in the checkpoint (trainer_state.json), and the first batch after a resume is checked
against it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from posttrain.errors import PosttrainError
from posttrain.io.packed import PackedDataset, PackedSampler, collate_packed, epoch_order


@dataclass(frozen=True)
class ShardSet:
    """Where the packs are and what the manifest says about them."""

    shards_dir: Path
    manifest_path: Path | None
    manifest: dict[str, Any]
    manifest_sha256: str | None


def locate_shards(path: str | Path) -> ShardSet:
    """Accept the `--out DIR` of `posttrain prepare` or its `shards/` folder."""
    p = Path(path).expanduser()
    if (p / "shards").is_dir():
        shards, manifest = p / "shards", p / "manifest.json"
    elif p.is_dir():
        shards, manifest = p, p.parent / "manifest.json"
    else:
        raise PosttrainError("no such shards folder", place=str(p), fix="point train.shards at a `posttrain prepare --out` DIR")
    if not any(shards.glob("shard-*.parquet")):
        raise PosttrainError("no shard-*.parquet files", place=str(shards), fix="run `posttrain prepare --out DIR` first")
    if not manifest.is_file():
        return ShardSet(shards, None, {}, None)
    raw = manifest.read_bytes()
    data = json.loads(raw)
    listed = {e["file"]: e["bytes"] for e in data.get("shards") or []}
    found = {f.name: f.stat().st_size for f in shards.glob("shard-*.parquet")}
    if listed and listed != found:  # a partial copy, or strays, would train on other data without a word
        odd = sorted(set(listed) ^ set(found)) or sorted(k for k in listed if listed[k] != found[k])
        raise PosttrainError(f"shard files differ from the manifest ({', '.join(odd[:3])})", place=str(shards),
                             fix="copy the whole `posttrain prepare` output again")
    return ShardSet(shards, manifest, data, hashlib.sha256(raw).hexdigest())


class CategoryIndex:
    """Category codes of every document of every pack (global pack order), read once from the shards.

    Categories are small per document (one dictionary code), so the whole run's index fits in
    memory: ~2 bytes a document plus 8 bytes a pack.
    """

    def __init__(self, files: list[Path]) -> None:
        names: dict[str, int] = {}
        codes: list[np.ndarray] = []
        counts: list[np.ndarray] = []
        for path in files:
            meta = pq.ParquetFile(path)
            if "categories" not in meta.schema_arrow.names:
                raise PosttrainError("shard has no `categories` column (megatron layout?)", place=str(path),
                                     fix="prepare with pack.layout: hf to train with posttrain.train")
            col = meta.read(columns=["categories"]).column("categories").combine_chunks()
            flat = pc.list_flatten(col).cast(pa.string()).dictionary_encode()
            local = [names.setdefault(str(n), len(names)) for n in flat.dictionary.to_pylist()]
            lut = np.array(local or [0], dtype=np.int16)
            codes.append(lut[flat.indices.to_numpy(zero_copy_only=False).astype(np.int64)])
            counts.append(pc.list_value_length(col).to_numpy(zero_copy_only=False).astype(np.int64))
        order = sorted(names, key=names.get)
        self.names: list[str] = order
        self.codes = np.concatenate(codes) if codes else np.zeros(0, np.int16)
        self.offsets = np.concatenate([[0], np.cumsum(np.concatenate(counts) if counts else [])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets.size - 1)

    def of_pack(self, index: int) -> np.ndarray:
        return self.codes[self.offsets[index] : self.offsets[index + 1]]


class TrainPacks(Dataset):
    """`PackedDataset` items plus their global pack index and per-document category codes.

    Set `vocab_rows` (the model's embedding rows) to check every pack's ids on the CPU as it is
    read: an id past the embeddings means shards from another tokenizer.
    """

    def __init__(self, packs: PackedDataset, categories: CategoryIndex) -> None:
        if len(packs) != len(categories):
            raise PosttrainError(f"{len(packs)} packs but {len(categories)} category lists",
                                 place=str(packs.dir), fix="the shards changed while reading; re-run prepare")
        self.packs, self.categories = packs, categories
        self.vocab_rows: int | None = None

    def __len__(self) -> int:
        return len(self.packs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        item = self.packs[index]
        if self.vocab_rows is not None and item["input_ids"].numel():
            top = int(item["input_ids"].max())
            if top >= self.vocab_rows:
                raise PosttrainError(f"pack {index} holds token id {top}, outside the model's {self.vocab_rows} "
                                     "embeddings", place=str(self.packs.dir),
                                     fix="prepare the shards with the model's tokenizer (tokenize.tokenizer)")
        item["pack_index"] = index
        item["doc_categories"] = torch.as_tensor(self.categories.of_pack(index).astype(np.int64))
        return item


def collate_train(items: list[dict[str, Any]]) -> dict[str, Any]:
    """`collate_packed` (one padding-free row, positions restarting per document) + bookkeeping."""
    batch = collate_packed(items)
    batch["doc_categories"] = torch.cat([it["doc_categories"] for it in items])
    batch["pack_indices"] = [it["pack_index"] for it in items]  # a list: stays on the CPU, no device sync
    return batch


class PackBatchSampler:
    """Micro-batches of this rank's packs; `set_epoch` reaches the posttrain sampler underneath.

    The last micro-batch of an epoch may be short (every rank has the same number of packs, so the
    same number of micro-batches); nothing is dropped beyond `PackedSampler`'s equal-slice rule.
    """

    def __init__(self, sampler: PackedSampler, micro_batch: int) -> None:
        self.sampler, self.micro_batch = sampler, micro_batch

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """The micro-batches of `epoch` (default: the current one) as lists of pack indices."""
        s = self.sampler
        if epoch is None or epoch == s.epoch:
            idx = s.indices()
        else:
            idx = PackedSampler(s.num_packs, s.rank, s.world_size, s.seed, epoch, 0, s.drop_last).indices()
        idx = idx.tolist()
        return [idx[i : i + self.micro_batch] for i in range(0, len(idx), self.micro_batch)]

    def __iter__(self):
        return iter(self.epoch_batches())

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.micro_batch)


class PackLoader(DataLoader):
    """A DataLoader whose `set_epoch` (called by the Trainer each epoch) reaches the pack order."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)


def build_loader(dataset: TrainPacks, rank: int, world_size: int, seed: int, micro_batch: int,
                 num_workers: int) -> PackLoader:
    """This rank's loader: posttrain's rank slice, micro-batches of packs, the flattening collator."""
    sampler = PackedSampler(len(dataset), rank=rank, world_size=world_size, seed=seed, epoch=0)
    if len(sampler) == 0:
        raise PosttrainError(f"{len(dataset)} packs cannot give each of {world_size} processes one",
                             place="train.shards", fix="use fewer processes or more data")
    return PackLoader(
        dataset,
        batch_sampler=PackBatchSampler(sampler, micro_batch),
        collate_fn=collate_train,
        num_workers=num_workers,
        persistent_workers=False,
    )


def data_position(global_step: int, batches_per_epoch: int, grad_accum: int) -> tuple[int, int]:
    """(epoch, micro-batches done in it) after `global_step` optimizer steps — the Trainer's own rule.

    >>> data_position(5, batches_per_epoch=7, grad_accum=2)  # 4 updates an epoch
    (1, 2)
    """
    updates = -(-batches_per_epoch // grad_accum)
    epoch, done = divmod(global_step, updates)
    return epoch, done * grad_accum


def next_packs(loader: PackLoader, world_size: int, epoch: int, batches_done: int) -> list[list[int]]:
    """The next micro-batch of every rank at a data position (what a resumed run must read first).

    One epoch order serves all ranks (rank r holds positions r, r + W, ... of it), so a checkpoint
    costs one permutation whatever the number of processes; this rank's slice is checked against
    the sampler itself, so the shortcut cannot drift from the rule the loader follows.
    """
    bs: PackBatchSampler = loader.batch_sampler
    s, mb = bs.sampler, bs.micro_batch
    per_rank = len(s)
    if batches_done * mb >= per_rank:  # the epoch is over: the next epoch's first micro-batch
        epoch, batches_done = epoch + 1, 0
    order = epoch_order(s.num_packs, s.seed, epoch)
    lo, hi = batches_done * mb, min((batches_done + 1) * mb, per_rank)
    out = [[int(order[r + world_size * k]) for k in range(lo, hi)] for r in range(world_size)]
    if out[s.rank] != bs.epoch_batches(epoch)[batches_done]:
        raise RuntimeError("posttrain.io.packed changed its rank slicing; update posttrain.train.data.next_packs")
    return out


def sample_max_id(files: list[Path], shards: int = 4) -> int:
    """The largest token id in the first row group of the first few shards: a fast check before
    training (every pack is checked again as it is read)."""
    top = -1
    for path in files[:shards]:
        f = pq.ParquetFile(path)
        if f.metadata.num_row_groups:
            ids = pc.list_flatten(f.read_row_group(0, columns=["input_ids"]).column("input_ids"))
            if len(ids):
                top = max(top, int(pc.max(ids).as_py()))
    return top
