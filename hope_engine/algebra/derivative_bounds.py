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
- erf, erfc: erf^(n) = (2 / sqrt(pi)) (-1)^(n-1) H_{n-1}(xi) e^{-xi^2}, with Cramer's inequality
  |H_k(x)| e^{-x^2/2} <= 1.0865 sqrt(2^k k!);
- tan: P_n(tan xi) with P_{k+1} = P_k' (1 + y^2) over the image of one branch (+inf if a pole lies inside);
- atan: |atan^(n)| <= (n-1)! / (1 + xi^2)^(n/2); atanh: (1 / (1 + xi)^n + 1 / (1 - xi)^n) (n-1)! / 2;
- exp2, log2, log10: exp and log scaled; sinc: pi^n / (n + 1) (sinc is the mean of cos(pi x t) over t in [0, 1]);
- erfinv: c^n Q_n(y) e^{n y^2} with y = erfinv(xi), c = sqrt(pi) / 2, Q_n a polynomial with non-negative coefficients;
- digamma, lgamma: psi^(n) / n! = sum_k (-1)^(n+1) / (xi + k)^(n+1), bounded by Hurwitz zeta values at the distance
  to the nearest pole 0, -1, -2, ...

Outside a function's domain (log of an interval reaching 0...) the bound is +inf. Elementary functions of PyTorch are
assumed accurate to a few ulps: endpoints are pushed outward by 8 ulps and every bound is rounded up.
"""

from __future__ import annotations

import math

import torch

from hope_engine.algebra.intervals import TINY, unit_roundoff
from hope_engine.caches import memoize

INF = float("inf")


def _widen(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    e = 8 * unit_roundoff(lo.dtype)
    return lo - e * lo.abs() - TINY, hi + e * hi.abs() + TINY


def _round_up(x: torch.Tensor) -> torch.Tensor:
    return x * (1 + 64 * unit_roundoff(x.dtype)) + max(TINY, torch.finfo(x.dtype).tiny)  # TINY is 0 in float32


def _exp(lo, hi, n):
    return torch.exp(hi) / math.factorial(n)


def _cosh(lo, hi, n):
    return torch.cosh(torch.maximum(lo.abs(), hi.abs())) / math.factorial(n)


def _shifted_sin_sup(lo, hi, phase: float) -> torch.Tensor:
    """sup |sin(xi + phase)| over [lo, hi]: 1 if a crest pi/2 + k pi lies inside (or within rounding of it)."""
    a, b = lo + phase, hi + phase
    k = torch.ceil((a - math.pi / 2) / math.pi - 1e-9)
    crest = (math.pi / 2 + k * math.pi) <= b + 1e-9 * (1 + b.abs())
    ends = torch.sin(a).abs().maximum(torch.sin(b).abs()) + 4 * unit_roundoff(a.dtype) * (a.abs() + b.abs() + phase)
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
_RICCATI = {"tanh": [1, 0, -1], "sigmoid": [0, 1, -1], "tan": [1, 0, 1]}  # f' = 1 - f^2, f - f^2, 1 + f^2


@memoize("derivative polynomials", max_entries=64)
def derivative_polynomial(kind: str, n: int) -> tuple[int, ...]:
    """Integer coefficients (increasing powers of y) of P_n with f^(n) = P_n(f): kind "tanh", "sigmoid" or "tan"
    (P_{k+1} = P_k' f' with f' the kind's quadratic in f)."""
    p = [0, 1]  # P_0 = y
    factor = _RICCATI[kind]
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


def _tan(lo, hi, n):
    """tan^(n) = P_n(tan) over one branch: the image [tan(lo), tan(hi)] (monotone); +inf if a pole lies inside."""
    k = torch.floor((lo - math.pi / 2) / math.pi)
    pole = math.pi / 2 + (k + 1) * math.pi
    ok = (pole > hi + 1e-12 * (1 + hi.abs())) & (hi - lo < math.pi)
    e = 8 * unit_roundoff(lo.dtype)
    ylo, yhi = torch.tan(lo), torch.tan(hi)
    ylo, yhi = ylo - e * ylo.abs() - TINY, yhi + e * yhi.abs() + TINY
    val = poly_abs_sup(derivative_polynomial("tan", n), torch.where(ok, ylo, 0 * lo), torch.where(ok, yhi, 0 * hi))
    return torch.where(ok, val / math.factorial(n), torch.full_like(lo, INF))


def _nearest_to_zero(lo, hi):
    """min |xi| over [lo, hi]."""
    return torch.where((lo <= 0) & (hi >= 0), torch.zeros_like(lo), torch.minimum(lo.abs(), hi.abs()))


def _atan(lo, hi, n):
    """atan = Im log(1 + i x): |atan^(n)(x)| <= (n-1)! / (1 + x^2)^(n/2), largest at the xi nearest 0."""
    m = _nearest_to_zero(lo, hi)
    return 1 / (n * (1 + m * m) ** (n / 2))


def _atanh(lo, hi, n):
    """atanh = (log1p(x) - log1p(-x)) / 2: |atanh^(n)| / n! <= (1 / (1 + x)^n + 1 / (1 - x)^n) / (2n), each term
    largest at an end of [lo, hi] (-1 < lo, hi < 1)."""
    ok = (lo > -1) & (hi < 1)
    a, b = (1 + lo).clamp(min=TINY), (1 - hi).clamp(min=TINY)
    return torch.where(ok, (a ** -n + b ** -n) / (2 * n), torch.full_like(lo, INF))


def _scaled(bound, factor: float, rate: float = 1.0):
    """The bound of c f(r x) from f's: c r^n D_f(r lo, r hi) (r > 0)."""
    def scaled(lo, hi, n):
        return factor * rate ** n * bound(rate * lo, rate * hi, n)

    return scaled


