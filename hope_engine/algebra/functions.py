"""Elementwise functions of jets: analytic ones by degree-by-degree recurrences, piecewise ones by branch.

For analytic f with f' expressible through f (or through cheap jets), the Euler operator E = sum_i t_i d/dt_i gives
[f(u)]_d = [f'(u) E u]_d / d, which needs f'(u) only below degree d: about one product's work per function.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from hope_engine.algebra import jet as series
from hope_engine.algebra.basis import euler_weights
from hope_engine.algebra.jet import Jet


def _new(u: Jet, c: torch.Tensor) -> Jet:
    return Jet(c, u.basis)


def exp(u: Jet) -> Jet:
    return _new(u, series.exp_coefficients(u.c, u.basis))


def expm1(u: Jet) -> Jet:
    c = series.exp_coefficients(u.c, u.basis)
    c[0] = torch.expm1(u.c[0])
    return _new(u, c)


def sin(u: Jet) -> Jet:
    return _new(u, series.sin_cos_coefficients(u.c, u.basis)[0])


def cos(u: Jet) -> Jet:
    return _new(u, series.sin_cos_coefficients(u.c, u.basis)[1])


def tanh(u: Jet) -> Jet:
    """tanh' = 1 - tanh^2."""
    return _new(u, series.riccati_coefficients(u.c, u.basis, torch.tanh(u.c[0]), 1.0, 0.0, -1.0))


def sigmoid(u: Jet) -> Jet:
    """sigmoid' = sigmoid - sigmoid^2."""
    return _new(u, series.riccati_coefficients(u.c, u.basis, torch.sigmoid(u.c[0]), 0.0, 1.0, -1.0))


def log(u: Jet) -> Jet:
    """y = log u: u E y = E u, so y_d = (u_d - sum_{0<q<d} (q/d) y_q u_{d-q}) / u0."""
    basis = u.basis
    y = torch.zeros_like(u.c)
    u0 = u.c[0]
    y[0] = torch.log(u0)
    for d in range(1, basis.order + 1):
        w = [0.0] + [q / d for q in range(1, d)] + [0.0]
        y[basis.block(d)] = (u.c[basis.block(d)] - series.degree_terms(y, u.c, basis, d, w)) / u0
    return _new(u, y)


def log1p(u: Jet) -> Jet:
    out = log(series.add_constant(u, 1.0))
    out.c[0] = torch.log1p(u.c[0])
    return out


def erf(u: Jet) -> Jet:
    """erf' = 2/sqrt(pi) exp(-u^2)."""
    fprime = series.exp_coefficients(-series.mul_coefficients(u.c, u.c, u.basis), u.basis) * (2 / math.sqrt(math.pi))
    return _new(u, series.integrate(fprime, u.c, torch.erf(u.c[0]), u.basis))


def reciprocal(u: Jet) -> Jet:
    """1 / u as the quotient of the constant series 1 by u."""
    one = torch.zeros_like(u.c)
    one[0] = 1
    return _new(u, series.div_coefficients(one, u.c, u.basis))


def div(a: Jet, b: Jet) -> Jet:
    ca, cb = series.aligned(a, b)
    return _new(a, series.div_coefficients(ca, cb, a.basis))


def power(u: Jet, p: float) -> Jet:
    """u^p: repeated products for integer p >= 0, otherwise the recurrence u E y = p y E u (needs u0 != 0)."""
    if float(p).is_integer() and p >= 0:
        return _new(u, series.int_pow_coefficients(u.c, int(p), u.basis))
    if float(p).is_integer() and p < 0:
        return power(reciprocal(u), -p)
    return _new(u, series.pow_coefficients(u.c, float(p), u.basis))


def sqrt(u: Jet) -> Jet:
    return power(u, 0.5)


def rsqrt(u: Jet) -> Jet:
    return power(u, -0.5)


