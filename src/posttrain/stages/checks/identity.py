"""Identity: the assistant names itself as another model or vendor ("I am Qwen, created by Alibaba").

Only first-person self-descriptions count ("GPT-4 was made by OpenAI" is a fact, not an identity),
matched case-insensitively by one RE2 expression over assistant turns. The names are configurable.

>>> import re
>>> rx = re.compile(identity_pattern(DEFAULT_NAMES), re.IGNORECASE)
>>> bool(rx.search("Hello! I'm Qwen, a large language model.")), bool(rx.search("Qwen is a model family."))
(True, False)
>>> bool(rx.search("I was trained by OpenAI.")), bool(rx.search("My name is Claude"))
(True, True)
>>> bool(rx.search("As ChatGPT, a model trained by OpenAI, I can help.")), bool(rx.search("as ChatGPT does"))
(True, False)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc

from posttrain.stage import add_reasons, register_reason
from posttrain.stages.checks._base import Check, flat_messages, rows_any, shorten, to_bool

register_reason("identity.other_model", "warn", "the assistant presents itself as another model or vendor")

DEFAULT_NAMES: tuple[str, ...] = (
    "Qwen",
    "Tongyi",
    "Alibaba",
    "DeepSeek",
    "ChatGPT",
    "GPT-3.5",
    "GPT-4",
    "GPT-4o",
    "OpenAI",
    "Claude",
    "Anthropic",
    "Gemini",
    "Bard",
    "Google DeepMind",
    "Ernie",
    "Baidu",
)

_SELF = (
    r"(?:i am|i'm|i’m|my name is|you can call me|i was (?:created|developed|trained|built|made|designed) by"
    r"|i am (?:a |an )?(?:[\w-]+ ){0,4}(?:model|assistant|ai|chatbot),? (?:created|developed|trained|built|made"
    r"|designed) by"
    r"|i'm (?:a |an )?(?:[\w-]+ ){0,4}(?:model|assistant|ai|chatbot),? (?:created|developed|trained|built|made"
    r"|designed) by)"
)


def identity_pattern(names: Sequence[str]) -> str:
    """A case-insensitive-ready pattern: a first-person phrase followed by one of `names`, or an
    appositive self-description ("As ChatGPT, a model trained by OpenAI, ...")."""
    alts = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    appositive = rf"\bas (?:the )?(?:{alts}),\s+(?:an?|the)\s+(?:[\w-]+\s+){{0,4}}(?:model|assistant|ai|chatbot)\b"
    return rf"\b{_SELF}\s+(?:the\s+)?(?:{alts})\b|{appositive}"


class IdentityCheck(Check):
    """Assistant turns that present the assistant as another model or vendor (warn)."""

    name = "identity"
    family = "identity"
    codes: ClassVar[tuple[str, ...]] = ("identity.other_model",)

    def __init__(self, names: Sequence[str] = DEFAULT_NAMES) -> None:
        self.names = tuple(names)
        self.pattern = identity_pattern(self.names)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        fm = flat_messages(batch)
        asst = to_bool(pc.equal(fm.role, "assistant"))
        hit = to_bool(pc.match_substring_regex(fm.content, self.pattern, ignore_case=True))
        rows = rows_any(fm, asst & hit)
        return add_reasons(batch, ["identity.other_model" if r else None for r in rows.tolist()])

    def describe(self, row: dict[str, Any], code: str) -> str:
        rx = re.compile(self.pattern, re.IGNORECASE)
        for m in row.get("messages") or []:
            text = (m.get("content") or "") if m.get("role") == "assistant" else ""
            found = rx.search(text)
            if found:
                start = max(0, found.start() - 60)
                return shorten("…" + text[start : found.end() + 60])
        return super().describe(row, code)
