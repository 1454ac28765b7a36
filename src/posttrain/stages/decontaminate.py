"""Benchmark decontamination by word n-gram overlap (GPT-3 / lm-eval-harness style).

Text is normalized the lm-eval way: lowercase, punctuation deleted (not replaced by a space, so
`x+y` becomes `xy`), whitespace collapsed, then split into words. Every benchmark item gives its set
of word n-grams (default n = 13); an item with fewer than n words gives one gram, the whole item,
and dataset text is then also cut into grams of that length, so a short item is found wherever it
appears verbatim.

The rule: a dataset row is contaminated by item X when it shares at least one gram with X and
`matched grams of X / grams of X >= min_overlap`. `min_overlap = 0` is the lm-eval-harness /
GPT-3 rule (any shared 13-gram); the default 0.5 needs half of the item, which catches a verbatim
copy (with or without an instruction around it) and leaves a paraphrase alone.

Hashing is vectorized: Arrow normalizes and splits (C++), each distinct word of a batch is hashed
once with xxhash64, and a gram's hash is a polynomial of its word hashes mod 2**64 computed with
numpy over the whole batch (n vector passes, no per-word Python loop). Lookup is a binary search
(`np.searchsorted`) into the sorted gram hashes of the benchmark index.

>>> normalize_words(["What is 2+2? Answer:  FOUR."])
[['what', 'is', '22', 'answer', 'four']]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from posttrain.config import DECONTAM_CODE
from posttrain.io.benchmarks import BenchmarkItem
from posttrain.stage import (
    Stage,
    add_reasons,
    register_reason,
)

register_reason(DECONTAM_CODE, "error", "prompt overlaps a benchmark item (word n-grams)")

# Deleted characters: everything but letters, marks, numbers and separators (RE2 Unicode classes).
_PUNCT = r"[^\p{L}\p{M}\p{N}\p{Z}\s]+"
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio) for the gram polynomial
_PREFILTER_BITS = 22  # 4 MiB table: a benchmark index of ~20k-1M grams fills 0.5-25% of it
MAX_EVIDENCE = 20  # matched grams kept per hit, for the report


def normalize_words(texts: Sequence[str | None] | pa.Array) -> list[list[str]]:
    """Normalized words of each text (the pure form of what `_word_lists` does inside the index)."""
    return _word_lists(pa.array(texts, type=pa.string()) if not isinstance(texts, pa.Array) else texts).to_pylist()


def _word_lists(texts: pa.Array) -> pa.ListArray:
    """list<string> of normalized words per text; nulls become empty lists."""
    texts = pc.fill_null(texts.cast(pa.string()), "")
    lowered = pc.utf8_lower(texts)
    stripped = pc.replace_substring_regex(lowered, pattern=_PUNCT, replacement="")
    lists = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(stripped))
    # an empty text splits into [""]: drop empty words so it has none
    words = pc.list_flatten(lists)
    keep = pc.greater(pc.binary_length(words), 0)
    counts = np.bincount(pc.list_parent_indices(lists).filter(keep).to_numpy(), minlength=len(lists))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), words.filter(keep))


def _word_hashes(words: pa.Array) -> np.ndarray:
    """xxhash64 of each word, hashing each distinct word of the batch once."""
    if len(words) == 0:
        return np.zeros(0, dtype=np.uint64)
    enc = pc.dictionary_encode(words)
    uniq = np.fromiter(
        (xxhash.xxh64_intdigest(w) for w in enc.dictionary.cast(pa.binary()).to_pylist()), dtype=np.uint64, count=len(enc.dictionary)
    )
    return uniq[enc.indices.to_numpy(zero_copy_only=False)]


def _grams(lists: pa.ListArray, lengths: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gram hashes of every text for each gram length: (hash, text index, start word offset in the flat words).

    >>> h, t, s = _grams(_word_lists(pa.array(["a b c", "a b c d"])), [2])
    >>> t.tolist(), bool(h[0] == h[2])
    ([0, 0, 1, 1, 1], True)
    """
    offsets = lists.offsets.to_numpy()
    offsets = offsets - offsets[0]
    w = _word_hashes(pc.list_flatten(lists))
    lens = np.diff(offsets)
    out_h, out_t, out_s = [], [], []
    wanted = set(lengths)
    # one pass: after step k, h[i] is the hash of the (k+1)-gram starting at word i
    h = np.zeros(len(w), dtype=np.uint64)
    for k in range(min(max(lengths, default=0), len(w))):
        h[: len(w) - k] = h[: len(w) - k] * _MULT + w[k:]
        n = k + 1
        if n not in wanted:
            continue
        counts = np.maximum(lens - n + 1, 0)
        text_idx = np.repeat(np.arange(len(lens)), counts)
        starts = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + offsets[:-1][text_idx]
        out_h.append(h[starts] ^ np.uint64(n))  # a gram of length n never equals one of another length
        out_t.append(text_idx)
        out_s.append(starts)
    if not out_h:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros(0, dtype=np.uint64), empty, empty
    return np.concatenate(out_h), np.concatenate(out_t), np.concatenate(out_s)


