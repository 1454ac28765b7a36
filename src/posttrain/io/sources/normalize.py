"""Bring same-shape datasets to the v1 schema, losing nothing.

Formats, detected from the columns (or forced with `format=`):

- `nemotron-v1`: already the schema; only cast (large types, a missing `tool_calls` field).
- `nemotron-v2`: no `metadata`, no `tool_calls`, a leading system message kept as a message,
  generator possibly comma-joined (kept as is).
- `llama-nemotron`: `input` (list of messages) + `output` (string), `system_prompt` "detailed thinking on/off".
  RL rows (`RL/instruction_following/*.jsonl`) have `input` and `args` but no `output`: they are read
  as prompts without a response (no assistant turn; `args` kept in `metadata`), which the structure
  check marks `prompt.no_response` (a warning: loadable; `prepare` rejects them).
- `llama-nemotron-text`: the older form whose `input` is one string with the Llama-3 chat template baked in.
- `openai`: any table with an OpenAI-style `messages` column (and maybe `tools`).

Columns with no place in the schema go into `metadata` (a JSON object) so nothing is dropped.
A row that cannot be converted raises `RowError`; the reader reports it with its location and
goes on with the rest.
"""

from __future__ import annotations

import json
import re
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from posttrain.errors import SourceError
from posttrain.schema import MESSAGE_TYPE, NEMOTRON_SCHEMA, schema_differences

FORMATS = ("nemotron-v1", "nemotron-v2", "llama-nemotron", "llama-nemotron-text", "openai")
_SCALARS = ("uuid", "license", "generator", "version", "category", "reasoning")
# A fixed namespace so derived uuids are stable across runs and machines.
_UUID_NS = uuidlib.UUID("6f1c3a52-8d0e-4a8f-9b43-5f1e2d7c9a10")


class RowError(ValueError):
    """One row that cannot be brought to the schema."""


def detect_row_format(row: dict[str, Any]) -> str:
    """The format of one JSON object (JSONL sources), by the same rules as `detect_format`.

    >>> detect_row_format({"messages": [], "uuid": "u", "category": "chat", "reasoning": "on", "metadata": "{}"})
    'nemotron-v1'
    """
    names = set(row)
    if "messages" not in names and "input" in names:  # Llama-Nemotron; RL rows have no `output`
        kind = pa.string() if isinstance(row["input"], str) else pa.list_(pa.null())
        return detect_format(pa.schema([("input", kind), ("output", pa.string())]))
    return detect_format(pa.schema([(n, pa.null()) for n in names]))


def detect_format(schema: pa.Schema) -> str:
    """The format of a table from its columns.

    >>> detect_format(pa.schema([("input", pa.string()), ("output", pa.string())]))
    'llama-nemotron-text'
    >>> from posttrain.schema import NEMOTRON_SCHEMA
    >>> detect_format(NEMOTRON_SCHEMA)
    'nemotron-v1'
    """
    names = set(schema.names)
    if "messages" in names:
        if {"uuid", "category", "reasoning", "metadata"} <= names:
            return "nemotron-v1"
        if {"uuid", "category", "reasoning"} <= names:
            return "nemotron-v2"
        return "openai"
    if "input" in names and ("output" in names or "args" in names):
        t = schema.field("input").type
        return "llama-nemotron-text" if pa.types.is_string(t) or pa.types.is_large_string(t) else "llama-nemotron"
    raise SourceError(
        f"cannot tell the dataset format from its columns ({', '.join(schema.names) or 'none'})",
        fix="expected a 'messages' column (Nemotron v1/v2, OpenAI style) or 'input' + 'output' "
        "(Llama-Nemotron); or pass --format",
    )


def check_v1_schema(schema: pa.Schema, place: str) -> None:
    """Raise a SourceError naming the first column whose type is not the v1 one.

    A `messages` struct without `tool_calls` is accepted (it is filled with nulls).
    """
    diffs = [d for d in schema_differences(schema) if not d.startswith("column 'messages'")]
    if "messages" in schema.names and not _messages_compatible(schema.field("messages").type):
        diffs.insert(0, f"column 'messages' is {schema.field('messages').type}, expected {NEMOTRON_SCHEMA.field('messages').type}")
    if diffs:
        raise SourceError(diffs[0], place=place, fix="this file does not have the Nemotron v1 schema; pass --format")


def _messages_compatible(t: pa.DataType) -> bool:
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or not pa.types.is_struct(t.value_type):
        return False
    names = [t.value_type.field(i).name for i in range(t.value_type.num_fields)]
    return "role" in names and "content" in names


