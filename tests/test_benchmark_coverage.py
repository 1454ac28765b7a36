"""Decontamination coverage (issue 12 items 7-8): partial offline sets reported, full sets loadable,
every known hub benchmark spec read from a local folder in its hub layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.errors import PosttrainError
from posttrain.io.benchmarks import (
    ROOT_ENV,
    benchmark_coverage,
    coverage_warnings,
    load_benchmark,
    load_benchmarks,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
runner = CliRunner()

AIME25_CARD = """---
configs:
- config_name: AIME2025-I
  data_files:
  - split: test
    path: aime2025-I.jsonl
- config_name: AIME2025-II
  data_files:
  - split: test
    path: aime2025-II.jsonl
---
"""
H4_CARD = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n---\n"


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _parquet(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    """Benchmark repos laid out as on the hub (file names, configs, splits and fields)."""
    root = tmp_path_factory.mktemp("benchmarks")
    (root / "HuggingFaceH4" / "aime_2024").mkdir(parents=True)
    (root / "HuggingFaceH4" / "aime_2024" / "README.md").write_text(H4_CARD)
    _parquet(root / "HuggingFaceH4/aime_2024/data/train-00000-of-00001.parquet",
             [{"id": 60 + i, "problem": f"AIME 2024 problem {i}", "answer": str(i)} for i in range(30)])
    _parquet(root / "Maxwell-Jia/AIME_2024/aime_2024_problems.parquet",
             [{"ID": f"2024-I-{i}", "Problem": f"AIME 2024 problem {i}", "Answer": i} for i in range(30)])
    (root / "opencompass" / "AIME2025").mkdir(parents=True)
    (root / "opencompass" / "AIME2025" / "README.md").write_text(AIME25_CARD)
    for part in ("I", "II"):
        _jsonl(root / f"opencompass/AIME2025/aime2025-{part}.jsonl",
               [{"question": f"AIME 2025-{part} problem {i}", "answer": str(i)} for i in range(15)])
    _jsonl(root / "math-ai/aime25/test.jsonl", [{"id": i, "problem": f"aime25 {i}", "answer": "1"} for i in range(30)])
    _parquet(root / "yentinglin/aime_2025/data/train-00000-of-00001.parquet",
             [{"id": i, "problem": f"aime 2025 {i}", "answer": "1"} for i in range(30)])
    _jsonl(root / "HuggingFaceH4/MATH-500/test.jsonl",
           [{"problem": f"MATH problem number {i} with enough words to make several thirteen word n-grams appear",
             "answer": "1", "unique_id": f"test/algebra/{i}.json"} for i in range(500)])
    return root  # fmt: skip


def test_offline_sets_report_their_coverage():
    cov = benchmark_coverage(load_benchmarks("humaneval,math500,aime24,aime25,gsm8k"))
    assert {k: (v["loaded"], v["total"]) for k, v in cov.items()} == {
        "humaneval": (164, 164), "math500": (311, 500), "aime24": (30, 30), "aime25": (15, 30), "gsm8k": (100, 1319)}
    warnings = coverage_warnings(cov)
    assert [w.split(":")[0] for w in warnings] == ["math500", "aime25", "gsm8k"]
    assert "311 of 500 items loaded (62%)" in warnings[0] and "--benchmark-file math500=PATH" in warnings[0]


@pytest.mark.parametrize(("spec", "n", "first"), [
    ("HuggingFaceH4/aime_2024", 30, "AIME 2024 problem 0"),   # split train, field problem
    ("aime24-hub", 30, "AIME 2024 problem 0"),
    ("Maxwell-Jia/AIME_2024", 30, "AIME 2024 problem 0"),     # split train (one unsplit file), Problem / ID
    ("opencompass/AIME2025", 30, "AIME 2025-I problem 0"),     # both configs, split test, field question
    ("opencompass/AIME2025:AIME2025-II@test:question", 15, "AIME 2025-II problem 0"),
    ("math-ai/aime25", 30, "aime25 0"),                        # split test, field problem
    ("math-ai/aime25@test:problem", 30, "aime25 0"),
    ("yentinglin/aime_2025", 30, "aime 2025 0"),               # split train
    ("yentinglin/aime_2025@train:problem", 30, "aime 2025 0"),
])  # fmt: skip
def test_hub_benchmark_specs_read_their_real_layouts(hub, monkeypatch, spec, n, first):
    monkeypatch.setenv(ROOT_ENV, str(hub))
    items = load_benchmark(spec)
    assert len(items) == n and items[0].text == first
    assert benchmark_coverage(items)[spec]["complete"]
    if spec == "Maxwell-Jia/AIME_2024":
        assert items[0].item_id == "2024-I-0"


def test_hub_spec_errors_are_one_line(hub, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(hub))
    with pytest.raises(PosttrainError, match="no config 'AIME2025-III'"):
        load_benchmark("opencompass/AIME2025:AIME2025-III@test:question")
    with pytest.raises(PosttrainError, match="no files of split 'validation'"):
        load_benchmark("math-ai/aime25@validation:problem")


def test_full_sets_from_a_file_or_a_hub_mirror(hub, tmp_path):
    full = load_benchmarks("math500,aime25", files={"math500": str(hub / "HuggingFaceH4" / "MATH-500"),
                                                      "aime25": str(hub / "opencompass" / "AIME2025")})  # fmt: skip
    cov = benchmark_coverage(full)
    assert cov["math500"] == {"loaded": 500, "total": 500, "complete": True}
    assert cov["aime25"] == {"loaded": 30, "total": 30, "complete": True} and coverage_warnings(cov) == []
    gsm = tmp_path / "gsm8k_test.jsonl"
    _jsonl(gsm, [{"question": f"q {i}", "answer": "#### 1"} for i in range(1319)])
    assert benchmark_coverage(load_benchmarks([], files={"gsm8k": str(gsm)}))["gsm8k"]["complete"]
    assert load_benchmarks([], files={"gsm8k": f"{gsm}:answer"})[0].text == "#### 1"


def test_decontaminate_reports_coverage_and_warns(hub, tmp_path):
    out = tmp_path / "d"
    res = runner.invoke(app, ["decontaminate", "--split", "math", "--limit", "40", "--benchmarks", "math500,gsm8k",
                              "--benchmark-file", f"math500={hub / 'HuggingFaceH4' / 'MATH-500'}", "--out", str(out),
                              "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["coverage"] == {"math500": {"loaded": 500, "total": 500, "complete": True},
                                  "gsm8k": {"loaded": 100, "total": 1319, "complete": False}}  # fmt: skip
    assert len(report["warnings"]) == 1 and "warning: partial benchmark gsm8k: 100 of 1319" in res.output
    assert "items in benchmark" in (out / "report.html").read_text()


def test_prepare_manifest_and_summary_carry_coverage(tmp_path):
    out = tmp_path / "p"
    res = runner.invoke(app, ["prepare", "--limit", "40", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["decontaminate"]["coverage"]["math500"] == {"loaded": 311, "total": 500, "complete": False}
    assert len(manifest["decontaminate"]["warnings"]) == 3
    assert "warning: partial benchmark math500: 311 of 500" in res.output
