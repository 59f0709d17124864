"""Soundness of the derivative bounds (``hope_engine.algebra.derivative_bounds``) against mpmath, and of certify on
elementwise functions near their domain edges.

derivative_bound(f, lo, hi, n) claims D >= sup_{xi in [lo, hi]} |f^(n)(xi)| / n!. The reference is the largest
|f^(n)(xi)| / n! over the two ends and an even grid of [lo, hi], the derivatives taken by mpmath at 30 digits
(mpmath.taylor; polygamma for digamma / lgamma, Hermite polynomials for erf / erfc, series reversion of erf's series
for erfinv): a grid underestimates the sup, so a reference above the bound is a definite bug. Intervals are drawn by
seed in every regime a bound has to survive: near poles (tan, digamma, lgamma, the negative powers), near the ends of
the domain (atanh, erfinv, log), far out (exp2 to 50, sinc and sin at large |x|), tiny (sin near 0), in float64 and
float32; an interval that holds a pole or leaves the domain must get +inf. Looseness (bound / reference) is asserted
only loosely, on small intervals away from singularities; run this file as a script to print the table.

The end-to-end part certifies f(W x + b) on boxes reaching close to the domain edges (and past them: +inf) and checks
|f - P| <= R by sampling the box (corners included) plus gradient ascent; and certifies f at a point with small radii
against mpmath's f, where an inaccurate coefficient shows (the known cases are strict xfails with the reason).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import mpmath
import pytest
import torch
from torch.nn import functional as F

from hope_engine import certify
from hope_engine.algebra import derivative_bounds as db
from hope_engine.algebra.derivative_bounds import BOUNDS, derivative_bound, power_bound
from hope_engine.api.sampling import sampled_error
from hope_engine.errors import ExpansionError

D = torch.float64
N_MAX = 8
DPS = 30
mp = mpmath.mp


# ----------------------------------------------------------------------------------------------- mpmath references
def _taylor(f) -> Callable:
    """xi -> [f^(n)(xi) / n! for n = 0..N_MAX] by mpmath's numerical differentiation at the working precision."""
    return lambda x: mpmath.taylor(f, x, N_MAX)


def _polygamma(order: int) -> Callable:
    """psi^(order)'s Taylor coefficients: psi^(order + n) / n!."""
    return lambda x: [mpmath.polygamma(order + n, x) / mpmath.factorial(n) for n in range(N_MAX + 1)]


def _erf_series(sign: int) -> Callable:
    """erf (sign 1) or erfc (sign -1): erf^(n)(x) = 2 / sqrt(pi) (-1)^(n-1) H_(n-1)(x) e^(-x^2) (physicists' Hermite);
    much faster than numerical differentiation far out (checked against mpmath.taylor below)."""
    def series(x):
        g = 2 / mpmath.sqrt(mp.pi) * mpmath.exp(-x * x)
        head = mpmath.erf(x) if sign == 1 else mpmath.erfc(x)
        return [head] + [sign * g * (-1) ** (n - 1) * mpmath.hermite(n - 1, x) / mpmath.factorial(n)
                         for n in range(1, N_MAX + 1)]
    return series


def _lgamma(x):
    """log|Gamma|: coefficient n is psi^(n-1)(x) / n! (n >= 1)."""
    return [mpmath.log(abs(mpmath.gamma(x)))] + [mpmath.polygamma(n - 1, x) / mpmath.factorial(n)
                                                  for n in range(1, N_MAX + 1)]


def _mul(p, q):
    out = [mpmath.mpf(0)] * (N_MAX + 1)
    for i, a in enumerate(p):
        if a:
            for j in range(N_MAX + 1 - i):
                out[i + j] += a * q[j]
    return out


def _erfinv(x):
    """erfinv's Taylor coefficients by reverting erf's series at y0 = erfinv(x): with erf(y0 + g(s)) = x + s and
    g = sum_k b_k s^k, b_k is fixed by the s^k coefficient, where it enters only through erf'(y0) b_k."""
    y0 = mpmath.erfinv(x)
    a = _erf_series(1)(y0)
    b = [mpmath.mpf(0)] * (N_MAX + 1)
    b[1] = 1 / a[1]
    for k in range(2, N_MAX + 1):
        g = b[:k] + [mpmath.mpf(0)] * (N_MAX + 1 - k)
        p, total = g, mpmath.mpf(0)
        for m in range(2, k + 1):
            p = _mul(p, g)
            total += a[m] * p[k]
        b[k] = -total / a[1]
    b[0] = y0
    return b


