"""Statistics shared by evaluation and the probes."""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion correct / total (95% by default); (0, 1) when total is 0."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_p(fixed: int, broken: int) -> float:
    """Two-sided exact McNemar p: the chance of a split at least this uneven of fixed + broken fair coin tosses."""
    n, k = fixed + broken, min(fixed, broken)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n) if n else 1.0


def distance_buckets(n_segments: int) -> list[tuple[int, int]]:
    """Distance ranges 0, 1, 2-3, 4-7, ... up to n_segments - 1 (segments between a fact and the question)."""
    out, low = [(0, 0)], 1
    while low <= n_segments - 1:
        out.append((low, min(2 * low - 1, n_segments - 1)))
        low *= 2
    return out
