"""The rank-aware loader: disjoint covering slices, worker-count independence, resume, flattening collate."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from packs_helper import write_packs
from torch.utils.data import DataLoader
from transformers import DataCollatorWithFlattening

from posttrain.config import PackConfig
from posttrain.errors import PosttrainError
from posttrain.io.packed import PackedDataset, PackedSampler, collate_packed, rank_indices
from posttrain.reduce.pack import IGNORE_INDEX, build_packs


def tokenized_rows(lengths: list[int], seed: int = 0) -> pa.Table:
    """Rows in the tokenize contract with random ids and masks."""
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "uuid": [f"doc-{seed}-{i}" for i in range(len(lengths))],
            "category": ["math"] * len(lengths),
            "input_ids": pa.array(
                [rng.integers(0, 128_256, n).tolist() for n in lengths], pa.list_(pa.int32())
            ),
            "loss_mask": pa.array(
                [(rng.random(n) < 0.6).astype(int).tolist() for n in lengths], pa.list_(pa.int8())
            ),
        }
    )


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("packs")
    rows = tokenized_rows(np.random.default_rng(0).integers(3, 60, 400).tolist())
    write_packs(out, build_packs(rows, PackConfig(seq_len=128)), PackConfig(seq_len=128, shard_packs=23, row_group_packs=5))
    return out


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 200), st.integers(1, 9), st.integers(0, 5), st.integers(0, 3), st.booleans())
def test_rank_slices_are_disjoint_equal_and_cover(n, world, seed, epoch, drop_last):
    slices = [rank_indices(n, r, world, seed, epoch, drop_last=drop_last) for r in range(world)]
    assert len({len(s) for s in slices}) == 1
    flat = np.concatenate(slices)
    if drop_last:
        assert len(set(flat.tolist())) == flat.size == (n // world) * world  # disjoint, remainder dropped
    else:
        assert set(flat.tolist()) == set(range(n))  # covering; at most world-1 packs seen twice
        assert flat.size - n < world


def test_resume_from_index_is_the_tail_of_the_full_order():
    full = PackedSampler(101, rank=1, world_size=4, seed=3, epoch=2)
    for k in (0, 1, 7, 25):
        resumed = PackedSampler(101, rank=1, world_size=4, seed=3, epoch=2, start_index=k)
        assert list(resumed) == list(full)[k:] and len(resumed) == len(full) - k
    resumed.set_epoch(3)  # the skip applies to the epoch the run resumed in only
    assert len(resumed) == len(full)
    assert list(resumed) != list(full)  # a new epoch, a new order


def test_dataset_reads_every_pack_and_loader_order_ignores_workers(shard_dir):
    ds = PackedDataset(shard_dir, rank=0, world_size=2, seed=5)
    table = pa.concat_tables([pq.read_table(p) for p in sorted(shard_dir.glob("shard-*.parquet"))])
    assert len(ds) == table.num_rows
    for i in (0, 4, 5, 22, 23, len(ds) - 1):
        item = ds[i]
        assert item["input_ids"].tolist() == table.column("input_ids")[i].as_py()
        assert item["labels"].dtype == torch.int64 and item["cu_seqlens"][-1] == item["num_tokens"]

    def order(workers: int) -> list[list[int]]:
        loader = DataLoader(
            ds, batch_size=3, sampler=ds.sampler(), collate_fn=collate_packed, num_workers=workers
        )
        return [b["input_ids"][0, :4].tolist() for b in loader]

    assert order(0) == order(2)
    other = PackedDataset(shard_dir, rank=1, world_size=2, seed=5)
    assert not set(ds.sampler()) & set(other.sampler())
    assert len(ds.sampler()) == len(other.sampler()) == len(ds) // 2


def test_collate_matches_transformers_flattening(shard_dir):
    ds = PackedDataset(shard_dir)
    items = [ds[i] for i in (3, 9)]
    ours = collate_packed(items)
    docs = []  # the same documents, one feature each, as DataCollatorWithFlattening sees them
    for it in items:
        for a, b in zip(it["cu_seqlens"][:-1].tolist(), it["cu_seqlens"][1:].tolist(), strict=True):
            docs.append({"input_ids": it["input_ids"][a:b].tolist(), "labels": it["labels"][a:b].tolist()})
    theirs = DataCollatorWithFlattening(return_flash_attn_kwargs=True)(docs, return_tensors="pt")
    for key in ("input_ids", "labels", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k"):
        assert torch.equal(ours[key], theirs[key]), key
    assert ours["max_length_q"] == theirs["max_length_q"]


def test_padded_and_megatron_shards_read_the_same_documents(tmp_path):
    rows = tokenized_rows([10, 30, 25, 7], seed=9)
    for name, cfg in {
        "hf": PackConfig(seq_len=64),
        "padded": PackConfig(seq_len=64, pad_to_seq_len=True, targets="loss_mask"),
        "megatron": PackConfig(seq_len=64, layout="megatron"),
    }.items():
        write_packs(tmp_path / name, build_packs(rows, cfg), cfg)
    got = {}
    for name in ("hf", "padded", "megatron"):
        ds = PackedDataset(tmp_path / name)
        got[name] = collate_packed([ds[i] for i in range(len(ds))])
    for name in ("padded", "megatron"):
        for key in ("input_ids", "labels", "position_ids", "cu_seq_lens_q"):
            assert torch.equal(got["hf"][key], got[name][key]), (name, key)
    padded = PackedDataset(tmp_path / "padded")[0]
    assert padded["input_ids"].numel() == 64
    assert (padded["labels"][int(padded["num_tokens"]) :] == IGNORE_INDEX).all()


def test_missing_dir_and_bad_rank_are_user_errors(tmp_path):
    with pytest.raises(PosttrainError, match="no shard-"):
        PackedDataset(tmp_path)
    with pytest.raises(PosttrainError, match="rank 2 is not in"):
        rank_indices(10, rank=2, world_size=2)
