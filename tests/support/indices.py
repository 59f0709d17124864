"""Multi-indices: all of them up to an order, and alpha!."""

from __future__ import annotations

import math
from collections.abc import Sequence


def multi_indices(n: int, order: int) -> list[tuple[int, ...]]:
    """All multi-indices of n variables with |alpha| <= order."""
    out: list[tuple[int, ...]] = []

    def rec(prefix: tuple[int, ...], left: int) -> None:
        if len(prefix) == n:
            out.append(prefix)
            return
        for e in range(left + 1):
            rec(prefix + (e,), left - e)

    rec((), order)
    return out


def factorial_of(alpha: Sequence[int]) -> int:
    """alpha! = prod_i alpha_i!."""
    return math.prod(math.factorial(int(a)) for a in alpha)
