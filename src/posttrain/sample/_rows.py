"""Row plumbing shared by the per-split sample builders: messages, row dicts, uuids, bookkeeping."""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from posttrain.sample._prose import words

LICENSE = "CC BY 4.0"
VERSION = "v1"
R1 = "DeepSeek-R1-0528"
QWEN3 = "Qwen3-235B-A22B"
GENERATOR = {"chat": QWEN3, "code": R1, "math": R1, "stem": R1, "tool_calling": QWEN3}

#: uuids are uuid5 names under this namespace: stable across runs and machines, no clock involved.
_NAMESPACE = uuid.UUID("6b1c2d0e-5a4f-4e7b-9c3d-2f8e1a0b7c61")


def msg(role: str, content: str, tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One message in the schema's struct shape; messages without calls carry an empty list."""
    return {"role": role, "content": content, "tool_calls": list(tool_calls or [])}


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """One assistant tool call; `arguments` is a JSON *string* as in the hub data."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def dumps(obj: Any) -> str:
    """Compact-but-readable JSON as the hub rows store it (`", "` / `": "` separators).

    >>> dumps({"a": 1})
    '{"a": 1}'
    """
    return json.dumps(obj, ensure_ascii=False)


@dataclass
class Planted:
    """A generated row and what was planted in it (None = clean)."""

    row: dict[str, Any]
    defect: str | None = None
    #: extra manifest facts: {"twin": uuid} for duplicates, {"item": id} for benchmark rows, ...
    facts: dict[str, Any] = field(default_factory=dict)
    #: "code" / "chat" when the prompt is withheld; the fixture key is in `facts["key"]`.
    withheld: str | None = None
    restorable: bool = True
    paraphrase_of: str | None = None


class Context:
    """Per-run state: the seed, uuid minting and the set of prompts already used (kept unique)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._minted = 0
        self.prompts: set[str] = set()

    def rng(self, name: str) -> random.Random:
        """An independent, seeded generator per named stream (string seeds hash with sha512: stable)."""
        return random.Random(f"posttrain-sample:{self.seed}:{name}")

    def claim(self, text: str) -> None:
        """Record a prompt made outside `unique` (benchmark rows, planted copies)."""
        self.prompts.add(_normal(text))

    def new_uuid(self) -> str:
        self._minted += 1
        return str(uuid.uuid5(_NAMESPACE, f"{self.seed}:{self._minted}"))

    def unique(self, make: Any, attempts: int = 200) -> Any:
        """Call `make()` until its first element (the prompt text) is one not used before."""
        for _ in range(attempts):
            out = make()
            key = _normal(out[0] if isinstance(out, tuple) else out)
            if key not in self.prompts:
                self.prompts.add(key)
                return out
        raise RuntimeError("could not draw a unique prompt; widen the template space")

    def row(self, split: str, reasoning: str, messages: list[dict[str, Any]], metadata: Any) -> dict[str, Any]:
        return {
            "uuid": self.new_uuid(),
            "license": LICENSE,
            "generator": GENERATOR[split],
            "version": VERSION,
            "category": split,
            "reasoning": reasoning,
            "messages": messages,
            "metadata": metadata if isinstance(metadata, str) else dumps(metadata),
        }


def _normal(text: str) -> str:
    """Prompt identity as near-dedup sees it: lower-case words only (so "x - 1" equals "x + 1")."""
    return " ".join(words(text))


def with_new_uuid(ctx: Context, row: dict[str, Any]) -> dict[str, Any]:
    """An exact copy of `row` under a fresh uuid (the planted exact duplicate)."""
    copy = json.loads(json.dumps(row))
    copy["uuid"] = ctx.new_uuid()
    return copy
