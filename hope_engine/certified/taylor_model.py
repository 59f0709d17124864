"""Taylor models (Berz and Makino): a jet P(t) (degree <= K in t = x - x0) with an interval remainder [-R, R].

A Taylor model (P, R) of a value v over the box means: |v(x0 + t) - P(t)| <= R for every t in the box, elementwise.
The arithmetic keeps that invariant:

- sums: (P1 + P2, R1 + R2); constant factors k: (k P, |k| R);
- products: P1 P2 = T_K[P1 P2] + H with |H| <= sum_p A_p (sum_{q > K - p} B_q) (the per-degree masses), and
  R = |H| + |P1| R2 + |P2| R1 + R1 R2 with |Pi| the bound of Pi over the box;
- analytic f(u), u = u0 + p + I (p without constant): with a_j = f^(j)(u0) / j!,
  f(u) - T_K[f(u0 + p)] = sum_{j<=K} a_j ((p + I)^j - p^j) + sum_{j<=K} a_j high(p^j)
  + f^(K+1)(xi) / (K+1)! (p + I)^(K+1),
  bounded by sum_j |a_j| ((|p| + R)^j - |p|^j + H_j) + D (|p| + R)^(K+1), H_j the majorant of the part of p^j above
  degree K and D the bound of ``tm_derivatives`` over the enclosure of u.

Every remainder also holds the rounding error of computing P's coefficients in floating point: gamma_k times the
mass of the terms the coefficients are sums of (linear ops, products), or (for the recurrences of analytic functions)
8 (K + 2) M u times the majorant sum_j |a_j| (|p| + R)^j of the composed series (an a-priori estimate).
"""

from __future__ import annotations

import torch

from hope_engine.algebra import jet as series
from hope_engine.algebra.basis import make_basis
from hope_engine.algebra.derivative_bounds import derivative_bound
from hope_engine.algebra.intervals import Box, degree_masses, gamma, mass, poly_range, unit_roundoff, up
from hope_engine.algebra.jet import Jet
from hope_engine.certified.ranges import polynomial_range


class TM(Jet):
    """A Taylor model: ``c`` the polynomial's coefficients (M, *shape), ``r`` the remainder half-width (*shape)."""

    __slots__ = ("r", "_range")

    def __init__(self, c: torch.Tensor, basis, r: torch.Tensor):
        super().__init__(c, basis)
        self.r = r
        self._range = None

    def __repr__(self) -> str:
        return f"TM(shape={tuple(self.shape)}, K={self.basis.order}, max remainder={float(self.r.max()):.3g})"


def make(jet: Jet, r: torch.Tensor) -> TM:
    """A Taylor model from a jet and a remainder broadcast to the jet's value shape."""
    shape = jet.c.shape[1:]
    if r.shape != shape:
        r = r.expand(shape).contiguous()
    r = torch.where(torch.isnan(r), torch.inf, r)  # an undefined bound (inf * 0 downstream of an infinite one): none
    return TM(jet.c, jet.basis, r)


def constant(value: torch.Tensor, basis, r: torch.Tensor | None = None) -> TM:
    """The Taylor model value +- r (zero polynomial part)."""
    jet = series.constant_jet(value, basis)
    return make(jet, torch.zeros_like(value) if r is None else r)


def poly_bounds(x: TM, box: Box) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) of p = P - P(0) over the box (cached on the model)."""
    if x._range is None:
        x._range = poly_range(x.c, box)
    return x._range


def enclosure(x: TM, box: Box) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) enclosing the value over the box: P(0) + range(p) +- R, rounded outward."""
    lo, hi = poly_bounds(x, box)
    c0 = x.c[0]
    e = 2 * unit_roundoff(c0.dtype) * (c0.abs() + hi.abs() + lo.abs() + x.r)
    return c0 + lo - x.r - e, c0 + hi + x.r + e


