"""Enclosures of |f^(n)(xi)| / n! over an interval xi in [lo, hi]: the Lagrange remainder of a Taylor model's f(u).

f(u0 + h) = sum_{j <= K} f^(j)(u0) / j! h^j + f^(K+1)(xi) / (K+1)! h^(K+1) with xi between u0 and u0 + h, so a bound
D >= sup |f^(K+1)| / (K+1)! over the enclosure of u bounds the tail by D |h|^(K+1). Each function's bound:

- exp, expm1: e^hi / n! (monotone);  sinh, cosh: cosh(max |xi|) / n!;
- sin, cos: f^(n) = sin(xi + phase), 1 where the shifted interval holds a crest, else the larger endpoint;
- log, log1p: 1 / (n lo^n) (lo > 0, of 1 + xi for log1p); reciprocal: 1 / min|xi|^(n+1) (0 not in [lo, hi]);
- x^p: |binom(p, n)| sup |xi|^(p - n) (xi > 0 unless p is an integer; 0 when p is an integer below n);
- tanh, sigmoid, softplus: f^(n) = P_n(y) with y = tanh(xi) or sigmoid(xi) and P_n an integer polynomial
  (tanh: P_{k+1} = P_k' (1 - y^2); sigmoid: P_{k+1} = P_k' (y - y^2); softplus^(n) = sigmoid^(n-1)), bounded over
  the image interval of y by a centred form on 6 pieces;
- erf: erf^(n) = (2 / sqrt(pi)) (-1)^(n-1) H_{n-1}(xi) e^{-xi^2}, with Cramer's inequality
  |H_k(x)| e^{-x^2/2} <= 1.0865 sqrt(2^k k!).

Outside a function's domain (log of an interval reaching 0...) the bound is +inf. Elementary functions of PyTorch are
assumed accurate to a few ulps: endpoints are pushed outward by 8 ulps and every bound is rounded up.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from hope_engine.algebra.intervals import TINY, unit_roundoff

INF = float("inf")


def _widen(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    e = 8 * unit_roundoff(lo.dtype)
    return lo - e * lo.abs() - TINY, hi + e * hi.abs() + TINY


def _round_up(x: torch.Tensor) -> torch.Tensor:
    return x * (1 + 64 * unit_roundoff(x.dtype)) + TINY


def _exp(lo, hi, n):
    return torch.exp(hi) / math.factorial(n)


def _cosh(lo, hi, n):
    return torch.cosh(torch.maximum(lo.abs(), hi.abs())) / math.factorial(n)


def _shifted_sin_sup(lo, hi, phase: float) -> torch.Tensor:
    """sup |sin(xi + phase)| over [lo, hi]: 1 if a crest pi/2 + k pi lies inside (or within rounding of it)."""
    a, b = lo + phase, hi + phase
    k = torch.ceil((a - math.pi / 2) / math.pi - 1e-9)
    crest = (math.pi / 2 + k * math.pi) <= b + 1e-9 * (1 + b.abs())
    ends = torch.maximum(torch.sin(a).abs(), torch.sin(b).abs())
    return torch.where(crest | (b - a >= math.pi), torch.ones_like(a), ends.clamp(max=1.0))


def _sin(lo, hi, n):
    return _shifted_sin_sup(lo, hi, n * math.pi / 2) / math.factorial(n)


def _cos(lo, hi, n):
    return _shifted_sin_sup(lo, hi, (n + 1) * math.pi / 2) / math.factorial(n)


def _log(lo, hi, n, shift: float = 0.0):
    a = lo + shift
    return torch.where(a > 0, 1 / (n * a.clamp(min=TINY) ** n), torch.full_like(a, INF))


def _log1p(lo, hi, n):
    return _log(lo, hi, n, 1.0)


def _generalized_binomial(p: float, n: int) -> float:
    out = 1.0
    for i in range(n):
        out *= (p - i) / (i + 1)
    return abs(out)


def power_bound(p: float):
    """The bound of x^p (see the module docstring)."""
    integer = float(p).is_integer()

    def bound(lo, hi, n):
        if integer and 0 <= p < n:
            return torch.zeros_like(lo)
        c = _generalized_binomial(p, n)
        e = p - n
        if integer and p >= 0:
            return c * torch.maximum(lo.abs(), hi.abs()) ** e
        if integer:  # negative integer powers: defined on either side of 0
            near = torch.where((lo > 0) | (hi < 0), torch.minimum(lo.abs(), hi.abs()), torch.zeros_like(lo))
            return torch.where(near > 0, c / near.clamp(min=TINY) ** (-e), torch.full_like(lo, INF))
        ok = lo > 0
        a, b = lo.clamp(min=TINY), hi.clamp(min=TINY)
        val = c * torch.maximum(a ** e, b ** e)
        return torch.where(ok, val, torch.full_like(lo, INF))

    return bound


def _reciprocal(lo, hi, n):
    return power_bound(-1.0)(lo, hi, n)


def _erf(lo, hi, n):
    k = n - 1
    near = torch.where((lo <= 0) & (hi >= 0), torch.zeros_like(lo), torch.minimum(lo.abs(), hi.abs()))
    c = 2 / math.sqrt(math.pi) * 1.0865 * math.sqrt(2.0 ** k * math.factorial(k)) / math.factorial(n)
    return c * torch.exp(-near * near / 2)


# ------------------------------------------------------------------------- derivative polynomials in tanh / sigmoid
@lru_cache(maxsize=64)
def derivative_polynomial(kind: str, n: int) -> tuple[int, ...]:
    """Integer coefficients (increasing powers of y) of P_n with f^(n) = P_n(f): kind "tanh" or "sigmoid"."""
    p = [0, 1]  # P_0 = y
    factor = [1, 0, -1] if kind == "tanh" else [0, 1, -1]  # 1 - y^2, y - y^2
    for _ in range(n):
        d = [i * p[i] for i in range(1, len(p))] or [0]
        out = [0] * (len(d) + len(factor) - 1)
        for i, a in enumerate(d):
            for j, b in enumerate(factor):
                out[i + j] += a * b
        p = out
    while len(p) > 1 and p[-1] == 0:
        p.pop()
    return tuple(p)


def poly_abs_sup(coeffs: tuple[int, ...], lo: torch.Tensor, hi: torch.Tensor, pieces: int = 6) -> torch.Tensor:
    """A bound on sup |P(y)| over y in [lo, hi] (elementwise), P = sum_k coeffs[k] y^k.

    Centred form on each of ``pieces`` equal parts (midpoint m, half-width h): |P(y)| <= |P(m)| + sum_{k>=1}
    |P^(k)(m) / k!| h^k (the Taylor shift of P to m is exact), plus gamma-slack for the rounding of the shift."""
    deg = len(coeffs) - 1
    s = torch.linspace(0, 1, pieces + 1, dtype=lo.dtype, device=lo.device).reshape(-1, *([1] * lo.dim()))
    edges = lo + (hi - lo) * s
    a, b = edges[:-1], edges[1:]
    m = (a + b) / 2
    h = torch.maximum(b - m, m - a)
    # Taylor shift by synthetic division: q[k] = P^(k)(m) / k!
    q = [torch.full_like(m, float(c)) for c in coeffs]
    for k in range(deg + 1):
        for i in range(deg - 1, k - 1, -1):
            q[i] = q[i] + m * q[i + 1]
    total = q[0].abs()
    hk = torch.ones_like(h)
    for k in range(1, deg + 1):
        hk = hk * h
        total = total + q[k].abs() * hk
    # rounding: every intermediate of the shift is bounded by sum |c_k| (|m| + 1)^k; 4 deg^2 roundings at most
    scale = sum(abs(c) for c in coeffs) * (m.abs() + 1) ** deg
    slack = 4 * (deg + 1) ** 2 * unit_roundoff(lo.dtype) * scale
    return (total + slack).amax(0)


def _image_bound(kind: str, squash, offset: int = 0):
    def bound(lo, hi, n):
        k = n - offset
        coeffs = derivative_polynomial(kind, k)
        e = 8 * unit_roundoff(lo.dtype)
        ylo, yhi = squash(lo) - e - TINY, squash(hi) + e + TINY
        ylo = ylo.clamp(min=-1.0 if kind == "tanh" else 0.0)
        yhi = yhi.clamp(max=1.0)
        return poly_abs_sup(coeffs, ylo, yhi) / math.factorial(n)

    return bound


BOUNDS = {
    "exp": _exp, "expm1": _exp, "sinh": _cosh, "cosh": _cosh, "sin": _sin, "cos": _cos, "log": _log,
    "log1p": _log1p, "reciprocal": _reciprocal, "sqrt": power_bound(0.5), "rsqrt": power_bound(-0.5),
    "tanh": _image_bound("tanh", torch.tanh), "sigmoid": _image_bound("sigmoid", torch.sigmoid),
    "softplus": _image_bound("sigmoid", torch.sigmoid, offset=1), "erf": _erf,
}


def derivative_bound(name_or_fn, lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
    """D >= sup_{xi in [lo, hi]} |f^(n)(xi)| / n!, elementwise (+inf outside f's domain or for a NaN interval)."""
    fn = BOUNDS[name_or_fn] if isinstance(name_or_fn, str) else name_or_fn
    lo, hi = _widen(lo, hi)
    d = _round_up(fn(lo, hi, n))
    bad = torch.isnan(lo) | torch.isnan(hi) | torch.isnan(d)
    return torch.where(bad, torch.full_like(d, INF), d)
