"""Exact prompt restoration or a refusal (issue 12 items 4-6), on sources laid out like the real repos."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import real_layouts as rl
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.errors import SourceError
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stage import REASONS
from posttrain.stages.rehydrate import KEY_COLUMN, RestorePrompts, code_prompt, load_hash_list, prompt_digest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
runner = CliRunner()


def reference_question(name: str, record: dict) -> str | None:
    """NVIDIA's construction (OpenCodeReasoning's `get_question`), restated here as the oracle."""
    if name == "code_contests":
        return record["description"] or None
    if name in ("taco", "apps"):
        return record["question"]
    if not record["description"]:
        return None
    q = record["description"]
    if record["input_format"]:
        q += "\n\nInput\n\n" + record["input_format"]
    if record["output_format"]:
        q += "\n\nOutput\n\n" + record["output_format"]
    if record["examples"]:
        q += "\n\nExamples"
        for ex in record["examples"]:
            q += "\n\nInput\n\n" + ex["input"]
            q += "\n\nOutput\n\n" + ex["output"]
    if record["note"]:
        q += "\n\nNote\n\n" + record["note"]
    return q


def restore(stage: RestorePrompts, keys: list[tuple[str, str, int]]) -> list[dict]:
    rows = [rl.code_row(f"u{k}", *key) for k, key in enumerate(keys)]
    return stage.process(pa.RecordBatch.from_pylist(rows, schema=NEMOTRON_SCHEMA)).to_pylist()


def prompts(out: list[dict]) -> list[str]:
    return [r["messages"][0]["content"] for r in out]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    """One hub mirror folder holding the four code sources as owner/name, each in its real layout."""
    root = tmp_path_factory.mktemp("hub")
    rl.taco(root / "BAAI" / "TACO")
    rl.codeforces(root / "open-r1" / "codeforces")
    rl.apps(root / "codeparrot" / "apps")
    rl.code_contests(root / "deepmind" / "code_contests")
    return root


SOURCES = {"taco": "BAAI/TACO", "open-r1/codeforces": "open-r1/codeforces", "apps": "codeparrot/apps",
           "code_contests": "deepmind/code_contests"}  # fmt: skip


@pytest.fixture(scope="module")
def stage(mirror) -> RestorePrompts:
    return RestorePrompts(SOURCES, hub_mirror=mirror)


def test_positions_in_the_default_config_only(stage):
    out = restore(stage, [("taco", "train", 25_442), ("taco", "train", 12_721), ("taco", "test", 999),
                          ("taco", "train", 25_443), ("code_contests", "valid", 116), ("code_contests", "train", 0)])
    assert prompts(out) == ["TACO train problem 25442", "TACO train problem 12721", "TACO test problem 999", "-",
                            "CodeContests valid 116", "CodeContests train 0"]  # fmt: skip
    assert out[3][REASONS] == ["prompt.unrecoverable"]  # past the end: not a row of config EASY
    src = stage.summary()["sources"]
    assert src["taco"] == {"spec": "BAAI/TACO", "revision": "main", "files": 3, "rows": {"test": 1000, "train": 25443},
                           "key": {"test": "position", "train": "position"}}  # fmt: skip
    assert src["codeforces"]["rows"] == {"test": 468, "train": 9556}  # `verifiable` is not mixed in
    assert src["code_contests"]["rows"] == {"test": 165, "train": 13328, "valid": 117}


def test_codeforces_text_is_byte_identical_to_the_reference(stage, mirror):
    out = restore(stage, [("open-r1/codeforces", "train", 9_555), ("open-r1/codeforces", "test", 0)])
    table = pq.read_table(mirror / "open-r1/codeforces/data/train-00000-of-00001.parquet").to_pylist()
    assert out[0]["messages"][0]["content"] == reference_question("open-r1/codeforces", table[9_555])
    assert "Input\n\n3\n1 2 3\n\n\nOutput\n\n6\n" in out[0]["messages"][0]["content"]  # examples not stripped
    assert out[1]["messages"][0]["content"].startswith("test statement 0\n\nInput")
    old = RestorePrompts({"codeforces": str(mirror / "open-r1" / "codeforces")}, codeforces_examples="stripped")
    assert "Input\n\n3\n1 2 3\n\nOutput\n\n6" in prompts(restore(old, [("codeforces", "train", 1)]))[0]


def test_code_prompt_matches_the_reference_for_every_source_kind():
    cf = {"description": "D", "input_format": "I", "output_format": "", "examples": [{"input": " 1\n", "output": "2 "}],
          "note": None}  # fmt: skip
    assert code_prompt(cf, "open-r1/codeforces") == reference_question("codeforces", cf)
    assert code_prompt({**cf, "description": ""}, "codeforces") is None
    assert code_prompt({"description": ""}, "code_contests") is None
    assert code_prompt({"question": "Q", "description": "x"}, "taco") == "Q"


def test_apps_problem_id_and_row_position_agree(stage, mirror, tmp_path):
    keys = [("apps", "train", 4_999), ("apps", "test", 17)]
    by_id = prompts(restore(stage, keys))
    assert by_id == ["APPS train problem 4999", "APPS test problem 17"]
    assert stage.summary()["sources"]["apps"]["key"] == {"test": "problem_id (= row position)",
                                                         "train": "problem_id (= row position)"}  # fmt: skip
    # the same files without the column: NVIDIA's rule (row position) gives the same prompts
    positional = RestorePrompts({"apps": str(rl.apps(tmp_path / "apps", key=None))})
    assert prompts(restore(positional, keys)) == by_id
    assert positional.summary()["sources"]["apps"]["key"] == {"test": "position", "train": "position"}
    # a subset keyed by problem_id is fine (values, not positions); a positional subset is refused
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "test.jsonl").write_text(json.dumps({"problem_id": 17, "question": "seventeen"}) + "\n")
    assert prompts(restore(RestorePrompts({"apps": str(tmp_path / "sub")}), keys[1:])) == ["seventeen"]
    with pytest.raises(SourceError, match="split 'test' has 4 rows where restoration by row position expects 5,000"):
        RestorePrompts({"apps": str(rl.apps(tmp_path / "small", key=None, rows=4))})


def test_jsonl_without_key_columns_is_indexed_by_line(tmp_path):
    path = tmp_path / "mine" / "train.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"question": f"line {i}"}) + "\n" for i in range(5)))
    stage = RestorePrompts({"mine": str(path.parent)})
    assert prompts(restore(stage, [("mine", "train", 3)])) == ["line 3"]  # was: 0 rows indexed, unrecoverable
    assert stage.summary()["sources"]["mine"]["key"] == {"train": "position"}


def test_a_wrong_row_count_is_refused_with_both_counts(tmp_path):
    taco = rl.taco(tmp_path / "TACO", train=25_000, test=1_000)
    rows = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([rl.code_row("a", "taco", "train", 3)], schema=NEMOTRON_SCHEMA), rows)
    res = runner.invoke(app, ["rehydrate", str(rows), "--code-source", f"taco={taco}", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    line = res.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert "split 'train' has 25,000 rows where restoration by row position expects 25,443" in line
    ok = runner.invoke(app, ["rehydrate", str(rows), "--code-source", f"taco={taco}", "--expected-rows",
                             "taco/train=25000", "--out", str(tmp_path / "o2"), "--no-progress"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert summary["restored"] == {"taco": 1} and summary["sources"]["taco"]["rows"]["train"] == 25_000


def test_taco_mirror_without_its_card_reads_the_all_folder(tmp_path):
    taco = rl.taco(tmp_path / "TACO", card=False)
    stage = RestorePrompts({"taco": str(taco)})
    assert stage.summary()["sources"]["taco"]["rows"] == {"test": 1000, "train": 25443}
    assert prompts(restore(stage, [("taco", "train", 5)])) == ["TACO train problem 5"]


def test_restored_prompts_checked_against_a_hash_list(mirror, tmp_path):
    good = prompt_digest(["TACO train problem 7"])
    hashes = tmp_path / "hashes.jsonl"
    hashes.write_text(json.dumps({"key": "taco/train/7", "sha256": good}) + "\n"
                      + json.dumps({"key": "taco/train/8", "sha256": "0" * 64}) + "\n")  # fmt: skip
    stage = RestorePrompts({"taco": "BAAI/TACO"}, hub_mirror=mirror, verify_hashes=hashes)
    out = restore(stage, [("taco", "train", 7), ("taco", "train", 8), ("taco", "train", 9)])
    assert [r[REASONS] for r in out] == [[], ["prompt.hash_mismatch"], []]
    assert out[1][KEY_COLUMN] == "taco/train/8"
    summary = stage.summary()
    assert summary["verified"] == 1 and summary["hash_mismatch"] == 1
    (tmp_path / "h.json").write_text(json.dumps({"taco/train/7": good}))
    assert load_hash_list(tmp_path / "h.json") == {"taco/train/7": good}


def test_prepare_manifest_records_each_source(mirror, tmp_path):
    rows = tmp_path / "rows" / "data" / "code-00000-of-00001.parquet"
    rows.parent.mkdir(parents=True)
    keys = [("taco", "train", 1), ("open-r1/codeforces", "train", 2), ("apps", "test", 3)]
    pq.write_table(pa.Table.from_pylist([rl.code_row(f"r{k}", *key) for k, key in enumerate(keys)],
                                        schema=NEMOTRON_SCHEMA), rows)  # fmt: skip
    out = tmp_path / "prep"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"source: {{path: {rows.parent.parent}, hub_mirror: {mirror}}}\n"
        f"rehydrate: {{code_sources: {{taco: BAAI/TACO, open-r1/codeforces: open-r1/codeforces, apps: codeparrot/apps}}}}\n"
        f"validate: {{enabled: false}}\ndecontaminate: null\ndedup: null\n"
        f"pack: {{seq_len: 1024}}\ntokenize: {{max_length: 1024}}\noutput: {{dir: {out}}}\n"
    )
    res = runner.invoke(app, ["prepare", str(recipe), "--no-progress"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    sources = manifest["rehydrate"]["sources"]
    assert sources["taco"]["rows"] == {"test": 1000, "train": 25443} and sources["taco"]["revision"] == "main"
    assert sources["apps"]["key"]["test"] == "problem_id (= row position)"
    assert manifest["rows"]["out"] == 3