@dataclass
class NgramIndex:
    """Sorted gram hashes of a benchmark set, each mapped to the item it came from.

    `hashes[i]` belongs to item `item_of[i]`; an item's distinct gram count is `item_grams[item]`.
    `gram_text` keeps the words of each gram (for the report's evidence; benchmarks are small).
    """

    n: int
    items: list[BenchmarkItem]
    hashes: np.ndarray
    item_of: np.ndarray
    item_grams: np.ndarray
    lengths: tuple[int, ...]
    gram_text: dict[int, str] = field(repr=False, default_factory=dict)

    @classmethod
    def build(cls, items: Sequence[BenchmarkItem], n: int = 13) -> NgramIndex:
        """Index the distinct grams of every item (the whole item when it has fewer than n words)."""
        lists = _word_lists(pa.array([it.text for it in items], type=pa.string()))
        nwords = np.diff(lists.offsets.to_numpy())
        short = sorted({int(k) for k in nwords if 0 < k < n})
        lengths = (n, *short)
        hs, ts = [], []
        flat_words = pc.list_flatten(lists).to_pylist()
        gram_text: dict[int, str] = {}
        for length in lengths:
            # items of this gram length: the long ones for n, exactly-`length`-word ones for a short length
            keep = (nwords >= n) if length == n else (nwords == length)
            h, t, s = _grams(lists, [length])
            sel = keep[t]
            hs.append(h[sel])
            ts.append(t[sel])
            for hv, start in zip(h[sel].tolist(), s[sel].tolist(), strict=True):
                gram_text.setdefault(hv, " ".join(flat_words[start : start + length]))
        h = np.concatenate(hs) if hs else np.zeros(0, np.uint64)
        t = np.concatenate(ts) if ts else np.zeros(0, np.int64)
        pairs = np.unique(np.stack([h, t.astype(np.uint64)], axis=1), axis=0) if len(h) else np.zeros((0, 2), np.uint64)
        item_grams = np.bincount(pairs[:, 1].astype(np.int64), minlength=len(items))
        return cls(n, list(items), pairs[:, 0].copy(), pairs[:, 1].astype(np.int64), item_grams, lengths, gram_text)

    def _prefilter(self) -> np.ndarray:
        table = self.__dict__.get("_table")
        if table is None:
            table = np.zeros(1 << _PREFILTER_BITS, dtype=bool)
            table[self.hashes >> np.uint64(64 - _PREFILTER_BITS)] = True
            self.__dict__["_table"] = table
        return table

    def match(self, texts: pa.Array, min_overlap: float) -> list[list[Hit]]:
        """Hits per text: the items whose overlap ratio reaches `min_overlap` (best first)."""
        out: list[list[Hit]] = [[] for _ in range(len(texts))]
        if len(self.hashes) == 0 or len(texts) == 0:
            return out
        h, t, _ = _grams(_word_lists(texts), self.lengths)
        # membership: a direct-mapped bit table on the top hash bits rules out almost every gram with
        # one gather; the few candidates are confirmed by binary search in the sorted index
        cand = np.nonzero(self._prefilter()[h >> np.uint64(64 - _PREFILTER_BITS)])[0]
        pos = np.minimum(np.searchsorted(self.hashes, h[cand]), len(self.hashes) - 1)
        hit = np.zeros(len(h), dtype=bool)
        hit[cand[self.hashes[pos] == h[cand]]] = True
        if not hit.any():
            return out
        # distinct (text, gram) pairs that exist in the index
        pairs = np.unique(np.stack([t[hit].astype(np.uint64), h[hit]], axis=1), axis=0)
        lo = np.searchsorted(self.hashes, pairs[:, 1], side="left")
        hi = np.searchsorted(self.hashes, pairs[:, 1], side="right")
        reps = hi - lo
        rows = np.repeat(pairs[:, 0].astype(np.int64), reps)
        grams = np.repeat(pairs[:, 1], reps)
        pos = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps) + np.repeat(lo, reps)
        items = self.item_of[pos]
        # matched distinct grams per (text, item): pairs above are distinct per (text, gram), so count them
        key = np.stack([rows, items], axis=1)
        uniq, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        ratio = counts / np.maximum(self.item_grams[uniq[:, 1]], 1)
        for k in np.nonzero(ratio >= min_overlap)[0].tolist():
            row, item = int(uniq[k, 0]), int(uniq[k, 1])
            mine = grams[inverse.reshape(-1) == k][:MAX_EVIDENCE].tolist()
            it = self.items[item]
            out[row].append(
                Hit(it.benchmark, it.item_id, float(ratio[k]), int(counts[k]), [self.gram_text.get(g, "") for g in mine])
            )
        for hits in out:
            hits.sort(key=lambda x: (-x.overlap, x.benchmark, x.item_id))
        return out


