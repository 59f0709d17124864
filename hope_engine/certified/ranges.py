"""Tighter range bounds of a polynomial p(t) = sum_a c_a t^a over the box |t_i| <= r_i (``polynomial_range``).

Two exact refinements of the interval bound ``intervals.poly_range``, each sound in floating point:

- monotonicity: where the range of dp/dt_i over the box lies on one side of 0, p is monotone in t_i, so its maximum
  (minimum) lies on the face t_i = +-r_i: that variable is fixed there and the test repeats on the smaller polynomial
  (for the upper and the lower bound separately). When every variable is fixed this is p at one vertex: exact;
- Bernstein form for a few free variables: with t_i = r_i (2 u_i - 1), p = sum_j b_j B_j(u) in the tensor Bernstein
  basis of degree D per variable, and p lies in [min_j b_j, max_j b_j] over the box (the B_j are non-negative and
  sum to 1). The bound overestimates by O(width^2) instead of the interval form's O(width).

Rounding: each computed coefficient of a reduced polynomial or a Bernstein coefficient is a sum of products of the
exact coefficients, so it lies within gamma_k times the same sum with absolute values; that mass is added outward.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from hope_engine.algebra.basis import Basis, make_basis
from hope_engine.algebra.intervals import TINY, Box, gamma, make_box, poly_range, up
from hope_engine.caches import memoize

BERNSTEIN_FREE = 8        # Bernstein form when at most this many variables are free
BERNSTEIN_CELLS = 1 << 14  # and (D + 1)^free cells per output element at most
MONOTONE_ELEMENTS = 64    # the monotonicity test per output element, for at most this many elements
MONOTONE_ROUNDS = 4       # fix, retest: at most this many rounds


def positions(basis: Basis, alpha: torch.Tensor) -> torch.Tensor:
    """Index in ``basis`` (total, ordered by degree, each degree block listing x1^k first) of every row of ``alpha``
    (N, n), without a Python loop: position = offset of degree k + the number of multi-indices of degree k that
    come first, sum_{v < n-1} C(n - v - 2 + R, R - 1) [R >= 1] with R = alpha_{v+1} + ... + alpha_{n-1}."""
    n, order = basis.n, basis.order
    degree = alpha.sum(1)
    offsets = torch.tensor(basis.offsets, dtype=torch.long, device=alpha.device)
    if n == 1:
        return offsets[degree]
    table = _rank_table(n, order).to(alpha.device)
    tails = alpha.flip(1).cumsum(1).flip(1)[:, 1:]  # R_{v+1}, v = 0..n-2
    rank = table[:n - 1].gather(1, tails.t()).sum(0) if tails.numel() else torch.zeros_like(degree)
    return offsets[degree] + rank


@memoize("range rank tables", max_entries=16)
def _rank_table(n: int, order: int) -> torch.Tensor:
    """T[v, R] = C(n - v - 2 + R, R - 1) for R >= 1 (0 for R = 0 and for v = n - 1), shape (n, order + 1)."""
    return torch.tensor([[math.comb(n - v - 2 + r, r - 1) if r >= 1 and v < n - 1 else 0 for r in range(order + 1)]
                         for v in range(n)], dtype=torch.long)


@dataclass(frozen=True)
class _Structure:
    """What the bounds need of a total basis, built once: its nonzero exponents as pairs (m, i, a_{m,i}) sorted by m
    then i, the prefix sums over v of the rank table, a box template (weights replaced per radius), and for the
    derivatives: the position of a_m - e_i in the basis of one order less, per pair."""

    basis: Basis
    m: torch.Tensor
    i: torch.Tensor
    a: torch.Tensor
    slot: torch.Tensor
    prefix: torch.Tensor
    template: Box
    lower_position: torch.Tensor
    small: Basis | None
    small_template: Box | None


@memoize("range structures", max_entries=8)
def _structure(basis: Basis) -> _Structure:
    idx = basis.indices
    m, i = (idx >= 1).nonzero(as_tuple=True)
    a = idx[m, i]
    first = torch.ones_like(m, dtype=torch.bool)
    first[1:] = m[1:] != m[:-1]
    where_first = torch.zeros(basis.size, dtype=torch.long)
    where_first[m[first]] = first.nonzero().reshape(-1)
    slot = torch.arange(m.numel()) - where_first[m]  # the pair's place among its monomial's pairs (< order)
    prefix = torch.cat([torch.zeros(1, basis.order + 1, dtype=torch.long),
                        _rank_table(basis.n, basis.order).cumsum(0)])[:basis.n]  # sum_{u < v} T[u, R]
    small = make_basis(basis.n, basis.order - 1, "total") if basis.order >= 1 else None
    lower = torch.empty_like(m)
    step = 1 << 15
    for s0 in range(0, m.numel(), step):  # a_m - e_i, in chunks (N x n temporaries)
        rows = idx[m[s0:s0 + step]].clone()
        rows[torch.arange(rows.shape[0]), i[s0:s0 + step]] -= 1
        lower[s0:s0 + step] = positions(small, rows)
    ones = torch.ones(basis.n, dtype=torch.float64)
    return _Structure(basis, m, i, a, slot, prefix, make_box(basis, ones), lower, small,
                      make_box(small, ones) if small is not None else None)


def _sparse_positions(st: _Structure, keep: torch.Tensor) -> torch.Tensor:
    """The position of every a_m with the exponents of the pairs outside ``keep`` set to 0, from the pairs alone:
    between consecutive kept variables p_{j-1} < p_j the tail sum R_{v+1} is the constant S_j (the kept exponents
    from p_j on), so the rank is sum_j prefix[p_j, S_j] - prefix[p_{j-1}, S_j] (p_0 = 0)."""
    basis = st.basis
    m, i, a = st.m[keep], st.i[keep], st.a[keep]
    degree = torch.zeros(basis.size, dtype=torch.long).index_add_(0, m, a)
    offsets = torch.tensor(basis.offsets, dtype=torch.long)
    if not m.numel():
        return offsets[degree]
    first = torch.ones_like(m, dtype=torch.bool)
    first[1:] = m[1:] != m[:-1]
    before = a.cumsum(0) - a  # exclusive running sum over all pairs
    start = torch.zeros(basis.size, dtype=torch.long)
    start[m[first]] = before[first]
    tail = degree[m] - (before - start[m])  # S_j
    previous = torch.zeros_like(i)
    previous[1:] = i[:-1]
    previous[first] = 0
    rank = torch.zeros(basis.size, dtype=torch.long)
    rank.index_add_(0, m, st.prefix[i, tail] - st.prefix[previous, tail])
    return offsets[degree] + rank


def _products(st: _Structure, values: torch.Tensor, on: torch.Tensor | None = None) -> torch.Tensor:
    """Per monomial m, the product of ``values`` (one per pair) over its pairs (those in ``on``); 1 where none."""
    table = torch.ones(st.basis.size, max(1, st.basis.order), dtype=values.dtype)
    if on is None:
        table[st.m, st.slot] = values
    else:
        table[st.m[on], st.slot[on]] = values[on]
    return table.prod(1)


def _box(template: Box, st: _Structure, radius: torch.Tensor) -> Box:
    """The template box with the weights r^a of ``radius`` (rounded up as ``make_box`` does)."""
    w = _products(st, radius[st.i].pow(st.a))
    return dataclasses.replace(template, radius=radius, weights=up(w, 2 * template.basis.order + 4))


def _full_box(st: _Structure, radius: torch.Tensor) -> Box:
    return _box(st.template, st, radius)


def _reduce(c: torch.Tensor, st: _Structure, fixed: torch.Tensor) -> torch.Tensor:
    """p with t_i = fixed_i substituted where fixed_i is not NaN (a polynomial in the others, same basis): the
    coefficient of b collects c_a prod_{i fixed} fixed_i^{a_i} over the a that agree with b on the free variables."""
    held = ~torch.isnan(fixed)
    on = held[st.i]
    factor = _products(st, torch.where(on, fixed[st.i], torch.ones_like(fixed[st.i])).pow(st.a), on)
    target = _sparse_positions(st, ~on)
    out = torch.zeros_like(c)
    out.index_add_(0, target, c * factor.reshape(-1, *([1] * (c.dim() - 1))))
    return out


def _derivative_ranges(c: torch.Tensor, st: _Structure, radius: torch.Tensor,
                       error: float) -> tuple[torch.Tensor, ...]:
    """(lo, hi), each (n,), enclosing dp/dt_i over the box for one output element's coefficients c (M,), widened by
    the rounding of the derivative's coefficients and by ``error`` >= sum_a |c_a - exact c_a| r^a (the rounding of
    the reduction that made c), which moves dp/dt_i by at most order * error / r_i."""
    basis, small = st.basis, st.small
    d = c.new_zeros((small.size, basis.n))
    d[st.lower_position, st.i] = st.a.to(c.dtype) * c[st.m]
    box = _box(st.small_template, _structure(small), radius)
    lo, hi = poly_range(d, box)
    spread = (d.abs() * box.weights.reshape(-1, 1)).sum(0)
    lo, hi = lo + d[0], hi + d[0]
    moved = basis.order * error / torch.where(radius > 0, radius, torch.ones_like(radius))
    slack = up(gamma(small.size + 4, c.dtype) * spread + moved, 4)
    return lo - slack, hi + slack


def _bernstein(c: torch.Tensor, basis: Basis, radius: torch.Tensor, free: torch.Tensor) -> tuple[float, float]:
    """[min, max] of the Bernstein coefficients (widened by their rounding) of p(t) with c (M,) over the box, in the
    free variables only (every monomial holding another variable has coefficient 0)."""
    deg = basis.order
    k = int(free.numel())
    side = deg + 1
    idx = basis.indices.to(c.device)
    keep = (idx[:, ~_mask(free, basis.n)] == 0).all(1) if k < basis.n else torch.ones_like(idx[:, 0], dtype=torch.bool)
    sub = idx[keep][:, free]
    cell = (sub * torch.tensor([side ** (k - 1 - j) for j in range(k)], dtype=torch.long, device=c.device)).sum(1)
    dense = c.new_zeros(side ** k)
    dense.index_add_(0, cell, c[keep])
    mag = dense.abs()
    shape = (side,) * k
    dense, mag = dense.reshape(shape), mag.reshape(shape)
    for j in range(k):
        a = _bernstein_matrix(deg, float(radius[free[j]]), c.dtype, c.device)
        dense = torch.movedim(torch.tensordot(a, dense, dims=([1], [j])), 0, j)
        mag = torch.movedim(torch.tensordot(a.abs(), mag, dims=([1], [j])), 0, j)
    slack = gamma(k * (2 * deg + 8) + 8, c.dtype) * mag + TINY
    return float((dense - slack).min()), float((dense + slack).max())


def _mask(free: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.zeros(n, dtype=torch.bool, device=free.device)
    out[free] = True
    return out


def _bernstein_matrix(deg: int, r: float, dtype, device) -> torch.Tensor:
    """A[j, k]: the j-th Bernstein coefficient (degree deg on [-r, r]) of t^k, t = r (2u - 1):
    r^k sum_m C(k, m) 2^m (-1)^(k-m) C(j, m) / C(deg, m) (exact rationals, one rounding each, times r^k)."""
    rows = []
    for j in range(deg + 1):
        row = []
        for k in range(deg + 1):
            q = sum(Fraction(math.comb(k, m) * 2 ** m * (-1) ** (k - m) * math.comb(j, m), math.comb(deg, m))
                    for m in range(min(j, k) + 1))
            row.append(float(q) * r ** k)
        rows.append(row)
    return torch.tensor(rows, dtype=dtype, device=device)


def _element_range(c: torch.Tensor, st: _Structure, radius: torch.Tensor, box: Box) -> tuple[float, float]:
    """Bounds of p over the box for one output element (c: (M,)): monotone variables fixed on their faces (upper and
    lower bound apart), then the Bernstein form or the interval form of what is left."""
    basis = st.basis
    n = basis.n
    scale = float(up((c.abs() * box.weights).sum(), basis.size + 4))
    # the reduced coefficients' rounding: gamma times the mass of the terms they sum (<= the box mass of p)
    slack = gamma(basis.size + 2 * basis.order + 8, c.dtype) * scale + TINY
    result = []
    for sign in (1.0, -1.0):  # upper bound, then lower bound
        fixed = torch.full((n,), math.nan, dtype=c.dtype, device=c.device)
        fixed[radius == 0] = 0.0
        q = c
        for _ in range(MONOTONE_ROUNDS):
            free = torch.isnan(fixed)
            if not bool(free.any()):
                break
            lo, hi = _derivative_ranges(q, st, torch.where(free, radius, torch.zeros_like(radius)), slack)
            inc, dec = free & (sign * lo > 0) & (sign * hi > 0), free & (sign * hi < 0) & (sign * lo < 0)
            if not bool((inc | dec).any()):
                break
            fixed = torch.where(inc, radius, torch.where(dec, -radius, fixed))
            q = _reduce(c, st, fixed)
        free = torch.isnan(fixed).nonzero().reshape(-1)
        r_free = torch.zeros_like(radius)
        r_free[free] = radius[free]
        lo_i, hi_i = poly_range(q.reshape(-1, 1), _full_box(st, r_free))
        lo_v, hi_v = float(q[0] + lo_i[0]), float(q[0] + hi_i[0])
        lo_v, hi_v = lo_v - 4 * gamma(2, c.dtype) * abs(lo_v) - TINY, hi_v + 4 * gamma(2, c.dtype) * abs(hi_v) + TINY
        k = int(free.numel())
        if 0 < k <= BERNSTEIN_FREE and (basis.order + 1) ** k <= BERNSTEIN_CELLS:
            b_lo, b_hi = _bernstein(q, basis, radius, free)
            lo_v, hi_v = max(lo_v, b_lo), min(hi_v, b_hi)
        elif k == 0:  # a vertex: p there, up to the rounding of the sum
            lo_v, hi_v = max(lo_v, float(q[0])), min(hi_v, float(q[0]))
        result.append(hi_v + slack if sign > 0 else lo_v - slack)
    return result[1], result[0]


def polynomial_range(c: torch.Tensor, basis: Basis, radius: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi), shaped like one coefficient, with lo <= p(t) <= hi for every |t_i| <= radius_i (p of coefficients
    c: (M, *shape) in the total ``basis``): the tighter of the interval form and, per element (up to
    MONOTONE_ELEMENTS of them), the monotonicity reduction and the Bernstein form. Never tighter than sound."""
    refine = (basis.order >= 1 and c[0].numel() <= MONOTONE_ELEMENTS and c.device.type == "cpu"
              and bool(torch.isfinite(c).all()))
    st = _structure(basis) if refine else None
    box = _full_box(st, radius) if refine else make_box(basis, radius)
    lo, hi = poly_range(c, box)
    lo, hi = c[0] + lo, c[0] + hi
    e = 4 * gamma(2, c.dtype) * (c[0].abs() + lo.abs() + hi.abs()) + TINY
    lo, hi = lo - e, hi + e
    if not refine:
        return lo, hi
    flat = c.reshape(c.shape[0], -1)
    lo_f, hi_f = lo.reshape(-1).clone(), hi.reshape(-1).clone()
    for e_i in range(flat.shape[1]):
        a, b = _element_range(flat[:, e_i], st, radius, box)
        lo_f[e_i], hi_f[e_i] = max(float(lo_f[e_i]), a), min(float(hi_f[e_i]), b)
    return lo_f.reshape(lo.shape), hi_f.reshape(hi.shape)
