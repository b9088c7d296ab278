"""Iterations to an MMD threshold (docs/method.md section 5): the first Picard iteration whose current final
sample has MMD below the threshold (`<`, cdlbench's default, or `<=`, the CDL reference code's test);
censored (None) when never reached, never a made-up number."""
from __future__ import annotations


def first_below(curve: list[float], threshold: float, inclusive: bool = False) -> int | None:
    """1-based index of the first value below threshold (at or below it when inclusive), or None (censored)."""
    for i, v in enumerate(curve):
        if v < threshold or (inclusive and v == threshold):
            return i + 1
    return None