@dataclass(frozen=True)
class Hit:
    """Evidence that a row overlaps one benchmark item."""

    benchmark: str
    item_id: str
    overlap: float
    matched: int
    ngrams: list[str]


class DecontaminateStage(Stage):
    """Append `decontam.ngram` to rows whose prompt (and, optionally, response) overlaps a benchmark item.

    Row count is unchanged (the stage contract). Under policy `flag` the code is a warning: the runner
    (or the recipe) passes `severity_overrides()` of the config to the sink.
    """

    name = "decontaminate"

    def __init__(self, index: NgramIndex, min_overlap: float = 0.5, include_responses: bool = False) -> None:
        self.index = index
        self.min_overlap = min_overlap
        self.include_responses = include_responses

    def find(self, batch: pa.RecordBatch) -> list[list[Hit]]:
        """Hits per row of `batch`."""
        return self.index.match(scanned_text(batch, self.include_responses), self.min_overlap)

    def process(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        hits = self.find(batch)
        return add_reasons(batch, [DECONTAM_CODE if h else None for h in hits])


def scanned_text(batch: pa.RecordBatch, include_responses: bool = False) -> pa.Array:
    """Per row, the text scanned for leaks: every non-assistant turn (all turns with responses), newline-joined.

    >>> from posttrain.schema import MESSAGE_TYPE
    >>> msgs = pa.array([[{"role": "user", "content": "hi", "tool_calls": None},
    ...                   {"role": "assistant", "content": "yo", "tool_calls": None}]], pa.list_(MESSAGE_TYPE))
    >>> scanned_text(pa.record_batch({"messages": msgs})).to_pylist()
    ['hi']
    """
    messages = batch.column("messages")
    flat = pc.list_flatten(messages)
    parents = pc.list_parent_indices(messages)
    content = pc.fill_null(pc.struct_field(flat, "content"), "")
    if not include_responses:
        keep = pc.fill_null(pc.not_equal(pc.struct_field(flat, "role"), "assistant"), True)
        content = content.filter(keep)
        parents = parents.filter(keep)
    # rebuild one list per row (parents are sorted) and join its contents
    counts = np.bincount(parents.to_numpy(), minlength=batch.num_rows)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), content)
    return pc.binary_join(lists, "\n")