def where_value(mask: torch.Tensor, a: Jet, b: Jet) -> Jet:
    """Elementwise choice by a constant mask, the same for every coefficient."""
    nd = max(a.ndim, b.ndim, mask.dim())
    return _new(a, torch.where(mask, series.lift(a.c, nd), series.lift(b.c, nd)))


# ------------------------------------------------------------------ functions known through their derivative
def _from_derivative(u: Jet, fprime: Jet, value: torch.Tensor) -> Jet:
    """f(u) from f'(u) and f(u0): [f(u)]_d = [f'(u) E u]_d / d."""
    return _new(u, series.integrate(fprime.c, u.c, value, u.basis))


def _one_plus_square(u: Jet, sign: float = 1.0, constant: float = 1.0) -> Jet:
    """constant + sign u^2."""
    return series.add_constant(series.scale(series.mul(u, u), sign), constant)


def sinh(u: Jet) -> Jet:
    """sinh' = cosh, cosh' = sinh: s_d = [c E u]_d / d, c_d = [s E u]_d / d."""
    return _new(u, _sinh_cosh(u)[0])


def cosh(u: Jet) -> Jet:
    return _new(u, _sinh_cosh(u)[1])


def _sinh_cosh(u: Jet) -> tuple[torch.Tensor, torch.Tensor]:
    basis = u.basis
    s, c = torch.zeros_like(u.c), torch.zeros_like(u.c)
    s[0], c[0] = torch.sinh(u.c[0]), torch.cosh(u.c[0])
    for d in range(1, basis.order + 1):
        w = euler_weights(d)
        s_d = series.degree_terms(c, u.c, basis, d, w)
        c[basis.block(d)] = series.degree_terms(s, u.c, basis, d, w)
        s[basis.block(d)] = s_d
    return s, c


def tan(u: Jet) -> Jet:
    """tan' = 1 + tan^2."""
    return _new(u, series.riccati_coefficients(u.c, u.basis, torch.tan(u.c[0]), 1.0, 0.0, 1.0))


def atan(u: Jet) -> Jet:
    """atan' = 1 / (1 + u^2)."""
    return _from_derivative(u, reciprocal(_one_plus_square(u)), torch.atan(u.c[0]))


def asin(u: Jet) -> Jet:
    """asin' = (1 - u^2)^(-1/2)."""
    return _from_derivative(u, power(_one_plus_square(u, -1.0), -0.5), torch.asin(u.c[0]))


def acos(u: Jet) -> Jet:
    """acos' = -(1 - u^2)^(-1/2)."""
    return _from_derivative(u, series.scale(power(_one_plus_square(u, -1.0), -0.5), -1.0), torch.acos(u.c[0]))


def asinh(u: Jet) -> Jet:
    """asinh' = (1 + u^2)^(-1/2)."""
    return _from_derivative(u, power(_one_plus_square(u), -0.5), torch.asinh(u.c[0]))


def acosh(u: Jet) -> Jet:
    """acosh' = (u^2 - 1)^(-1/2)."""
    return _from_derivative(u, power(_one_plus_square(u, 1.0, -1.0), -0.5), torch.acosh(u.c[0]))


def atanh(u: Jet) -> Jet:
    """atanh' = 1 / (1 - u^2)."""
    return _from_derivative(u, reciprocal(_one_plus_square(u, -1.0)), torch.atanh(u.c[0]))


def erfc(u: Jet) -> Jet:
    """erfc = 1 - erf."""
    out = series.scale(erf(u), -1.0)
    out.c[0] = torch.erfc(u.c[0])
    return out


def exp2(u: Jet) -> Jet:
    """2^u = exp(u ln 2)."""
    out = exp(series.scale(u, math.log(2.0)))
    out.c[0] = torch.exp2(u.c[0])
    return out


def log2(u: Jet) -> Jet:
    """log2 u = log u / ln 2."""
    out = series.scale(log(u), 1 / math.log(2.0))
    out.c[0] = torch.log2(u.c[0])
    return out