def _erfc(lo, hi, n):
    """erfc = 1 - erf: the same derivatives up to sign for n >= 1."""
    return _erf(lo, hi, n)


def _sinc(lo, hi, n):
    """sinc(x) = int_0^1 cos(pi x t) dt, so |sinc^(n)| <= pi^n int_0^1 t^n dt = pi^n / (n + 1)."""
    return torch.full_like(lo, math.pi ** n / math.factorial(n + 1))


@memoize("erfinv derivative polynomials", max_entries=64)
def _erfinv_polynomial(n: int) -> tuple[int, ...]:
    """Q_n with erfinv^(n)(x) = c^n Q_n(y) e^(n y^2), y = erfinv(x), c = sqrt(pi) / 2: Q_1 = 1,
    Q_{k+1} = Q_k' + 2 k y Q_k (from y' = c e^(y^2)); every coefficient is >= 0."""
    q = [1]
    for k in range(1, n):
        d = [i * q[i] for i in range(1, len(q))] + [0, 0]
        out = [0] * (len(q) + 1)
        for i, a in enumerate(d[:len(out)]):
            out[i] += a
        for i, a in enumerate(q):
            out[i + 1] += 2 * k * a
        q = out
    return tuple(q)


def _erfinv(lo, hi, n):
    """|Q_n(y)| <= Q_n(|y|) (non-negative coefficients), increasing in |y| as e^(n y^2) is: the sup over [lo, hi] is
    at the larger |erfinv| of the two ends (+inf unless -1 < lo, hi < 1)."""
    ok = (lo > -1) & (hi < 1)
    y = torch.maximum(torch.erfinv(lo.clamp(-1, 1)).abs(), torch.erfinv(hi.clamp(-1, 1)).abs())
    y = torch.where(ok, y * (1 + 16 * unit_roundoff(lo.dtype)) + TINY, torch.zeros_like(y))
    q = sum(float(c) * y ** i for i, c in enumerate(_erfinv_polynomial(n)))
    val = (math.sqrt(math.pi) / 2) ** n * q * torch.exp(n * y * y) / math.factorial(n)
    return torch.where(ok, val, torch.full_like(lo, INF))