# --------------------------------------------------------------------------------------------- interval samplers
def _logu(rng: random.Random, a: float, b: float) -> float:
    return math.exp(rng.uniform(math.log(a), math.log(b)))


def _ordered(a: float, b: float) -> tuple[float, float]:
    return (a, b) if a <= b else (b, a)


def _around(lo_c: float, hi_c: float, wmax: float, wmin: float = 1e-9):
    """Centre uniform in [lo_c, hi_c], width log-uniform in [wmin, wmax]."""
    def draw(rng):
        c, w = rng.uniform(lo_c, hi_c), _logu(rng, wmin, wmax)
        return c - w / 2, c + w / 2
    return draw


def _far(mag: float, wmax: float = 1.0):
    """Centre +-10^[0, log10 mag], width up to wmax."""
    def draw(rng):
        c = rng.choice((-1, 1)) * _logu(rng, 1.0, mag)
        w = _logu(rng, 1e-9, wmax)
        return c, c + w
    return draw


def _positive(lo_min: float = 1e-8, lo_max: float = 1e3, wmax: float = 1e3):
    """lo log-uniform in [lo_min, lo_max] (close to 0 included), width log-uniform."""
    def draw(rng):
        lo = _logu(rng, lo_min, lo_max)
        return lo, lo + _logu(rng, 1e-10, wmax)
    return draw


def _shifted(draw, shift: float):
    def shifted(rng):
        lo, hi = draw(rng)
        return lo + shift, hi + shift
    return shifted


def _negative(draw):
    def negated(rng):
        lo, hi = draw(rng)
        return -hi, -lo
    return negated


def _between(a: float, b: float, dmin: float = 1e-14):
    """Inside (a, b), each end at a log-uniform distance from a or b (down to dmin)."""
    def draw(rng):
        span = b - a
        lo = a + _logu(rng, dmin, span)
        hi = b - _logu(rng, dmin, span)
        return _ordered(lo, hi)
    return draw


def _pole_gap(poles):
    """Inside one of the gaps (a, b) between consecutive poles, each end log-uniformly close to a pole."""
    def draw(rng):
        k = rng.choice(poles)
        a, b = float(k[0]), float(k[1])
        span = b - a
        lo = a + _logu(rng, 1e-12, span)
        hi = b - _logu(rng, 1e-12, span)
        return _ordered(lo, hi)
    return draw


def _across(points, dmax: float = 1.0):
    """An interval that holds one of ``points`` (a pole or a domain edge): must get +inf."""
    def draw(rng):
        p = float(rng.choice(points))
        return p - _logu(rng, 1e-12, dmax), p + _logu(rng, 1e-12, dmax)
    return draw


def _mix(*parts):
    """A sampler picking one of ``parts`` uniformly."""
    def draw(rng):
        return rng.choice(parts)(rng)
    return draw


# ---------------------------------------------------------------------------------------------- the functions
def _tan_inside(lo, hi) -> bool:
    with mpmath.workdps(40):
        first = mpmath.ceil((mpmath.mpf(lo) - mp.pi / 2) / mp.pi)  # index of the first pole >= lo
        return mp.pi / 2 + first * mp.pi > hi


def _no_nonpositive_integer(lo, hi) -> bool:
    first = math.ceil(lo)
    return not (first <= hi and first <= 0)


def _zero_free(lo, hi) -> bool:
    return lo > 0 or hi < 0


def _tan_branches(ks):
    with mpmath.workdps(40):
        return [(mp.pi * (k - 0.5), mp.pi * (k + 0.5)) for k in ks]


def _tan_poles(ks):
    with mpmath.workdps(40):
        return [mp.pi * (k + 0.5) for k in ks]


@dataclass
class Case:
    reference: Callable          # mpf -> Taylor coefficients 0..N_MAX
    draw: Callable               # rng -> (lo, hi) (may leave the domain)
    inside: Callable = lambda lo, hi: True  # is f analytic on [lo, hi]? (else the bound must be +inf)
    easy: Callable | None = None  # rng -> a small interval away from singularities (looseness checked there)
    loose: float = 1e3           # the allowed bound / reference on ``easy`` intervals


GAMMA_GAPS = [(-k - 1, -k) for k in range(0, 8)] + [(-31, -30)]
GAMMA_POLES = [0, -1, -2, -3, -7]
TAN_KS = [0, 1, -1, 2, -3, 7, 1000]
ATANH_DRAW = _mix(_between(-1.0, 1.0), _between(-1.0, 1.0, 1e-16), _around(-0.9, 0.9, 0.2), _across([-1.0, 1.0]))


