"""Prompts: the conversation each item sends, and the model's own switch for reasoning on/off.

Models switch reasoning in different ways, all through their chat template: Qwen3 and SmolLM3 take
a template keyword (`enable_thinking`), Llama-Nemotron v1 a whole system prompt ("detailed thinking
on|off"), Nemotron Super v1.5 / Nano v2 a system flag ("/think", "/no_think"). The switch is looked
up by model name first (`MODEL_SWITCHES`), then read off the chat template itself, so a fine-tuned
copy saved under another name keeps its switch; a template with none gets `none`, and the run
says that "on" and "off" then differ only in sampling.

>>> switch = detect_switch("nvidia/Llama-3_3-Nemotron-Super-49B-v1_5", "")
>>> switch.apply([{"role": "user", "content": "2+2?"}], "off")
([{'role': 'system', 'content': '/no_think'}, {'role': 'user', 'content': '2+2?'}], {})
>>> detect_switch("my-model", "{% if enable_thinking %}...{% endif %}").apply([], "on")[1]
{'enable_thinking': True}
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Literal

from posttrain.errors import PosttrainError
from posttrain.eval.items import LETTERS, EvalItem

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
CHOICE_INSTRUCTION = "Answer with the letter of the correct option, e.g. \\boxed{A}."
CODE_INSTRUCTION = (
    "Complete the following Python function. Reply with the whole function, signature included, "
    "in one ```python code block."
)


def item_messages(item: EvalItem) -> list[dict[str, Any]]:
    """The conversation for one item: its own messages (held-out rows), else one user turn built per kind.

    >>> item_messages(EvalItem("b", "1", "choice", question="Sky?", choices=["red", "blue"]))[0]["content"]
    'Sky?\\n\\nA) red\\nB) blue\\n\\nAnswer with the letter of the correct option, e.g. \\\\boxed{A}.'
    """
    if item.messages:
        return copy.deepcopy(item.messages)
    if item.kind == "choice":
        options = "\n".join(f"{LETTERS[i]}) {c}" for i, c in enumerate(item.choices))
        content = f"{item.question}\n\n{options}\n\n{CHOICE_INSTRUCTION}"
    elif item.kind == "code":
        content = f"{CODE_INSTRUCTION}\n\n```python\n{item.code_prompt.rstrip()}\n```"
    else:
        content = f"{item.question}\n\n{MATH_INSTRUCTION}"
    return [{"role": "user", "content": content}]


@dataclass(frozen=True)
class ReasoningSwitch:
    """How reasoning is turned on/off: a template keyword, a system-prompt flag, or not at all."""

    kind: Literal["kwarg", "system", "none"]
    on: str = ""  # system flag texts
    off: str = ""
    kwarg: str = "enable_thinking"
    source: str = ""  # why this switch was chosen (config, model table, chat template)

    def apply(self, messages: list[dict[str, Any]], mode: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(messages, chat-template keyword arguments) for `mode` "on" or "off"."""
        if self.kind == "kwarg":
            return messages, {self.kwarg: mode == "on"}
        if self.kind == "system":
            flag = self.on if mode == "on" else self.off
            if messages and messages[0]["role"] == "system":
                first = {**messages[0], "content": f"{flag}\n\n{messages[0]['content']}".strip()}
                return [first, *messages[1:]], {}
            return [{"role": "system", "content": flag}, *messages], {}
        return messages, {}

    def describe(self) -> dict[str, str]:
        if self.kind == "kwarg":
            return {"kind": "kwarg", "how": f"chat template {self.kwarg}=True|False", "source": self.source}
        if self.kind == "system":
            return {"kind": "system", "how": f"system prompt {self.on!r} | {self.off!r}", "source": self.source}
        return {"kind": "none", "how": "no switch: on/off differ only in sampling", "source": self.source}


_THINK = ("/think", "/no_think")
_DETAILED = ("detailed thinking on", "detailed thinking off")
#: Model-name patterns (lower case, "_" read as ".") -> switch, first match wins; from the model cards.
MODEL_SWITCHES: tuple[tuple[str, ReasoningSwitch], ...] = (
    (r"nemotron-(super|ultra|nano)-.*v1\.5", ReasoningSwitch("system", *_THINK)),
    (r"nemotron-nano-(9b|12b)-v2|nemotron-h-", ReasoningSwitch("system", *_THINK)),
    (r"llama-3\.[13]-nemotron|llama-nemotron|nemotron-(nano|super|ultra)-.*v1\b", ReasoningSwitch("system", *_DETAILED)),
    (r"qwen3-.*-2507", ReasoningSwitch("none")),  # the 2507 releases are thinking-only or instruct-only
    (r"qwen3|smollm3", ReasoningSwitch("kwarg")),
)


def detect_switch(model_name: str, chat_template: str, setting: str = "auto",
                  think_on: str | None = None, think_off: str | None = None) -> ReasoningSwitch:
    """The switch for a model: the config's choice, else the model table, else the chat template's own.

    >>> detect_switch("x", "{{ '/no_think' in system }}").describe()["how"]
    "system prompt '/think' | '/no_think'"
    >>> detect_switch("x", "{{ messages }}").kind
    'none'
    """
    if setting == "kwarg":
        return ReasoningSwitch("kwarg", source="config")
    if setting == "system":
        return ReasoningSwitch("system", think_on or _THINK[0], think_off or _THINK[1], source="config")
    if setting == "none":
        return ReasoningSwitch("none", source="config")
    name = model_name.lower().replace("_", ".")
    for pattern, switch in MODEL_SWITCHES:
        if re.search(pattern, name):
            return _flags(switch, think_on, think_off, f"model table: {pattern}")
    if "enable_thinking" in chat_template:
        return ReasoningSwitch("kwarg", source="chat template mentions enable_thinking")
    if "/no_think" in chat_template:
        return _flags(ReasoningSwitch("system", *_THINK), think_on, think_off, "chat template reads /no_think")
    if "detailed thinking" in chat_template:
        return _flags(ReasoningSwitch("system", *_DETAILED), think_on, think_off, "chat template reads detailed thinking")
    return ReasoningSwitch("none", source="no switch in the model table or the chat template")


def _flags(switch: ReasoningSwitch, on: str | None, off: str | None, source: str) -> ReasoningSwitch:
    return ReasoningSwitch(switch.kind, on if on is not None else switch.on, off if off is not None else switch.off,
                           switch.kwarg, source)  # fmt: skip


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                  template_kwargs: dict[str, Any], chat_template: str | None = None) -> str:
    """The prompt text through the model's chat template, ending with the generation prompt."""
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if not template:
        raise PosttrainError(
            "the tokenizer has no chat template", place=str(getattr(tokenizer, "name_or_path", "tokenizer")),
            fix="save the model with its chat template, or pass chat_template=FILE.jinja",
        )  # fmt: skip
    kwargs = dict(template_kwargs)
    if tools:
        kwargs["tools"] = tools
    return tokenizer.apply_chat_template(messages, chat_template=template, add_generation_prompt=True,
                                         tokenize=False, **kwargs)  # fmt: skip
