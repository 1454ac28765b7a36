"""Rows as the records other trainers read: OpenAI messages, ShareGPT, Alpaca. Short pure functions.

Formats:
- `openai`: `{"messages": [...], "tools": [...]}`; assistant `tool_calls` keep `arguments` as a
  JSON string; tool replies get the `tool_call_id` of the call they answer (in order), ids being
  made up (`call_<k>`) where the row has none.
- `sharegpt`: `{"conversations": [{"from": "system"|"human"|"gpt"|"tool", "value": ...}], "tools": [...]}`;
  a gpt turn that calls tools also carries `tool_calls` (OpenAI-shaped).
- `alpaca`: `{"instruction", "input", "output"}` (+ `system` when the row has one). The instruction
  is one of three styles — math-tutor, coding-assistant, research-assistant — chosen by category
  or forced; `input` is the prompt (the earlier turns as a transcript for multi-turn rows, with the
  tools listed), `output` the final assistant message, reasoning trace included.
- `text`: `{"text": ...}`, the row rendered by `posttrain.stages.render` (default: the Super-v1.5 template
  with traces kept), for trainers that take plain text.

Reasoning traces (`<think>...</think>`) are kept in every format: they are what the data is for.
"""

from __future__ import annotations

import json
from typing import Any

from posttrain.errors import PosttrainError

FORMATS = ("openai", "sharegpt", "alpaca", "text")

ALPACA_STYLES: dict[str, str] = {
    "math-tutor": (
        "You are a patient math tutor. Work through the problem below step by step, explaining the "
        "reasoning behind each step, and put the final answer in \\boxed{}."
    ),
    "coding-assistant": (
        "You are an expert coding assistant. Read the programming task below, explain your approach "
        "briefly, then give a complete, correct solution in a fenced code block."
    ),
    "research-assistant": (
        "You are a careful research assistant. Answer the request below accurately and thoroughly, "
        "reasoning step by step where it helps, and state your conclusion clearly."
    ),
}
CATEGORY_STYLE = {"math": "math-tutor", "code": "coding-assistant"}  # everything else: research-assistant
SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt", "tool": "tool"}


def row_tools(metadata: str | None) -> tuple[list[Any] | None, str | None]:
    """(tools from the metadata JSON, a reason code when the JSON is broken).

    >>> row_tools('{"tools": [{"type": "function"}]}')
    ([{'type': 'function'}], None)
    >>> row_tools("{oops")
    (None, 'metadata.invalid_json')
    """
    if not metadata:
        return None, None
    try:
        meta = json.loads(metadata)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to read
        return None, "metadata.invalid_json"
    tools = meta.get("tools") if isinstance(meta, dict) else None
    return (tools if isinstance(tools, list) and tools else None), None


def _openai_calls(calls: list[dict] | None, counter: list[int]) -> list[dict]:
    out = []
    for call in calls or []:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        if not isinstance(args, str):  # the schema says string; keep it one whatever came in
            args = json.dumps(args if args is not None else {}, ensure_ascii=False)
        call_id = call.get("id") or f"call_{counter[0]}"
        counter[0] += 1
        out.append(
            {
                "id": call_id,
                "type": call.get("type") or "function",
                "function": {"name": fn.get("name"), "arguments": args},
            }
        )
    return out


def openai_messages(messages: list[dict]) -> list[dict]:
    """Messages in OpenAI chat form (tool replies linked to the calls they answer).

    >>> m = [{"role": "user", "content": "hi", "tool_calls": None},
    ...      {"role": "assistant", "content": "", "tool_calls": [
    ...          {"id": None, "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
    ...      {"role": "tool", "content": "42", "tool_calls": None}]
    >>> [x.get("tool_call_id") for x in openai_messages(m)]
    [None, None, 'call_0']
    """
    out: list[dict] = []
    counter = [0]
    pending: list[str] = []
    for msg in messages:
        role = msg.get("role")
        item: dict[str, Any] = {"role": role, "content": msg.get("content") or ""}
        calls = _openai_calls(msg.get("tool_calls"), counter)
        if calls:
            item["tool_calls"] = calls
            pending = [c["id"] for c in calls]
        if role == "tool" and pending:
            item["tool_call_id"] = pending.pop(0)
        out.append(item)
    return out


