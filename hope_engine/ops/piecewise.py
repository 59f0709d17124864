"""Piecewise functions, expanded with the branch the value takes: relu, leaky_relu, clamp, hardtanh, abs, elu, celu,
prelu, threshold, the shrinks, logit's clamp, maximum/minimum, where, masked_fill, softplus past its threshold,
remainder, copysign, fmax/fmin.

At a point where the pieces meet the piece PyTorch's forward takes there is expanded, and the point is recorded as a
kink (a KinkWarning) when the pieces' series differ up to the expansion order and the jet moves off the point
(``helpers.kinks``)."""

from __future__ import annotations

import torch

from hope_engine.algebra import functions as jetfn
from hope_engine.algebra import jet as series
from hope_engine.algebra.jet import Jet
from hope_engine.ops import composites as C
from hope_engine.ops.composites import CELU
from hope_engine.ops.helpers import constant_like, is_jet, kinks, pair_jets, promote, scale_by_mask, value_of
from hope_engine.ops.rules import defrule
from hope_engine.ops.spec import Cost

aten = torch.ops.aten


@defrule("relu", elementwise=True)
def _relu(ctx, op, x):
    v = x.value
    kinks(ctx, "relu", v == 0, x)
    return scale_by_mask(x, v > 0)


@defrule("leaky_relu", elementwise=True)
def _leaky_relu(ctx, op, x, negative_slope=0.01):
    v = x.value
    if negative_slope != 1:
        kinks(ctx, "leaky_relu", v == 0, x)
    return scale_by_mask(x, torch.where(v > 0, torch.ones_like(v), torch.full_like(v, float(negative_slope))))


def _clamp_jet(ctx, name, x: Jet, lo, hi) -> Jet:
    """clamp(x, lo, hi) = min(max(x, lo), hi); bounds that are tensors or jets go through maximum/minimum."""
    if isinstance(lo, (Jet, torch.Tensor)) or isinstance(hi, (Jet, torch.Tensor)):
        out = x if lo is None else _maximum(ctx, aten.maximum.default, x, lo)
        return out if hi is None else _maximum(ctx, aten.minimum.default, out, hi)
    v = x.value
    inside = torch.ones_like(v, dtype=torch.bool)
    if lo is not None:
        inside &= v > lo
        kinks(ctx, name, v == lo, x)
    if hi is not None:
        inside &= v < hi
        kinks(ctx, name, v == hi, x)
    out = x.c * inside.to(x.dtype)
    out[0] = torch.clamp(v, lo, hi)
    return Jet(out, x.basis)


@defrule("hardtanh", elementwise=True)
def _hardtanh(ctx, op, x, min_val=-1.0, max_val=1.0):
    return _clamp_jet(ctx, "hardtanh", x, min_val, max_val)


@defrule("clamp", elementwise=True)
def _clamp(ctx, op, x, min=None, max=None):
    return _clamp_jet(ctx, "clamp", x, min, max)


@defrule("clamp_min", elementwise=True)
def _clamp_min(ctx, op, x, min):
    return _clamp_jet(ctx, "clamp", x, min, None)


@defrule("clamp_max", elementwise=True)
def _clamp_max(ctx, op, x, max):
    return _clamp_jet(ctx, "clamp", x, None, max)


@defrule("abs", elementwise=True)
def absolute(ctx, op, x):
    v = x.value
    kinks(ctx, "abs", v == 0, x)
    return scale_by_mask(x, torch.where(v >= 0, torch.ones_like(v), -torch.ones_like(v)))


@defrule("elu", elementwise=True, cost=Cost(copies=3))
def _elu(ctx, op, x, alpha=1.0, scale=1.0, input_scale=1.0):
    """scale x (x > 0), alpha scale (exp(input_scale x) - 1) (x <= 0, the branch taken at 0).

    At 0 the branches' k-th derivatives are scale [k = 1] and alpha scale input_scale^k: they differ at order 1 unless
    alpha input_scale = 1 (CELU, ELU with alpha 1), and always at order 2 — a kink only for expansions that reach it."""
    v = x.value
    a, s, i = float(alpha), float(scale), float(input_scale)
    if x.basis.order >= 2 or (x.basis.order == 1 and a * i != 1.0):
        kinks(ctx, op.overloadpacket.__name__, v == 0, x)
    negative = series.scale(jetfn.expm1(series.scale(x, i)), a * s)
    return jetfn.where_value(v > 0, series.scale(x, s), negative)


@defrule("celu", elementwise=True, composite=CELU, cost=Cost(copies=3))
def _celu(ctx, op, x, alpha=1.0):
    """celu(x) = max(0, x) + min(0, alpha (exp(x / alpha) - 1)): elu with input_scale 1 / alpha (C^1 at 0, not C^2)."""
    return _elu(ctx, op, x, alpha, 1.0, 1.0 / float(alpha))


@defrule("_prelu_kernel", elementwise=True, composite=C.PRELU)
def _prelu(ctx, op, x, weight):
    """x (x > 0), weight x (x <= 0): a kink at 0 where weight != 1."""
    w = value_of(weight)
    v = x.value
    kinks(ctx, "prelu", (v == 0) & (w != 1), x)
    negative = series.mul(x, weight) if is_jet(weight) else series.scale(x, weight)
    return jetfn.where_value(v > 0, x, negative)


@defrule("threshold", elementwise=True)
def _threshold(ctx, op, x, threshold, value):
    """x where x > threshold, else the constant ``value``: a jump at x = threshold (a kink if value = threshold)."""
    v = x.value
    kinks(ctx, "threshold", v == threshold, x)
    return jetfn.where_value(v > threshold, x, constant_like(x, value))


