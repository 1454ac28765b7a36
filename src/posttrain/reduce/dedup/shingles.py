"""Shingling and MinHash for near dedup, vectorized over a whole batch.

Text is normalized for shingling (NFKC, lowercase, everything but letters, digits and whitespace
replaced by a space, whitespace collapsed to single spaces) with pyarrow compute. A word shingle
is then the byte span of n consecutive words ("w1 w2 w3 w4 w5", exactly what " ".join of the words
gives); a character shingle is a span of n UTF-8 bytes (character n-grams on ASCII). Every span
of a batch is hashed at once with numpy over the batch's UTF-8 buffer (no per-token Python loop),
made unique per row and sorted, which is what the exact-Jaccard verification needs; MinHash
signatures come from rensa's R-MinHash over those shingle hashes.

>>> import pyarrow as pa
>>> t = normalize_for_shingles(pa.array(["The  cat, sat on the MAT!", ""]))
>>> t.to_pylist()
['the cat sat on the mat', '']
>>> flat, offsets = shingle_hashes(t, "word", 5)
>>> offsets.tolist()     # 6 words -> 2 five-word shingles; empty text -> none
[0, 2, 2]
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from posttrain.reduce.dedup.keys import WS_RUN

_P1 = np.uint64(0x9E3779B97F4A7C15)
_P2 = np.uint64(0xBF58476D1CE4E5B9)
_P3 = np.uint64(0x94D049BB133111EB)


def normalize_for_shingles(text: pa.Array) -> pa.Array:
    """NFKC, lowercase, everything but letters/digits/space turned into a space, whitespace collapsed."""
    text = pc.utf8_lower(pc.utf8_normalize(text.fill_null(""), "NFKC"))
    text = pc.replace_substring_regex(text, r"[^\p{L}\p{N}\s]+", " ")
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(text, WS_RUN, " "))


def _finalize(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads every input bit over the output."""
    h = h ^ (h >> np.uint64(30))
    h = h * _P2
    h = h ^ (h >> np.uint64(27))
    h = h * _P3
    return h ^ (h >> np.uint64(31))


_QINV = np.uint64(pow(int(_P1), -1, 1 << 64))
#: Text is shingled in chunks of at most this many bytes so the per-byte arrays stay bounded.
CHUNK_BYTES = 2 << 20


_POWERS: dict[int, np.ndarray] = {}


def _powers(base: np.uint64, n: int) -> np.ndarray:
    """base**0 .. base**(n-1) modulo 2^64 (uint64 products wrap); cached, grown by doubling."""
    have = _POWERS.get(int(base))
    if have is None or len(have) < n:
        size = max(n, 2 * len(have) if have is not None else 1 << 16)
        p = np.full(size, base, dtype=np.uint64)
        p[0] = 1
        _POWERS[int(base)] = have = np.cumprod(p, dtype=np.uint64)
    return have[:n]