def _power_case(p: float) -> Case:
    integer = float(p).is_integer()

    def reference(x):
        return mpmath.taylor(lambda t: mpmath.power(t, p), x, N_MAX)

    if integer and p >= 0:
        return Case(reference, _mix(_around(-5, 5, 3), _far(1e3, 10)), easy=_around(0.5, 3, 0.1))
    if integer:
        return Case(reference, _mix(_positive(1e-6), _negative(_positive(1e-6)), _across([0.0], 1.0)), _zero_free,
                    easy=_around(0.5, 3, 0.1))
    return Case(reference, _mix(_positive(1e-6), _across([0.0], 1.0)), lambda lo, hi: lo > 0,
                easy=_around(0.5, 3, 0.1))


CASES: dict[str, Case] = {
    "exp": Case(_taylor(mpmath.exp), _mix(_around(-40, 40, 10), _around(-1, 1, 1e-3)), easy=_around(-3, 3, 0.1)),
    "expm1": Case(_taylor(mpmath.expm1), _mix(_around(-40, 40, 10), _around(-1e-3, 1e-3, 1e-3)),
                  easy=_around(-3, 3, 0.1)),
    "sinh": Case(_taylor(mpmath.sinh), _mix(_around(-20, 20, 10), _around(-1e-3, 1e-3, 1e-3)),
                 easy=_around(-3, 3, 0.1)),
    "cosh": Case(_taylor(mpmath.cosh), _mix(_around(-20, 20, 10), _around(-1e-3, 1e-3, 1e-3)),
                 easy=_around(-3, 3, 0.1)),
    "sin": Case(_taylor(mpmath.sin), _mix(_around(-10, 10, 5), _far(1e6, 1.0), _around(-1e-6, 1e-6, 1e-6, 1e-15)),
                easy=_around(-3, 3, 0.1), loose=1e6),
    "cos": Case(_taylor(mpmath.cos), _mix(_around(-10, 10, 5), _far(1e6, 1.0), _around(-1e-6, 1e-6, 1e-6, 1e-15)),
                easy=_around(-3, 3, 0.1), loose=1e6),
    "log": Case(_taylor(mpmath.log), _mix(_positive(), _across([0.0], 1.0)), lambda lo, hi: lo > 0,
                easy=_around(0.5, 5, 0.1)),
    "log1p": Case(_taylor(mpmath.log1p), _mix(_shifted(_positive(1e-8, 10), -1.0), _around(-0.5, 5, 1),
                                              _across([-1.0], 0.5)), lambda lo, hi: lo > -1,
                  easy=_around(-0.5, 3, 0.1)),
    "reciprocal": Case(_taylor(lambda t: 1 / t), _mix(_positive(1e-6), _negative(_positive(1e-6)), _across([0.0])),
                       _zero_free, easy=_around(0.5, 3, 0.1)),
    "sqrt": Case(_taylor(mpmath.sqrt), _mix(_positive(1e-8), _across([0.0])), lambda lo, hi: lo > 0,
                 easy=_around(0.5, 3, 0.1)),
    "rsqrt": Case(_taylor(lambda t: 1 / mpmath.sqrt(t)), _mix(_positive(1e-8), _across([0.0])), lambda lo, hi: lo > 0,
                  easy=_around(0.5, 3, 0.1)),
    "tanh": Case(_taylor(mpmath.tanh), _mix(_around(-40, 40, 20), _around(-1, 1, 1e-3)), easy=_around(-2, 2, 0.1)),
    "sigmoid": Case(_taylor(lambda t: 1 / (1 + mpmath.exp(-t))), _mix(_around(-40, 40, 20), _around(-1, 1, 1e-3)),
                    easy=_around(-3, 3, 0.1)),
    "softplus": Case(_taylor(lambda t: mpmath.log1p(mpmath.exp(t))), _mix(_around(-40, 40, 20), _around(-1, 1, 1e-3)),
                     easy=_around(-3, 3, 0.1)),
    "erf": Case(_erf_series(1), _mix(_around(-8, 8, 5), _around(-1, 1, 1e-3)), easy=_around(-1.5, 1.5, 0.1)),
    "erfc": Case(_erf_series(-1), _mix(_around(-8, 8, 5), _around(-1, 1, 1e-3), _around(5, 26, 1)),
                 easy=_around(-1.5, 1.5, 0.1)),
    "tan": Case(_taylor(mpmath.tan), _mix(_pole_gap(_tan_branches(TAN_KS)), _around(-1.4, 1.4, 0.1),
                                          _across(_tan_poles(TAN_KS), 0.5)), _tan_inside, easy=_around(-1, 1, 0.1)),
    "atan": Case(_taylor(mpmath.atan), _mix(_around(-3, 3, 3), _far(1e4, 10)), easy=_around(-3, 3, 0.1)),
    "atanh": Case(_taylor(mpmath.atanh), ATANH_DRAW, lambda lo, hi: lo > -1 and hi < 1, easy=_around(-0.8, 0.8, 0.1)),
    "exp2": Case(_taylor(lambda t: mpmath.power(2, t)), _mix(_around(-50, 50, 10), _around(45, 50, 5)),
                 easy=_around(-3, 3, 0.1)),
    "log2": Case(_taylor(lambda t: mpmath.log(t, 2)), _mix(_positive(), _across([0.0], 1.0)), lambda lo, hi: lo > 0,
                 easy=_around(0.5, 5, 0.1)),
    "log10": Case(_taylor(mpmath.log10), _mix(_positive(), _across([0.0], 1.0)), lambda lo, hi: lo > 0,
                  easy=_around(0.5, 5, 0.1)),
    "sinc": Case(_taylor(mpmath.sincpi), _mix(_around(-3, 3, 2), _far(1e4, 1.0), _around(-1e-4, 1e-4, 1e-4)),
                 easy=_around(-1, 1, 0.1)),
    "erfinv": Case(_erfinv, ATANH_DRAW, lambda lo, hi: lo > -1 and hi < 1, easy=_around(-0.8, 0.8, 0.1)),
    "digamma": Case(_polygamma(0), _mix(_positive(1e-4, 1e3, 10), _pole_gap(GAMMA_GAPS), _across(GAMMA_POLES, 0.5),
                                        _around(1e-3, 1e-3, 1e-4)), _no_nonpositive_integer,
                    easy=_around(1, 5, 0.1)),
    "lgamma": Case(_lgamma, _mix(_positive(1e-4, 1e3, 10), _pole_gap(GAMMA_GAPS), _across(GAMMA_POLES, 0.5),
                                 _around(1e-3, 1e-3, 1e-4), _around(-2.9, -2.1, 0.2)), _no_nonpositive_integer,
                   easy=_around(1, 5, 0.1)),
}
EXTRA_BOUNDS: dict[str, Callable] = {}
for _p in (2.0, 3.0, -1.0, -2.0, -3.0, 0.5, -0.5, 1.5, 2.5, -1.5, 1 / 3):
    CASES[f"pow({_p:.4g})"] = _power_case(_p)
    EXTRA_BOUNDS[f"pow({_p:.4g})"] = power_bound(_p)
