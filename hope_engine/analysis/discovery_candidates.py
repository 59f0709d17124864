"""The candidate estimates of ``discover(method="auto")``, how each is scored on held-out points, and the choice.

Candidates (coefficients b of the monomials (x - c)^a, |a| <= K, around the centre c):

- "local": the exact expansion of the network at c (its Taylor coefficients; no sampling error).
- "taylor": the mean of expansions at reference points in the box, each Taylor-shifted to c.
- "fit": least squares on network samples in the box, the constant anchored at f(c).
- "data": least squares on the caller's data points in the box (when ``data=(x, y)`` is given).
- "constrained": least squares subject to b_a = the network's exact coefficient for every |a| <= m (the derivatives
  at c up to order m): the constrained coefficients are eliminated, min ||A_F b_F - (y - A_C b_C)||, on network
  samples (or on the data).

Score ("held-out error"): the mean squared error on points no candidate was fitted to (the data in the box, by
``folds``-fold cross-validation for the candidates that use the data; else fresh network samples) of the candidate
*completed*: P_b(t) + Q_b(t), Q_b the least-squares fit, on network samples, of the degree K+1..K+e monomials to the
network minus P_b. A Taylor coefficient is what remains when the higher-degree content is accounted for, so a fit
whose low-degree coefficients absorbed the truncated terms is not rewarded for it.

Choice: every candidate whose score is within one standard error (of the paired difference over the held-out points)
of the best ties with it; among those, the smallest coefficient uncertainty wins (data-based: twice the largest
least-squares standard error; network-based: half the largest disagreement between "fit" and "local", both exact
readings of the network), then the order fit, constrained, local, taylor, data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from hope_engine.algebra.basis import Basis, make_basis
from hope_engine.algebra.polynomial import monomial_parents, monomial_table

PREFERENCE = ("fit", "constrained", "local", "taylor", "data")
NETWORK_BASED = ("local", "taylor", "fit", "constrained")


@dataclass
class Candidate:
    """One estimate: its coefficients (M,), their standard errors (M,), its held-out score and how it was made."""

    method: str
    coefficients: torch.Tensor
    std: torch.Tensor
    detail: str = ""
    uses_data: bool = False
    heldout: float = math.nan  # mean squared held-out error (completed), see the module docstring
    heldout_se: float = math.nan  # standard error of its difference from the best candidate's
    uncertainty: float = math.nan
    r2: float = math.nan  # R^2 against the network on fresh points (the estimate alone, not completed)
    chosen: bool = False
    formula: str = ""


class CandidateTable(list):
    """The candidates of one ``discover`` call; prints as a table (the chosen one marked) after ``reason``."""

    reason: str = ""
    metric: str = ""

    def __str__(self) -> str:
        if not self:
            return "no candidates"
        width = max(len("candidate"), *(len(c.method + (f" ({c.detail})" if c.detail else "")) for c in self))
        lines = [f"candidates (held-out error: {self.metric})"]
        lines.append(f"  {'candidate':<{width}}  {'held-out MSE':>12}  {'+- s.e.':>9}  {'coef. unc.':>10}  "
                     f"{'R2 vs net':>10}  formula (largest terms)")
        for c in self:
            name = c.method + (f" ({c.detail})" if c.detail else "")
            mark = "*" if c.chosen else " "
            lines.append(f"{mark} {name:<{width}}  {c.heldout:>12.4e}  {c.heldout_se:>9.2e}  {c.uncertainty:>10.3g}  "
                         f"{c.r2:>10.6f}  {c.formula}")
        if self.reason:
            lines.append(f"  chosen: {self.reason}")
        return "\n".join(lines)

    def by_name(self, method: str) -> Candidate:
        for c in self:
            if c.method == method:
                return c
        raise KeyError(f"no candidate {method!r}; have {[c.method for c in self]}")

    def coefficients(self) -> torch.Tensor:
        """(candidates, M) coefficient matrix in table order."""
        return torch.stack([c.coefficients for c in self])


def lstsq_with_se(a: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least squares b = argmin ||a b - y|| (columns scaled for conditioning) and its standard errors
    se_j = s sqrt((a^T a)^-1_jj), s^2 = ||residual||^2 / max(N - M, 1)."""
    a, y = a.double(), y.double()
    n, m = a.shape
    if n < m:
        raise ValueError(f"{n} points for {m} unknown coefficients; use more samples or a lower order")
    scale = a.abs().amax(0).clamp_min(1e-300)
    # (N, 1) right-hand side in column-major layout: with strides (1, 1) LAPACK can be handed a leading dimension 1
    sol = torch.linalg.lstsq(a / scale, y[None].contiguous().T, driver="gelsd").solution[:, 0]
    coef = sol / scale
    s2 = float((y - a @ coef).pow(2).sum()) / max(n - m, 1)
    gram_inv = torch.linalg.pinv((a / scale).T @ (a / scale))
    return coef, (s2 * gram_inv.diagonal().clamp_min(0)).sqrt() / scale


