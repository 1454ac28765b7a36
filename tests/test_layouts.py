"""Every same-shape set's real layout (issue 12 items 1-3): splits, subsets, skipped files, rows."""

from __future__ import annotations

import json
import os

import pytest
import real_layouts as rl
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.errors import SourceError
from posttrain.io.sources import open_source
from posttrain.io.sources.discover import split_from_filename
from posttrain.io.sources.hub_layouts import resolve_layout, split_from_hub_name
from posttrain.stages.checks.structure import RoleOrderCheck

os.environ.setdefault("HF_HUB_OFFLINE", "1")
runner = CliRunner()


def info_json(*args: str) -> dict:
    res = runner.invoke(app, ["info", *args, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def rows_of(src) -> list[dict]:
    return [r for b in src.iter_batches(batch_size=64) for r in b.to_pylist()]


# -- item 3: shard names ---------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "split"), [
    ("data/train-00000-of-00006-5b0f2a8c3e1d4f6b.parquet", "train"),   # older push_to_hub: hash suffix
    ("data/train-00003-of-00006.parquet", "train"),
    ("data/multilingual_ja-00000-of-00001.parquet", "multilingual_ja"),
    ("data/tool-00000-of-00013.parquet", "tool_calling"),                # the v1 card's rename
    ("data/stem_00012.parquet", "stem"),
    ("test.jsonl", "test"),
    ("train.jsonl.gz", "train"),
    ("default/train/0000.parquet", "train"),                            # refs/convert/parquet
    ("SFT/partial-science/0007.parquet", "science"),
    ("SFT/code/code_v1.1.jsonl", "code_v1.1"),                           # a bare file: its stem
])  # fmt: skip
def test_split_from_every_hub_naming_form(name, split):
    assert split_from_hub_name(name) == split


def test_a_stem_ending_in_hex_without_shard_numbers_is_kept():
    assert split_from_filename("data/run-deadbeefcafe.parquet") == "run-deadbeefcafe"


def test_hash_suffix_shards_make_one_split(tmp_path):
    root = rl.hash_suffix(tmp_path / "repo")
    got = info_json(str(root))
    assert {k: v["rows"] for k, v in got["splits"].items()} == {"train": 6, "test": 2}
    assert got["splits"]["train"]["files"] == 2
    assert open_source(str(root), split="train").num_rows == 6


# -- Nemotron v1 ----------------------------------------------------------------------------------
def test_v1_mirror_with_its_card(tmp_path):
    root = rl.nemotron_v1(tmp_path / "nvidia" / "Nemotron-Post-Training-Dataset-v1")
    got = info_json(str(root))
    assert {k: v["rows"] for k, v in got["splits"].items()} == {"chat": 3, "code": 4, "math": 7, "stem": 5,
                                                                "tool_calling": 2}  # fmt: skip
    assert got["skipped"] == []
    hub = info_json("nvidia/Nemotron-Post-Training-Dataset-v1", "--hub-mirror", str(root))
    assert hub["splits"] == got["splits"]


# -- Nemotron v2 (item 2) ---------------------------------------------------------------------------
def test_v2_reads_only_the_cards_splits_and_says_what_it_skipped(tmp_path):
    root = rl.nemotron_v2(tmp_path / "v2")
    got = info_json(str(root))
    assert sorted(got["splits"]) == sorted(rl.V2_SPLITS)
    assert all(v["rows"] == 6 for v in got["splits"].values())
    assert got["total"]["rows"] == 6 * len(rl.V2_SPLITS)  # not + 100 stray multilingual rows
    assert got["skipped"] == [{"path": "data/multilingual-00000-of-00001.parquet", "why": "not in the card's configs"}]
    res = runner.invoke(app, ["info", str(root)])
    assert "skipped data/multilingual-00000-of-00001.parquet: not in the card's configs" in res.output
    with pytest.raises(SourceError, match="unknown split 'multilingual'"):
        open_source(str(root), split="multilingual")
    # the same through the hub code path, on a mirror
    hub = open_source("nvidia/Nemotron-Post-Training-Dataset-v2", hub_mirror=str(root))
    assert hub.splits == sorted(rl.V2_SPLITS) and len(hub.skipped) == 1


def test_v2_rows_keep_the_empty_system_message_and_read_without_metadata(tmp_path):
    root = rl.nemotron_v2(tmp_path / "v2")
    rows = rows_of(open_source(str(root), split=["chat", "math", "stem"]))
    assert len(rows) == 18
    for r in rows:
        assert r["messages"][0] == {"role": "system", "content": "", "tool_calls": None}
        assert r["generator"] == "Qwen3-235B-A22B, Qwen3-30B-A3B"
    off = {r["category"]: r["messages"][-1]["content"] for r in rows if r["reasoning"] == "off"}
    assert off["chat"].startswith("<think></think>\n\n") and off["math"].startswith("<think></think>\nThe")
    assert "<think>" not in off["stem"]