if hasattr(db, "polygamma_bound"):  # psi^(m) (F.polygamma's certified rule)
    for _m in (1, 2, 3):
        CASES[f"polygamma({_m})"] = Case(_polygamma(_m), CASES["digamma"].draw, _no_nonpositive_integer,
                                         easy=_around(1, 5, 0.1))
        EXTRA_BOUNDS[f"polygamma({_m})"] = db.polygamma_bound(_m)


def test_closed_form_references_agree_with_numerical_differentiation():
    with mpmath.workdps(DPS):
        log_abs_gamma = lambda t: mpmath.log(abs(mpmath.gamma(t)))  # noqa: E731
        for series, f, xs in [(_erf_series(1), mpmath.erf, (-2.5, 0.3)), (_erf_series(-1), mpmath.erfc, (0.7, 6.0)),
                              (_erfinv, mpmath.erfinv, (-0.9, 0.4)), (_lgamma, log_abs_gamma, (-2.5, 0.01, 7.0))]:
            for x in xs:
                want = mpmath.taylor(f, mpmath.mpf(x), N_MAX)
                got = series(mpmath.mpf(x))
                assert all(abs(g - w) <= 1e-20 * (1 + abs(w)) for g, w in zip(got, want)), (f, x)


def test_every_bound_has_a_case():
    assert set(BOUNDS) <= set(CASES), sorted(set(BOUNDS) - set(CASES))


def _bound_fn(name: str):
    return EXTRA_BOUNDS.get(name, name)


def _bounds(name: str, lo: float, hi: float, dtype: torch.dtype = D) -> list[float]:
    t_lo, t_hi = torch.tensor([lo], dtype=dtype), torch.tensor([hi], dtype=dtype)
    return [float(derivative_bound(_bound_fn(name), t_lo, t_hi, n)[0]) for n in range(1, N_MAX + 1)]