def normalize_v1(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Cast a v1 batch to the exact schema (vectorized; rows are not touched one by one)."""
    if batch.schema.equals(NEMOTRON_SCHEMA):
        return batch
    msgs_type = batch.schema.field("messages").type.value_type
    has_calls = msgs_type.get_field_index("tool_calls") >= 0
    if not has_calls:
        return _from_rows(batch.to_pylist(), _v1_row)
    table = pa.Table.from_batches([batch]).select(NEMOTRON_SCHEMA.names)
    return table.cast(NEMOTRON_SCHEMA).combine_chunks().to_batches()[0] if table.num_rows else _empty()


def _empty() -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=NEMOTRON_SCHEMA)


def _from_rows(rows: list[dict[str, Any]], convert: Callable[[dict[str, Any]], dict[str, Any]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([convert(r) for r in rows], schema=NEMOTRON_SCHEMA)


def derive_uuid(*parts: Any) -> str:
    """A stable uuid for rows that have none, from their content.

    >>> derive_uuid("a", "b") == derive_uuid("a", "b") != derive_uuid("a", "c")
    True
    """
    return str(uuidlib.uuid5(_UUID_NS, json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)))


def _message(m: Any) -> dict[str, Any]:
    if not isinstance(m, dict) or "role" not in m:
        raise RowError("a message is not an object with a 'role'")
    content = m.get("content")
    if isinstance(content, list):  # OpenAI content parts: keep the text parts in order
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    calls = m.get("tool_calls")
    out_calls = None
    if calls:
        out_calls = []
        for c in calls:
            fn = c.get("function") or {}
            args = fn.get("arguments")
            if args is not None and not isinstance(args, str):
                args = json.dumps(args, ensure_ascii=False)
            out_calls.append(
                {"id": c.get("id"), "type": c.get("type") or "function", "function": {"name": fn.get("name"), "arguments": args}}
            )
    return {"role": str(m["role"]), "content": content if content is None else str(content), "tool_calls": out_calls}


def _metadata(base: Any, extra: dict[str, Any]) -> str | None:
    if isinstance(base, str):
        if not extra:
            return base
        try:
            obj = json.loads(base) if base else {}
        except (ValueError, RecursionError):
            obj = {"metadata_raw": base}
        if not isinstance(obj, dict):
            obj = {"metadata_raw": obj}
    elif isinstance(base, dict):
        obj = dict(base)
    elif base is None:
        obj = {}
    else:
        obj = {"metadata_raw": base}
    for k, v in extra.items():
        obj.setdefault(k, v)
    return json.dumps(obj, ensure_ascii=False) if obj or base is not None else None


def _extras(row: dict[str, Any], used: set[str]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in used and v is not None}


def _v1_row(row: dict[str, Any]) -> dict[str, Any]:
    msgs = row.get("messages")
    if not isinstance(msgs, list):
        raise RowError("'messages' is not a list")
    out = {k: _str(row.get(k)) for k in _SCALARS}
    out["messages"] = [_message(m) for m in msgs]
    out["metadata"] = _metadata(row.get("metadata"), _extras(row, set(NEMOTRON_SCHEMA.names)))
    return out


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


def _v2_row(row: dict[str, Any]) -> dict[str, Any]:
    out = _v1_row(row)
    if out["uuid"] is None:
        out["uuid"] = derive_uuid(row.get("messages"))
    return out


def _reasoning_from_system(system_prompt: Any, reasoning: Any) -> str | None:
    if reasoning in ("on", "off"):
        return reasoning
    if isinstance(system_prompt, str) and "detailed thinking" in system_prompt:
        return "off" if "detailed thinking off" in system_prompt else "on"
    return _str(reasoning)


def _llama_row(row: dict[str, Any]) -> dict[str, Any]:
    inp, output = row.get("input"), row.get("output")
    if not isinstance(inp, list):
        raise RowError("'input' is not a list of messages")
    prompt_only = "output" not in row  # an RL row: `input` and `args`, no `output` column at all
    if not prompt_only and not isinstance(output, str):
        raise RowError("'output' is not a string")
    messages = [_message(m) for m in inp]
    system_prompt = row.get("system_prompt")
    if isinstance(system_prompt, str) and system_prompt and not system_prompt.startswith("detailed thinking"):
        messages.insert(0, {"role": "system", "content": system_prompt, "tool_calls": None})
    if not prompt_only:
        messages.append({"role": "assistant", "content": output, "tool_calls": None})
    return _llama_common(row, messages)


def _llama_common(row: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    used = {"input", "output", *_SCALARS}
    extra = _extras(row, used)
    if isinstance(extra.get("used_in_training"), str):
        extra["used_in_training"] = [s.strip() for s in extra["used_in_training"].split(",") if s.strip()]
    return {
        "uuid": _str(row.get("uuid")) or derive_uuid(row.get("input"), row.get("output")),
        "license": _str(row.get("license")),
        "generator": _str(row.get("generator")),
        "version": _str(row.get("version")),
        "category": _str(row.get("category")),
        "reasoning": _reasoning_from_system(row.get("system_prompt"), row.get("reasoning")),
        "messages": messages,
        "metadata": _metadata(None, extra),
    }


_HEADER_RE = re.compile(r"<\|start_header_id\|>(\w+)<\|end_header_id\|>\n\n")


def parse_llama3_prompt(text: str) -> list[dict[str, Any]]:
    """Messages from a string with the Llama-3 chat template baked in.

    >>> parse_llama3_prompt("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\nHi<|eot_id|>"
    ...                     "<|start_header_id|>assistant<|end_header_id|>\\n\\n")
    [{'role': 'user', 'content': 'Hi', 'tool_calls': None}]
    """
    body = text.removeprefix("<|begin_of_text|>")
    heads = list(_HEADER_RE.finditer(body))
    if not heads or heads[0].start() != 0:
        raise RowError("'input' does not start with a Llama-3 header (<|start_header_id|>role<|end_header_id|>)")
    out = []
    for i, h in enumerate(heads):
        end = heads[i + 1].start() if i + 1 < len(heads) else len(body)
        chunk = body[h.end() : end]
        if i + 1 == len(heads) and h.group(1) == "assistant" and chunk == "":
            break  # the generation prompt the template leaves open for the output
        if not chunk.endswith("<|eot_id|>"):
            raise RowError(f"turn {i} ({h.group(1)}) does not end with <|eot_id|>")
        out.append({"role": h.group(1), "content": chunk[: -len("<|eot_id|>")], "tool_calls": None})
    return out


def _llama_text_row(row: dict[str, Any]) -> dict[str, Any]:
    inp, output = row.get("input"), row.get("output")
    if not isinstance(inp, str) or not (isinstance(output, str) or "output" not in row):
        raise RowError("'input' and 'output' must be strings in the Llama-3 text form")
    messages = parse_llama3_prompt(inp)
    row = dict(row)
    if messages and messages[0]["role"] == "system" and (messages[0]["content"] or "").startswith("detailed thinking"):
        row.setdefault("system_prompt", messages.pop(0)["content"])
    if "output" in row:
        messages.append({"role": "assistant", "content": output.removesuffix("<|eot_id|>"), "tool_calls": None})
    return _llama_common(row, messages)


def _openai_row(row: dict[str, Any]) -> dict[str, Any]:
    msgs = row.get("messages")
    if not isinstance(msgs, list):
        raise RowError("'messages' is not a list")
    messages = [_message(m) for m in msgs]
    extra = _extras(row, {"messages", *_SCALARS, "metadata"})
    if "tools" in extra and isinstance(extra["tools"], str):
        try:
            extra["tools"] = json.loads(extra["tools"])
        except (ValueError, RecursionError):
            pass
    last = next((m["content"] or "" for m in reversed(messages) if m["role"] == "assistant"), "")
    reasoning = row.get("reasoning") or ("on" if "<think>" in last and "<think></think>" not in last else "off")
    return {
        "uuid": _str(row.get("uuid") or row.get("id")) or derive_uuid(msgs),
        "license": _str(row.get("license")),
        "generator": _str(row.get("generator")),
        "version": _str(row.get("version")),
        "category": _str(row.get("category")),
        "reasoning": _str(reasoning),
        "messages": messages,
        "metadata": _metadata(row.get("metadata"), extra),
    }


ROW_CONVERTERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "nemotron-v1": _v1_row,
    "nemotron-v2": _v2_row,
    "llama-nemotron": _llama_row,
    "llama-nemotron-text": _llama_text_row,
    "openai": _openai_row,
}


def convert_row(row: dict[str, Any], fmt: str) -> dict[str, Any]:
    """One row (a dict as read from JSONL or Arrow) in the v1 shape; raises RowError when it cannot be."""
    try:
        return ROW_CONVERTERS[fmt](row)
    except RowError:
        raise
    except (AttributeError, TypeError, KeyError, ValueError) as exc:
        raise RowError(f"{type(exc).__name__}: {exc}") from exc


def fill_category(batch: pa.RecordBatch, split: str | None) -> pa.RecordBatch:
    """Use the split name where a row has no category (plain JSONL exports often lack one)."""
    if split is None:
        return batch
    col = batch.column("category")
    if col.null_count == 0:
        return batch
    filled = pc.fill_null(col, split)
    return batch.set_column(batch.schema.get_field_index("category"), NEMOTRON_SCHEMA.field("category"), filled)


__all__ = [
    "FORMATS",
    "MESSAGE_TYPE",
    "RowError",
    "check_v1_schema",
    "convert_row",
    "derive_uuid",
    "detect_format",
    "detect_row_format",
    "fill_category",
    "normalize_v1",
    "parse_llama3_prompt",
]