def log10(u: Jet) -> Jet:
    """log10 u = log u / ln 10."""
    out = series.scale(log(u), 1 / math.log(10.0))
    out.c[0] = torch.log10(u.c[0])
    return out


# ------------------------------------------------- smooth functions whose PyTorch kernels branch on the value
def softplus(u: Jet, beta: float = 1.0) -> Jet:
    """softplus(u) = log(1 + exp(beta u)) / beta, smooth everywhere: d/du = sigmoid(beta u).

    PyTorch's kernel returns u itself where beta u > threshold (a cut for floating point, not part of the function);
    the series here is always the smooth function's, its value computed stably as logaddexp(beta u, 0) / beta."""
    fprime = sigmoid(series.scale(u, float(beta)))
    value = torch.logaddexp(u.c[0] * beta, torch.zeros_like(u.c[0])) / beta
    return _from_derivative(u, fprime, value)


def logsigmoid(u: Jet) -> Jet:
    """log sigmoid(u) = -softplus(-u), smooth everywhere: d/du = sigmoid(-u)."""
    return _from_derivative(u, sigmoid(series.scale(u, -1.0)), torch.nn.functional.logsigmoid(u.c[0]))


def mish(u: Jet) -> Jet:
    """mish(u) = u tanh(softplus(u)) with the smooth softplus (no identity cut at u > 20)."""
    out = series.mul(u, tanh(softplus(u)))
    out.c[0] = torch.nn.functional.mish(u.c[0])
    return out


def _sinc_terms(order: int) -> int:
    """Terms of sum_n (-1)^n z^{2n} / (2n+1)! kept for |z0| <= 1: the tail's j-th derivative there is below
    1 / (2N + 2 - j)!, under 1e-18 for every j <= order when 2N + 2 - order >= 20."""
    return order // 2 + 10


def sinc(u: Jet) -> Jet:
    """sinc(u) = sin(pi u) / (pi u), 1 at u = 0 (a removable singularity: sinc is entire).

    With z = pi u: where |z0| > 1, the quotient sin(z) / z (z0 away from 0); where |z0| <= 1, the entire series
    S(z^2) = sum_{n <= N} (-1)^n (z^2)^n / (2n+1)! composed with the jet by Horner's rule (``_sinc_terms``)."""
    z = series.scale(u, math.pi)
    v = z.c[0]
    near = v.abs() <= 1
    out = None
    if not bool(near.all()):
        far = torch.where(near, torch.ones_like(v), v)  # keeps the unused quotient finite
        zf = z.with_coefficients(z.c.clone())
        zf.c[0] = far
        out = div(sin(zf), zf)
    if bool(near.any()):
        w = series.mul(z, z)
        terms = _sinc_terms(u.basis.order)
        acc = series.constant_jet(torch.full_like(v, (-1) ** terms / math.factorial(2 * terms + 1)), u.basis)
        for n in range(terms - 1, -1, -1):
            acc = series.add_constant(series.mul(acc, w), (-1) ** n / math.factorial(2 * n + 1))
        out = acc if out is None else where_value(near, acc, out)
    out.c[0] = torch.sinc(u.c[0])
    return out


# ------------------------------------------------------------- functions known through their Taylor coefficients
def compose(u: Jet, a: torch.Tensor) -> Jet:
    """f(u) from f's univariate Taylor coefficients a_k = f^(k)(u0) / k! at u0 ((K + 1, *shape)): with h = u - u0,
    f(u) = sum_k a_k h^k, by Horner's rule (h has no constant term, so h^k vanishes below degree k)."""
    h = u.with_coefficients(u.c.clone())
    h.c[0] = 0
    out = series.constant_jet(a[-1].expand(u.shape).clone(), u.basis)
    for k in range(a.shape[0] - 2, -1, -1):
        out = series.add_constant(series.mul(out, h), a[k])
    return out


