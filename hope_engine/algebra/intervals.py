"""Bounds of polynomials over a box, and the floating-point slack that keeps them sound.

Over the box |t_i| <= r_i a monomial obeys |t^a| <= r^a =: w_a (its box weight), so p(t) = sum_a c_a t^a lies within
sum_a |c_a| w_a of c_0 (its *mass*); the per-degree masses A_d = sum_{|a| = d} |c_a| w_a bound a product's truncated
part. The range bound is tighter: each variable's linear + square part b t_i + q t_i^2 has its exact range, a monomial
with only even exponents has the sign of its coefficient, and the rest count +-|c_a| w_a.

Floating point: a sum of k non-negative computed terms is within gamma_k = k u / (1 - k u) (u the unit roundoff) of the
exact sum of those terms (Higham, Accuracy and Stability, Lemma 3.1), so non-negative bounds are inflated by
(1 + gamma_k) (``up``) and signed ones are widened by gamma_k times the mass of their terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hope_engine.algebra.basis import Basis

TINY = 1e-300  # absorbs underflow of the (non-negative) bounds: every rounding to a subnormal loses less than this


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = 2^-53 in float64, 2^-24 in float32: |fl(x op y) - (x op y)| <= u |x op y| for normal results."""
    return torch.finfo(dtype).eps / 2


def gamma(k: int, dtype: torch.dtype) -> float:
    """gamma_k = k u / (1 - k u): the relative error of k rounded operations (k u < 1)."""
    ku = k * unit_roundoff(dtype)
    if ku >= 0.5:
        raise ValueError(f"{k} operations in {dtype} exceed the rounding model (k u >= 1/2)")
    return ku / (1 - ku)


def up(x: torch.Tensor, k: int) -> torch.Tensor:
    """A non-negative bound computed with at most k - 2 roundings, rounded up: x (1 + gamma_k) + TINY."""
    return x * (1 + gamma(k, x.dtype)) + TINY


def lift(w: torch.Tensor, ndim: int) -> torch.Tensor:
    """(M,) -> (M, 1, ..., 1) for coefficients with ``ndim`` value dimensions."""
    return w.reshape(w.shape[0], *([1] * ndim))


@dataclass(frozen=True)
class Box:
    """The box |t_i| <= radius_i of the expansion variables t = x - x0, with what the bounds need of the basis.

    weights[m] = r^{a_m} rounded up; linear / square: positions of t_i and t_i^2; even: monomials of degree >= 2
    (squares excluded) whose exponents are all even (never negative on the box)."""

    basis: Basis
    radius: torch.Tensor
    weights: torch.Tensor
    degrees: torch.Tensor
    linear: torch.Tensor
    square: torch.Tensor
    even: torch.Tensor
    other: torch.Tensor

    @property
    def order(self) -> int:
        return self.basis.order


def make_box(basis: Basis, radius: torch.Tensor) -> Box:
    """The box of ``radius`` (n,) for a total ``basis``."""
    idx = basis.indices.to(radius.device)
    deg = idx.sum(1)
    weights = up((radius.reshape(1, -1) ** idx).prod(1), 2 * basis.order + 4)
    n, order = basis.n, basis.order
    linear = torch.arange(1, n + 1) if order >= 1 else torch.zeros(0, dtype=torch.long)
    square = torch.tensor([basis.position([2 if j == i else 0 for j in range(n)]) for i in range(n)]) \
        if order >= 2 else torch.zeros(0, dtype=torch.long)
    even = ((idx % 2 == 0).all(1) & (deg >= 2)).cpu()
    if order >= 2:
        even[square] = False
    rest = torch.ones(basis.size, dtype=torch.bool)
    rest[0] = False
    rest[linear] = False
    rest[square] = False
    rest &= ~even
    dev = radius.device
    return Box(basis, radius, weights, deg, linear.to(dev), square.to(dev), even.nonzero().reshape(-1).to(dev),
               rest.nonzero().reshape(-1).to(dev))


def mass(c: torch.Tensor, box: Box, constant: bool = False) -> torch.Tensor:
    """sum_{m >= 1} |c_m| w_m (plus |c_0| if ``constant``), rounded up: a bound on |p(t) - c_0| (on |p(t)|)."""
    start = 0 if constant else 1
    w = lift(box.weights[start:], c.dim() - 1)
    return up((c[start:].abs() * w).sum(0), c.shape[0] + 2)


def degree_masses(c: torch.Tensor, box: Box) -> torch.Tensor:
    """A_d = sum_{|a_m| = d} |c_m| w_m for d = 0..K, shape (K + 1, *value shape), rounded up."""
    b = box.basis
    w = lift(box.weights, c.dim() - 1)
    terms = c.abs() * w
    out = torch.stack([terms[b.block(d)].sum(0) for d in range(b.order + 1)])
    return up(out, c.shape[0] + 2)


def poly_range(c: torch.Tensor, box: Box) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) with lo <= p(t) - c_0 <= hi for every t in the box (p the polynomial of coefficients c)."""
    nd = c.dim() - 1
    w = box.weights
    lo = c.new_zeros(c.shape[1:])
    hi = c.new_zeros(c.shape[1:])
    if box.linear.numel():
        b = c[box.linear]
        r = lift(box.radius, nd)
        if box.square.numel():
            q = c[box.square]
            r2 = lift(w[box.square], nd)
            plus, minus = b * r + q * r2, -b * r + q * r2
            # the vertex -b / 2q of b t + q t^2 lies inside [-r, r] when |b| <= 2 |q| r; its value is -b^2 / 4q
            inside = (b.abs() <= 2 * q.abs() * r) & (q != 0)
            vertex = torch.where(inside, -(b * b) / torch.where(q == 0, torch.ones_like(q), 4 * q), plus)
            lo = lo + torch.minimum(torch.minimum(plus, minus), vertex).sum(0)
            hi = hi + torch.maximum(torch.maximum(plus, minus), vertex).sum(0)
        else:
            lo = lo - (b.abs() * r).sum(0)
            hi = hi + (b.abs() * r).sum(0)
    if box.even.numel():
        t = c[box.even] * lift(w[box.even], nd)
        lo = lo + t.clamp(max=0).sum(0)
        hi = hi + t.clamp(min=0).sum(0)
    if box.other.numel():
        t = (c[box.other].abs() * lift(w[box.other], nd)).sum(0)
        lo, hi = lo - t, hi + t
    slack = gamma(c.shape[0] + 8, c.dtype) * mass(c, box) + TINY
    return lo - slack, hi + slack


def outward(lo: torch.Tensor, hi: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[lo, hi] widened by 4 u scale + TINY: covers the rounding of the few additions that formed lo and hi
    (scale >= the magnitude of their terms)."""
    e = 4 * unit_roundoff(lo.dtype) * scale + TINY
    return lo - e, hi + e
