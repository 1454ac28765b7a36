"""Nothing a template drops goes unnoticed: every message's content and tool call must be in the text.

A chat template can silently lose parts of a row: SmolLM2's ChatML template writes `content` only,
so an assistant turn's `tool_calls` vanish and the model would be trained to answer without the
call it was meant to make. `lost_parts` lists what of a row is missing from its rendered text:

- each message's content, as the template is expected to keep it: the system text as it is or
  without its reasoning switch (Super-v1.5 removes `/no_think`, else `/think`), an assistant message from
  its final answer on (the text after the last `</think>`: dropping a trace is a trace policy,
  not a loss), every other role whole (surrounding whitespace aside);
- each tool call: its name and its arguments (as stored, or re-serialized JSON).

`render_batch` gives a row with a loss `render.lost_content`; `RenderStage` stops the run with one
line when a template loses the tool calls of every row that has some (a probe row confirms that
the template never writes tool calls, so one odd row cannot stop a run).

>>> m = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "",
...       "tool_calls": [{"function": {"name": "f", "arguments": '{"x": 1}'}}]}]
>>> lost_parts(m, "<|im_start|>user\\nHi<|im_end|>")
['messages[1].tool_calls[0] (f)']
"""

from __future__ import annotations

import json
from typing import Any

from posttrain.stage import register_reason
from posttrain.stages.render.llama import final_answer

register_reason("render.lost_content", "error", "the chat template dropped part of the row (a message or tool call)")

#: A tool row every template that renders tool calls keeps whole (used to tell a template that
#: never writes tool calls from one odd row).
PROBE_TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
PROBE_MESSAGES = [
    {"role": "user", "content": "What is the weather in Paris?", "tool_calls": None},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "content": '{"temp_c": 21}', "tool_calls": None},
    {"role": "assistant", "content": "It is 21 °C in Paris.", "tool_calls": None},
]  # fmt: skip


def _expected(role: str, content: str) -> list[str]:
    """The forms a template may keep a message's content in (any one present means nothing was lost)."""
    if role == "system":
        switch = "/no_think" if "/no_think" in content else "/think"
        return [content.strip(), content.replace(switch, "").strip()]
    if role == "assistant":
        return [final_answer(content).strip()]
    return [content.strip()]


def _arguments_present(args: Any, text: str) -> bool:
    if args is None or args == "":
        return True
    if isinstance(args, str):
        if args.strip() in text:
            return True
        try:
            value = json.loads(args)
        except ValueError:
            return False
    else:
        value = args
    forms = {json.dumps(value, ensure_ascii=a, separators=sep) for a in (False, True) for sep in (None, (",", ":"))}
    return any(f in text for f in forms)


def lost_parts(messages: list[dict[str, Any]], text: str, *, keep_system: bool = True) -> list[str]:
    """What of `messages` is not in `text`, as `messages[i].content (role)` / `messages[i].tool_calls[k] (name)`."""
    lost = []
    for i, m in enumerate(messages):
        role = str(m.get("role"))
        if role == "system" and not keep_system:
            continue  # dropped on purpose by the render config
        forms = _expected(role, m.get("content") or "")
        if all(forms) and not any(f in text for f in forms):
            lost.append(f"messages[{i}].content ({role})")
        for k, call in enumerate(m.get("tool_calls") or []):
            fn = (call or {}).get("function") or call or {}
            name = fn.get("name")
            if (name and str(name) not in text) or not _arguments_present(fn.get("arguments"), text):
                lost.append(f"messages[{i}].tool_calls[{k}] ({name})")
    return lost


def has_tool_calls(messages: list[dict[str, Any]]) -> bool:
    return any(m.get("tool_calls") for m in messages)
