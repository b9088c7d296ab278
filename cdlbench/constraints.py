"""Value checks for component parameters: each returns None when the value is allowed, else what is."""
from __future__ import annotations


def positive(v):
    return None if v is None or (isinstance(v, (int, float)) and v > 0) else "must be > 0"


def non_negative(v):
    return None if isinstance(v, (int, float)) and v >= 0 else "must be >= 0"


def probability(v):
    return None if isinstance(v, (int, float)) and 0 <= v <= 1 else "must be in [0, 1]"


def one_of(*choices):
    def check(v):
        return None if v in choices else f"must be one of {', '.join(map(str, choices))}"
    return check
