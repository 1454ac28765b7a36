"""Deterministic 64-bit hashes: the only source of order and randomness in posttrain.

Order and sampling come from these (of a uuid, a seed, a fragment index), never from timing, so
the same recipe and seed give the same bytes on any engine and worker count.
"""

from __future__ import annotations

import numpy as np
import xxhash


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, vectorised: a fixed, platform-independent 64-bit mix.

    >>> int(splitmix64(np.array([0], dtype=np.uint64))[0])
    16294208416658607535
    """
    z = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uuid_keys(uuids: list[str]) -> np.ndarray:
    """xxh64 of each uuid: the per-document key used for tie-breaks and shuffling.

    >>> uuid_keys(["a"]).dtype
    dtype('uint64')
    """
    return np.fromiter(
        (xxhash.xxh64_intdigest(u.encode("utf-8")) for u in uuids), dtype=np.uint64, count=len(uuids)
    )