def _polygamma_sum(lo, hi, s: int):
    """sup over [lo, hi] of sum_{k >= 0} 1 / |x + k|^s (s >= 2), +inf if a pole 0, -1, -2, ... lies inside.

    For lo > 0 it is zeta(s, lo) (Hurwitz); between two poles every |x + k| is at least d (the distance to the nearer
    pole) plus an integer, on either side of x, so it is at most 2 zeta(s, d)."""
    first = torch.ceil(lo)
    pole = (first <= hi) & (first <= 0)
    d = torch.minimum(lo - torch.floor(lo), first - hi).clamp(min=TINY)
    inside = 2 * torch.special.zeta(torch.full_like(lo, float(s)), d)
    positive = torch.special.zeta(torch.full_like(lo, float(s)), lo.clamp(min=TINY))
    out = torch.where(lo > 0, positive, inside)
    return torch.where(pole & (lo <= 0), torch.full_like(lo, INF), out)


def _digamma(lo, hi, n):
    """|psi^(n)(x)| / n! = |sum_k 1 / (x + k)^(n+1)| <= sum_k 1 / |x + k|^(n+1) (n >= 1)."""
    return _polygamma_sum(lo, hi, n + 1)


def polygamma_bound(order: int):
    """The bound of psi^(order): |psi^(order + n)| / n! <= (order + n)! / n! sum_k 1 / |x + k|^(order + n + 1)."""
    def bound(lo, hi, n):
        return math.factorial(order + n) / math.factorial(n) * _polygamma_sum(lo, hi, order + n + 1)

    return bound


def _lgamma(lo, hi, n):
    """lgamma^(n) = psi^(n-1): for n >= 2, / n! gives the digamma bound of n - 1 over n; for n = 1, psi is increasing
    between poles, so sup |psi| is at an end."""
    if n >= 2:
        return _polygamma_sum(lo, hi, n) / n
    first = torch.ceil(lo)
    pole = (first <= hi) & (first <= 0)
    val = torch.maximum(torch.special.digamma(lo).abs(), torch.special.digamma(hi).abs())
    return torch.where(pole, torch.full_like(lo, INF), val)


BOUNDS = {
    "exp": _exp, "expm1": _exp, "sinh": _cosh, "cosh": _cosh, "sin": _sin, "cos": _cos, "log": _log,
    "log1p": _log1p, "reciprocal": _reciprocal, "sqrt": power_bound(0.5), "rsqrt": power_bound(-0.5),
    "tanh": _image_bound("tanh", torch.tanh), "sigmoid": _image_bound("sigmoid", torch.sigmoid),
    "softplus": _image_bound("sigmoid", torch.sigmoid, offset=1), "erf": _erf, "erfc": _erfc, "tan": _tan,
    "atan": _atan, "atanh": _atanh, "exp2": _scaled(_exp, 1.0, math.log(2.0)),
    "log2": _scaled(_log, 1 / math.log(2.0)), "log10": _scaled(_log, 1 / math.log(10.0)), "sinc": _sinc,
    "erfinv": _erfinv, "digamma": _digamma, "lgamma": _lgamma,
}


def derivative_bound(name_or_fn, lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
    """D >= sup_{xi in [lo, hi]} |f^(n)(xi)| / n!, elementwise (+inf outside f's domain or for a NaN interval)."""
    fn = BOUNDS[name_or_fn] if isinstance(name_or_fn, str) else name_or_fn
    lo, hi = _widen(lo, hi)
    d = _round_up(fn(lo, hi, n))
    bad = torch.isnan(lo) | torch.isnan(hi) | torch.isnan(d)
    return torch.where(bad, torch.full_like(d, INF), d)