def openai_record(row: dict) -> dict:
    """One row as `{"messages", "tools"?}`."""
    rec: dict[str, Any] = {"messages": openai_messages(row.get("messages") or [])}
    tools, _ = row_tools(row.get("metadata"))
    if tools:
        rec["tools"] = tools
    return rec


def sharegpt_record(row: dict) -> dict:
    """One row as ShareGPT `conversations`.

    >>> sharegpt_record({"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]})
    {'conversations': [{'from': 'human', 'value': '2+2?'}, {'from': 'gpt', 'value': '4'}]}
    """
    turns = []
    for msg in openai_messages(row.get("messages") or []):
        turn: dict[str, Any] = {"from": SHAREGPT_ROLE.get(msg["role"], msg["role"]), "value": msg["content"]}
        if "tool_calls" in msg:
            turn["tool_calls"] = msg["tool_calls"]
        turns.append(turn)
    rec: dict[str, Any] = {"conversations": turns}
    tools, _ = row_tools(row.get("metadata"))
    if tools:
        rec["tools"] = tools
    return rec


def alpaca_style_for(category: str | None, style: str = "auto") -> str:
    """The Alpaca instruction style of a row: forced, or by category.

    >>> alpaca_style_for("math"), alpaca_style_for("stem"), alpaca_style_for("math", "coding-assistant")
    ('math-tutor', 'research-assistant', 'coding-assistant')
    """
    if style != "auto":
        if style not in ALPACA_STYLES:
            raise PosttrainError(
                f"unknown alpaca style {style!r}", fix=f"choose auto or one of {', '.join(ALPACA_STYLES)}"
            )
        return style
    return CATEGORY_STYLE.get(category or "", "research-assistant")


def _transcript_line(msg: dict) -> str:
    label = {"user": "User", "assistant": "Assistant", "tool": "Tool", "system": "System"}.get(
        msg["role"], msg["role"]
    )
    text = msg["content"]
    if msg.get("tool_calls"):
        calls = [
            {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
            for c in msg["tool_calls"]
        ]
        text = (text + "\n" if text else "") + "Tool calls: " + json.dumps(calls, ensure_ascii=False)
    return f"{label}: {text}"


def alpaca_record(row: dict, style: str = "auto") -> dict | None:
    """One row as Alpaca, or None when it has no final assistant message to be the output.

    >>> r = alpaca_record({"category": "math", "messages": [{"role": "user", "content": "1+1?"},
    ...     {"role": "assistant", "content": "\\\\boxed{2}"}]})
    >>> r["input"], r["output"], r["instruction"].startswith("You are a patient math tutor")
    ('1+1?', '\\\\boxed{2}', True)
    """
    msgs = openai_messages(row.get("messages") or [])
    if not msgs or msgs[-1]["role"] != "assistant":
        return None
    system = [m["content"] for m in msgs if m["role"] == "system" and m["content"]]
    history = [m for m in msgs[:-1] if m["role"] != "system"]
    tools, _ = row_tools(row.get("metadata"))
    if len(history) == 1 and history[0]["role"] == "user" and not tools:
        prompt = history[0]["content"]
    else:
        lines = [_transcript_line(m) for m in history]
        if tools:
            lines.insert(0, "Available tools: " + json.dumps(tools, ensure_ascii=False))
        prompt = "\n\n".join(lines)
    output = msgs[-1]["content"]
    if msgs[-1].get("tool_calls"):
        output = _transcript_line(msgs[-1]).removeprefix("Assistant: ")
    rec = {
        "instruction": ALPACA_STYLES[alpaca_style_for(row.get("category"), style)],
        "input": prompt,
        "output": output,
    }
    if system:
        rec["system"] = "\n\n".join(system)
    return rec
