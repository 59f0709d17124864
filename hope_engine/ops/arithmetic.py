"""Sums, products, quotients and powers: sums coefficient-wise, products of two jets through the basis' product table
(``jet.mul``; matrix products by ``jet.bilinear``), quotients and powers by their recurrences, running products."""

from __future__ import annotations

import math

import torch

from hope_engine.algebra import functions as jetfn
from hope_engine.algebra import jet as series
from hope_engine.algebra.jet import Jet
from hope_engine.ops.helpers import guard_singular, is_jet, refuse_singular
from hope_engine.ops.linear import apply_linear
from hope_engine.ops.rules import defrule
from hope_engine.ops.spec import Cost
from hope_engine.ops.value_only import value_only

aten = torch.ops.aten


@defrule("add", cost=Cost(copies=1))
def _add(ctx, op, a, b, *, alpha=1):
    if is_jet(a) and is_jet(b):
        return series.add(a, series.scale(b, alpha) if alpha != 1 else b)
    if is_jet(a):
        return series.add_constant(a, b * alpha if alpha != 1 else b)
    return series.add_constant(series.scale(b, alpha) if alpha != 1 else b, a)


@defrule("sub", cost=Cost(copies=1))
def _sub(ctx, op, a, b, *, alpha=1):
    if is_jet(b):
        b = series.scale(b, -alpha)
    else:
        b = -b * alpha
    return _add(ctx, op, a, b)


@defrule("rsub")
def _rsub(ctx, op, a, b, *, alpha=1):
    return _sub(ctx, op, b, a, alpha=alpha)


@defrule("mul", cost=Cost(product=True))
def _mul(ctx, op, a, b):
    if is_jet(a) and is_jet(b):
        return series.mul(a, b)
    return series.scale(a, b) if is_jet(a) else series.scale(b, a)


@defrule("div", cost=Cost(products=1, copies=2, weighted=True))
def _div(ctx, op, a, b, *, rounding_mode=None):
    if rounding_mode is not None:  # floor/trunc division is piecewise constant: a value and a zero series
        return value_only(ctx, op, a, b, rounding_mode=rounding_mode)
    if not is_jet(b):
        if isinstance(b, torch.Tensor):
            return series.scale(a, torch.reciprocal(b))
        return series.scale(a, 1 / b if b != 0 else math.copysign(math.inf, b))  # as torch: a / 0 = a * inf
    refuse_singular(op, b, b.value == 0)  # a pole (or 0/0) that the denominator moves across
    if not is_jet(a):
        a = series.constant_jet(torch.as_tensor(a, dtype=b.dtype, device=b.device), b.basis)
    return jetfn.div(a, b)


@defrule("square", elementwise=True, cost=Cost(product=True))
def _square(ctx, op, x):
    return series.mul(x, x)


@defrule("pow", elementwise=True, cost=Cost(products=2, copies=2, weighted=True))
def power(ctx, op, base, exponent):
    """base^exponent: integer powers >= 0 by products, others by the recurrence u E y = p y E u (not analytic at
    base 0: refused there if the base moves), a jet exponent as exp(exponent log base)."""
    if is_jet(exponent):
        if is_jet(base):
            refuse_singular(op, base, base.value == 0)
            log_base = jetfn.log(base)
        else:
            log_base = torch.log(torch.as_tensor(base, dtype=exponent.dtype, device=exponent.device))
        prod = series.mul(exponent, log_base) if is_jet(log_base) else series.scale(exponent, log_base)
        out = jetfn.exp(prod)
        if not is_jet(base) and bool((log_base == float("-inf")).any()):  # 0^e: the constant 0^e0 near e0 > 0
            zero = torch.as_tensor(base, dtype=out.dtype, device=out.device) == 0
            const = series.constant_jet(op(base, exponent.value).expand(out.shape).clone(), out.basis)
            out = jetfn.where_value(zero, const, out)
        return out
    if isinstance(exponent, torch.Tensor):  # constant exponents: one power series per distinct value
        values = exponent.unique().tolist()
        out = _scalar_power(op, base, values[0])
        for p in values[1:]:
            out = jetfn.where_value(exponent == p, _scalar_power(op, base, p), out)
        return out
    return _scalar_power(op, base, exponent)