def _polygamma_coefficients(n: int, u0: torch.Tensor, order: int) -> torch.Tensor:
    """a_k = psi^(n + k)(u0) / k!, k = 0..order (psi^(-1) standing for lgamma). For m = n + k >= 1,
    psi^(m)(x) = (-1)^(m+1) m! zeta(m + 1, x) (Hurwitz), which torch evaluates to a few ulps; its own trigamma is
    only good to about 1e-10."""
    rows = []
    for k in range(order + 1):
        m = n + k
        if m < 0:
            rows.append(torch.special.gammaln(u0))
        elif m == 0:
            rows.append(torch.special.digamma(u0) / math.factorial(k))
        else:
            z = torch.special.zeta(torch.full_like(u0, float(m + 1)), u0)
            rows.append(z * ((-1) ** (m + 1) * (math.factorial(m) / math.factorial(k))))
    return torch.stack(rows)


def lgamma(u: Jet) -> Jet:
    """log|Gamma(u)|: lgamma^(k) = psi^(k-1) (the polygamma functions, digamma for k = 1)."""
    return compose(u, _polygamma_coefficients(-1, u.c[0], u.basis.order))


def polygamma(n: int, u: Jet) -> Jet:
    """psi^(n)(u) (digamma for n = 0): its k-th derivative is psi^(n + k)."""
    return compose(u, _polygamma_coefficients(int(n), u.c[0], u.basis.order))


def solve(u: Jet, value: torch.Tensor, fprime: Callable[[Jet], Jet]) -> Jet:
    """y = f(u) for f given through f' = g(f) and f(u0): y_d = [g(y) E u]_d / d. Each pass fixes one more degree
    (g(y) below degree d needs y below degree d only), so ``order`` passes give the exact series."""
    y = series.constant_jet(value, u.basis)
    for _ in range(u.basis.order):
        y = _from_derivative(u, fprime(y), value)
    return y


def erfinv(u: Jet) -> Jet:
    """erfinv' = sqrt(pi) / 2 exp(erfinv^2)."""
    half_root_pi = math.sqrt(math.pi) / 2
    return solve(u, torch.erfinv(u.c[0]), lambda y: series.scale(exp(series.mul(y, y)), half_root_pi))


# -------------------------------------------------------------------------------- functions of two jets
def from_euler(value: torch.Tensor, ef: Jet) -> Jet:
    """f from f(u0) and its Euler derivative E f = sum_i t_i df/dt_i: f_d = [E f]_d / d."""
    deg = ef.basis.degrees.to(dtype=ef.dtype, device=ef.device).clamp(min=1)
    c = ef.c / deg.reshape(-1, *([1] * ef.ndim))
    c = c.expand(c.shape[0], *torch.broadcast_shapes(c.shape[1:], value.shape)).clone()
    c[0] = value
    return Jet(c, ef.basis)


def _euler(u: Jet) -> Jet:
    return u.with_coefficients(series.euler(u.c, u.basis))


def atan2(y: Jet, x: Jet) -> Jet:
    """atan2(y, x): d atan2 = (x dy - y dx) / (x^2 + y^2), so E f = (x E y - y E x) / (x^2 + y^2)."""
    num = series.sub(series.mul(x, _euler(y)), series.mul(y, _euler(x)))
    return from_euler(torch.atan2(y.c[0], x.c[0]), div(num, series.add(series.mul(x, x), series.mul(y, y))))


def hypot(a: Jet, b: Jet) -> Jet:
    """sqrt(a^2 + b^2)."""
    out = power(series.add(series.mul(a, a), series.mul(b, b)), 0.5)
    out.c[0] = torch.hypot(a.c[0], b.c[0])
    return out


def logaddexp(a: Jet, b: Jet) -> Jet:
    """log(e^a + e^b) = m + log(e^(a - m) + e^(b - m)), m = max(a0, b0) (a constant: no overflow)."""
    m = torch.maximum(a.c[0], b.c[0])
    s = series.add(exp(series.add_constant(a, -m)), exp(series.add_constant(b, -m)))
    out = series.add_constant(log(s), m)
    out.c[0] = torch.logaddexp(a.c[0], b.c[0])
    return out