# -- Llama-Nemotron (item 1) ------------------------------------------------------------------------
@pytest.mark.parametrize("card", [True, False], ids=["with-card", "files-only"])
def test_llama_nemotron_splits_come_from_the_folders(tmp_path, card):
    root = rl.llama_nemotron(tmp_path / "llama", card=card)
    got = info_json(str(root))
    assert {k: v["rows"] for k, v in got["splits"].items()} == rl.LLAMA_ROWS
    assert {k: v["subset"] for k, v in got["splits"].items()} == {
        **{k: "sft" for k in ("code", "math", "stem", "chat", "safety")}, "instruction_following": "rl"}
    assert [s["path"] for s in got["skipped"]] == ["train/when2call_train_sft.jsonl"]
    assert info_json(str(root), "--split", "code")["total"]["rows"] == 7          # was refused: split 'code_v1.1'
    assert info_json(str(root), "--split", "science")["total"]["rows"] == 2       # the card's name still works
    assert sorted(info_json(str(root), "--split", "rl")["splits"]) == ["instruction_following"]
    assert info_json(str(root), "--split", "sft")["total"]["rows"] == 18
    hub = info_json("nvidia/Llama-Nemotron-Post-Training-Dataset", "--hub-mirror", str(root), "--split", "sft")
    assert hub["total"]["rows"] == 18


def test_llama_nemotron_rows_both_forms_and_rl_prompts(tmp_path):
    root = rl.llama_nemotron(tmp_path / "llama")
    src = open_source(str(root))
    rows = rows_of(src)
    assert src.read_log.bad_count == 0 and len(rows) == sum(rl.LLAMA_ROWS.values())
    text_form = [r for r in rows if r["category"] == "code" and r["version"] == "v1"]
    list_form = [r for r in rows if r["category"] == "code" and r["version"] == "v1.1"]
    assert len(text_form) == 3 and len(list_form) == 4
    assert [m["role"] for m in text_form[0]["messages"]] == ["user", "assistant"]  # v1 text form parsed back
    assert text_form[0]["messages"][1]["content"].endswith("```")                 # <|eot_id|> removed
    assert json.loads(text_form[0]["metadata"])["used_in_training"] == ["Ulta", "Super"]  # a string
    assert json.loads(list_form[0]["metadata"])["used_in_training"] == ["Ultra", "Nano"]  # a list
    rl_rows = [r for r in rows if r["category"] == "instruction following"]
    assert len(rl_rows) == 3
    for r in rl_rows:
        assert [m["role"] for m in r["messages"]] == ["user"] and r["reasoning"] == "off"
        assert json.loads(r["metadata"])["args"]["instruction_id_list"] == ["length_constraints:number_words"]
    checked = RoleOrderCheck().process(next(open_source(str(root), split="rl").iter_batches(with_reasons=True)))
    assert checked.column("reasons").to_pylist() == [["prompt.no_response"]] * 3


def test_rl_rows_are_loadable_but_rejected_by_prepare(tmp_path):
    root = rl.llama_nemotron(tmp_path / "llama")
    out = tmp_path / "val"
    res = runner.invoke(app, ["validate", str(root), "--split", "rl", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_in"] == 3 and summary["rejected"] == 0  # a warning: loadable for other uses
    prep = tmp_path / "prep"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"source: {{path: {root}, splits: [rl, chat]}}\nrehydrate: {{enabled: 'off'}}\n"
                      f"decontaminate: null\ndedup: null\nrender: {{template: llama3-detailed-thinking}}\n"
                      f"pack: {{seq_len: 2048}}\ntokenize: {{max_length: 2048}}\noutput: {{dir: {prep}}}\n")
    res = runner.invoke(app, ["prepare", str(recipe), "--no-progress"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((prep / "manifest.json").read_text())
    assert manifest["rows"]["rejected_by_reason"]["prompt.no_response"] == 3
    assert manifest["rows"]["out"] == 4


def test_resolve_layout_keeps_only_the_default_config_when_asked():
    card = ("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"
            "- config_name: verifiable\n  data_files:\n  - split: train\n    path: verifiable/train-*\n---\n")
    paths = ["data/train-00000-of-00001.parquet", "verifiable/train-00000-of-00001.parquet"]
    lay = resolve_layout(paths, card)
    assert [f.path for f in lay.files] == ["data/train-00000-of-00001.parquet"]
    assert "repeats split names" in lay.skipped[0][1]
    assert "not the default" in resolve_layout(paths, card, default_only=True).skipped[0][1]