def tight_enclosure(x: TM, box: Box) -> tuple[torch.Tensor, torch.Tensor]:
    """``enclosure`` with the polynomial's range from ``ranges.polynomial_range`` (monotone variables fixed on their
    faces, the Bernstein form for a few free ones): never wider, much tighter on wide boxes; costlier, so used for
    the output only."""
    lo, hi = polynomial_range(x.c, box.basis, box.radius)
    e = 2 * unit_roundoff(x.c.dtype) * (lo.abs() + hi.abs() + x.r)
    tlo, thi = lo - x.r - e, hi + x.r + e
    plo, phi = enclosure(x, box)
    return torch.maximum(tlo, plo), torch.minimum(thi, phi)


def magnitude(x: TM, box: Box) -> torch.Tensor:
    """A bound on |P(t)| over the box (without the remainder)."""
    lo, hi = poly_bounds(x, box)
    c0 = x.c[0]
    return up(torch.maximum((c0 + lo).abs(), (c0 + hi).abs()), 4)


def full_mass(x: Jet, box: Box) -> torch.Tensor:
    """sum_m |c_m| w_m including the constant: the magnitude of the terms P's coefficients are made of."""
    return mass(x.c, box, constant=True)


# ----------------------------------------------------------------------------------------------- sums and scaling
def add(a: TM, b: TM, box: Box, sign: float = 1.0) -> TM:
    """a + sign b (sign +-1)."""
    jet = series.add(a, b) if sign == 1.0 else series.sub(a, b)
    u = unit_roundoff(a.dtype)
    r = up(a.r + b.r + u * (full_mass(a, box) + full_mass(b, box)), 4)
    return make(jet, r)


def add_constant(a: TM, value, box: Box) -> TM:
    jet = series.add_constant(a, value)
    v = torch.as_tensor(value, dtype=a.dtype, device=a.device).abs()
    return make(jet, up(a.r + 2 * unit_roundoff(a.dtype) * (full_mass(a, box) + v), 4))


def scale(a: TM, factor, box: Box, roundings: int = 1) -> TM:
    """a * factor for a constant factor (tensor or number) that is itself within ``roundings - 1`` roundings of the
    exact factor (e.g. 1 / b is one rounding away from the reciprocal of b)."""
    jet = series.scale(a, factor)
    f = factor.abs() if isinstance(factor, torch.Tensor) else abs(float(factor))
    k = roundings + 1
    r = up(f * (a.r + gamma(k, a.dtype) * full_mass(a, box)), 4)
    return make(jet, r)


# ---------------------------------------------------------------------------------------------------- products
def _high_part(am: torch.Tensor, bm: torch.Tensor, combine) -> torch.Tensor:
    """Majorant of the degree > K part of a product: sum_{p >= 1} combine(A_p, sum_{q > K - p} B_q)."""
    order = am.shape[0] - 1
    suffix = bm.flip(0).cumsum(0).flip(0)  # suffix[k] = sum_{q >= k} B_q
    out = None
    for p in range(1, order + 1):
        term = combine(am[p], suffix[order - p + 1])
        out = term if out is None else out + term
    return out


def mul(a: TM, b: TM, box: Box) -> TM:
    """Elementwise product of two Taylor models (shapes broadcast)."""
    jet = series.mul(a, b)
    order = box.order
    nd = max(a.ndim, b.ndim)
    r = magnitude(a, box) * b.r + magnitude(b, box) * a.r + a.r * b.r  # per-element tensors broadcast as values do
    if order >= 1:
        am = series.lift(degree_masses(a.c, box), nd)
        bm = series.lift(degree_masses(b.c, box), nd)
        r = r + _high_part(am, bm, torch.mul)
    r = r + gamma(box.basis.size + 2, a.dtype) * full_mass(a, box) * full_mass(b, box)
    return make(jet, up(r, 2 * order + 8))


def bilinear(op, a: TM, b: TM, box: Box, inner: int) -> TM:
    """g(a, b) for a bilinear g with non-negative structure (mm, bmm, matmul): g applied to the bounds."""
    jet = series.bilinear(op, a, b)
    ma, mb = magnitude(a, box), magnitude(b, box)
    r = op(ma, b.r) + op(a.r, mb) + op(a.r, b.r)
    if box.order >= 1:
        am, bm = degree_masses(a.c, box), degree_masses(b.c, box)
        r = r + _high_part(am, bm, op)
    r = r + gamma((inner + 2) * (box.basis.size + 2), a.dtype) * op(full_mass(a, box), full_mass(b, box))
    return make(jet, up(r, 2 * box.order + inner + 8))


