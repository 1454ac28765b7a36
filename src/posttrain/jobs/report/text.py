"""Vectorized text measurements for the report: word 3-gram sketches, Unicode scripts, token counts.

Everything here works on whole Arrow string arrays with numpy; no Python loop runs per word,
per character or per token.

>>> import pyarrow as pa
>>> sketch = DistinctSketch()
>>> sketch.add(word_trigram_hashes(pa.array(["the cat sat on the mat", "the cat sat"])))
>>> sketch.total, round(sketch.estimate())
(5, 4)
>>> dominant_scripts(pa.array(["hello", "привет", "你好", "안녕", "", "123"]))
['Latin', 'Cyrillic', 'Han', 'Hangul', 'none', 'none']
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_U64 = np.uint64
_MASK_MIX1 = _U64(0xBF58476D1CE4E5B9)
_MASK_MIX2 = _U64(0x94D049BB133111EB)
_BYTE_MULT = _U64(0x100000001B3)  # FNV-1a's 64-bit prime, used as the polynomial base


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: spreads the polynomial hash over all 64 bits (HyperLogLog needs that)."""
    with np.errstate(over="ignore"):
        x = x ^ (x >> _U64(30))
        x = x * _MASK_MIX1
        x = x ^ (x >> _U64(27))
        x = x * _MASK_MIX2
        return x ^ (x >> _U64(31))


def _word_hashes(words: pa.Array) -> np.ndarray:
    """64-bit hash of every string of `words` (non-empty large_string array), computed over its bytes.

    Hashing by hand because neither pyarrow compute nor xxhash hashes a whole string array at
    once; a polynomial over the bytes with a per-word `np.add.reduceat` does, in numpy.
    """
    bufs = words.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int64)[words.offset : words.offset + len(words) + 1]
    data = np.frombuffer(bufs[2], dtype=np.uint8)[offsets[0] : offsets[-1]].astype(_U64)
    rel = offsets - offsets[0]
    starts = rel[:-1]
    pos = np.arange(len(data), dtype=np.int64) - np.repeat(starts, np.diff(rel))
    powers = _powers(int(pos.max()) + 1 if len(pos) else 1)
    with np.errstate(over="ignore"):
        h = np.add.reduceat((data + _U64(1)) * powers[pos], starts) if len(data) else np.zeros(0, _U64)
    return _mix64(h.astype(_U64) ^ np.diff(rel).astype(_U64))


@functools.lru_cache(maxsize=8)
def _powers_cached(n: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        out = np.ones(n, dtype=_U64)
        if n > 1:
            out[1:] = _BYTE_MULT
            out = np.cumprod(out, dtype=_U64)
    return out


def _powers(n: int) -> np.ndarray:
    # Round up to a power of two so the cache sees few distinct sizes.
    return _powers_cached(1 << max(0, (n - 1).bit_length()))


def word_trigram_hashes(texts: pa.Array) -> np.ndarray:
    """Hashes of the lower-cased, whitespace-split word 3-grams of each text (never across texts)."""
    lists = pc.utf8_split_whitespace(pc.utf8_lower(texts.cast(pa.large_string()).fill_null("")))
    words = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists).to_numpy()
    keep = pc.greater(pc.binary_length(words), 0)
    words = words.filter(keep)
    parents = parents[keep.to_numpy(zero_copy_only=False)]
    if len(words) < 3:
        return np.zeros(0, dtype=_U64)
    h = _word_hashes(words)
    same_text = parents[:-2] == parents[2:]
    with np.errstate(over="ignore"):
        g = h[:-2] * _U64(3) ^ _rotl(h[1:-1], 21) ^ _rotl(h[2:], 42)
    return _mix64(g[same_text])


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << _U64(r)) | (x >> _U64(64 - r))


