"""Shingling and MinHash for near dedup, vectorized over a whole batch.

Text is normalized for shingling (NFKC, lowercase, every run of characters other than letters and
digits replaced by one space) with pyarrow compute. A word shingle
is then the byte span of n consecutive words ("w1 w2 w3 w4 w5", exactly what " ".join of the words
gives); a character shingle is a span of n UTF-8 bytes (character n-grams on ASCII). Every span
of a batch is hashed at once with numpy over the batch's UTF-8 buffer (no per-token Python loop)
and kept in text order: MinHash signatures come from rensa's R-MinHash over those hashes (order
and repeats do not change a MinHash), and the exact-Jaccard verification compares the sorted sets
(`shingle_set`) of only the rows that become candidates.

>>> import pyarrow as pa
>>> t = normalize_for_shingles(pa.array(["The  cat, sat on the MAT!", ""]))
>>> t.to_pylist()
['the cat sat on the mat', '']
>>> flat, offsets = shingle_hashes(t, "word", 5)
>>> offsets.tolist()     # 6 words -> 2 five-word shingles; empty text -> none
[0, 2, 2]
"""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_P1 = np.uint64(0x9E3779B97F4A7C15)
_P2 = np.uint64(0xBF58476D1CE4E5B9)
_P3 = np.uint64(0x94D049BB133111EB)


#: A run of anything but letters and digits, written as one space. Runs of two or more are matched
#: whole; a lone character only when it is not already a space, so the single spaces between
#: words (most of the runs) are left alone: regex replacement costs per match.
_NOT_WORD_RUN = r"[^\p{L}\p{N}]{2,}|[^\p{L}\p{N} ]"


def normalize_for_shingles(text: pa.Array) -> pa.Array:
    """NFKC, lowercase, every run of characters other than letters and digits (punctuation,
    whitespace, marks) turned into one space, ends trimmed."""
    text = pc.utf8_lower(pc.utf8_normalize(text.fill_null(""), "NFKC"))
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(text, _NOT_WORD_RUN, " "))


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
    # one 8-byte-per-byte array, filled in place: fresh temporaries here cost more in page faults
    # than in arithmetic
    prefix = np.empty(len(data) + 1, np.uint64)
    prefix[0] = 0
    c = prefix[1:]
    with np.errstate(over="ignore"):
        np.add(data, np.uint64(1), out=c)
        np.multiply(c, _powers(_P1, len(c)), out=c)
        np.cumsum(c, out=c)
        raw = (prefix[ends] - prefix[starts]) * _powers(_QINV, len(c) + 1)[starts]
        return _finalize(raw ^ (ends - starts).astype(np.uint64))


def _spans(data: np.ndarray, offsets: np.ndarray, kind: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(span starts, span ends, row) of every shingle: n consecutive space-separated words, or n bytes.

    A row shorter than n words (bytes), but not empty, gives one shingle of all of it.
    """
    rows_n = len(offsets) - 1
    if kind == "word":
        # Normalized text has single spaces between words and none at the ends, so a word starts
        # after a space or at a non-empty row's start, and ends at a space or at its row's end; the
        # two kinds never fall on the same byte, so a mask over the bytes lists them in order
        # (linear, where sorting the concatenation was the slowest step of shingling).
        spaces = np.flatnonzero(data == 32)
        nonempty = np.flatnonzero(np.diff(offsets) > 0)
        mark = np.zeros(len(data) + 1, bool)
        mark[spaces + 1] = True
        mark[offsets[:-1][nonempty]] = True
        w_start = np.flatnonzero(mark[:-1])
        mark[:] = False
        mark[spaces] = True
        mark[offsets[1:][nonempty]] = True
        w_end = np.flatnonzero(mark)
    else:
        w_start = np.arange(len(data), dtype=np.int64)
        w_end = w_start + 1
    w_row = np.searchsorted(offsets, w_start, side="right") - 1
    counts = np.bincount(w_row, minlength=rows_n)
    row_first = np.concatenate([[0], np.cumsum(counts)])  # index of each row's first unit
    row_stop = row_first[1:][w_row]  # one past the last unit of unit k's row
    k = np.arange(len(w_start), dtype=np.int64)
    take = k + n <= row_stop  # n units from unit k stay in its row
    short_rows = np.flatnonzero((counts > 0) & (counts < n))
    take[row_first[:-1][short_rows]] = True  # a short row: one shingle from its first unit
    end_unit = np.minimum(k + n, row_stop) - 1
    return w_start[take], w_end[end_unit[take]], w_row[take]


#: A shingle hash is the top 44 bits of its 64-bit span hash: these are the values MinHash signs
#: and the verification compares (so they are kept as they were when rows were packed as
#: (row, hash) in one uint64: other values would change every signature, hence which pairs LSH
#: finds); two different shingles of one row pair collide with probability ~1e3^2 / 2^45, about 3e-8.
SHINGLE_BITS = 44
_LOW_BITS = 64 - SHINGLE_BITS


def shingle_hashes(text: pa.Array, kind: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """44-bit shingle hashes per row, in text order with repeats: (flat uint64 values, row offsets
    of length rows+1).

    MinHash needs neither order nor uniqueness, so the whole batch is not sorted here (that sort
    was a third of shingling); `shingle_set` makes the sorted set of the few rows that are verified.
    `text` must already be normalized (`normalize_for_shingles`).
    """
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
    flat = _span_hashes(data, starts, ends) >> np.uint64(_LOW_BITS)
    counts = np.bincount(rows, minlength=len(text))
    return flat, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def shingle_set(values: np.ndarray) -> np.ndarray:
    """One row's shingle hashes as the sorted set `jaccard_sorted` compares.

    >>> shingle_set(np.array([5, 2, 5], np.uint64)).tolist()
    [2, 5]
    """
    # sort + mask: np.unique costs ~50 us per call on a few hundred values (it hashes first)
    s = np.sort(values)
    keep = np.ones(len(s), bool)
    keep[1:] = s[1:] != s[:-1]
    return s[keep]


def minhash_matrix(flat: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """R-MinHash signatures (rows x num_perm, uint32) from rensa over pre-hashed shingles."""
    from rensa import RMinHash

    if len(offsets) <= 1:
        return np.zeros((0, num_perm), np.uint32)
    m = RMinHash.digest_matrix_from_flat_token_hashes(
        np.ascontiguousarray(flat, dtype=np.uint64), offsets.astype(np.uint64), num_perm, seed
    )
    # rensa hands the matrix back only as lists of ints; fromiter over the chained rows skips
    # asarray's shape discovery (twice as fast)
    rows = len(offsets) - 1
    values = np.fromiter(itertools.chain.from_iterable(m.to_rows()), np.uint32, count=rows * num_perm)
    return values.reshape(rows, num_perm)


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
