"""Tool calling: declared tools are valid function specs; every call names one, passes JSON arguments
that validate against its schema (jsonschema), and gets a reply before the next user turn.

Only rows that declare tools or make calls reach Python (Arrow picks them out); validators are
cached per schema text because tool rows reuse the same few specs.

>>> spec = '{"tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object",'\\
...     ' "properties": {"a": {"type": "integer"}}, "required": ["a"]}}}]}'
>>> call = lambda args: {"id": "1", "type": "function", "function": {"name": "add", "arguments": args}}
>>> row = lambda args: [{"role": "user", "content": "q"}, {"role": "assistant", "content": "", "tool_calls": [call(args)]},
...     {"role": "tool", "content": "3"}, {"role": "assistant", "content": "3"}]
>>> tool_faults(spec, row('{"a": 1}')), tool_faults(spec, row('{"a": "x"}')), tool_faults(spec, row("{a"))
([], ['tools.arguments_schema'], ['tools.arguments_not_json'])
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.stage import add_reasons, register_reason
from posttrain.stages.checks._base import Check, flat_messages, rows_any, shorten, to_bool

register_reason("tools.invalid_spec", "error", "metadata.tools is not a list of valid function specs")
register_reason("tools.unknown_tool", "error", "a tool call names a tool that is not declared")
register_reason("tools.arguments_not_json", "error", "tool call arguments are not a JSON object")
register_reason("tools.arguments_schema", "error", "tool call arguments do not match the tool's schema")
register_reason("tools.no_reply", "error", "a tool call gets no tool reply before the next user turn")

_ANY_OBJECT = '{"type": "object"}'


@lru_cache(maxsize=4096)
def _validator(schema_text: str) -> Any | None:
    """A compiled validator for a JSON Schema given as canonical JSON text; None when the schema is invalid."""
    import jsonschema  # here, not at the top: ~0.1 s of start-up that sources without tool specs never need

    schema = json.loads(schema_text)
    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
    except jsonschema.SchemaError:
        return None
    return cls(schema)


def declared_tools(metadata: str | None) -> tuple[dict[str, str] | None, bool]:
    """(name -> schema text, spec_ok) from the metadata JSON; (None, True) when no tools are declared.

    >>> declared_tools('{"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]}')
    ({}, False)
    """
    try:
        meta = json.loads(metadata) if metadata else {}
    except (ValueError, RecursionError):
        return None, True  # broken metadata is metadata.invalid_json
    if not isinstance(meta, dict) or "tools" not in meta:
        return None, True
    tools = meta["tools"]
    if not isinstance(tools, list):
        return {}, False
    out: dict[str, str] = {}
    ok = True
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type", "function") != "function":
            ok = False
            continue
        name, params = fn.get("name"), fn.get("parameters", {"type": "object"})
        if not isinstance(name, str) or not name or not isinstance(params, dict):
            ok = False
            continue
        schema_text = json.dumps(params, sort_keys=True)
        if _validator(schema_text) is None:
            ok = False
            continue
        out[name] = schema_text
    return out, ok


def tool_faults(metadata: str | None, messages: list[dict[str, Any]]) -> list[str]:
    """The tool codes of one row, in a stable order."""
    tools, spec_ok = declared_tools(metadata)
    faults: set[str] = set() if spec_ok else {"tools.invalid_spec"}
    known = tools or {}
    for i, m in enumerate(messages):
        calls = (m.get("tool_calls") or []) if m.get("role") == "assistant" else []
        if not calls:
            continue
        nxt = messages[i + 1] if i + 1 < len(messages) else None
        if nxt is None or nxt.get("role") != "tool":
            faults.add("tools.no_reply")
        for call in calls:
            faults.update(_call_faults(call, known, spec_ok))
    order = ("tools.invalid_spec", "tools.unknown_tool", "tools.arguments_not_json", "tools.arguments_schema")
    return [c for c in (*order, "tools.no_reply") if c in faults]


def _call_faults(call: dict[str, Any] | None, known: dict[str, str], spec_ok: bool) -> list[str]:
    fn = (call or {}).get("function") or {}
    name = fn.get("name")
    if name not in known:
        # with a broken spec list the tool may be the broken one: that is already invalid_spec
        return [] if not spec_ok else ["tools.unknown_tool"]
    fault = _arguments_fault(known[name], fn.get("arguments") or "")
    return [fault] if fault else []


@lru_cache(maxsize=65536)
def _arguments_fault(schema_text: str, arguments: str) -> str | None:
    """The code for one call's arguments against one schema (cached: tool rows repeat their calls,
    and jsonschema validation is the slowest step of this check)."""
    try:
        args = json.loads(arguments)
    except (ValueError, RecursionError):
        return "tools.arguments_not_json"
    if not isinstance(args, dict):
        return "tools.arguments_not_json"
    validator = _validator(schema_text)
    if validator is not None and not validator.is_valid(args):
        return "tools.arguments_schema"
    return None


class ToolCallCheck(Check):
    """Tool specs, calls and replies of rows that declare tools or call them."""

    name = "tool_calls"
    family = "tools"
    codes: ClassVar[tuple[str, ...]] = (
        "tools.invalid_spec",
        "tools.unknown_tool",
        "tools.arguments_not_json",
        "tools.arguments_schema",
        "tools.no_reply",
    )

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        fm = flat_messages(batch)
        rows = rows_any(fm, fm.has_calls) | to_bool(pc.match_substring(batch.column("metadata"), '"tools"'))
        if not rows.any():
            return batch
        metadata, messages = batch.column("metadata"), batch.column("messages")
        codes: list[list[str] | None] = [None] * batch.num_rows
        for i in np.nonzero(rows)[0]:
            i = int(i)
            codes[i] = tool_faults(metadata[i].as_py(), messages[i].as_py() or []) or None
        return add_reasons(batch, codes)

    def describe(self, row: dict[str, Any], code: str) -> str:
        known, _ = declared_tools(row.get("metadata"))
        calls = [
            c.get("function") or {}
            for m in row.get("messages") or []
            for c in (m.get("tool_calls") or [])
            if m.get("role") == "assistant"
        ]
        text = "; ".join(f"{f.get('name')}({f.get('arguments')})" for f in calls)
        return shorten(f"declared {sorted(known or {})}; calls: {text}")