class DistinctSketch:
    """HyperLogLog distinct counter (2**p one-byte registers, ~0.8% error at p=14) plus an exact total.

    Written with numpy rather than taken from datasketch: datasketch's HyperLogLog updates one
    item per Python call, and a split holds billions of 3-grams; here a batch is one vectorized
    `np.maximum.at`. Sketches merge by register-wise max, so the result does not depend on batching.
    """

    def __init__(self, p: int = 14) -> None:
        self.p = p
        self.registers = np.zeros(1 << p, dtype=np.uint8)
        self.total = 0

    def add(self, hashes: np.ndarray) -> None:
        """Count 64-bit hashes (already well mixed)."""
        if len(hashes) == 0:
            return
        self.total += int(len(hashes))
        idx = (hashes >> _U64(64 - self.p)).astype(np.int64)
        rest = (hashes << _U64(self.p)) | _U64(1 << (self.p - 1))  # sentinel bounds the rank
        smeared = rest.copy()
        for s in (1, 2, 4, 8, 16, 32):
            smeared |= smeared >> _U64(s)
        rank = (64 - np.bitwise_count(smeared) + 1).astype(np.uint8)
        np.maximum.at(self.registers, idx, rank)

    def merge(self, other: DistinctSketch) -> None:
        np.maximum(self.registers, other.registers, out=self.registers)
        self.total += other.total

    def estimate(self) -> float:
        """Estimated number of distinct hashes (linear counting in the small range)."""
        m = float(len(self.registers))
        zeros = int(np.count_nonzero(self.registers == 0))
        if zeros == m:
            return 0.0
        alpha = 0.7213 / (1 + 1.079 / m)
        raw = alpha * m * m / float(np.sum(np.ldexp(1.0, -self.registers.astype(np.int64))))
        if raw <= 2.5 * m and zeros:
            return m * float(np.log(m / zeros))
        return raw

    def ratio(self) -> float | None:
        """Distinct / total, capped at 1 (the estimate can overshoot slightly)."""
        return None if self.total == 0 else min(1.0, self.estimate() / self.total)


# Unicode scripts by code-point range (letters only; digits, punctuation, symbols and emoji are
# script-neutral and ignored). Ranges from the Unicode blocks; enough to tell the big scripts apart.
_SCRIPT_RANGES: list[tuple[int, int, str]] = [
    (0x0041, 0x005A, "Latin"), (0x0061, 0x007A, "Latin"), (0x00C0, 0x024F, "Latin"),
    (0x0370, 0x03FF, "Greek"), (0x0400, 0x052F, "Cyrillic"), (0x0530, 0x058F, "Armenian"),
    (0x0590, 0x05FF, "Hebrew"), (0x0600, 0x06FF, "Arabic"), (0x0750, 0x077F, "Arabic"),
    (0x08A0, 0x08FF, "Arabic"), (0x0900, 0x097F, "Devanagari"), (0x0980, 0x09FF, "Bengali"),
    (0x0A00, 0x0AFF, "Gurmukhi/Gujarati"), (0x0B80, 0x0BFF, "Tamil"), (0x0C00, 0x0DFF, "Other Indic"),
    (0x0E00, 0x0E7F, "Thai"), (0x10A0, 0x10FF, "Georgian"), (0x1100, 0x11FF, "Hangul"),
    (0x1E00, 0x1EFF, "Latin"), (0x1F00, 0x1FFF, "Greek"), (0x3040, 0x30FF, "Kana"),
    (0x3130, 0x318F, "Hangul"), (0x3400, 0x4DBF, "Han"), (0x4E00, 0x9FFF, "Han"),
    (0xAC00, 0xD7AF, "Hangul"), (0xF900, 0xFAFF, "Han"), (0xFB50, 0xFDFF, "Arabic"),
    (0xFE70, 0xFEFF, "Arabic"), (0x20000, 0x2FA1F, "Han"),
]  # fmt: skip
SCRIPTS: list[str] = sorted({name for _, _, name in _SCRIPT_RANGES})
_STARTS = np.array([lo for lo, _, _ in _SCRIPT_RANGES], dtype=np.int64)
_ENDS = np.array([hi for _, hi, _ in _SCRIPT_RANGES], dtype=np.int64)
_IDS = np.array([SCRIPTS.index(name) for _, _, name in _SCRIPT_RANGES], dtype=np.int64)


def dominant_scripts(texts: pa.Array, max_chars: int = 2000) -> list[str]:
    """The script holding most letters of each text's first `max_chars` characters ('none' if no letters)."""
    texts = pc.utf8_slice_codeunits(texts.cast(pa.large_string()).fill_null(""), 0, max_chars)
    n = len(texts)
    if n == 0:
        return []
    lengths = pc.utf8_length(texts).to_numpy(zero_copy_only=False).astype(np.int64)
    joined = "".join(texts.to_pylist())
    cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)
    rows = np.repeat(np.arange(n), lengths)
    slot = np.searchsorted(_STARTS, cps, side="right") - 1
    hit = (slot >= 0) & (cps <= _ENDS[np.maximum(slot, 0)])
    counts = np.bincount(
        rows[hit] * len(SCRIPTS) + _IDS[slot[hit]], minlength=n * len(SCRIPTS)
    ).reshape(n, len(SCRIPTS))
    best = counts.argmax(axis=1)
    has = counts.max(axis=1) > 0
    return [SCRIPTS[b] if h else "none" for b, h in zip(best.tolist(), has.tolist(), strict=True)]


