"""`posttrain validate`: the runner on real parquet files and the command line."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from posttrain.io.sources import open_source
from posttrain.jobs.validate import parse_fail_on, run_validate
from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stages.checks import build_checks

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def m(role, content, calls=None):
    return {"role": role, "content": content, "tool_calls": calls or []}


def rows(n=40):
    out = []
    for i in range(n):
        kind = i % 5
        base = {"uuid": f"r{i:03d}", "license": "CC BY 4.0", "generator": "g", "version": "v1", "metadata": "{}"}
        if kind == 0:  # clean math
            out.append({**base, "category": "math", "reasoning": "on", "metadata": json.dumps({"expected_answer": "4"}),
                        "messages": [m("user", "2+2?"), m("assistant", "<think>add</think>\\boxed{4}")]})  # fmt: skip
        elif kind == 1:  # wrong math answer: error
            out.append({**base, "category": "math", "reasoning": "on", "metadata": json.dumps({"expected_answer": "4"}),
                        "messages": [m("user", "2+2?"), m("assistant", "<think>add</think>\\boxed{5}")]})  # fmt: skip
        elif kind == 2:  # clean chat with an e-mail: warning, kept
            out.append({**base, "category": "chat", "reasoning": "off",
                        "messages": [m("user", "mail bob.smith@corp.io"), m("assistant", "Done.")]})  # fmt: skip
        elif kind == 3:  # unclosed trace: error
            out.append({**base, "category": "chat", "reasoning": "on",
                        "messages": [m("user", "hi"), m("assistant", "<think>hmm")]})  # fmt: skip
        else:  # clean code
            out.append({**base, "category": "code", "reasoning": "on",
                        "messages": [m("user", "sum"), m("assistant", "<think>t</think>```python\nprint(1)\n```")]})  # fmt: skip
    return out


@pytest.fixture()
def data_dir(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    table = pa.Table.from_pylist(rows(), schema=NEMOTRON_SCHEMA)
    pq.write_table(table, d / "mixed-00000-of-00001.parquet", row_group_size=16)
    return d


def read(path):
    return pq.read_table(path)


def test_run_validate_routes_and_counts(data_dir, tmp_path):
    checks = build_checks(None)
    summary = run_validate(open_source(str(data_dir)), tmp_path / "out", checks=checks)
    assert (summary.rows_in, summary.accepted, summary.rejected) == (40, 24, 16)
    acc, rej = read(tmp_path / "out" / "accepted"), read(tmp_path / "out" / "rejects")
    assert acc.num_rows == 24 and rej.num_rows == 16
    assert set(rej.column_names) == set(NEMOTRON_SCHEMA.names) | {"reasons", "snippet"}
    assert {tuple(r) for r in rej.column("reasons").to_pylist()} == {("math.mismatch",), ("think.unclosed",)}
    kept_warn = [r for r in acc.to_pylist() if r["reasons"]]
    assert len(kept_warn) == 8 and all(r["reasons"] == ["privacy.email"] for r in kept_warn)
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert data["counts"]["math.mismatch"] == {"math": 8}
    assert data["counts"]["think.unclosed"] == {"chat": 8}
    assert data["severity"]["privacy.email"] == "warn" and data["severity"]["math.mismatch"] == "error"
    assert len(data["examples"]["privacy.email"]["chat"]) == 3
    snippets = [e["snippet"] for e in data["examples"]["privacy.email"]["chat"]]
    assert all("bob.smith" not in s and "@" in s for s in snippets)  # masked
    assert data["splits"]["math"] == {"rows_in": 16, "accepted": 8, "rejected": 8}
    assert "boxed" in rej.column("snippet")[0].as_py() or "…" in rej.column("snippet")[0].as_py()


def test_severity_override_and_fail_on(data_dir, tmp_path):
    s = run_validate(open_source(str(data_dir)), tmp_path / "o", checks=build_checks("math,privacy"),
                     severity_overrides={"math.mismatch": "warn", "privacy.email": "error"},
                     fail_on={"error": 0.1, "math.mismatch": 0.5})  # fmt: skip
    assert s.rejected == 8 and s.counts["math.mismatch"] == {"math": 8}
    assert [e["key"] for e in s.exceeded] == ["error"]
    assert parse_fail_on(["error=5%"]) == {"error": 0.05}


def test_same_bytes_for_any_batch_size_and_worker_count(data_dir, tmp_path):
    outs = []
    for k, (batch_size, workers) in enumerate([(7, 1), (64, 1), (5, 2)]):
        out = tmp_path / f"o{k}"
        run_validate(open_source(str(data_dir)), out, checks=build_checks("structure,reasoning,privacy"),
                     batch_size=batch_size, workers=workers)  # fmt: skip
        outs.append(out)
    for name in ("accepted/part-00000.parquet", "rejects/part-00000.parquet"):
        blobs = {(o / name).read_bytes() for o in outs}
        assert len(blobs) == 1, name


def test_unreadable_rows_are_rejected_not_lost(tmp_path):
    d = tmp_path / "jsonl"
    d.mkdir()
    good = rows(5)
    lines = [json.dumps(r) for r in good] + ["{not json"]
    (d / "chat.jsonl").write_text("\n".join(lines) + "\n")
    s = run_validate(open_source(str(d)), tmp_path / "o", checks=build_checks("structure"))
    assert s.rows_in == 6 and s.rows_in == s.accepted + s.rejected
    assert s.counts.get("source.bad_json") or any(c.startswith("source.") for c in s.counts)


def test_cli(data_dir, tmp_path):
    from posttrain.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["validate", str(data_dir), "--out", str(out), "--no-progress", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "rows_in 40 == accepted 24 + rejected 16" in res.output
    assert json.loads((out / "summary.json").read_text())["rows_in"] == 40
    res = runner.invoke(app, ["validate", str(data_dir), "--out", str(out), "--no-progress", "--workers", "1",
                              "--fail-on", "error=0.05", "--severity", "privacy.email=error"])  # fmt: skip
    assert res.exit_code == 1 and "fail-on" in res.output
    res = runner.invoke(app, ["validate", str(data_dir), "--out", str(out), "--checks", "structure,nope"])
    assert res.exit_code == 2 and "unknown check family nope" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["validate", str(data_dir), "--out", str(out), "--fail-on", "error"])
    assert res.exit_code == 2 and "--fail-on" in res.output


def test_cli_on_bundled_sample_with_split_and_limit(tmp_path):
    from posttrain.cli import app

    res = CliRunner().invoke(app, ["validate", "--split", "stem", "--limit", "100", "--out", str(tmp_path / "s"),
                                   "--no-progress", "--workers", "1", "--checks", "stem,structure"])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["rows_in"] == 100 and list(summary["splits"]) == ["stem"]