def _reference(case: Case, lo: float, hi: float, points: int) -> list:
    """max over the ends and ``points`` interior grid points of |f^(n)| / n!, n = 1..N_MAX (mpmath, DPS digits)."""
    with mpmath.workdps(DPS):
        a, b = mpmath.mpf(lo), mpmath.mpf(hi)
        xs = [a, b] + [a + (b - a) * mpmath.mpf(j) / (points + 1) for j in range(1, points + 1)] if hi > lo else [a]
        best = [mpmath.mpf(0)] * N_MAX
        for x in xs:
            c = case.reference(x)
            best = [max(m, abs(c[n])) for m, n in zip(best, range(1, N_MAX + 1))]
        return best


@dataclass
class Finding:
    name: str
    lo: float
    hi: float
    n: int
    reference: float
    bound: float
    dtype: torch.dtype = D


def check_interval(name: str, lo: float, hi: float, points: int, dtype: torch.dtype = D) -> list[Finding]:
    """Violations on [lo, hi] (exactly representable in ``dtype``): reference > bound, or a finite bound where f has a
    singularity (or leaves its domain) in [lo, hi]."""
    case = CASES[name]
    bounds = _bounds(name, lo, hi, dtype)
    assert not any(math.isnan(d) for d in bounds), (name, lo, hi, bounds)
    if not case.inside(lo, hi):
        return [Finding(name, lo, hi, n, math.inf, d, dtype) for n, d in enumerate(bounds, 1) if d != math.inf]
    ref = _reference(case, lo, hi, points)
    big = torch.finfo(dtype).max
    return [Finding(name, lo, hi, n, float(r), d, dtype) for n, (r, d) in enumerate(zip(ref, bounds), 1)
            if r > mpmath.mpf(d) * (1 + mpmath.mpf(10) ** -20) and r <= big]


def _to(dtype: torch.dtype, x: float) -> float:
    return float(torch.tensor(x, dtype=D).to(dtype))


def check_intervals(name: str, seed: int, draws: int, points: int, dtype: torch.dtype = D) -> list[Finding]:
    """Violations among ``draws`` random intervals (rounded to ``dtype``)."""
    rng = random.Random(f"{name}/{seed}")
    bad = []
    for _ in range(draws):
        lo, hi = (_to(dtype, x) for x in CASES[name].draw(rng))
        if math.isfinite(lo) and math.isfinite(hi):
            bad += check_interval(name, lo, hi, points, dtype)
    return bad


def looseness(name: str, seed: int, draws: int, points: int) -> float:
    """The largest bound / reference over ``draws`` easy intervals and n = 1..N_MAX (reference >= 1e-250)."""
    case = CASES[name]
    rng = random.Random(f"{name}/easy/{seed}")
    worst = 0.0
    for _ in range(draws):
        lo, hi = case.easy(rng)
        bounds = _bounds(name, lo, hi)
        ref = _reference(case, lo, hi, points)
        for r, d in zip(ref, bounds):
            if r > 1e-250:
                worst = max(worst, d / float(r))
    return worst


def _report(bad: list[Finding]) -> str:
    return "\n".join(f"{b.name} ({b.dtype}) on [{b.lo!r}, {b.hi!r}] n={b.n}: reference {b.reference:.6e} > bound "
                     f"{b.bound:.6e}" for b in bad[:20])


@pytest.mark.parametrize("name", sorted(CASES))
def test_bound_holds_against_mpmath(name):
    bad = check_intervals(name, seed=0, draws=6, points=8)
    assert not bad, _report(bad)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bound_holds_in_float32(name):
    """The same draws rounded to float32, bounded in float32 (the reference at the float32 ends)."""
    bad = check_intervals(name, seed=0, draws=4, points=4, dtype=torch.float32)
    assert not bad, _report(bad)


