"""Render -> tokenize (real Llama-3 tokenizer) -> pack -> shards -> loader, on real parquet rows."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from packs_helper import write_packs

from posttrain.config import PackConfig
from posttrain.io.packed import PackedDataset, collate_packed
from posttrain.reduce.pack import IGNORE_INDEX, build_packs_with_stats
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stage import split_rejected

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _row(uuid: str, category: str, prompt: str, answer: str, reasoning: str = "on") -> dict:
    return {
        "uuid": uuid,
        "license": "CC BY 4.0",
        "generator": "DeepSeek-R1-0528",
        "version": "v1",
        "category": category,
        "reasoning": reasoning,
        "messages": [
            {"role": "user", "content": prompt, "tool_calls": None},
            {"role": "assistant", "content": answer, "tool_calls": None},
        ],
        "metadata": "{}",
    }


def test_tokenized_rows_pack_and_load_with_every_trained_token_traceable(tmp_path):
    from posttrain.config import TokenizeConfig
    from posttrain.stages.render import RenderStage
    from posttrain.stages.tokenize import TokenizeStage

    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "délta", "ε", "long", "short", "tokens", "x"]
    rows = [
        _row(
            f"r{i}",
            ["math", "code", "chat"][i % 3],
            " ".join(rng.choice(words, rng.integers(3, 40))),
            f"<think>{' '.join(rng.choice(words, rng.integers(1, 60)))}</think>\nAnswer {i}.",
        )
        for i in range(40)
    ]
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=NEMOTRON_SCHEMA), path)

    render, tokenize = RenderStage(), TokenizeStage(TokenizeConfig(max_length=90))
    tokenized = [
        tokenize.process(render.process(b)) for b in pq.read_table(path).to_batches(max_chunksize=16)
    ]
    cfg = PackConfig(seq_len=200)
    good, rejected = split_rejected(pa.concat_tables([pa.Table.from_batches([t]) for t in tokenized]).combine_chunks().to_batches()[0])
    packs, stats = build_packs_with_stats(good, cfg, seed=1)
    # nothing lost: every row is packed or rejected with a reason
    assert stats.documents + rejected.num_rows == len(rows)
    assert all(r for r in rejected.column("reasons").to_pylist())
    assert stats.efficiency > 0.8

    write_packs(tmp_path / "out", packs, cfg)
    ds = PackedDataset(tmp_path / "out")
    by_uuid = {}
    for t in tokenized:
        for r in t.to_pylist():
            by_uuid[r["uuid"]] = r
    seen = []
    for i in range(len(ds)):
        item = ds[i]
        arrays = ds.item_arrays(i)
        uuids = pq.read_table(tmp_path / "out" / "shard-00000.parquet").column("uuids")[i].as_py()
        cu = arrays["cu_seqlens"]
        for k, uuid in enumerate(uuids):
            src = by_uuid[uuid]
            a, b = int(cu[k]), int(cu[k + 1])
            assert item["input_ids"][a:b].tolist() == src["input_ids"]
            trained = [j for j, m in enumerate(src["loss_mask"]) if m and j > 0]
            assert [j for j in range(b - a) if int(item["labels"][a + j]) != IGNORE_INDEX] == trained
            seen.append(uuid)
    assert sorted(seen) == sorted(u for u, r in by_uuid.items() if not r["reasons"])
    batch = collate_packed([ds[i] for i in range(len(ds))])
    assert int(batch["cu_seq_lens_q"][-1]) == batch["input_ids"].shape[1] == stats.tokens
    assert "length.over_max" in {c for r in rejected.column("reasons").to_pylist() for c in r}
