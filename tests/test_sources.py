"""Sources: hub layout, local files, normalizers, streaming, and every bad input of issue 2 item 5."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from posttrain.cli import app
from posttrain.errors import SourceError
from posttrain.io.sources import open_source
from posttrain.io.sources.normalize import convert_row, detect_format, parse_llama3_prompt
from posttrain.schema import NEMOTRON_SCHEMA, hub_features

runner = CliRunner()


def v1_row(i: int, category: str = "math") -> dict:
    return {
        "uuid": f"{category}-{i}",
        "license": "CC BY 4.0",
        "generator": "DeepSeek-R1-0528",
        "version": "v1",
        "category": category,
        "reasoning": "on",
        "messages": [
            {"role": "user", "content": f"What is {i} + 1?", "tool_calls": None},
            {"role": "assistant", "content": f"<think>\nadd one\n</think>\n\n\\boxed{{{i + 1}}}", "tool_calls": None},
        ],
        "metadata": json.dumps({"expected_answer": str(i + 1)}),
    }


def tool_row() -> dict:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    return {
        "uuid": "tool-0",
        "license": "CC BY 4.0",
        "generator": "Qwen3-235B-A22B",
        "version": "v1",
        "category": "tool_calling",
        "reasoning": "on",
        "messages": [
            {"role": "user", "content": "Weather in Paris?", "tool_calls": None},
            {"role": "assistant", "content": "<think>\ncall it\n</think>\n\n", "tool_calls": [call]},
            {"role": "tool", "content": '{"temp": 20}', "tool_calls": None},
            {"role": "assistant", "content": "It is 20 °C in Paris.", "tool_calls": None},
        ],
        "metadata": json.dumps({"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]}),
    }


@pytest.fixture()
def hub_dir(tmp_path: Path) -> Path:
    """A directory laid out like the hub repo: data/<split>-*.parquet, tool_calling in data/tool-*."""
    data = tmp_path / "hub" / "data"
    data.mkdir(parents=True)
    for split, n in (("math", 250), ("code", 40)):
        table = pa.Table.from_pylist([v1_row(i, split) for i in range(n)], schema=NEMOTRON_SCHEMA)
        pq.write_table(table, data / f"{split}-00000-of-00002.parquet", row_group_size=50)
        pq.write_table(table.slice(0, 10), data / f"{split}-00001-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist([tool_row()], schema=NEMOTRON_SCHEMA), data / "tool-00000-of-00001.parquet")
    return tmp_path / "hub"


def test_schema_is_the_hub_declared_features():
    assert hub_features().arrow_schema.equals(NEMOTRON_SCHEMA, check_metadata=False)
    msg = NEMOTRON_SCHEMA.field("messages").type.value_type
    assert [msg.field(i).name for i in range(msg.num_fields)] == ["role", "content", "tool_calls"]
    call = msg.field("tool_calls").type.value_type
    assert call.field("function").type.field("arguments").type == pa.string()


def test_hub_layout_split_selection_and_tool_prefix(hub_dir: Path):
    src = open_source("nvidia/Nemotron-Post-Training-Dataset-v1", hub_mirror=hub_dir, split=["tool_calling", "code"])
    assert src.splits == ["code", "tool_calling"]
    rows = [r for b in src.iter_batches() for r in b.to_pylist()]
    assert len(rows) == 51
    assert {r["category"] for r in rows} == {"code", "tool_calling"}
    # hf:// spelling resolves the same way
    src2 = open_source("hf://datasets/nvidia/Nemotron-Post-Training-Dataset-v1", hub_mirror=hub_dir)
    assert src2.num_rows == 250 + 10 + 40 + 10 + 1


def test_fragments_come_from_metadata_and_stream_in_batches(hub_dir: Path):
    src = open_source(str(hub_dir), split="math", unit_rows=100)
    assert [f.num_rows for f in src.fragments] == [100, 100, 50, 10]
    assert all(f.num_bytes > 0 for f in src.fragments)
    batches = list(src.iter_batches(batch_size=32))
    assert len(batches) > 5
    assert all(b.num_rows <= 32 for b in batches)
    assert all(b.schema.equals(NEMOTRON_SCHEMA) for b in batches)
    assert sum(b.num_rows for b in batches) == 260


def test_column_projection_and_limit(hub_dir: Path):
    src = open_source(str(hub_dir), split="math", columns=["uuid", "category"], limit=7)
    batches = list(src.iter_batches(batch_size=5))
    assert batches[0].schema.names == ["uuid", "category"]
    assert sum(b.num_rows for b in batches) == 7


def test_tool_calls_survive_reading(hub_dir: Path):
    src = open_source(str(hub_dir), split="tool_calling")
    row = next(src.iter_batches()).to_pylist()[0]
    call = row["messages"][1]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


# ---- normalizers -------------------------------------------------------------------------------


def test_v2_row_keeps_system_message_and_extra_fields():
    row = {
        "uuid": "v2-1",
        "license": "CC BY 4.0",
        "generator": "Qwen3-235B-A22B, Qwen3-30B-A3B",
        "version": "v2",
        "category": "chat",
        "reasoning": "off",
        "messages": [
            {"role": "system", "content": ""},
            {"role": "user", "content": "Hola"},
            {"role": "assistant", "content": "<think></think>¡Hola!"},
        ],
        "language": "es",
    }
    assert detect_format(pa.schema([(k, pa.string()) for k in row])) == "nemotron-v2"
    out = convert_row(row, "nemotron-v2")
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant"]
    assert out["messages"][2]["tool_calls"] is None
    assert out["generator"] == "Qwen3-235B-A22B, Qwen3-30B-A3B"
    assert json.loads(out["metadata"]) == {"language": "es"}
    pa.RecordBatch.from_pylist([out], schema=NEMOTRON_SCHEMA)


def test_llama_nemotron_v11_row():
    row = {
        "input": [{"role": "user", "content": "Prove 1+1=2"}],
        "output": "<think>\nPeano.\n</think>\n\nBy definition.",
        "category": "math",
        "license": "cc-by-4.0",
        "reasoning": "on",
        "generator": "DeepSeek-R1",
        "used_in_training": "Ultra, Nano",
        "version": "v1.1",
        "system_prompt": "detailed thinking on",
    }
    out = convert_row(row, "llama-nemotron")
    assert [m["role"] for m in out["messages"]] == ["user", "assistant"]
    assert out["messages"][1]["content"] == row["output"]
    meta = json.loads(out["metadata"])
    assert meta == {"used_in_training": ["Ultra", "Nano"], "system_prompt": "detailed thinking on"}
    assert out["reasoning"] == "on" and out["uuid"] == convert_row(row, "llama-nemotron")["uuid"]


def test_llama_nemotron_text_form_is_parsed_back_into_messages():
    text = (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\ndetailed thinking off<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWrite hello world in C.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    row = {"input": text, "output": "```c\nputs(\"hi\");\n```<|eot_id|>", "category": "code", "reasoning": "off",
           "license": "cc-by-4.0", "generator": "Llama-3.3-70B-Instruct", "version": "v1", "used_in_training": "Super"}
    assert detect_format(pa.schema([("input", pa.string()), ("output", pa.string())])) == "llama-nemotron-text"
    out = convert_row(row, "llama-nemotron-text")
    assert out["messages"] == [
        {"role": "user", "content": "Write hello world in C.", "tool_calls": None},
        {"role": "assistant", "content": '```c\nputs("hi");\n```', "tool_calls": None},
    ]
    assert json.loads(out["metadata"])["system_prompt"] == "detailed thinking off"
    assert out["reasoning"] == "off"


def test_llama3_parser_rejects_garbage():
    from posttrain.io.sources.normalize import RowError

    with pytest.raises(RowError):
        parse_llama3_prompt("no headers here")


def test_openai_messages_jsonl(tmp_path: Path):
    path = tmp_path / "chat.jsonl.gz"
    rows = [
        {
            "id": "a1",
            "messages": [
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "calc", "arguments": {"expr": "2+2"}}}]},
                {"role": "tool", "tool_call_id": "c", "content": "4"},
                {"role": "assistant", "content": "4"},
            ],
            "tools": [{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}],
            "source": "mine",
        }
    ]
    with gzip.open(path, "wt") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    src = open_source(str(path))
    out = next(src.iter_batches()).to_pylist()[0]
    assert out["uuid"] == "a1" and out["category"] == "chat"  # category from the file name
    assert out["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"expr": "2+2"}'
    meta = json.loads(out["metadata"])
    assert meta["tools"][0]["function"]["name"] == "calc" and meta["source"] == "mine"


# ---- bad inputs: one clear line, non-zero exit, no traceback --------------------------------------


def _cli(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


def test_missing_path(tmp_path: Path):
    r = _cli("info", str(tmp_path / "nope"))
    assert r.exit_code == 2 and "no such file or directory" in r.output


def test_not_parquet_or_jsonl(tmp_path: Path):
    p = tmp_path / "notes.txt"
    p.write_text("hello")
    r = _cli("info", str(p))
    assert r.exit_code == 2 and "not a parquet or JSONL file" in r.output


def test_wrong_schema_names_the_column(tmp_path: Path):
    bad = pa.Table.from_pylist([v1_row(0)]).set_column(
        0, "uuid", pa.array([1], type=pa.int64())
    )
    p = tmp_path / "math-00000-of-00001.parquet"
    pq.write_table(bad, p)
    r = _cli("info", str(p))
    assert r.exit_code == 2
    assert "column 'uuid' is int64, expected string" in r.output and str(p) in r.output


def test_truncated_parquet(tmp_path: Path, hub_dir: Path):
    good = hub_dir / "data" / "math-00000-of-00002.parquet"
    p = tmp_path / "math-00000-of-00001.parquet"
    p.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    r = _cli("inspect", str(p))
    assert r.exit_code == 2 and "corrupt or truncated" in r.output


def test_unknown_split(hub_dir: Path):
    r = _cli("info", str(hub_dir), "--split", "poetry")
    assert r.exit_code == 2 and "unknown split 'poetry'" in r.output and "math" in r.output


def test_debug_shows_traceback(tmp_path: Path):
    r = runner.invoke(app, ["--debug", "info", str(tmp_path / "nope")])
    assert r.exit_code == 2


def test_bad_jsonl_line_is_reported_and_rest_is_read(tmp_path: Path):
    p = tmp_path / "math.jsonl"
    lines = [json.dumps(v1_row(0)), "{not json", json.dumps(v1_row(1)), "[1, 2]", json.dumps(v1_row(2))]
    p.write_text("\n".join(lines) + "\n")
    src = open_source(str(p))
    rows = [r for b in src.iter_batches() for r in b.to_pylist()]
    assert [r["uuid"] for r in rows] == ["math-0", "math-1", "math-2"]
    assert [b.place for b in src.read_log.bad_rows] == [f"{p}:2", f"{p}:4"]
    assert src.read_log.bad_rows[0].code == "source.bad_json"
    # with reasons, the broken lines come along as reject rows, so nothing is lost
    src = open_source(str(p))
    batches = list(src.iter_batches(with_reasons=True))
    allrows = [r for b in batches for r in b.to_pylist()]
    assert len(allrows) == 5
    assert sorted(r["uuid"] for r in allrows if r["reasons"]) == [f"{p}:2", f"{p}:4"]


def test_bad_row_inside_parquet_is_reported(tmp_path: Path):
    rows = [{"input": [{"role": "user", "content": "hi"}], "output": "hello", "category": "chat"},
            {"input": [{"role": "user", "content": "x"}], "output": None, "category": "chat"}]
    p = tmp_path / "chat.parquet"
    pq.write_table(pa.Table.from_pylist(rows), p)
    src = open_source(str(p))
    good = [r for b in src.iter_batches() for r in b.to_pylist()]
    assert len(good) == 1 and src.read_log.bad_count == 1
    assert "row 1" in src.read_log.bad_rows[0].place and "'output' is not a string" in src.read_log.bad_rows[0].message


def test_corrupt_row_group_is_skipped_and_counted(tmp_path: Path, hub_dir: Path):
    good = hub_dir / "data" / "math-00000-of-00002.parquet"
    data = bytearray(good.read_bytes())
    meta = pq.ParquetFile(good).metadata
    col = meta.row_group(1).column(6)  # messages, second row group
    start = col.data_page_offset
    data[start : start + 64] = b"\xff" * 64  # smash the page header
    p = tmp_path / "math-00000-of-00001.parquet"
    p.write_bytes(bytes(data))
    src = open_source(str(p), unit_rows=50)
    rows = [r for b in src.iter_batches(with_reasons=True) for r in b.to_pylist()]
    assert len(rows) == 250  # every row is accounted for: read, or a reject row
    lost = [r for r in rows if r["reasons"]]
    assert len(lost) == 50 and all(r["reasons"] == ["source.unreadable"] for r in lost)


def test_info_and_inspect_on_hub_layout(hub_dir: Path):
    r = _cli("info", str(hub_dir), "--json")
    assert r.exit_code == 0
    info = json.loads(r.output)
    assert set(info["splits"]) == {"math", "code", "tool_calling"}
    assert info["total"]["rows"] == 311
    r = _cli("inspect", str(hub_dir), "--split", "tool_calling", "--n", "1")
    assert r.exit_code == 0
    assert "get_weather" in r.output and "tool" in r.output and "Paris" in r.output


def test_inspect_by_uuid(hub_dir: Path):
    r = _cli("inspect", str(hub_dir), "--uuid", "code-3")
    assert r.exit_code == 0 and "code-3" in r.output and "math-3" not in r.output
    r = _cli("inspect", str(hub_dir), "--uuid", "nope")
    assert r.exit_code == 1


def test_source_error_type():
    with pytest.raises(SourceError):
        open_source("/definitely/not/here")


def test_copy_of_layout_is_independent_of_cwd(hub_dir: Path, tmp_path: Path, monkeypatch):
    dst = tmp_path / "copy"
    shutil.copytree(hub_dir, dst)
    monkeypatch.chdir(dst)
    assert open_source(".").num_rows == 311