@defrule("hardshrink", elementwise=True)
def _hardshrink(ctx, op, x, lambd=0.5):
    """x where |x| > lambd, else 0: jumps at x = +-lambd, constant 0 around 0."""
    v = x.value
    kinks(ctx, "hardshrink", v.abs() == lambd, x)
    return scale_by_mask(x, v.abs() > lambd)


@defrule("softshrink", elementwise=True, composite=C.SOFTSHRINK)
def _softshrink(ctx, op, x, lambd=0.5):
    """x - lambd (x > lambd), x + lambd (x < -lambd), else 0: kinks at x = +-lambd, constant 0 around 0."""
    v = x.value
    kinks(ctx, "softshrink", v.abs() == lambd, x)
    out = scale_by_mask(x, v.abs() > lambd)
    out.c[0] = op(v, lambd)
    return out


@defrule("logit", elementwise=True, composite=C.LOGIT, cost=Cost(products=2, copies=2, weighted=True))
def _logit(ctx, op, x, eps=None):
    """log(x / (1 - x)) = log x - log1p(-x), of x clamped to [eps, 1 - eps] when eps is given."""
    if eps is not None:
        x = _clamp_jet(ctx, "logit", x, float(eps), 1.0 - float(eps))
    out = series.sub(jetfn.log(x), jetfn.log1p(series.scale(x, -1.0)))
    out.c[0] = op(x.value)
    return out


@defrule("maximum", "minimum", cost=Cost(copies=2))
def _maximum(ctx, op, a, b):
    ref = a if is_jet(a) else b
    a, b = promote(a, ref.basis, ref), promote(b, ref.basis, ref)
    va, vb = a.value, b.value
    kinks(ctx, op.overloadpacket.__name__, va == vb, series.sub(a, b))
    pick_a = va > vb if op.overloadpacket is aten.maximum else va < vb
    return jetfn.where_value(pick_a, a, b)


@defrule("where", cost=Cost(copies=2))
def _where(ctx, op, cond, a, b):
    if is_jet(cond):
        cond = cond.value.bool()
    ref = a if is_jet(a) else b
    return jetfn.where_value(cond, promote(a, ref.basis, ref), promote(b, ref.basis, ref))


@defrule("masked_fill", cost=Cost(copies=2))
def _masked_fill(ctx, op, x, mask, value):
    """where(mask, value, x), the mask being a constant."""
    if not is_jet(x):
        x = series.constant_jet(x, value.basis)
    if not is_jet(value):
        value = series.constant_jet(torch.as_tensor(value, dtype=x.dtype, device=x.device), x.basis)
    return jetfn.where_value(value_of(mask).bool(), value, x)


# ----------------------------------------------------- softplus: smooth, but torch's kernel is x past its threshold
@defrule("softplus", elementwise=True, cost=Cost(products=2.5, copies=2))
def _softplus(ctx, op, x, beta=1.0, threshold=20.0):
    """torch's softplus: x where beta x > threshold, else log(1 + exp(beta x)) / beta (a kink where beta x equals
    the threshold: torch takes the smooth side there)."""
    smooth = jetfn.softplus(x, float(beta))
    z = float(beta) * x.value
    kinks(ctx, "softplus (its threshold)", z == threshold, x)
    above = z > threshold
    return Jet(torch.where(above, x.c, smooth.c), x.basis) if bool(above.any()) else smooth


# ------------------------------------------------------------------------------------- functions of two tensors
@defrule("remainder", "fmod")
def _remainder(ctx, op, a, b):
    """a - q b with the quotient q = floor(a / b) (remainder) or trunc(a / b) (fmod) taken at the value: a constant
    away from the jumps, where the result is 0 (a jump when a - q b moves)."""
    out_v = op(value_of(a), value_of(b))
    av = torch.as_tensor(value_of(a))
    bv = torch.as_tensor(value_of(b), dtype=out_v.dtype, device=out_v.device)
    q = torch.round((av - out_v) / bv)  # the integer quotient PyTorch used
    a, b = pair_jets(a, b)
    out = series.sub(a, series.scale(b, q))
    jump = out_v == 0 if op.overloadpacket is aten.remainder else (out_v == 0) & (q != 0)  # fmod is x near 0
    kinks(ctx, f"{op.overloadpacket.__name__} (a jump)", jump, out)
    out = out.with_coefficients(out.c.expand(out.c.shape[0], *out_v.shape).clone())
    out.c[0] = out_v
    return out


@defrule("copysign")
def _copysign(ctx, op, a, b):
    """|a| with the sign of b: a times +-1 chosen by the values' sign bits; a kink at a = 0, a jump at b = 0."""
    av = torch.as_tensor(value_of(a))
    bv = torch.as_tensor(value_of(b))
    if is_jet(b):
        kinks(ctx, "copysign (a jump)", (bv == 0) & (av != 0), b)
    if not is_jet(a):
        return op(av, bv)
    kinks(ctx, "copysign", av == 0, a)
    factor = torch.where(torch.signbit(av) == torch.signbit(bv), 1.0, -1.0).to(a.dtype)
    out = series.scale(a, factor)
    out.c[0] = op(av, bv)
    return out


@defrule("fmax", "fmin")
def _fmax(ctx, op, a, b):
    """maximum/minimum that take the other argument where one is NaN."""
    a, b = pair_jets(a, b)
    va, vb = a.value, b.value
    kinks(ctx, op.overloadpacket.__name__, va == vb, series.sub(a, b))
    pick_a = (va > vb if op.overloadpacket is aten.fmax else va < vb) | torch.isnan(vb)
    return jetfn.where_value(pick_a, a, b)
