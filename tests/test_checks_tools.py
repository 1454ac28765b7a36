"""Tool calls against declared function specs (jsonschema), and replies."""

from __future__ import annotations

import json

import pyarrow as pa

from posttrain.schema import NEMOTRON_SCHEMA
from posttrain.stages.checks.tools import ToolCallCheck, declared_tools

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
    "required": ["city"]}}}  # fmt: skip


def call(args, name="get_weather", cid="call_1"):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def row(calls, tools=(WEATHER,), reply=True, meta=None):
    msgs = [{"role": "user", "content": "weather?", "tool_calls": []},
            {"role": "assistant", "content": "", "tool_calls": calls}]  # fmt: skip
    if reply:
        msgs += [{"role": "tool", "content": '{"temp": 20}', "tool_calls": []} for _ in calls]
    msgs.append({"role": "assistant", "content": "20 degrees", "tool_calls": []})
    metadata = meta if meta is not None else json.dumps({"tools": list(tools)})
    return {"uuid": "u", "category": "tool_calling", "reasoning": "on", "messages": msgs, "metadata": metadata}


def run(*rows):
    b = pa.RecordBatch.from_pylist(list(rows), schema=NEMOTRON_SCHEMA)
    return ToolCallCheck().process(b).column("reasons").to_pylist()


def test_tool_codes():
    rows = [
        row([call('{"city": "Oslo"}')]),
        row([call('{"city": "Oslo", "days": 2}'), call('{"city": "Rome"}', cid="call_2")]),
        row([call('{"city": "Oslo"}', name="get_time")]),
        row([call("{city: Oslo}")]),
        row([call('["Oslo"]')]),
        row([call('{"days": 0}')]),
        row([call('{"city": "Oslo"}')], reply=False),
        row([call('{"city": "Oslo"}')], tools=[{"type": "function", "function": {"name": "x", "parameters": {"type": 5}}}]),
        row([call('{"city": "Oslo"}', cid="")]),  # calls without ids are fine
    ]
    assert run(*rows) == [
        [], [], ["tools.unknown_tool"], ["tools.arguments_not_json"], ["tools.arguments_not_json"],
        ["tools.arguments_schema"], ["tools.no_reply"], ["tools.invalid_spec"], [],
    ]  # fmt: skip


def test_calls_without_declared_tools_and_untouched_rows():
    plain = {"uuid": "p", "category": "chat", "reasoning": "off", "metadata": "{}",
             "messages": [{"role": "user", "content": "hi", "tool_calls": []},
                          {"role": "assistant", "content": "hello", "tool_calls": []}]}  # fmt: skip
    assert run(row([call('{"city": "Oslo"}')], meta="{}"), plain) == [["tools.unknown_tool"], []]


def test_declared_tools_parses_specs():
    names, ok = declared_tools(json.dumps({"tools": [WEATHER, {"type": "function", "function": {"name": "n"}}]}))
    assert ok and sorted(names) == ["get_weather", "n"]
    assert declared_tools(json.dumps({"tools": "nope"})) == ({}, False)
    assert declared_tools("{}") == (None, True)
