"""LSH banding arithmetic: the S-curve and the bands x rows that best fit a threshold.

A pair with Jaccard similarity ``s`` shares at least one band of ``r`` MinHash rows out of ``b``
bands with probability ``1 - (1 - s**r)**b``: the S-curve. The defaults (128 permutations,
threshold 0.8) give b=9, r=13:

>>> [round(candidate_probability(s, 9, 13), 3) for s in (0.5, 0.7, 0.8, 0.9, 0.95)]
[0.001, 0.084, 0.399, 0.929, 0.998]

so a pair at 0.9 is found 93% of the time and a pair at 0.5 almost never; every candidate is then
verified by exact Jaccard on the shingle sets, so the curve only costs recall, never precision.
"""

from __future__ import annotations

import numpy as np

from posttrain.config import DedupConfig


def candidate_probability(s: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """P(a pair of Jaccard similarity `s` becomes an LSH candidate) = 1 - (1 - s^r)^b.

    >>> round(candidate_probability(0.8, 20, 5), 4)
    0.9996
    """
    p = 1.0 - (1.0 - np.power(s, rows)) ** bands
    return float(p) if np.ndim(p) == 0 else p


def _integral(f_vals: np.ndarray, xs: np.ndarray) -> float:
    return float(np.sum((f_vals[1:] + f_vals[:-1]) * np.diff(xs)) / 2.0)


def optimal_bands_rows(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm minimizing the weighted false-positive area below
    `threshold` plus the false-negative area above it (the criterion datasketch uses, so the two
    agree on defaults).

    >>> optimal_bands_rows(0.8, 128)
    (9, 13)
    """
    lo = np.linspace(0.0, threshold, 201)
    hi = np.linspace(threshold, 1.0, 201)
    best, best_err = (1, 1), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = _integral(candidate_probability(lo, b, r), lo)
            fn = _integral(1.0 - candidate_probability(hi, b, r), hi)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best


def s_curve_table(bands: int, rows: int, points: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)) -> str:
    """A one-line printable S-curve: `s=0.80:p=0.445 ...`."""
    return " ".join(f"s={s:.2f}:p={candidate_probability(s, bands, rows):.3f}" for s in points)


def bands_rows(config: DedupConfig) -> tuple[int, int]:
    """(bands, rows) of a dedup config: the configured ones, else those minimizing false positives + negatives.

    >>> bands_rows(DedupConfig())
    (9, 13)
    >>> bands_rows(DedupConfig(num_perm=64, threshold=0.5))
    (14, 4)
    """
    if config.bands is not None and config.rows is not None:
        return config.bands, config.rows
    return optimal_bands_rows(config.threshold, config.num_perm)