_NEXT_BELOW_1 = math.nextafter(1.0, 0.0)
_HALF_PI = math.pi / 2  # below the pole of tan (pi / 2 = 1.57079632679489661923...)
_PSI_ROOT = 1.4616321449683622  # digamma's positive root
EDGES = [
    ("tan", _HALF_PI, _HALF_PI), ("tan", 1.0, _HALF_PI), ("tan", _HALF_PI, 2.0),
    ("tan", math.nextafter(_HALF_PI, 2), 2.0),
    ("tan", -_HALF_PI, -_HALF_PI), ("tan", 3 * _HALF_PI, 3 * _HALF_PI), ("tan", 4.0, 3 * _HALF_PI), ("tan", 0.0, 0.0),
    ("tan", 1e-300, 1e-300), ("tan", 2e6 * math.pi + 1.0, 2e6 * math.pi + 1.5),
    ("atanh", -_NEXT_BELOW_1, _NEXT_BELOW_1), ("atanh", _NEXT_BELOW_1, _NEXT_BELOW_1), ("atanh", 0.0, 0.0),
    ("atanh", 0.5, 1.0), ("atanh", -1.0, 0.0),
    ("erfinv", -_NEXT_BELOW_1, _NEXT_BELOW_1), ("erfinv", _NEXT_BELOW_1, _NEXT_BELOW_1), ("erfinv", 0.0, 0.0),
    ("erfinv", 0.999, 1.0), ("erfinv", -1.0, -0.5), ("erfinv", 1e-300, 1e-300),
    ("digamma", _PSI_ROOT, _PSI_ROOT), ("lgamma", _PSI_ROOT, _PSI_ROOT),
    ("lgamma", math.nextafter(_PSI_ROOT, 0), math.nextafter(_PSI_ROOT, 2)), ("lgamma", 1.0, 2.0),
    ("lgamma", -2.9, -2.1), ("digamma", -2.9, -2.1), ("lgamma", 1e-3, 1e-3), ("digamma", 1e-3, 1.0),
    ("lgamma", -0.5, -1e-12), ("digamma", -1 + 1e-12, -1e-12), ("lgamma", -1e-300, 1.0), ("digamma", -2.0, -2.0),
    ("lgamma", -30.5, -30.5), ("digamma", 1e6, 1e6 + 1), ("lgamma", 1e-300, 1e-300), ("lgamma", 2.0, 2.0),
    ("exp2", 50.0, 50.0), ("exp2", 1000.0, 1000.5), ("exp2", -1074.0, -1000.0),
    ("log2", 1e-300, 1.0), ("log10", 5e-324, 1.0), ("log10", 1e300, 1e300), ("log10", 0.0, 1.0),
    ("sinc", 0.0, 0.0), ("sinc", -1e-300, 1e-300), ("sinc", 1e4, 1e4 + 0.5), ("sinc", 1.0, 1.0), ("sinc", -7.5, -7.5),
    ("erfc", 26.0, 27.0), ("erfc", -26.0, -25.0), ("erfc", 0.0, 0.0), ("erf", 1e-300, 1e-300),
    ("atan", 1e300, 1e300), ("atan", 0.0, 0.0), ("atan", -1e8, 1e8),
    ("sin", 1e-15, 1e-15), ("cos", 1e-12, 2e-12), ("sin", math.pi, math.pi), ("sin", 1e15, 1e15 + 1),
    ("cos", _HALF_PI, _HALF_PI), ("sin", -1e-300, 1e-300),
]


@pytest.mark.parametrize("name, lo, hi", EDGES)
def test_bound_holds_on_edge_intervals(name, lo, hi):
    bad = check_interval(name, lo, hi, points=3)
    assert not bad, _report(bad)


@pytest.mark.parametrize("name", sorted(CASES))
def test_bound_is_not_absurdly_loose_on_small_intervals(name):
    assert looseness(name, seed=0, draws=2, points=4) <= CASES[name].loose


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_bound_holds_against_mpmath_many_draws(name):
    bad = []
    for seed in range(1, 5):
        bad += check_intervals(name, seed=seed, draws=30, points=24)
    bad += check_intervals(name, seed=9, draws=40, points=8, dtype=torch.float32)
    assert not bad, _report(bad)
    assert looseness(name, seed=1, draws=20, points=8) <= CASES[name].loose


def test_bound_is_tight_where_the_sup_is_at_an_end():
    """Where |f^(n)| is monotone on [lo, hi] the bound is the value at an end up to the widening; the bounds of
    digamma / lgamma between poles (2 zeta(s, d)) and of atanh (a term per end at once) within about 2."""
    for name, lo, hi, factor in [("log", 0.5, 2.0, 1), ("log10", 1e-3, 2.0, 1), ("exp2", 3.0, 40.0, 1),
                                 ("digamma", 1e-3, 2.0, 1), ("lgamma", 1e-3, 2.0, 1), ("erfinv", 0.2, 0.999999, 1),
                                 ("erfinv", -0.999999, -0.2, 1), ("tan", 0.1, 1.5, 1), ("atanh", 0.3, 0.9999, 2),
                                 ("atanh", -0.3, 0.9, 2), ("lgamma", -2.9, -2.1, 2.1), ("digamma", -2.9, -2.1, 2.1)]:
        ref = _reference(CASES[name], lo, hi, 0)
        for r, d in zip(ref, _bounds(name, lo, hi)):
            assert r <= d <= factor * r * (1 + 1e-6), (name, lo, hi, float(r), d)


