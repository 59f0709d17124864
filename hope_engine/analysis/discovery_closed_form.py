"""Closed-form hypotheses for discovered coefficients: each coefficient replaced by the simplest nearby number.

Per coefficient c: the rational p/q with the smallest denominator q <= ``max_denominator`` and |c - p/q| <= tolerance
(0 when |c| <= tolerance), or, with ``constants`` (e.g. sympy's pi, E), what ``sympy.nsimplify(c, constants,
tolerance=tolerance)`` returns when that is within the tolerance and no rational is. The result is a *hypothesis*: it
carries the largest coefficient change it made and, when the caller scores it, its held-out error next to the
estimate's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import sympy as sp


def simplest_number(value: float, tolerance: float, max_denominator: int = 12, constants=()) -> sp.Expr | None:
    """The simplest number within ``tolerance`` of ``value``: 0, else p/q with the smallest q, else an nsimplify form
    in ``constants``; None when none is within the tolerance."""
    if not math.isfinite(value):
        return None
    if abs(value) <= tolerance:
        return sp.Integer(0)
    for q in range(1, max_denominator + 1):
        p = round(value * q)
        if abs(value - p / q) <= tolerance:
            return sp.Rational(p, q)
    if constants:
        guess = sp.nsimplify(value, list(constants), tolerance=tolerance)
        if guess.free_symbols == set() and abs(float(guess) - value) <= tolerance:
            return guess
    return None


@dataclass
class ClosedForm:
    """A closed-form hypothesis: the formula, the per-term numbers it used, its largest change of a coefficient, and
    (when scored) its held-out error next to that of the estimate it came from."""

    formula: sp.Expr
    terms: list[tuple[str, float, sp.Expr]]  # (monomial, estimate, closed form) for every nonzero closed form
    unmatched: list[tuple[str, float]]  # coefficients with no simple number within the tolerance (kept as floats)
    max_change: float  # max over coefficients of |estimate - closed form|
    tolerance: float
    heldout: float = math.nan  # held-out error of the closed form
    heldout_estimate: float = math.nan  # held-out error of the estimate it was read from
    metric: str = ""
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"hypothesis (each coefficient moved by at most {self.max_change:.3g}, tolerance {self.tolerance:g}):"
                 f" {self.formula}"]
        if not math.isnan(self.heldout):
            lines.append(f"  held-out {self.metric}: hypothesis {self.heldout:.4g}, estimate "
                         f"{self.heldout_estimate:.4g}")
        if self.unmatched:
            lines.append("  no simple number within the tolerance for: " +
                         ", ".join(f"{m} ({v:+.4g})" for m, v in self.unmatched))
        lines.extend(f"  {n}" for n in self.notes)
        return "\n".join(lines)


def closed_form(coefficients, monomials: list, texts: list[str], tolerance: float = 0.02, max_denominator: int = 12,
                constants=()) -> tuple[ClosedForm, list[float]]:
    """The hypothesis for ``coefficients`` (floats) of the sympy ``monomials`` (with display ``texts``), and its
    coefficient vector (floats; unmatched coefficients keep their estimate)."""
    if tolerance <= 0:
        raise ValueError(f"tolerance must be positive, got {tolerance}")
    values, expr, terms, unmatched, change = [], sp.Integer(0), [], [], 0.0
    for c, mono, text in zip(coefficients, monomials, texts):
        c = float(c)
        guess = simplest_number(c, tolerance, max_denominator, constants)
        if guess is None:
            unmatched.append((text, c))
            values.append(c)
            expr += sp.Float(c, 6) * mono
            continue
        values.append(float(guess))
        change = max(change, abs(c - float(guess)))
        if guess != 0:
            terms.append((text, c, guess))
            expr += guess * mono
    return ClosedForm(sp.expand(expr), terms, unmatched, change, tolerance), values