def _scalar_power(op, base: Jet, p: float) -> Jet:
    out = jetfn.power(base, p)
    if float(p).is_integer() and p >= 0:
        return out
    return guard_singular(op, base, base.value == 0, out, lambda: torch.pow(base.value, p))


@defrule("prod", cost=Cost(product=True, copies=2))
def _prod(ctx, op, x, dim=None, keepdim=False, *, dtype=None):
    """prod over dim: the product of the slices, one jet product each."""
    if x.ndim == 0:  # the product of one value
        return x
    if dim is None:
        x, dim = Jet(x.c.reshape(x.c.shape[0], -1), x.basis), 0
    d = dim % x.ndim
    slices = x.c.unbind(d + 1)
    out = slices[0]
    for s in slices[1:]:
        out = series.mul_coefficients(out, s, x.basis)
    return Jet(out.unsqueeze(d + 1) if keepdim else out, x.basis)


@defrule("cumprod")
def _cumprod(ctx, op, x, dim, *, dtype=None):
    """Running products along dim: one jet product per position."""
    if x.ndim == 0:
        return x
    d = dim % x.ndim
    slices = x.c.unbind(d + 1)
    acc, outs = slices[0], [slices[0]]
    for s in slices[1:]:
        acc = series.mul_coefficients(acc, s, x.basis)
        outs.append(acc)
    return Jet(torch.stack(outs, d + 1), x.basis)


@defrule("mm", "bmm", "matmul", cost=Cost(bilinear=True, gemm=True))
def _matmul(ctx, op, a, b):
    if is_jet(a) and is_jet(b):
        return series.bilinear(op, a, b)
    if is_jet(a):
        return Jet(torch.matmul(a.c, b), a.basis)
    return Jet(torch.matmul(a, b.c), b.basis)


@defrule("addmm", "baddbmm", cost=Cost(gemm=True, copies=2))
def _addmm(ctx, op, bias, a, b, *, beta=1, alpha=1):
    prod = _matmul(ctx, aten.bmm if op.overloadpacket is aten.baddbmm else aten.mm, a, b)
    if alpha != 1:
        prod = series.scale(prod, alpha)
    if is_jet(bias):
        return series.add(prod, series.scale(bias, beta) if beta != 1 else bias)
    bias = bias * beta if beta != 1 else bias
    if isinstance(bias, torch.Tensor) and bias.dtype == prod.dtype and series.fits(bias.shape, prod.shape):
        # prod is the matmul's fresh output: the bias goes into its value in place
        return Jet(series.add_to_value(prod.c, bias), prod.basis)
    return series.add_constant(prod, bias)


@defrule("_trilinear", cost=Cost(bilinear=True))
def multilinear(ctx, op, *args, **kwargs):
    """op linear in each tensor argument separately (Bilinear's _trilinear): one jet is linear, two use the table."""
    jets = [i for i, a in enumerate(args) if is_jet(a)]
    if len(jets) == 1:
        return apply_linear(op, args, kwargs)
    if len(jets) == 3:
        return _trilinear_product(*args)
    i, j = jets

    def g(a, b):
        call = list(args)
        call[i], call[j] = a, b
        return op(*call, **kwargs)

    return series.bilinear(g, args[i], args[j])


def _trilinear_product(i1: Jet, i2: Jet, i3: Jet, expand1, expand2, expand3, sumdim, unroll_dim=1) -> Jet:
    """_trilinear of three jets by its definition: each factor unsqueezed at its expand dims, the product of the three
    (two jet products), summed over sumdim."""
    def spread(x: Jet, dims) -> Jet:
        c = x.c
        for d in sorted(dims):
            c = c.unsqueeze(d + 1)
        return Jet(c, x.basis)

    prod = series.mul(series.mul(spread(i1, expand1), spread(i2, expand2)), spread(i3, expand3))
    return Jet(prod.c.sum([d + 1 for d in sumdim]) if len(sumdim) else prod.c, prod.basis)
