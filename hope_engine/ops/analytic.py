"""Analytic functions: the elementwise ones of one jet by their recurrences (``functions``), each declared in one line
by ``defanalytic`` (its recurrence, where it is singular, its derivative bound or composition for certify, its range,
its cost); smooth functions whose PyTorch kernels branch on the value (log_sigmoid, mish, xlogy); analytic functions
of two tensors (atan2, hypot, logaddexp)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from hope_engine.algebra import functions as jetfn
from hope_engine.algebra import jet as series
from hope_engine.algebra.derivative_bounds import BOUNDS as B
from hope_engine.algebra.jet import Jet
from hope_engine.ops import composites as C
from hope_engine.ops.composites import LOGSIGMOID, LOGSIGMOID_FORWARD, MISH, XLOGY
from hope_engine.ops.helpers import (
    constant_like,
    guard_singular,
    is_jet,
    kinks,
    pair_jets,
    refuse_singular,
    value_of,
    varies,
)
from hope_engine.ops.rules import defop, defrule, lookup
from hope_engine.ops.spec import Cost, caller, resolve

aten = torch.ops.aten


def defanalytic(op, fn: Callable[[Jet], Jet] | None = None,
                singular: Callable[[torch.Tensor], torch.Tensor] | None = None, *, cost: Cost,
                bound: Callable | None = None, range: tuple | None = None, composite: Callable | None = None) -> None:
    """An elementwise analytic function of one jet: the one declaration of the op, from which every path derives.

    fn: its jet recurrence (the exact rule returns ``fn(x)``); without one, the exact rule runs ``composite`` (the
    function as other declared ops) on jets. singular(value): where the function is not analytic (sqrt and log at 0):
    an error there if the jet moves, the constant value if it does not. bound(lo, hi, n) >= sup |f^(n)| / n! over
    [lo, hi] (``derivative_bounds``) or composite gives the certified rule; range: the function's range; cost:
    required (a recurrence's passes and temporaries, ``spec.Cost``)."""
    if fn is None and composite is None:
        raise ValueError(f"defanalytic({op!r}) needs fn (a jet recurrence) or composite (other declared ops)")
    if fn is None:
        target = resolve(op)

        def fn(x):
            return composite(caller(lookup, is_jet, None), target, x)

    def rule(ctx, op, x):
        out = series.compose_by_directions(fn, x) if x.basis.kind == "collapsed" else fn(x)
        return out if singular is None else guard_singular(op, x, singular(x.value), out, lambda: op(x.value))

    rule.__name__ = f"analytic_{getattr(fn, '__name__', 'fn')}"
    defop(op, rule, "analytic", elementwise=True, fn=fn, bound=bound, range=range, composite=composite, cost=cost)


# ---------------------------------------------------------------------------------------------- analytic functions
# One line per function: its jet recurrence, where it is singular, its derivative bound or composition (certify), its
# range, and what its recurrence costs (products: passes over the product table, copies: temporaries).
_at_zero, _at_one, _at_minus_one = (lambda v: v == 0), (lambda v: v == 1), (lambda v: v == -1)
_at_unit = lambda v: v.abs() == 1  # noqa: E731
_poles = lambda v: (v <= 0) & (v == torch.floor(v))  # noqa: E731
_SQUASH = Cost(products=1.5, copies=1)
defanalytic("exp", jetfn.exp, bound=B["exp"], cost=Cost(products=1))
defanalytic("expm1", jetfn.expm1, bound=B["expm1"], cost=Cost(products=1))
defanalytic("log", jetfn.log, _at_zero, bound=B["log"], cost=Cost(products=1, weighted=True))
defanalytic("log1p", jetfn.log1p, _at_minus_one, bound=B["log1p"], cost=Cost(products=1, weighted=True))
defanalytic("sin", jetfn.sin, bound=B["sin"], range=(-1.0, 1.0), cost=_SQUASH)
defanalytic("cos", jetfn.cos, bound=B["cos"], range=(-1.0, 1.0), cost=_SQUASH)
defanalytic("tanh", jetfn.tanh, bound=B["tanh"], range=(-1.0, 1.0), cost=_SQUASH)
defanalytic("sigmoid", jetfn.sigmoid, bound=B["sigmoid"], range=(0.0, 1.0), cost=_SQUASH)
defanalytic("erf", jetfn.erf, bound=B["erf"], range=(-1.0, 1.0), cost=Cost(products=3, copies=4))
defanalytic("sqrt", jetfn.sqrt, _at_zero, bound=B["sqrt"], cost=Cost(products=1, copies=1, weighted=True))
defanalytic("rsqrt", jetfn.rsqrt, _at_zero, bound=B["rsqrt"], cost=Cost(products=2, copies=2, weighted=True))
defanalytic("reciprocal", jetfn.reciprocal, _at_zero, bound=B["reciprocal"],
            cost=Cost(products=1, copies=2, weighted=True))
defanalytic("sinh", jetfn.sinh, bound=B["sinh"], cost=Cost(products=2, copies=1, weighted=True))
defanalytic("cosh", jetfn.cosh, bound=B["cosh"], cost=Cost(products=2, copies=1, weighted=True))
defanalytic("tan", jetfn.tan, bound=B["tan"], cost=_SQUASH)
defanalytic("atan", jetfn.atan, bound=B["atan"], cost=Cost(products=3, copies=4))
defanalytic("asin", jetfn.asin, _at_unit, composite=C.ASIN, cost=Cost(products=4, copies=5))
defanalytic("acos", jetfn.acos, _at_unit, composite=C.ACOS, cost=Cost(products=4, copies=5))
defanalytic("asinh", jetfn.asinh, composite=C.ASINH, cost=Cost(products=4, copies=5))
defanalytic("acosh", jetfn.acosh, _at_one, composite=C.ACOSH, cost=Cost(products=4, copies=5))
defanalytic("atanh", jetfn.atanh, _at_unit, bound=B["atanh"], cost=Cost(products=3, copies=4))
defanalytic("erfc", jetfn.erfc, bound=B["erfc"], range=(0.0, 2.0), cost=Cost(products=3, copies=4))
defanalytic("exp2", jetfn.exp2, bound=B["exp2"], cost=Cost(products=1))
defanalytic("log2", jetfn.log2, _at_zero, bound=B["log2"], cost=Cost(products=1, weighted=True))
defanalytic("log10", jetfn.log10, _at_zero, bound=B["log10"], cost=Cost(products=1, weighted=True))
defanalytic("sinc", jetfn.sinc, bound=B["sinc"], cost=Cost(products=10, products_per_order=0.5, copies=3))
# declared by a composition alone: every path (exact, certify, the paper rule) runs it on its own values
defanalytic("special_erfcx", composite=C.ERFCX, cost=Cost(products=5, copies=5))


# ------------------------------------------------------------------------------------ special functions
defanalytic("erfinv", jetfn.erfinv, _at_unit, bound=B["erfinv"], cost=Cost(products_per_order=3, copies=4))
defanalytic("lgamma", jetfn.lgamma, _poles, bound=B["lgamma"], cost=Cost(products_per_order=1, copies=2))
defanalytic("digamma", lambda x: jetfn.polygamma(0, x), _poles, bound=B["digamma"],
            cost=Cost(products_per_order=1, copies=2))


@defrule("polygamma", elementwise=True, cost=Cost(products_per_order=1, copies=2))
def _polygamma(ctx, op, n, x):
    """psi^(n)(x): poles at 0, -1, -2, ..."""
    out = jetfn.polygamma(n, x)
    return guard_singular(op, x, (x.value <= 0) & (x.value == torch.floor(x.value)), out, lambda: op(n, x.value))


# --------------------------------------------------------- smooth functions whose PyTorch kernels branch on value
@defrule("log_sigmoid_forward", elementwise=True, composite=LOGSIGMOID_FORWARD, cost=Cost(products=2.5, copies=2))
def _log_sigmoid_forward(ctx, op, x):
    """(log sigmoid(x), buffer): PyTorch computes it as min(x, 0) - log1p(exp(-|x|)), smooth all the same."""
    return jetfn.logsigmoid(x), op(x.value)[1]


@defrule("log_sigmoid", elementwise=True, composite=LOGSIGMOID, cost=Cost(products=2.5, copies=2))
def _log_sigmoid(ctx, op, x):
    return jetfn.logsigmoid(x)


@defrule("mish", elementwise=True, composite=MISH, cost=Cost(products=5, copies=3))
def _mish(ctx, op, x):
    return jetfn.mish(x)


@defrule("xlogy", "special_xlogy", "special_xlog1py", elementwise=True, composite=XLOGY,
         cost=Cost(products=2, copies=2, weighted=True))
def _xlogy(ctx, op, x, y):
    """x log(y) (x log1p(y) for xlog1py), defined as 0 where x = 0.

    Where x is identically 0 near the point (a constant 0, or a jet with all coefficients 0) the function is 0 there:
    the zero series. Elsewhere it is the product x log(y), also where x0 = 0 but x varies (its derivatives there are
    log(y0) times those of x...). Where y0 = 0 (y0 = -1) and x varies, x log(y) is unbounded near the point: its
    coefficients are inf/NaN, as they must be."""
    ref = x if is_jet(x) else y
    log1p = op.overloadpacket is aten.special_xlog1py
    if is_jet(y):
        log_y = jetfn.log1p(y) if log1p else jetfn.log(y)
    else:
        yv = torch.as_tensor(y, dtype=ref.dtype, device=ref.device)
        log_y = torch.log1p(yv) if log1p else torch.log(yv)
    if is_jet(x):
        out = series.mul(x, log_y) if is_jet(log_y) else series.scale(x, log_y)
        zero = ~varies(x) & (x.value == 0)
    else:
        xv = torch.as_tensor(x, dtype=ref.dtype, device=ref.device)
        out = series.scale(log_y, xv)
        zero = xv == 0
    out = jetfn.where_value(zero, constant_like(out, 0.0), out)
    out.c[0] = op(value_of(x), value_of(y))
    return out


# ------------------------------------------------------------------------------------- functions of two tensors
@defrule("atan2")
def _atan2(ctx, op, y, x):
    """atan2(y, x), analytic except at (0, 0)."""
    y, x = pair_jets(y, x)
    kinks(ctx, "atan2 (a jump of 2 pi on its cut y = 0, x < 0)", (y.value == 0) & (x.value < 0), y)
    out = jetfn.atan2(y, x)
    both = Jet(torch.stack(torch.broadcast_tensors(*series.aligned(y, x)), -1), y.basis)
    bad = ((y.value == 0) & (x.value == 0))
    return guard_singular(op, both, bad.unsqueeze(-1).expand(both.shape), out, lambda: op(y.value, x.value)) \
        if bool(bad.any()) else out


@defrule("hypot")
def _hypot(ctx, op, a, b):
    """sqrt(a^2 + b^2), a cone (not analytic) at (0, 0)."""
    a, b = pair_jets(a, b)
    bad = (a.value == 0) & (b.value == 0)
    if bool(bad.any()):
        both = Jet(torch.stack(torch.broadcast_tensors(*series.aligned(a, b)), -1), a.basis)
        refuse_singular(op, both, bad.unsqueeze(-1).expand(both.shape))
        safe_a = Jet(a.c.clone(), a.basis)
        safe_a.c[0] = torch.where(bad, torch.ones_like(a.value), a.value)
        out = jetfn.hypot(safe_a, b)
        return jetfn.where_value(bad, constant_like(out, 0.0), out)
    return jetfn.hypot(a, b)


@defrule("logaddexp", "logaddexp2")
def _logaddexp(ctx, op, a, b):
    """log(e^a + e^b) (log2(2^a + 2^b) = logaddexp(a ln 2, b ln 2) / ln 2): smooth everywhere."""
    a, b = pair_jets(a, b)
    if op.overloadpacket is aten.logaddexp:
        return jetfn.logaddexp(a, b)
    ln2 = math.log(2.0)
    out = series.scale(jetfn.logaddexp(series.scale(a, ln2), series.scale(b, ln2)), 1 / ln2)
    out.c[0] = op(a.value, b.value)
    return out
