"""Accuracy with honest error bars: Wilson score intervals, and an exact McNemar test for paired runs.

Benchmarks here are small (30 AIME problems, a few hundred MATH items), where the normal
approximation (p ± 1.96·sqrt(p(1-p)/n)) gives intervals outside [0, 1] and zero width at 0/n;
Wilson's interval does not. Two models evaluated on the same items are paired, so the right test
for "is B better than A" uses only the items they disagree on (McNemar), not two independent CIs.

>>> lo, hi = wilson_interval(8, 10)
>>> round(lo, 4), round(hi, 4)
(0.4902, 0.9433)
>>> round(mcnemar_p(0, 6), 4)
0.0312
"""

from __future__ import annotations

import math

#: The two-sided 95% normal quantile.
Z95 = 1.959963984540054


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for `correct` successes out of `total` trials; (0, 1) when total is 0.

    >>> wilson_interval(0, 10)[0], round(wilson_interval(0, 10)[1], 4)
    (0.0, 0.2775)
    """
    if total <= 0:
        return 0.0, 1.0
    if not 0 <= correct <= total:
        raise ValueError(f"correct={correct} outside [0, {total}]")
    p = correct / total
    z2 = z * z
    denom = 1.0 + z2 / total
    centre = (p + z2 / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_p(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value from the discordant pairs (binomial with p = 1/2).

    >>> mcnemar_p(3, 3), mcnemar_p(0, 0)
    (1.0, 1.0)
    """
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)
