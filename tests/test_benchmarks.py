"""Benchmark loaders: built-in package files, hub sets read from a local mirror in the hub layout, PATH:FIELD."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from posttrain.errors import PosttrainError
from posttrain.io.benchmarks import ROOT_ENV, load_benchmark, load_benchmarks


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize(
    ("name", "count", "first_id"),
    [
        ("humaneval", 164, "HumanEval/0"),
        ("math500", 311, None),
        ("aime24", 30, "AIME2024/0"),
        ("aime25", 15, "AIME2025/0"),
        ("gsm8k", 100, None),
    ],
)
def test_builtin_sets_read_from_installed_packages(name, count, first_id):
    items = load_benchmark(name)
    assert len(items) == count
    assert len({it.item_id for it in items}) == count
    assert all(it.benchmark == name and it.text.strip() for it in items)
    if first_id:
        assert items[0].item_id == first_id


def test_comma_list_keeps_order_and_rejects_unknown_names():
    items = load_benchmarks("aime25,aime24")
    assert [it.benchmark for it in items] == ["aime25"] * 15 + ["aime24"] * 30
    with pytest.raises(PosttrainError, match="unknown benchmark 'nope'"):
        load_benchmarks("aime25,nope")
    with pytest.raises(PosttrainError, match="no benchmarks"):
        load_benchmarks(" , ")


def test_local_path_field_jsonl_parquet_csv(tmp_path):
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps({"id": f"q{i}", "question": f"problem {i}"}) for i in range(3)) + "\n"
    )
    items = load_benchmark(f"{jsonl}:question")
    assert [(it.item_id, it.text) for it in items] == [
        ("q0", "problem 0"),
        ("q1", "problem 1"),
        ("q2", "problem 2"),
    ]
    assert items[0].benchmark == f"{jsonl}:question"

    pq.write_table(pa.table({"text": ["a b", "", "c d"]}), tmp_path / "b.parquet")
    assert [it.text for it in load_benchmark(f"{tmp_path / 'b.parquet'}:text")] == [
        "a b",
        "c d",
    ]  # empty skipped

    pcsv.write_csv(pa.table({"Question": ["x y z"]}), tmp_path / "b.csv")
    assert load_benchmark(f"{tmp_path / 'b.csv'}:Question")[0].text == "x y z"

    with pytest.raises(PosttrainError, match="no field 'prompt'"):
        load_benchmark(f"{jsonl}:prompt")


def _mirror(root, repo_id, relative, table):
    path = root / repo_id / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if relative.endswith(".parquet"):
        pq.write_table(table, path)
    elif relative.endswith(".csv"):
        pcsv.write_csv(table, path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in table.to_pylist()) + "\n")


def test_hub_sets_stream_from_a_mirror_in_the_hub_layout(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    _mirror(
        tmp_path,
        "openai/gsm8k",
        "main/test-00000-of-00001.parquet",
        pa.table({"question": ["How many apples?"], "answer": ["#### 3"]}),
    )
    _mirror(
        tmp_path,
        "HuggingFaceH4/MATH-500",
        "test.jsonl",
        pa.table({"problem": ["Find x."], "unique_id": ["test/algebra/1.json"]}),
    )
    _mirror(
        tmp_path,
        "Idavidrein/gpqa",
        "gpqa_diamond.csv",
        pa.table({"Question": ["Which particle?"], "Record ID": ["rec7"]}),
    )
    _mirror(
        tmp_path,
        "cais/mmlu",
        "all/test-00000-of-00001.parquet",
        pa.table({"question": ["Capital of France?"]}),
    )
    _mirror(
        tmp_path,
        "livecodebench/code_generation_lite",
        "test.jsonl",
        pa.table({"question_content": ["Read n."], "question_id": ["abc123"]}),
    )
    _mirror(
        tmp_path,
        "livecodebench/code_generation_lite",
        "test2.jsonl",
        pa.table({"question_content": ["Print k."], "question_id": ["abc124"]}),
    )

    assert load_benchmark("openai/gsm8k")[0].text == "How many apples?"
    assert load_benchmark("HuggingFaceH4/MATH-500")[0].item_id == "test/algebra/1.json"
    assert load_benchmark("gpqa")[0].item_id == "rec7"
    assert load_benchmark("mmlu")[0].text == "Capital of France?"
    assert sorted(it.item_id for it in load_benchmark("livecodebench")) == ["abc123", "abc124"]


def test_generic_hub_id_field_reads_the_test_split(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    _mirror(
        tmp_path,
        "someorg/bench",
        "data/test-00000-of-00001.parquet",
        pa.table({"prompt": ["p one", "p two"]}),
    )
    _mirror(
        tmp_path, "someorg/bench", "data/train-00000-of-00001.parquet", pa.table({"prompt": ["not this"]})
    )
    assert [it.text for it in load_benchmark("someorg/bench:prompt")] == ["p one", "p two"]


def test_hub_failure_is_one_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))  # empty mirror
    with pytest.raises(PosttrainError, match="cannot load benchmark openai/gsm8k"):
        load_benchmark("openai/gsm8k")
