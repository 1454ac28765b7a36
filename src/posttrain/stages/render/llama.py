"""Built-in Llama-3 family renderers: Llama-3.3-Nemotron-Super-v1.5 and Llama-3 "detailed thinking".

`NemotronSuperRenderer` writes, byte for byte, what the model's own chat template
(`templates/nemotron-super-v1.5.jinja`, copied from the model's tokenizer_config `chat_template`
via posttrain's /work/shared/reference/) writes for the same messages, with one deliberate
difference: trained assistant turns keep their `<think>` trace (the official template keeps only
what follows the last `</think>` of every assistant message). Untrained turns are rendered exactly
as the template does. The tests render both and compare.

A reasoning-off row (`/no_think` in the system message) is rendered as the model is served: each
trained answer follows the template's off-mode prefill `<think>\n\n</think>\n\n`, as untrained
prompt text (`render.prefill`; `render.reasoning_off: data` keeps the answer right after the header).

It is written in Python rather than through Jinja because the builder must know where the
template's special tokens and the trained regions are; a Jinja render only gives a string.
"""

from __future__ import annotations

import json
from typing import Any

from posttrain.config import RenderConfig
from posttrain.stages.render.builder import Rendered, TextBuilder
from posttrain.stages.render.config import (
    Conversation,
    effective_messages,
    flag_for,
    trace_kept,
    trained_assistant,
)
from posttrain.stages.render.prefill import OFF_PREFILL, off_answer, served

BOS = "<|begin_of_text|>"
START = "<|start_header_id|>"
END = "<|end_header_id|>"
EOT = "<|eot_id|>"

_TOOLS_HEAD = "You can use the following tools to assist the user if required:\n<AVAILABLE_TOOLS>["
# The doubled braces are what the official template really writes: they sit inside a Jinja string
# literal, where `{{` is not an expression, so the model saw them literally in training.
_TOOLS_TAIL = (
    "]</AVAILABLE_TOOLS>\n\nIf you decide to call any tool(s), use the following format:\n"
    '<TOOLCALL>[{{"name": "tool_name1", "arguments": "tool_args1"}}, {{"name": "tool_name2", "arguments": "tool_args2"}}]</TOOLCALL>\n\n'
    "Response from tool(s) will be returned in this format:\n"
    '<TOOL_RESPONSE>[{{"response": "tool_response1"}}, {{"response": "tool_response2"}}]</TOOL_RESPONSE>\n\n'
    "Based on the results returned by the tool(s), you can call additional tools if needed, correct tool "
    "calls if any errors are found, or just respond with the answer to the user."
)


def tojson(value: Any) -> str:
    """JSON as transformers' chat-template `tojson` filter writes it (non-ASCII kept, default separators).

    >>> tojson({"a": "é"})
    '{"a": "é"}'
    """
    return json.dumps(value, ensure_ascii=False)


def final_answer(content: str) -> str:
    """What the official template keeps of an assistant message: the text after the last `</think>`.

    >>> final_answer("<think>hm</think>\\n\\n42")
    '42'
    """
    return content.split("</think>")[-1].lstrip() if "</think>" in content else content


def tools_block(tools: list[dict[str, Any]]) -> str:
    """The `<AVAILABLE_TOOLS>` system text, as the Super-v1.5 template writes it."""
    specs = ", ".join(tojson(t["function"] if isinstance(t, dict) and "function" in t else t) for t in tools)
    return _TOOLS_HEAD + specs + _TOOLS_TAIL


def toolcall_text(calls: list[dict[str, Any]]) -> str:
    """`<TOOLCALL>[...]</TOOLCALL>`; a string `arguments` is inserted raw, as the template does.

    >>> toolcall_text([{"function": {"name": "f", "arguments": '{"x": 1}'}}])
    '<TOOLCALL>[{"name": "f", "arguments": {"x": 1}}]</TOOLCALL>'
    """
    parts = []
    for call in calls:
        fn = call.get("function") if call.get("function") is not None else call
        args = fn.get("arguments")
        args_text = args if isinstance(args, str) else tojson(args)
        parts.append('{"name": "' + str(fn.get("name")) + '", "arguments": ' + args_text + "}")
    return "<TOOLCALL>[" + ", ".join(parts) + "]</TOOLCALL>"