def _span_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """64-bit hashes of the byte spans data[starts:ends], all at once.

    A polynomial hash mod 2^64 over a prefix sum: sum(c_i * Q^i) over the span, shifted back by
    Q^-start (Q is odd, so invertible), so the value depends on the span's bytes only, not on
    where it sits; the length is mixed in and splitmix64 finalizes. Written by hand because no
    library hashes many sub-spans of one buffer without a Python call per span.
    """
    c = data.astype(np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        prefix = np.zeros(len(c) + 1, np.uint64)
        np.cumsum(c * _powers(_P1, len(c)), out=prefix[1:])
        raw = (prefix[ends] - prefix[starts]) * _powers(_QINV, len(c) + 1)[starts]
        return _finalize(raw ^ (ends - starts).astype(np.uint64))


def _spans(data: np.ndarray, offsets: np.ndarray, kind: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(span starts, span ends, row) of every shingle: n consecutive space-separated words, or n bytes.

    A row shorter than n words (bytes), but not empty, gives one shingle of all of it.
    """
    rows_n = len(offsets) - 1
    if kind == "word":
        # Normalized text has single spaces between words and none at the ends, so the word
        # boundaries are the spaces plus the ends of non-empty rows.
        spaces = np.flatnonzero(data == 32)
        nonempty = np.flatnonzero(np.diff(offsets) > 0)
        w_start = np.sort(np.concatenate([offsets[:-1][nonempty], spaces + 1]))
        w_end = np.sort(np.concatenate([offsets[1:][nonempty], spaces]))
    else:
        w_start = np.arange(len(data), dtype=np.int64)
        w_end = w_start + 1
    w_row = np.searchsorted(offsets, w_start, side="right") - 1
    counts = np.bincount(w_row, minlength=rows_n)
    row_first = np.concatenate([[0], np.cumsum(counts)])  # index of each row's first unit
    k = np.arange(len(w_start), dtype=np.int64)
    left = row_first[1:][w_row] - k  # units left in the row from unit k
    full = left >= n
    short = (k == row_first[:-1][w_row]) & (counts[w_row] < n)
    end_unit = np.where(full, k + n - 1, row_first[1:][w_row] - 1)
    take = full | short
    return w_start[take], w_end[end_unit[take]], w_row[take]


#: Shingle hashes keep 44 bits so that (row, hash) packs into one uint64 and sorts in one pass; two
#: different shingles of one row pair collide with probability ~1e3^2 / 2^45, about 3e-8.
SHINGLE_BITS = 44
_ROW_BITS = 64 - SHINGLE_BITS


def shingle_hashes(text: pa.Array, kind: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique 44-bit shingle hashes per row: (flat uint64 values, row offsets of length rows+1).

    `text` must already be normalized (`normalize_for_shingles`).
    """
    if len(text) >= 1 << _ROW_BITS:  # the packing holds 2^20 rows; split bigger batches
        half = len(text) // 2
        fa, oa = shingle_hashes(text.slice(0, half), kind, n)
        fb, ob = shingle_hashes(text.slice(half), kind, n)
        return np.concatenate([fa, fb]), np.concatenate([oa, ob[1:] + oa[-1]])
    text = pc.cast(text, pa.large_string())
    offs = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset : text.offset + len(text) + 1]
    if offs[-1] - offs[0] > CHUNK_BYTES and len(text) > 1:
        half = len(text) // 2
        fa, oa = shingle_hashes(text.slice(0, half), kind, n)
        fb, ob = shingle_hashes(text.slice(half), kind, n)
        return np.concatenate([fa, fb]), np.concatenate([oa, ob[1:] + oa[-1]])
    buf = text.buffers()[2]
    data = np.frombuffer(buf, dtype=np.uint8)[offs[0] : offs[-1]] if buf is not None else np.zeros(0, np.uint8)
    starts, ends, rows = _spans(data, (offs - offs[0]).astype(np.int64), kind, n)
    h = _span_hashes(data, starts, ends)
    packed = (rows.astype(np.uint64) << np.uint64(SHINGLE_BITS)) | (h >> np.uint64(_ROW_BITS))
    packed.sort()
    keep = np.ones(len(packed), dtype=bool)
    keep[1:] = packed[1:] != packed[:-1]
    packed = packed[keep]
    rows = (packed >> np.uint64(SHINGLE_BITS)).astype(np.int64)
    counts = np.bincount(rows, minlength=len(text))
    flat = packed & np.uint64((1 << SHINGLE_BITS) - 1)
    return flat, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def minhash_matrix(flat: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """R-MinHash signatures (rows x num_perm, uint32) from rensa over pre-hashed shingles."""
    from rensa import RMinHash

    if len(offsets) <= 1:
        return np.zeros((0, num_perm), np.uint32)
    m = RMinHash.digest_matrix_from_flat_token_hashes(
        np.ascontiguousarray(flat, dtype=np.uint64), offsets.astype(np.uint64), num_perm, seed
    )
    return np.asarray(m.to_rows(), dtype=np.uint32).reshape(len(offsets) - 1, num_perm)


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit hash per (row, band) of the band's `rows` signature values: (n, bands) uint64.

    >>> sig = np.arange(8, dtype=np.uint32).reshape(1, 8)
    >>> band_hashes(sig, 2, 4).shape
    (1, 2)
    """
    n = signatures.shape[0]
    cells = signatures[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    h = np.full((n, bands), np.uint64(rows), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(rows):
            h = (h ^ cells[:, :, j]) * _P1
        return _finalize(h)


def jaccard_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted arrays of unique values.

    >>> jaccard_sorted(np.array([1, 2, 3], np.uint64), np.array([2, 3, 4], np.uint64))
    0.5
    """
    if len(a) == 0 and len(b) == 0:
        return 1.0
    if len(a) < len(b):
        a, b = b, a
    idx = np.searchsorted(a, b)
    inter = int(np.count_nonzero(a[np.minimum(idx, len(a) - 1)] == b)) if len(a) else 0
    return inter / (len(a) + len(b) - inter)