# ----------------------------------------------------------------------------------------------- certify end to end
# known violations (see the reasons): strict marks, so a fix shows up as XPASS and the mark must go
# Found by the mpmath cases below and fixed: torch's trigamma (polygamma(1, x)) is only ~3e-10 accurate, so the
# polygamma coefficients come from Hurwitz zeta; near a zero of f (sinc at an integer, digamma's and lgamma's roots)
# f(x0) is off by a few ulps of the argument's scale, which taylor_model.compose now allows for.
_Y = torch.tensor(0.7, dtype=D)
# name -> (f, centre of the pre-activations, the domain edge or pole they approach, None where there is none)
CERTIFIED = {
    "tan": (torch.tan, 1.0, math.pi / 2), "atan": (torch.atan, 0.5, None), "atanh": (torch.atanh, 0.6, 1.0),
    "erfinv": (torch.erfinv, -0.6, -1.0), "digamma": (torch.digamma, -2.5, -2.0), "lgamma": (torch.lgamma, -2.5, -3.0),
    "digamma+": (torch.digamma, 0.5, 0.0), "lgamma+": (torch.lgamma, 0.5, 0.0), "exp2": (torch.exp2, 40.0, None),
    "log10": (torch.log10, 0.5, 0.0), "sinc": (torch.sinc, 30.0, None), "erfc": (torch.erfc, 3.0, None),
    "asin": (torch.asin, 0.5, 1.0), "acos": (torch.acos, -0.5, -1.0), "asinh": (torch.asinh, -0.5, None),
    "acosh": (torch.acosh, 2.0, 1.0), "special_erfcx": (torch.special.erfcx, 1.0, None), "mish": (F.mish, 0.0, None),
    "xlogy": (lambda h: torch.xlogy(_Y.to(h.dtype), h), 0.5, 0.0), "sin": (torch.sin, 1e-3, None),
}


def _affine_model(name: str, dtype: torch.dtype):
    """x (1, 2) -> f(W x + b) (1, 3): the rows of W have |.|-sums 1, so the pre-activations stay within b +- radius;
    b spreads over [centre, centre + 0.02] towards the edge."""
    f, centre, edge = CERTIFIED[name]
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 2, generator=g, dtype=D)
    w = (w / w.abs().sum(1, keepdim=True)).to(dtype)
    step = 0.01 if edge is None or edge > centre else -0.01
    b = (centre + step * torch.arange(3, dtype=D)).to(dtype)
    gap = None if edge is None else abs(edge - centre) - 0.02  # distance of the nearest pre-activation to the edge

    def model(x):
        return f(x @ w.T + b)

    return model, gap


def _check_certificate(model, x0, radius, dtype, points: int) -> torch.Tensor:
    cert = certify(model, x0, order=3, radius=radius)
    s = sampled_error(model, cert, points=points, steps=10)
    rel = 1e-13 if dtype == D else 1e-5  # the rounding of evaluating f and P themselves
    slack = rel * (1 + s.high.abs().maximum(s.low.abs()))
    r = cert.remainder
    assert not torch.isnan(r).any()
    assert torch.all(s.error <= r + slack), f"radius {radius}: found {s.error.max():.6e} > remainder {r.max():.6e}"
    lo, hi = cert.bounds()
    assert torch.all(lo <= s.low + slack) and torch.all(s.high <= hi + slack)
    return r


def _certify_cases(name: str, fractions, dtype: torch.dtype = D, points: int = 4000):
    model, gap = _affine_model(name, dtype)
    x0 = torch.zeros(1, 2, dtype=dtype)
    for frac in fractions:
        radius = frac * (gap if gap is not None else 5.0)
        _check_certificate(model, x0, radius, dtype, points)
    if gap is not None:  # the box reaches past the edge: no finite remainder (or a refusal)
        for frac in (1.05, 2.0):
            try:
                cert = certify(model, x0, order=3, radius=frac * (gap + 0.02))
            except ExpansionError:  # a refusal is sound; only a finite remainder is not
                continue
            assert torch.isinf(cert.remainder).any(), (name, frac, cert.remainder)


@pytest.mark.parametrize("name", sorted(CERTIFIED))
def test_certify_holds_up_to_the_domain_edge(name):
    _certify_cases(name, (0.3, 0.99), points=2000)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [D, torch.float32])
@pytest.mark.parametrize("name", sorted(CERTIFIED))
def test_certify_holds_up_to_the_domain_edge_many_radii(name, dtype):
    _certify_cases(name, (0.001, 0.01, 0.1, 0.3, 0.6, 0.9, 0.99, 0.999, 0.99999), dtype, points=4000)