class NemotronSuperRenderer:
    """Llama-3.3-Nemotron-Super-49B-v1.5 chat format (the default)."""

    name = "nemotron-super-v1.5"
    flag_on, flag_off = "/think", "/no_think"
    flag_first = False

    def __init__(self, config: RenderConfig | None = None) -> None:
        self.config = config or RenderConfig()

    def messages_for(self, conv: Conversation) -> list[dict[str, Any]]:
        """The messages as the official template would be given them (system flag included)."""
        flag = flag_for(conv.reasoning, self.config, self.flag_on, self.flag_off)
        return effective_messages(conv, self.config, flag=flag, flag_first=self.flag_first)

    def render(self, conv: Conversation) -> Rendered:
        """Render one conversation."""
        msgs = self.messages_for(conv)
        b = TextBuilder()
        self._system(b, msgs, conv.tools)
        off = self.off_mode(msgs)
        notes = ["off.row"] if off else []
        self._turns(b, msgs, off, notes)
        out = b.build()
        out.notes = notes
        return out

    def off_mode(self, msgs: list[dict[str, Any]]) -> bool:
        """Whether the template serves these messages with reasoning off (its own rule: `/no_think` in the system)."""
        return bool(msgs) and msgs[0]["role"] == "system" and "/no_think" in (msgs[0].get("content") or "")

    def off_turn(self, b: TextBuilder, content: str, text: str, notes: list[str]) -> str:
        """Write what serving puts before a trained reasoning-off answer; return the answer to train."""
        if not served(self.config):
            notes.append("off.as_data")
            return text
        answer, case = off_answer(content)
        notes.append("off." + case)
        if case == "with_trace":
            return text
        b.text(OFF_PREFILL)  # the generation prompt's prefill: prompt, never trained
        return answer

    def _system(self, b: TextBuilder, msgs: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> None:
        b.special(BOS)
        b.special(START)
        b.text("system")
        b.special(END)
        b.text("\n\n")
        if msgs and msgs[0]["role"] == "system" and (msgs[0].get("content") or "") != "":
            text = msgs[0]["content"]
            # Same flag handling as the template: remove the flag, then Jinja's `trim` (str.strip).
            if "/no_think" in text:
                text = text.replace("/no_think", "").strip()
            elif "/think" in text:
                text = text.replace("/think", "").strip()
            b.text(text + "\n\n")
        if tools:
            b.text(tools_block(tools))
        b.special(EOT)

    def _header(self, b: TextBuilder, role: str) -> None:
        b.special(START)
        b.text(role)
        b.special(END)
        b.text("\n\n")

    def _turns(self, b: TextBuilder, msgs: list[dict[str, Any]], off: bool = False,
               notes: list[str] | None = None) -> None:  # fmt: skip
        trained = trained_assistant(msgs, self.config)
        n = len(msgs)
        for i, m in enumerate(msgs):
            role = m["role"]
            content = m.get("content") or ""
            if role == "user":
                b.turn()
                self._header(b, "user")
                b.text(content)
                b.special(EOT)
            elif role == "assistant":
                b.turn()
                self._header(b, "assistant")
                text = content if trace_kept(i, trained, self.config) else final_answer(content)
                if off and i in trained:
                    text = self.off_turn(b, content, text, notes if notes is not None else [])
                if i in trained:
                    b.begin_span()
                b.text(text)
                if m.get("tool_calls"):
                    b.text(toolcall_text(m["tool_calls"]))
                b.special(EOT)
                if i in trained:
                    b.end_span()
            elif role == "tool":
                if i == 0 or msgs[i - 1]["role"] != "tool":
                    b.turn()
                    self._header(b, "tool")
                    b.text("<TOOL_RESPONSE>[")
                last_of_run = i == n - 1 or msgs[i + 1]["role"] != "tool"
                b.text(content + ("" if last_of_run else ", "))
                if last_of_run:
                    b.text("]</TOOL_RESPONSE>")
                    b.special(EOT)
            # A system message (first or not) is not a turn: the template writes nothing for it here.


class Llama3DetailedThinkingRenderer(NemotronSuperRenderer):
    """Llama-3 format with the Llama-Nemotron v1 system switch "detailed thinking on/off".

    The flag is the first line of the system turn (then the row's own system text, if any);
    tools, calls and tool replies use the same Nemotron tool format as Super-v1.5, and untrained
    turns drop their trace the same way.
    """

    name = "llama3-detailed-thinking"
    flag_on, flag_off = "detailed thinking on", "detailed thinking off"
    flag_first = True

    def off_mode(self, msgs: list[dict[str, Any]]) -> bool:
        return bool(msgs) and msgs[0]["role"] == "system" and (msgs[0].get("content") or "").startswith(
            self.config.think_off or self.flag_off
        )

    def off_turn(self, b: TextBuilder, content: str, text: str, notes: list[str]) -> str:
        """Served with "detailed thinking off", the model answers directly: no prefill, no empty think block."""
        if not served(self.config):
            notes.append("off.as_data")
            return text
        answer, case = off_answer(content)
        notes.append("off." + ("direct" if case == "prefilled" else case))
        return answer if case == "normalized" else text

    def _system(self, b: TextBuilder, msgs: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> None:
        b.special(BOS)
        b.special(START)
        b.text("system")
        b.special(END)
        b.text("\n\n")
        system = msgs[0].get("content") or "" if msgs and msgs[0]["role"] == "system" else ""
        if tools:
            system = (system + "\n\n" if system else "") + tools_block(tools)
        b.text(system)
        b.special(EOT)