def constrained_lstsq(a: torch.Tensor, y: torch.Tensor, fixed: torch.Tensor, values: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """min ||a b - y|| subject to b[fixed] = values[fixed], by eliminating the fixed coefficients; standard errors
    of the free ones (0 for the fixed)."""
    b = values.double().clone()
    se = torch.zeros_like(b)
    free = ~fixed
    if bool(free.any()):
        rhs = y.double() - a[:, fixed].double() @ b[fixed]
        b[free], se[free] = lstsq_with_se(a[:, free], rhs)
    return b, se


def monomials(basis: Basis, t: torch.Tensor) -> torch.Tensor:
    """(N, M) table of t^a for the basis' multi-indices, t (N, n)."""
    parent, var = monomial_parents(basis)
    return monomial_table(t.double(), parent, var, basis.offsets).T.contiguous()


@dataclass
class Completion:
    """The degree K+1..K+e monomials and network samples that complete a candidate (see the module docstring)."""

    basis: Basis  # order K + e
    size: int  # M (the order-K prefix)
    samples_t: torch.Tensor  # network sample displacements (N, n)
    samples_f: torch.Tensor  # network values there (N,)
    high: torch.Tensor = field(init=False)  # (N, M_e - M) their high monomials
    low: torch.Tensor = field(init=False)  # (N, M)

    def __post_init__(self):
        table = monomials(self.basis, self.samples_t)
        self.low, self.high = table[:, :self.size], table[:, self.size:]

    def correction(self, b: torch.Tensor) -> torch.Tensor:
        """Coefficients of the high monomials fitted to f - P_b on the network samples (empty when e = 0)."""
        if self.high.shape[1] == 0:
            return torch.zeros(0, dtype=torch.float64)
        coef, _ = lstsq_with_se(self.high, self.samples_f - self.low @ b)
        return coef


def completion_order(n: int, order: int, kind: str, extra: int = 2, max_monomials: int = 3000) -> int:
    """K + e with e <= ``extra`` the largest whose basis stays within ``max_monomials``."""
    for e in range(extra, -1, -1):
        if make_basis(n, order + e, kind).size <= max_monomials or e == 0:
            return order + e
    return order


def choose(cands: CandidateTable, errors: dict[str, torch.Tensor]) -> Candidate:
    """The choice rule of the module docstring; fills heldout, heldout_se, chosen and the table's reason."""
    for c in cands:
        c.heldout = float(errors[c.method].mean())
    best = min(cands, key=lambda c: c.heldout)
    n = errors[best.method].numel()
    for c in cands:
        diff = errors[c.method] - errors[best.method]
        c.heldout_se = float(diff.std()) / math.sqrt(n) if n > 1 else 0.0
    tied = [c for c in cands if c.heldout - best.heldout <= c.heldout_se]
    chosen = min(tied, key=lambda c: (c.uncertainty, PREFERENCE.index(c.method)))
    chosen.chosen = True
    others = [c.method for c in tied if c is not chosen]
    if chosen is best and not others:
        cands.reason = f"{chosen.method}: the lowest held-out error, no other within one standard error"
    elif chosen is best:
        cands.reason = (f"{chosen.method}: the lowest held-out error; tied within one standard error with "
                        f"{', '.join(others)}, and the smallest coefficient uncertainty ({chosen.uncertainty:.3g}) "
                        "or first in the order fit, constrained, local, taylor, data among them")
    else:
        cands.reason = (f"{chosen.method}: held-out error within one standard error of the lowest ({best.method}); "
                        f"among the tied ({', '.join(c.method for c in tied)}) the smallest coefficient uncertainty "
                        f"({chosen.uncertainty:.3g}), then the order fit, constrained, local, taylor, data")
    return chosen
