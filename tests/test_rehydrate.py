"""Restoring withheld prompts: the stage on the bundled sample, source layouts, errors and the CLI."""

from __future__ import annotations

import gzip
import json
import os
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from posttrain.errors import PosttrainError
from posttrain.sample import fixtures_root, load_manifest, sample_root
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stage import REASONS
from posttrain.stages.rehydrate import KEY_COLUMN, RestorePrompts, bundled_sources, code_prompt

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def manifest() -> dict:
    return load_manifest()


def read_split(manifest: dict, split: str) -> pa.Table:
    return pq.read_table(sample_root() / manifest["files"][split])


def run(stage: RestorePrompts, table: pa.Table, batch_size: int = 64) -> dict[str, dict]:
    out = {}
    for batch in table.to_batches(max_chunksize=batch_size):
        result = stage.process(batch)
        assert result.num_rows == batch.num_rows
        for row in result.to_pylist():
            out[row["uuid"]] = row
    return out


def expected_code_prompts() -> dict[str, str]:
    """Key `dataset/split/index` -> prompt text, read straight from the fixture files."""
    root, out = fixtures_root(), {}
    for name, dataset in (("taco.parquet", "taco"), ("code_contests.parquet", "code_contests"),
                          ("codeforces.parquet", "codeforces")):  # fmt: skip
        for rec in pq.read_table(root / name).to_pylist():
            out[f"{dataset}/{rec['split']}/{rec['index']}"] = code_prompt(rec)
    for split in ("train", "test"):
        for line in (root / "apps" / f"{split}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            out[f"apps/{split}/{rec['problem_id']}"] = rec["question"]
    return out


def expected_chat_turns() -> dict[str, list[str]]:
    table = pq.read_table(fixtures_root() / "lmsys-chat-1m.parquet").to_pylist()
    return {
        r["conversation_id"]: [t["content"] for t in r["conversation"] if t["role"] == "user"] for r in table
    }


@pytest.fixture(scope="module")
def restored(manifest) -> dict[str, dict]:
    code, chat = bundled_sources()
    stage = RestorePrompts(code, chat)
    rows = {}
    for split in ("code", "chat", "math"):
        rows.update(run(stage, read_split(manifest, split)))
    rows["__summary__"] = stage.summary()
    return rows


def test_every_restorable_row_gets_the_fixture_text(manifest, restored):
    prompts, chats = expected_code_prompts(), expected_chat_turns()
    for u in manifest["withheld"]["code"]["restorable"]:
        row = restored[u]
        meta = json.loads(row["metadata"])
        key = f"{meta['dataset'].rsplit('/', 1)[-1]}/{meta['split']}/{meta['index']}"
        assert row[KEY_COLUMN] == key and row[REASONS] == []
        assert row["messages"][0]["content"] == prompts[key]
    for u in manifest["withheld"]["chat"]["restorable"]:
        row = restored[u]
        cid = json.loads(row["metadata"])["conversation_id"]
        assert [m["content"] for m in row["messages"] if m["role"] == "user"] == chats[cid]
        assert row[KEY_COLUMN] == f"lmsys-chat-1m/{cid}" and row[REASONS] == []


def test_the_rest_are_reported_by_key(manifest, restored):
    summary = restored["__summary__"]
    unrestorable = manifest["withheld"]["code"]["unrestorable"] + manifest["withheld"]["chat"]["unrestorable"]
    for u in unrestorable:
        assert restored[u][REASONS] == ["prompt.unrecoverable"]
        assert restored[u][KEY_COLUMN] in summary["unrecoverable_keys"]
    assert summary["unrecoverable_total"] == len(unrestorable)
    restorable = len(manifest["withheld"]["code"]["restorable"]) + len(
        manifest["withheld"]["chat"]["restorable"]
    )
    assert summary["restored_total"] == restorable
    by_source = {**manifest["withheld"]["code"]["by_source"], **manifest["withheld"]["chat"]["by_source"]}
    assert summary["restored"] == {k: v["restorable"] for k, v in by_source.items()}
    assert summary["unrecoverable"] == {k: v["unrestorable"] for k, v in by_source.items() if v["unrestorable"]}


def test_rows_that_were_not_withheld_are_untouched(manifest, restored):
    withheld = {u for w in manifest["withheld"].values() for u in w["uuids"]}
    for split in ("code", "chat", "math"):
        for row in read_split(manifest, split).to_pylist():
            if row["uuid"] not in withheld:
                got = restored[row["uuid"]]
                assert got["messages"] == row["messages"] and got[KEY_COLUMN] is None and got[REASONS] == []


def test_same_result_for_any_batch_size_and_after_pickling(manifest):
    table = read_split(manifest, "chat")
    code, chat = bundled_sources()
    first = run(RestorePrompts(code, chat), table, batch_size=500)
    stage = RestorePrompts(code, chat)
    run(stage, table.slice(0, 10), batch_size=10)  # builds the indexes
    again = run(pickle.loads(pickle.dumps(stage)), table, batch_size=7)
    assert first == again


def test_keep_unrecoverable_keeps_the_placeholder(manifest):
    code, chat = bundled_sources()
    rows = run(RestorePrompts(code, chat, keep_unrecoverable=True), read_split(manifest, "code"))
    for u in manifest["withheld"]["code"]["unrestorable"]:
        assert rows[u][REASONS] == [] and rows[u]["messages"][0]["content"] == "-" and rows[u][KEY_COLUMN]


def _code_row(uuid: str, dataset: str, split: str, index: int) -> dict:
    meta = {"source": "codeforces", "dataset": dataset, "index": index, "split": split}
    messages = [{"role": "user", "content": "-", "tool_calls": []},
                {"role": "assistant", "content": "ok", "tool_calls": []}]  # fmt: skip
    return {"uuid": uuid, "license": "CC BY 4.0", "generator": "g", "version": "v1", "category": "code",
            "reasoning": "on", "messages": messages, "metadata": json.dumps(meta)}  # fmt: skip


def _batch(rows: list[dict]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist(rows, schema=NEMOTRON_SCHEMA)


def test_positional_taco_layout_jsonl_and_hub_mirror(tmp_path):
    # The real BAAI/TACO has no index column: a row is addressed by its position within its split.
    repo = tmp_path / "mirror" / "BAAI" / "TACO" / "data"
    repo.mkdir(parents=True)
    pq.write_table(pa.table({"question": [f"train question {i}" for i in range(50)]}), repo / "train-00000-of-00001.parquet",
                   row_group_size=16)  # fmt: skip
    pq.write_table(
        pa.table({"question": [f"test question {i}" for i in range(5)]}), repo / "test-00000-of-00001.parquet"
    )
    apps = tmp_path / "apps"
    apps.mkdir()
    with gzip.open(apps / "test.jsonl.gz", "wt") as fh:
        for i in range(3):
            fh.write(json.dumps({"problem_id": 10 + i, "question": f"apps test {10 + i}"}) + "\n")
    (apps / "train.jsonl").write_text("".join(json.dumps({"problem_id": i, "question": f"apps train {i}"}) + "\n"
                                              for i in range(4)))  # fmt: skip
    # open-r1/codeforces: `index` is the problem letter, so rows are addressed by position too.
    cf = tmp_path / "codeforces" / "train-00000-of-00001.parquet"
    cf.parent.mkdir()
    pq.write_table(pa.table({"index": ["A", "B"], "description": ["first", "second"], "input_format": ["n", "m"],
                             "output_format": ["x", "y"], "examples": [[], [{"input": "1\n", "output": "2\n"}]],
                             "note": [None, "see above"]}), cf)  # fmt: skip
    # small copies keyed by position: their row counts are declared (the real ones are checked)
    stage = RestorePrompts({"taco": "BAAI/TACO", "apps": str(apps), "open-r1/codeforces": str(cf.parent)},
                           hub_mirror=tmp_path / "mirror",
                           expected_rows={"taco": {"train": 50, "test": 5}, "codeforces": {"train": 2}})  # fmt: skip
    cf_row = stage.process(_batch([_code_row("g", "open-r1/codeforces", "train", 1)])).to_pylist()[0]
    assert cf_row["messages"][0]["content"] == (  # examples as NVIDIA writes them: not stripped
        "second\n\nInput\n\nm\n\nOutput\n\ny\n\nExamples\n\nInput\n\n1\n\n\nOutput\n\n2\n\n\nNote\n\nsee above")
    rows = [_code_row("a", "taco", "train", 37), _code_row("b", "taco", "test", 4), _code_row("c", "apps", "test", 11),
            _code_row("d", "apps", "train", 2), _code_row("e", "taco", "test", 5), _code_row("f", "code_contests", "train", 1)]  # fmt: skip
    out = stage.process(_batch(rows)).to_pylist()
    assert [r["messages"][0]["content"] for r in out] == [
        "train question 37", "test question 4", "apps test 11", "apps train 2", "-", "-"]  # fmt: skip
    assert [r[REASONS] for r in out] == [[], [], [], [], ["prompt.unrecoverable"], ["prompt.unrecoverable"]]
    assert out[5][KEY_COLUMN] == "code_contests/train/1"  # no source given for it: reported by key
    assert stage.summary()["unrecoverable"] == {"code_contests": 1, "taco": 1}
    assert stage.summary()["restored"] == {"apps": 2, "codeforces": 1, "taco": 2}


def test_chat_turns_checked_against_lmsys(tmp_path):
    path = tmp_path / "lmsys.parquet"
    conv = [{"content": "hello there", "role": "user"}, {"content": "hi", "role": "assistant"},
            {"content": "second question", "role": "user"}, {"content": "sure", "role": "assistant"}]  # fmt: skip
    pq.write_table(pa.table({"conversation_id": ["c1"], "conversation": [conv]}), path)
    meta = json.dumps(
        {"conversation_id": "c1", "source": "https://huggingface.co/datasets/lmsys/lmsys-chat-1m"}
    )

    def row(uuid: str, users: list[str]) -> dict:
        msgs = []
        for u in users:
            msgs += [
                {"role": "user", "content": u, "tool_calls": []},
                {"role": "assistant", "content": "a", "tool_calls": []},
            ]
        return {"uuid": uuid, "license": "", "generator": "", "version": "", "category": "chat", "reasoning": "off",
                "messages": msgs, "metadata": meta}  # fmt: skip

    stage = RestorePrompts(chat_source=path)
    out = stage.process(
        _batch([row("a", ["", ""]), row("b", ["", "different"]), row("c", ["", "", ""])])
    ).to_pylist()
    assert [m["content"] for m in out[0]["messages"] if m["role"] == "user"] == [
        "hello there",
        "second question",
    ]
    assert out[1]["messages"][0]["content"] == "hello there" and out[1][REASONS] == []
    assert out[2][REASONS] == ["prompt.unrecoverable"]  # more user turns than the conversation has
    assert stage.summary()["mismatched_user_turns"] == 1


def test_bad_sources_name_themselves(tmp_path):
    with pytest.raises(PosttrainError, match="taco source .*missing.parquet"):
        RestorePrompts({"taco": str(tmp_path / "missing.parquet")})
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"text": ["x"]}), wrong)
    with pytest.raises(PosttrainError, match="taco source .*wrong.parquet.*question/description"):
        RestorePrompts({"taco": str(wrong)})  # code sources are indexed (and checked) when the stage is built