# The certificate against the mathematical function (mpmath), not torch's evaluation of it: at small radii the
# remainder is tiny, so an error in a computed coefficient (torch's own inaccuracy) shows. name -> (f, mpmath f, x0s)
MP_FUNCTIONS = {
    "tan": (torch.tan, mpmath.tan, (math.pi, 1.5)), "atan": (torch.atan, mpmath.atan, (0.0, 1e3)),
    "atanh": (torch.atanh, mpmath.atanh, (0.0, 0.999)), "erfinv": (torch.erfinv, mpmath.erfinv, (0.0, -0.99)),
    "digamma": (torch.digamma, mpmath.digamma, (0.5, 1.4616321449683622, -2.5)),
    "lgamma": (torch.lgamma, lambda x: mpmath.log(abs(mpmath.gamma(x))), (1.0, 2.0, 0.5, -2.5, -2.4570247382208006)),
    "polygamma1": (lambda h: torch.polygamma(1, h), lambda x: mpmath.polygamma(1, x), (1.5,)),
    "exp2": (torch.exp2, lambda x: mpmath.power(2, x), (40.0,)), "log10": (torch.log10, mpmath.log10, (1.0, 1e-3)),
    "sinc": (torch.sinc, mpmath.sincpi, (0.0, 0.3, 3.0)), "erfc": (torch.erfc, mpmath.erfc, (3.0, 20.0)),
    "asin": (torch.asin, mpmath.asin, (0.0, 0.9)), "acos": (torch.acos, mpmath.acos, (0.999, -0.9)),
    "asinh": (torch.asinh, mpmath.asinh, (0.0, -3.0)), "acosh": (torch.acosh, mpmath.acosh, (1.001, 3.0)),
    "special_erfcx": (torch.special.erfcx, lambda x: mpmath.exp(x * x) * mpmath.erfc(x), (1.0, -3.0)),
    "mish": (F.mish, lambda x: x * mpmath.tanh(mpmath.log1p(mpmath.exp(x))), (0.0, -20.0)),
    "xlogy": (lambda h: torch.xlogy(_Y.to(h.dtype), h), lambda x: mpmath.mpf(0.7) * mpmath.log(x), (1.0, 1e-3)),
}
MP_KNOWN: dict = {}  # (name, x0) -> reason, for a known inaccuracy (none now)
MP_CASES = [pytest.param(name, x0, marks=[pytest.mark.xfail(reason=MP_KNOWN[name, x0], strict=True)]
                         if (name, x0) in MP_KNOWN else []) for name in MP_FUNCTIONS for x0 in MP_FUNCTIONS[name][2]]


@pytest.mark.parametrize("name, x0", MP_CASES)
def test_certify_against_mpmath_at_small_radii(name, x0):
    f, mf, _ = MP_FUNCTIONS[name]
    bad = []
    with mpmath.workdps(40):
        for radius in (1e-3, 1e-8, 1e-14):
            cert = certify(f, torch.tensor([[x0]], dtype=D), order=3, radius=radius)
            r = float(cert.remainder.reshape(-1)[0])
            for s in (-1.0, -0.5, 0.0, 0.5, 1.0):
                x = torch.tensor([[x0 + s * radius]], dtype=D)
                err = abs(mf(mpmath.mpf(float(x[0, 0]))) - mpmath.mpf(float(cert.polynomial(x).reshape(-1)[0])))
                if err > r:
                    bad.append(f"radius {radius:g}, x {float(x[0, 0])!r}: |f - P| {float(err):.3e} > R {r:.3e}")
    assert not bad, "\n".join(bad)


if __name__ == "__main__":  # the looseness table: bound / reference over random intervals of each regime
    for _name in sorted(CASES):
        _rng = random.Random(_name)
        _ratios = []
        for _ in range(25):
            _lo, _hi = CASES[_name].draw(_rng)
            if CASES[_name].inside(_lo, _hi):
                for _n, (_r, _d) in enumerate(zip(_reference(CASES[_name], _lo, _hi, 10), _bounds(_name, _lo, _hi)), 1):
                    if _r > 1e-250 and _d < math.inf:
                        _ratios.append((_d / float(_r), _lo, _hi, _n))
        _ratios.sort()
        _q, _lo, _hi, _n = _ratios[-1]
        _median = _ratios[len(_ratios) // 2][0]
        print(f"{_name:14s} median {_median:9.3g}   max {_q:9.3g} on [{_lo:.6g}, {_hi:.6g}] n={_n}")