# ---------------------------------------------------------------------------------------------- analytic functions
def _majorant_high(a: torch.Tensor, am: torch.Tensor, order: int) -> torch.Tensor:
    """sum_{j<=K} a_j H_j with H_j the sum of the degree > K coefficients of (sum_{d>=1} A_d s^d)^j (a bound on the
    part of p^j above degree K): the majorant series composed by Horner, G = A (a_1 + A (a_2 + ... + A a_K))."""
    def times_a(q: torch.Tensor) -> torch.Tensor:
        out = q.new_zeros((q.shape[0] + order, *q.shape[1:]))
        for d in range(1, order + 1):
            out[d:d + q.shape[0]] += am[d] * q
        return out

    q = a[order].unsqueeze(0)
    for j in range(order - 1, 0, -1):
        q = times_a(q)
        q[0] += a[j]
    return times_a(q)[order + 1:].sum(0)


def univariate_coefficients(fn, u0: torch.Tensor, order: int) -> torch.Tensor:
    """a_j = f^(j)(u0) / j! (j = 0..K), shape (K + 1, *u0.shape), from the jet rule ``fn`` on u0 + s."""
    basis = make_basis(1, order, "total")
    c = u0.new_zeros((basis.size, *u0.shape))
    c[0] = u0
    if order >= 1:
        c[1] = 1
    return fn(Jet(c, basis)).c


def compose(u: TM, fn, bound, box: Box, poly: Jet | None = None) -> TM:
    """f(u) for an analytic f: ``fn`` its jet rule, ``bound`` a name or function for ``tm_derivatives``; ``poly`` the
    polynomial part when already computed (T_K[f(u0 + p)])."""
    order = box.order
    jet = fn(u) if poly is None else poly
    u0 = u.c[0]
    a = univariate_coefficients(fn, u0, order).abs()
    lo, hi = poly_bounds(u, box)
    pbar = torch.maximum(lo.abs(), hi.abs())
    rr = u.r
    ph = pbar + rr
    # sum_j |a_j| ((pbar + R)^j - pbar^j): the difference as R sum_{i<j} (pbar + R)^i pbar^(j-1-i), no cancellation
    total = torch.zeros_like(u0)
    diff = torch.zeros_like(u0)  # (pbar + R)^j - pbar^j
    pj = torch.ones_like(u0)     # pbar^j
    phj = torch.ones_like(u0)    # (pbar + R)^j
    maj = a[0].clone()
    sm = mass(u.c, box) + rr
    smj = torch.ones_like(u0)
    if order >= 1:
        total = _majorant_high(a, degree_masses(u.c, box), order)
    for j in range(1, order + 1):
        diff = diff * ph + rr * pj     # (ph^j - p^j) = ph (ph^(j-1) - p^(j-1)) + R p^(j-1)
        pj = pj * pbar
        phj = phj * ph
        total = total + a[j] * diff
        smj = smj * sm
        maj = maj + a[j] * smj
    d = derivative_bound(bound, u0 + lo - rr, u0 + hi + rr, order + 1)
    tail = d * phj * ph
    tail = torch.where(ph == 0, torch.zeros_like(tail), tail)  # a constant input: no Lagrange term (inf * 0)
    slack = 8 * (order + 2) * (box.basis.size + 2) * unit_roundoff(u0.dtype) * maj
    if order >= 1:
        # f(u0) as torch evaluates it: a few ulps of the argument's scale where f has a zero (sin(pi x) / (pi x) at
        # x = 3, digamma at its root): |u0| |f'(u0)| sets that absolute scale
        slack = slack + 16 * unit_roundoff(u0.dtype) * u0.abs() * a[1]
    r = up(total + tail + slack, 4 * order + 8)
    return make(jet, r)