def test_cli_on_the_bundled_sample(tmp_path, manifest):
    from posttrain.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["rehydrate", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    unrestorable = sum(len(w["unrestorable"]) for w in manifest["withheld"].values())
    assert summary["rows_in"] == 2500 == summary["rows_out"] + summary["rejected"]
    assert summary["rejected"] == unrestorable
    assert "rows_in 2500 == out" in result.output and "lmsys-chat-1m" in result.output
    restored = pq.read_table(tmp_path / "out" / "restored")
    assert restored.schema.equals(NEMOTRON_SCHEMA) and restored.num_rows == 2500 - unrestorable
    rejects = pq.read_table(tmp_path / "out" / "rejects" / "code-00000-of-00001.parquet").to_pylist()
    assert {r["uuid"] for r in rejects} == set(manifest["withheld"]["code"]["unrestorable"])
    assert all(r["reasons"] == ["prompt.unrecoverable"] and r["rehydrate_key"] for r in rejects)

    kept = runner.invoke(app, ["rehydrate", "--split", "code", "--limit", "100", "--keep-unrecoverable",
                               "--out", str(tmp_path / "kept")])  # fmt: skip
    assert kept.exit_code == 0, kept.output
    assert json.loads((tmp_path / "kept" / "summary.json").read_text())["rejected"] == 0


def test_cli_errors_are_one_line(tmp_path):
    from posttrain.cli import app

    runner = CliRunner()
    other = tmp_path / "data.parquet"
    pq.write_table(read_split(load_manifest(), "math").slice(0, 3), other)
    no_source = runner.invoke(app, ["rehydrate", str(other), "--out", str(tmp_path / "o")])
    assert no_source.exit_code == 2 and "no restoration source given" in no_source.output
    bad = runner.invoke(app, ["rehydrate", "--code-source", "taco", "--out", str(tmp_path / "o")])
    assert bad.exit_code == 2 and "NAME=PATH" in bad.output and "Traceback" not in bad.output
    missing = runner.invoke(
        app, ["rehydrate", "--chat-source", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    )
    assert missing.exit_code == 2 and "lmsys-chat-1m source" in missing.output
    assert Path(fixtures_root()).is_dir()


_ROLE = st.sampled_from(["user", "assistant", "tool", "system"])
_TEXT = st.sampled_from(["", "-", "hello", "x y z", "ünïcode ✓"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.lists(st.tuples(_ROLE, _TEXT), max_size=6), st.sampled_from(["c1", "c2", "code", "none"])),
                min_size=1, max_size=12))  # fmt: skip
def test_only_placeholder_user_turns_change(tmp_path, rows):
    path = tmp_path / "lmsys.parquet"
    if not path.exists():
        conv = [{"content": f"turn {i}", "role": r} for i, r in enumerate(["user", "assistant"] * 3)]
        pq.write_table(pa.table({"conversation_id": ["c1"], "conversation": [conv]}), path)
    metas = {"c1": {"conversation_id": "c1"}, "c2": {"conversation_id": "c2"}, "none": {},
             "code": {"dataset": "taco", "split": "train", "index": 3}}  # fmt: skip
    batch = _batch([
        {"uuid": str(i), "license": "", "generator": "", "version": "", "category": "chat", "reasoning": "off",
         "messages": [{"role": r, "content": c, "tool_calls": []} for r, c in msgs], "metadata": json.dumps(metas[m])}
        for i, (msgs, m) in enumerate(rows)
    ])  # fmt: skip
    out = RestorePrompts(chat_source=path).process(batch)
    assert out.num_rows == batch.num_rows
    for before, after in zip(batch.to_pylist(), out.to_pylist(), strict=True):
        assert [m["role"] for m in before["messages"]] == [m["role"] for m in after["messages"]]
        for b, a in zip(before["messages"], after["messages"], strict=True):
            if b["content"] != a["content"]:
                assert b["role"] == "user" and b["content"] in ("", "-") and after[KEY_COLUMN]
        if after[REASONS]:
            assert after["messages"] == before["messages"] and after[KEY_COLUMN]
