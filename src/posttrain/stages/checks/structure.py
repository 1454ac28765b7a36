"""Structure checks: role order, the last turn, empty turns, withheld prompts, metadata JSON.

Role order is checked without a Python loop: each row's roles become a short letter string
(S system, U user, A assistant, C assistant with tool calls, T tool, X anything else) and one
regular expression over that column says which rows follow the grammar
`S? (U (C T*)* A)* (U (C T*)*)?`. A call left without a reply is the tools check's business
(`tools.no_reply`), and a row ending on a user or tool turn is `structure.last_not_assistant`,
so each fault gets one code.

>>> role_order_ok("SUCTTAUA"), role_order_ok("UAA"), role_order_ok("AU")
(True, False, False)
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.stage import add_reasons, register_reason
from posttrain.stages.checks._base import (
    Check,
    FlatMessages,
    blank,
    flat_messages,
    rows_any,
    shorten,
    to_bool,
    unique_codes,
)

register_reason("structure.role_order", "error", "roles do not follow system? then user/assistant turns")
register_reason("structure.last_not_assistant", "error", "the last turn is not the assistant's")
register_reason("structure.empty_turn", "error", "a user, assistant or tool turn has empty content")
register_reason(
    "structure.tool_reply_mismatch", "error", "the number of tool replies differs from the calls with ids"
)
register_reason("prompt.withheld", "warn", "the prompt is withheld (a placeholder to restore from its source)")
# Llama-Nemotron's RL rows: a prompt (and grader args) without any response; loadable, never trained.
register_reason("prompt.no_response", "warn", "a prompt without any response (RL data): nothing to train on")

ROLE_ORDER_PATTERN = r"^S?(?:U(?:CT*)*A)*(?:U(?:CT*)*)?$"
_ROLE_ORDER_RE = re.compile(ROLE_ORDER_PATTERN)
_ROLES = pa.array(["system", "user", "assistant", "tool"])
# index_in code -> letter; assistant turns with tool calls become C afterwards; 4 = unknown role
_LETTERS = np.frombuffer(b"SUATX", dtype=np.uint8)


def role_order_ok(roles: str) -> bool:
    """Whether a role-letter string follows the grammar (Python twin of the Arrow test)."""
    return bool(roles) and _ROLE_ORDER_RE.match(roles) is not None


def role_letters(fm: FlatMessages) -> pa.Array:
    """One string per row: its roles as letters (see module docstring)."""
    idx = pc.index_in(fm.role, value_set=_ROLES).fill_null(4).to_numpy(zero_copy_only=False)
    letters = _LETTERS[idx.astype(np.int64)]
    letters = np.where((idx == 2) & fm.has_calls, ord("C"), letters).astype(np.uint8)
    offsets = pa.py_buffer(fm.offsets.astype(np.int32).tobytes())
    return pa.StringArray.from_buffers(fm.num_rows, offsets, pa.py_buffer(letters.tobytes()))


class RoleOrderCheck(Check):
    """Roles in order, the assistant speaks last, one tool reply per call where calls carry ids."""

    name = "role_order"
    family = "structure"
    codes: ClassVar[tuple[str, ...]] = (
        "structure.role_order",
        "structure.last_not_assistant",
        "structure.tool_reply_mismatch",
        "prompt.no_response",
    )

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        fm = flat_messages(batch)
        letters = role_letters(fm)
        empty = to_bool(pc.equal(pc.utf8_length(letters), 0))
        bad_order = empty | ~to_bool(pc.match_substring_regex(letters, ROLE_ORDER_PATTERN))
        last_bad = ~empty & ~to_bool(pc.match_substring_regex(letters, "[AC]$"))
        with_calls = to_bool(pc.match_substring(letters, "CT"))
        codes: list[list[str]] = [[] for _ in range(batch.num_rows)]
        for i in np.nonzero(bad_order)[0]:
            codes[i].append("structure.role_order")
        no_response = ~to_bool(pc.match_substring_regex(letters, "[AC]"))
        for i in np.nonzero(last_bad & ~bad_order)[0]:
            codes[i].append("prompt.no_response" if no_response[i] else "structure.last_not_assistant")
        messages = batch.column("messages")
        for i in np.nonzero(with_calls)[0]:
            if replies_mismatch(messages[int(i)].as_py() or []):
                codes[i].append("structure.tool_reply_mismatch")
        return add_reasons(batch, [unique_codes(c) for c in codes])

    def describe(self, row: dict[str, Any], code: str) -> str:
        roles = [m.get("role") for m in row.get("messages") or []]
        return shorten("roles: " + " > ".join(str(r) for r in roles))


def replies_mismatch(messages: list[dict[str, Any]]) -> bool:
    """True when an assistant turn whose calls all carry ids gets a number of tool replies other than
    one per call (zero replies is `tools.no_reply`, not a mismatch).

    >>> call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    >>> a = {"role": "assistant", "content": "", "tool_calls": [call]}
    >>> t = {"role": "tool", "content": "ok", "tool_calls": None}
    >>> replies_mismatch([a, t]), replies_mismatch([a, t, t]), replies_mismatch([a])
    (False, True, False)
    """
    for i, m in enumerate(messages):
        calls = m.get("tool_calls") or []
        if m.get("role") != "assistant" or not calls:
            continue
        if not all(c and c.get("id") for c in calls):
            continue
        replies = 0
        for later in messages[i + 1 :]:
            if later.get("role") != "tool":
                break
            replies += 1
        if replies and replies != len(calls):
            return True
    return False


class EmptyTurnCheck(Check):
    """Content is required of user, assistant (without tool calls) and tool turns.

    Withheld prompts are not empty turns: an empty first user turn of a chat row whose metadata
    names an lmsys `conversation_id`, or the `"-"` placeholder of a code row, is `prompt.withheld`
    (a warning before restoration; `restored=True` makes it `prompt.unrecoverable`, an error).
    """

    name = "empty_turn"
    family = "structure"
    codes: ClassVar[tuple[str, ...]] = ("structure.empty_turn", "prompt.withheld", "prompt.unrecoverable")

    def __init__(self, restored: bool = False) -> None:
        self.restored = restored

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        fm = flat_messages(batch)
        empty = blank(fm.content)
        role = fm.role
        needs = to_bool(pc.is_in(role, pa.array(["user", "tool"])))
        needs |= to_bool(pc.equal(role, "assistant")) & ~fm.has_calls
        empty_msg = empty & needs
        withheld_msg = self._withheld_messages(batch, fm, empty)
        empty_rows = rows_any(fm, empty_msg & ~withheld_msg)
        withheld_rows = rows_any(fm, withheld_msg)
        code = "prompt.unrecoverable" if self.restored else "prompt.withheld"
        out: list[list[str] | None] = []
        for e, w in zip(empty_rows.tolist(), withheld_rows.tolist(), strict=True):
            out.append(unique_codes((["structure.empty_turn"] if e else []) + ([code] if w else [])))
        return add_reasons(batch, out)

    @staticmethod
    def _withheld_messages(batch: pa.RecordBatch, fm: FlatMessages, empty: np.ndarray) -> np.ndarray:
        """User turns that are placeholders: blank in chat rows keyed to lmsys (every user turn of
        such a conversation is withheld), "-" as the first user turn of a code row."""
        is_user = to_bool(pc.equal(fm.role, "user"))
        first_user = np.zeros(len(fm.parent), dtype=bool)
        user_idx = np.nonzero(is_user)[0]
        _, first = np.unique(fm.parent[user_idx], return_index=True)  # first occurrence per row
        first_user[user_idx[first]] = True
        parent = pa.array(fm.parent)
        category = pc.take(batch.column("category"), parent)
        keyed = to_bool(pc.match_substring(pc.take(batch.column("metadata"), parent), '"conversation_id"'))
        chat = to_bool(pc.equal(category, "chat")) & keyed
        code = to_bool(pc.equal(category, "code")) & to_bool(pc.match_substring_regex(fm.content, r"^\s*-\s*$"))
        return (is_user & chat & empty) | (first_user & code)

    def describe(self, row: dict[str, Any], code: str) -> str:
        if code.startswith("prompt."):
            return shorten("withheld prompt; metadata: " + str(row.get("metadata") or ""))
        for m in row.get("messages") or []:
            if not (m.get("content") or "").strip() and not m.get("tool_calls"):
                return f"empty {m.get('role')} turn"
        return super().describe(row, code)


class MetadataJsonCheck(Check):
    """`metadata`, when present, is a JSON object."""

    name = "metadata_json"
    family = "structure"
    codes: ClassVar[tuple[str, ...]] = ("metadata.invalid_json",)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        out: list[str | None] = []
        for text in batch.column("metadata").to_pylist():
            out.append(None if metadata_ok(text) else "metadata.invalid_json")
        return add_reasons(batch, out)

    def describe(self, row: dict[str, Any], code: str) -> str:
        return shorten("metadata: " + str(row.get("metadata")))


def metadata_ok(text: str | None) -> bool:
    """Absent metadata is fine; present metadata must be a JSON object.

    >>> metadata_ok(None), metadata_ok('{"a": 1}'), metadata_ok('{"a": '), metadata_ok("[1]")
    (True, True, False, False)
    """
    if text is None or text == "":
        return True
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False
