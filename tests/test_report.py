"""`posttrain report`: counts in the JSON, a self-contained and escaped HTML page, validate dirs, sketches."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.io.tokenizer import count_tokens as token_counts
from posttrain.jobs.report import build_report, iter_parquet_batches, near_duplicate_stats
from posttrain.jobs.report.html import render_html
from posttrain.jobs.report.stats import LENGTH_EDGES, LogHistogram
from posttrain.jobs.report.text import DistinctSketch, dominant_scripts, word_trigram_hashes
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stage import REASONS, REASONS_TYPE

os.environ.setdefault("HF_HUB_OFFLINE", "1")
runner = CliRunner()
EVIL = "<script>alert('x')</script>"


def msg(role: str, content: str, calls: list | None = None) -> dict:
    return {"role": role, "content": content, "tool_calls": calls or []}


def math_row(i: int) -> dict:
    on = i % 2 == 1
    trace = "<think>" + f"{i} plus {i} is {2 * i}. " * (i + 1) + "</think>\n\n" if on else ""
    return {
        "uuid": f"math-{i}", "license": "CC BY 4.0", "generator": "DeepSeek-R1-0528", "version": "v1",
        "category": "math", "reasoning": "on" if on else "off",
        "messages": [msg("user", f"What is {i}+{i}?"), msg("assistant", f"{trace}The answer is \\boxed{{{2 * i}}}.")],
        "metadata": json.dumps({"expected_answer": str(2 * i), "problem_source": ["aops", "gsm"][i % 2]}),
    }  # fmt: skip


def rows() -> list[dict]:
    out = [math_row(i) for i in range(10)]
    out.append({
        "uuid": f"chat-{EVIL}", "license": "<b>lic</b>", "generator": EVIL, "version": "v1", "category": "chat",
        "reasoning": "off", "metadata": "{not json",
        "messages": [msg("user", f"Привет, как дела? Расскажи длинную историю. {EVIL}"),
                     msg("assistant", "Хорошо! <img src=http://evil.example/a.png> <a href='https://evil.example'>x</a>")],
    })  # fmt: skip
    out.append({
        "uuid": "chat-han", "license": "CC BY 4.0", "generator": "Qwen3-235B-A22B", "version": "v1",
        "category": "chat", "reasoning": "off", "metadata": "{}",
        "messages": [msg("user", "你好，请介绍一下你自己"), msg("assistant", "我是一个助手。 Write to alice.smith@gmail.com")],
    })  # fmt: skip
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
    out.append({
        "uuid": "tool-1", "license": "CC BY 4.0", "generator": "Qwen3-235B-A22B", "version": "v1",
        "category": "tool_calling", "reasoning": "on", "metadata": json.dumps({"tools": tools}),
        "messages": [msg("user", "weather in Paris?"), msg("assistant", "", [call]), msg("tool", '{"temp": 20}'),
                     msg("assistant", "<think>ok</think>It is 20C."), msg("user", "thanks"),
                     msg("assistant", "<think>polite</think>You are welcome.")],
    })  # fmt: skip
    return out


@pytest.fixture
def parquet_file(tmp_path: Path) -> Path:
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows(), schema=NEMOTRON_SCHEMA), path, row_group_size=5)
    return path


def checks_available() -> bool:
    try:
        from posttrain.stages.checks import default_checks  # noqa: F401
    except ImportError:
        return False
    return True


def run_report(*args: str) -> dict:
    result = runner.invoke(app, ["report", *args])
    assert result.exit_code == 0, result.output
    return result


def test_json_counts_from_a_parquet_source(parquet_file: Path, tmp_path: Path) -> None:
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    run_report(str(parquet_file), "--html", str(out_html), "--json", str(out_json))
    r = json.loads(out_json.read_text())
    assert r["totals"]["rows"] == 13
    assert {k: v["rows"] for k, v in r["splits"].items()} == {"chat": 2, "math": 10, "tool_calling": 1}
    assert r["splits"]["math"]["reasoning"] == {"off": 5, "on": 5}
    assert r["splits"]["chat"]["reasoning"] == {"off": 2}
    assert r["splits"]["math"]["generators"] == {"DeepSeek-R1-0528": 10}
    assert r["splits"]["math"]["problem_sources"] == {"aops": 5, "gsm": 5}
    # Tokens are the Llama-3 tokenizer's, summed over every turn.
    math = [m["content"] for row in rows() if row["category"] == "math" for m in row["messages"]]
    assert r["splits"]["math"]["tokens"] == int(token_counts(math).sum())
    # Multi-turn seed metrics: input = every turn but the final assistant turn.
    tool = r["splits"]["tool_calling"]
    assert tool["seed_metrics"]["avg_input_chars"] == len("weather in Paris?") + len('{"temp": 20}') + len(
        "<think>ok</think>It is 20C."
    ) + len("thanks")
    assert tool["seed_metrics"]["avg_output_chars"] == len("<think>polite</think>You are welcome.")
    assert tool["messages_per_row"]["max"] == 6 and tool["messages_per_row"]["counts"][6] == 1
    assert tool["trace"]["count"] == 1  # the final assistant turn's trace only
    assert r["splits"]["math"]["trace"]["count"] == 5
    assert r["splits"]["chat"]["seed_metrics"]["malformed_rows"] == 1  # metadata is not JSON
    assert r["splits"]["chat"]["scripts"] == {"Cyrillic": 1, "Han": 1}
    assert r["splits"]["math"]["scripts"] == {"Latin": 10}
    if checks_available():
        assert r["checks_ran"]
        assert r["reasons"]["metadata.invalid_json"]["by_split"] == {"chat": 1}
        assert r["splits"]["chat"]["checks"]["reason_rows"]["metadata.invalid_json"] == 1
        assert r["splits"]["math"]["accuracy"]["rows_with_expected_answer"] == 10
        assert r["splits"]["math"]["accuracy"]["agreement_rate"] == 1.0
        assert r["splits"]["math"]["consistency"]["reasoning_tag_pass_rate"] == 1.0
        ex = r["reasons"]["metadata.invalid_json"]["examples"]["chat"]
        assert ex[0]["uuid"] == f"chat-{EVIL}"
        # Privacy hits are shown masked, in the JSON and in the page.
        assert r["reasons"]["privacy.email"]["examples"]["chat"][0]["uuid"] == "chat-han"
        assert "alice.smith@gmail.com" not in out_json.read_text() + out_html.read_text()
    else:
        assert not r["checks_ran"] and "checks_note" in r


def test_html_is_self_contained_and_escapes_dataset_strings(parquet_file: Path, tmp_path: Path) -> None:
    out_html = tmp_path / "r.html"
    run_report(str(parquet_file), "--html", str(out_html))
    page = out_html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()  # no script of ours, and the row's is escaped
    assert "&lt;script&gt;" in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "<link" not in page.lower() and "@import" not in page
    srcs = re.findall(r'<img src="([^"]*)"', page)
    assert len(srcs) >= 5 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for section in ("overview", "seed", "quality", "checks", "lengths", "scripts", "provenance", "pipeline"):
        assert f'id="{section}"' in page


def test_validate_dir_input(tmp_path: Path) -> None:
    base = [math_row(i) for i in range(6)]
    schema = NEMOTRON_SCHEMA.append(pa.field(REASONS, REASONS_TYPE))
    accepted = [dict(r, reasons=[]) for r in base[:4]]
    rejected = [dict(r, reasons=["math.mismatch"]) for r in base[4:5]] + [
        dict(base[5], reasons=["math.mismatch", "think.unclosed", "structure.role_order"])
    ]
    d = tmp_path / "val"
    (d / "accepted").mkdir(parents=True)
    (d / "rejects").mkdir()
    pq.write_table(pa.Table.from_pylist(accepted, schema=schema), d / "accepted" / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(rejected, schema=schema), d / "rejects" / "part-0.parquet")
    (d / "summary.json").write_text(json.dumps({"rows_in": 6, "accepted": 4, "rejected": 2}))
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    run_report(str(d), "--json", str(out_json), "--html", str(out_html), "--no-tokens")
    r = json.loads(out_json.read_text())
    assert r["checks_ran"] and r["length_unit"] == "chars"
    assert r["totals"]["rows"] == 6
    assert r["validate_summary"]["rejected"] == 2
    assert r["reasons"]["math.mismatch"]["rows"] == 2
    assert {e["uuid"] for e in r["reasons"]["math.mismatch"]["examples"]["math"]} == {"math-4", "math-5"}
    acc = r["splits"]["math"]["accuracy"]
    assert acc == {"rows_with_expected_answer": 6, "mismatch_rows": 2, "agreement_rate": pytest.approx(4 / 6)}
    assert r["splits"]["math"]["consistency"]["reasoning_tag_pass_rate"] == pytest.approx(5 / 6)
    assert r["splits"]["math"]["checks"]["rows_flagged"] == 2
    assert r["splits"]["math"]["consistency"]["role_order_pass_rate"] == pytest.approx(5 / 6)
    assert r["splits"]["math"]["seed_metrics"]["malformed_rows"] == 1  # from the structure code
    page = out_html.read_text()
    assert "math.mismatch" in page and "<details>" in page
    run_report(str(d), "--json", str(out_json), "--split", "chat", "--no-tokens")
    assert json.loads(out_json.read_text())["totals"]["rows"] == 0
    run_report(str(d), "--json", str(out_json), "--split", "math", "--limit", "5", "--no-tokens")
    assert json.loads(out_json.read_text())["totals"]["rows"] == 5


def test_result_does_not_depend_on_batch_size(parquet_file: Path) -> None:
    def report(batch_size: int) -> str:
        batches = iter_parquet_batches([parquet_file], batch_size=batch_size)
        return json.dumps(build_report(batches, checks=[], count_tokens=True), sort_keys=True)

    assert report(1) == report(4) == report(1000)


def test_dedup_clusters_and_rehydrate_summary(parquet_file: Path, tmp_path: Path) -> None:
    clusters = tmp_path / "dedup"
    clusters.mkdir()
    table = pa.table({"uuid": ["math-1", "math-3", "math-5", "math-2"], "cluster_id": [1, 1, 1, 2],
                      "kind": ["near", "near", "near", "exact"]})  # fmt: skip
    pq.write_table(table, clusters / "clusters.parquet")
    assert near_duplicate_stats(clusters, 13) == {
        "clusters_file": str(clusters / "clusters.parquet"), "clustered_rows": 4, "duplicates": 2, "clusters": 2,
        "duplicate_rate": 2 / 13, "by_kind": {"exact": 0, "near": 2},
    }  # fmt: skip
    # dedup's own summary and a `removed` flag take precedence when they are there.
    table = table.append_column("removed", pa.array([False, True, True, False]))
    pq.write_table(table, clusters / "clusters.parquet")
    (clusters / "summary.json").write_text(json.dumps({"rows_in": 13, "removed": 3, "removed_by_reason": {"dedup.exact": 1}}))
    nd = near_duplicate_stats(clusters, 13)
    assert nd["duplicates"] == 2 and nd["removed"] == 3 and nd["duplicate_rate"] == 3 / 13
    (tmp_path / "rh").mkdir()
    (tmp_path / "rh" / "summary.json").write_text(json.dumps({"restored": {"taco": 3}, "unrecoverable": 1}))
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    run_report(str(parquet_file), "--json", str(out_json), "--html", str(out_html), "--no-checks", "--no-tokens",
               "--dedup", str(clusters), "--rehydrate", str(tmp_path / "rh"))  # fmt: skip
    r = json.loads(out_json.read_text())
    assert r["near_duplicates"]["removed"] == 3
    assert r["restoration"] == {"restored": {"taco": 3}, "unrecoverable": 1}
    assert not r["checks_ran"] and "consistency" not in r["splits"]["math"]
    assert "restored.taco" in out_html.read_text()


def test_user_errors_are_one_line(parquet_file: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(parquet_file)])
    assert result.exit_code == 2 and "--html" in result.output and "Traceback" not in result.output
    result = runner.invoke(
        app, ["report", str(tmp_path / "nope.parquet"), "--html", str(tmp_path / "r.html")]
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    result = runner.invoke(
        app, ["report", str(parquet_file), "--json", str(tmp_path / "r.json"), "--dedup", str(tmp_path)]
    )
    assert result.exit_code == 2 and "clusters" in result.output


def test_bundled_sample_report(tmp_path: Path) -> None:
    sample = pytest.importorskip("posttrain.sample")
    root = Path(sample.sample_root())
    files = sorted((root / "data").glob("*.parquet"))
    if not files:
        pytest.skip("bundled sample not built yet")
    out_json = tmp_path / "r.json"
    run_report("--json", str(out_json), "--html", str(tmp_path / "r.html"), "--no-tokens")
    r = json.loads(out_json.read_text())
    expected: dict[str, int] = {}
    for f in files:
        for cat in pq.read_table(f, columns=["category"]).column("category").to_pylist():
            expected[cat] = expected.get(cat, 0) + 1
    assert {k: v["rows"] for k, v in r["splits"].items()} == expected
    manifest = json.loads((root / "manifest.json").read_text())
    if r["checks_ran"]:
        for code, planted in manifest.get("defects", {}).items():
            if code in r["reasons"]:  # every planted defect is reported, at least as often as planted
                assert r["reasons"][code]["rows"] >= planted["count"], code


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "dé", "猫", "x y"]), max_size=12), max_size=8))
def test_trigram_hashes_match_a_python_reference(texts_words: list[list[str]]) -> None:
    texts = [" ".join(ws) for ws in texts_words]
    ref = []
    for t in texts:
        words = t.lower().split()
        ref += [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    hashes = word_trigram_hashes(pa.array(texts, pa.string()))
    assert len(hashes) == len(ref)
    # Same 3-gram -> same hash; different 3-grams -> different hashes (64-bit: no collision expected).
    assert len(set(hashes.tolist())) == len(set(ref))
    sketch = DistinctSketch()
    sketch.add(hashes)
    assert abs(sketch.estimate() - len(set(ref))) <= 0.02 * len(set(ref)) + 1


def test_distinct_sketch_is_accurate_and_mergeable() -> None:
    rng = np.random.default_rng(0)
    data = np.frombuffer(rng.bytes(8 * 200_000), dtype=np.uint64)  # well-mixed 64-bit hashes
    whole, a, b = DistinctSketch(), DistinctSketch(), DistinctSketch()
    whole.add(np.concatenate([data, data[:50_000]]))
    a.add(data[:120_000])
    b.add(np.concatenate([data[120_000:], data[:50_000]]))
    a.merge(b)
    assert np.array_equal(a.registers, whole.registers) and a.total == whole.total == 250_000
    assert abs(whole.estimate() - 200_000) / 200_000 < 0.03
    assert whole.ratio() == pytest.approx(0.8, abs=0.03)


def test_scripts_and_histogram() -> None:
    texts = ["hello world", "Привет мир", "안녕하세요", "مرحبا", "नमस्ते", "こんにちは", "12345 !!", None]
    assert dominant_scripts(pa.array(texts)) == [
        "Latin",
        "Cyrillic",
        "Hangul",
        "Arabic",
        "Devanagari",
        "Kana",
        "none",
        "none",
    ]
    h = LogHistogram()
    h.add(np.array([0, 1, 10, 100, 10**7]))
    assert h.count == 5 and h.counts[0] == 1 and h.counts[-1] == 1
    assert len(h.counts) == len(LENGTH_EDGES)


def test_render_html_escapes_every_dataset_string() -> None:
    r = build_report(
        [pa.RecordBatch.from_pylist(rows(), schema=NEMOTRON_SCHEMA)], checks=[], count_tokens=False
    )
    r["source"] = EVIL
    r["restoration"] = {EVIL: EVIL}
    page = render_html(r)
    assert "<script" not in page.lower() and page.count("&lt;script&gt;") >= 3
    assert "<b>lic</b>" not in page and "&lt;b&gt;lic&lt;/b&gt;" in page


def test_docstring_examples() -> None:
    import doctest
    import importlib

    # (the --split parsing example moved with the function to posttrain.io.sources.discover.parse_splits)
    for name in ("posttrain.jobs.report.text", "posttrain.jobs.report.stats", "posttrain.jobs.report.counters", "posttrain.jobs.report.plots",
                 "posttrain.jobs.report.html", "posttrain.io.sources.discover"):  # fmt: skip
        result = doctest.testmod(importlib.import_module(name))
        assert result.failed == 0 and result.attempted > 0, name


def test_without_checks_the_report_says_so() -> None:
    batch = pa.RecordBatch.from_pylist(rows(), schema=NEMOTRON_SCHEMA)
    r = build_report([batch], checks=None, count_tokens=False)
    assert not r["checks_ran"] and "unavailable" in r["checks_note"]
    assert "accuracy" not in r["splits"]["math"] and r["reasons"] == {}
    assert "Needs the checks" in render_html(r)
