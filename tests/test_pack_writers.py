"""Shard writing: deterministic bytes, shard sizes, atomic names, readable by `datasets`."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from packs_helper import write_packs

from posttrain.config import PackConfig
from posttrain.io.shards import file_sha256
from posttrain.reduce.pack import build_packs, summarize_shards


def tokenized_rows(lengths: list[int], seed: int = 0) -> pa.Table:
    """Rows in the tokenize contract with random ids and masks."""
    rng = np.random.default_rng(seed)
    ids = [rng.integers(0, 128_256, n).tolist() for n in lengths]
    masks = [(rng.random(n) < 0.6).astype(int).tolist() for n in lengths]
    return pa.table(
        {
            "uuid": [f"doc-{seed}-{i}" for i in range(len(lengths))],
            "category": ["math", "code"] * (len(lengths) // 2) + ["chat"] * (len(lengths) % 2),
            "input_ids": pa.array(ids, pa.list_(pa.int32())),
            "loss_mask": pa.array(masks, pa.list_(pa.int8())),
            "num_tokens": pa.array(lengths, pa.int64()),
        }
    )


os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _write(out, rows, cfg, seed=0, batches=1):
    n = rows.num_rows
    edges = np.linspace(0, n, batches + 1).astype(int)
    packs = [build_packs(rows.slice(edges[i], edges[i + 1] - edges[i]), cfg, seed=seed) for i in range(batches)]
    return write_packs(out, pa.concat_tables(packs), cfg)


def test_shards_split_by_pack_count_and_describe_themselves(tmp_path):
    rows = tokenized_rows(np.random.default_rng(0).integers(5, 120, 300).tolist())
    cfg = PackConfig(seq_len=256, shard_packs=20, row_group_packs=8)
    shards = _write(tmp_path, rows, cfg)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [s.file for s in shards] == [f"shard-{i:05d}.parquet" for i in range(len(shards))]
    assert all(s.packs == 20 for s in shards[:-1]) and 0 < shards[-1].packs <= 20
    total = summarize_shards(shards)
    assert total["documents"] == 300
    assert total["tokens"] == sum(rows.column("num_tokens").to_pylist())
    assert total["efficiency"] > 0.9
    for s in shards:
        path = tmp_path / s.file
        assert s.sha256 == file_sha256(path) and s.bytes == path.stat().st_size
        table = pq.read_table(path)
        assert table.num_rows == s.packs
        assert sum(map(sum, table.column("seq_lens").to_pylist())) == s.tokens
        assert "num_tokens" not in table.column_names  # bookkeeping is not stored
    assert pq.ParquetFile(tmp_path / shards[0].file).metadata.num_row_groups == 3


def test_same_input_gives_identical_shard_bytes(tmp_path):
    rows = tokenized_rows(np.random.default_rng(1).integers(5, 120, 200).tolist())
    cfg = PackConfig(seq_len=256, shard_packs=16)
    a = _write(tmp_path / "a", rows, cfg, seed=3)
    b = _write(tmp_path / "b", rows.take(np.arange(rows.num_rows)[::-1]), cfg, seed=3)
    assert [s.sha256 for s in a] == [s.sha256 for s in b]
    c = _write(tmp_path / "c", rows, cfg, seed=4)
    assert [s.sha256 for s in a] != [s.sha256 for s in c]


def test_shards_load_with_datasets_and_megatron_layout(tmp_path):
    from datasets import load_dataset

    rows = tokenized_rows([30, 50, 20, 90, 10], seed=2)
    _write(tmp_path / "hf", rows, PackConfig(seq_len=128))
    ds = load_dataset("parquet", data_files=str(tmp_path / "hf" / "shard-*.parquet"), split="train")
    assert set(ds.column_names) == {"input_ids", "labels", "position_ids", "seq_lens", "uuids", "categories"}
    assert sorted(u for r in ds["uuids"] for u in r) == sorted(rows.column("uuid").to_pylist())

    _write(tmp_path / "mega", rows, PackConfig(seq_len=128, layout="megatron"))
    table = pq.read_table(tmp_path / "mega" / "shard-00000.parquet")
    assert table.column_names == ["input_ids", "loss_mask", "seq_start_id"]
    assert table.schema.field("loss_mask").type.value_type == pa.uint8()


def test_no_temp_files_left_and_empty_writes_make_no_shard(tmp_path):
    assert write_packs(tmp_path, build_packs(tokenized_rows([]), PackConfig(seq_len=64)), PackConfig(seq_len=64)) == []
    assert list(tmp_path.iterdir()) == []
    _write(tmp_path, tokenized_rows([10, 20]), PackConfig(seq_len=64))
    assert [p.name for p in tmp_path.iterdir()] == ["shard-00000.parquet"]


def test_shard_bytes_cuts_shards_by_size(tmp_path):
    rows = tokenized_rows(np.random.default_rng(2).integers(5, 120, 300).tolist())
    cfg = PackConfig(seq_len=256, shard_packs=1000, shard_bytes=40_000)
    a = write_packs(tmp_path / "one", build_packs(rows, cfg), cfg)
    assert len(a) > 1
    # input_ids, labels and position_ids: 12 bytes a token; a shard closes at the first pack past the limit
    assert all(s.tokens * 12 >= 40_000 > (s.tokens - 256) * 12 for s in a[:-1])


def test_prepare_rotates_shards_by_shard_bytes(tmp_path):
    """The recipe key does what it says inside `prepare`: shards close once they hold shard_bytes."""
    import json

    from typer.testing import CliRunner

    from posttrain.cli import app

    recipe = tmp_path / "r.yaml"
    recipe.write_text("pack: {seq_len: 4096, shard_bytes: 400000}\ntokenize: {max_length: 4096}\ndedup: null\ndecontaminate: null\n")
    res = CliRunner().invoke(app, ["prepare", str(recipe), "--out", str(tmp_path / "o"), "--limit", "600", "--no-progress"])
    assert res.exit_code == 0, res.output
    shards = json.loads((tmp_path / "o" / "manifest.json").read_text())["shards"]
    assert len(shards) > 1
    # input_ids, labels, position_ids: 12 bytes a token; every shard but the last reached the limit
    assert all(s["tokens"] * 12 >= 400_000 for s in shards[:-1])
    assert all((s["tokens"] - 4096) * 12 < 400_000 for s in shards)


def test_shard_written_in_row_group_pieces_has_the_whole_table_bytes(tmp_path):
    """`write_shard_groups` (the pack phase: one row group of packs in memory at a time) writes the
    bytes `write_shard` writes for the whole table at once, and counts the same."""
    from posttrain.io.shards import write_shard, write_shard_groups

    cfg = PackConfig(seq_len=512, row_group_packs=4)
    packs = build_packs(tokenized_rows([int(x) for x in np.random.default_rng(3).integers(20, 500, 120)]), cfg)
    assert packs.num_rows > 3 * cfg.row_group_packs
    whole = write_shard(packs, tmp_path / "whole.parquet", cfg)
    pieces = (packs.slice(i, cfg.row_group_packs) for i in range(0, packs.num_rows, cfg.row_group_packs))
    split = write_shard_groups(pieces, tmp_path / "split.parquet", cfg)
    assert split.sha256 == whole.sha256 and split.tokens == whole.tokens and split.documents == whole.documents
    assert pq.ParquetFile(tmp_path / "split.parquet").num_row_groups == -(-packs.num_rows // cfg.row_group_packs)


def test_take_docs_across_spool_batches_in_the_order_asked(tmp_path):
    """Documents gathered from a spool of many record batches, in any order, are the ones asked for."""
    from posttrain.io.spool import UnitWriter, take_docs

    rows = tokenized_rows([int(x) for x in np.random.default_rng(4).integers(1, 60, 50)])
    writer = UnitWriter(tmp_path, 0)
    for i in range(0, rows.num_rows, 7):  # 8 record batches
        writer.write_docs(rows.slice(i, 7).to_batches()[0].select(["uuid", "category", "input_ids", "loss_mask"]),
                          id_bytes=3)
    writer.commit({})
    want = [31, 2, 49, 2, 17, 0, 8]
    got = take_docs(tmp_path, 0, pa.array(want))
    assert got.column("uuid").to_pylist() == [f"doc-0-{i}" for i in want]
    assert got.column("input_ids").to_pylist() == rows.column("input_ids").take(pa.array(want)).to_pylist()
    assert got.column("loss_mask").to_pylist() == rows.column("loss_mask").take(pa.array(want)).to_pylist()
