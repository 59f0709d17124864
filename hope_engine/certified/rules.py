"""Taylor-model rules for aten ops: each keeps |value - P| <= R over the box (see ``taylor_model``).

The polynomial part of an op is what the jet rule table (``rules``) computes; a rule here adds the remainder:

- data movement (views, slices, cat, padding...): the same op on R (it moves entries and fills zeros);
- sums with weights of one sign (sum, mean, average pooling, a negative divisor_override...): the op with |weights|
  on R plus the rounding of the sums;
- linear maps with constant weights (mm, addmm, convolution): centre through W, radius through |W|;
- products, quotients, analytic functions: ``taylor_model``;
- piecewise functions: exact where the value's enclosure lies in one piece; where it straddles a kink, a sound linear
  relaxation (relu, leaky relu, abs) or the interval hull (clamp, max pooling, branches of ``where``), each counted in
  ``CertContext.crossings``;
- a value whose model is unbounded (an infinite remainder or coefficient: it may be NaN somewhere in the box) stays
  unbounded through clamps and range caps, as torch's NaN does.

An argument a rule cannot follow as torch does is refused naming the op and the argument (``CertificationError``).

Ops without a rule here are refused by name before anything is computed (``check_certifiable``).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch

from hope_engine.algebra import functions as F
from hope_engine.algebra.derivative_bounds import polygamma_bound, power_bound
from hope_engine.algebra.intervals import Box, gamma, unit_roundoff, up
from hope_engine.algebra.jet import Jet, holds
from hope_engine.capture import trace
from hope_engine.certified import taylor_model as tm
from hope_engine.certified.taylor_model import TM
from hope_engine.errors import ExpansionError, UnsupportedOperationError
from hope_engine.ops import rules
from hope_engine.ops.spec import SPECS, DuplicateRuleError, UnknownOpError, caller, op_name, resolve, spec_of
from hope_engine.run import program

aten = torch.ops.aten


class CertificationError(ExpansionError):
    """An op met a case its certified rule cannot bound (a tensor-valued clamp bound, a branch used as a number...)."""


@dataclass
class CertContext:
    """The box, the jet rules' context, and the kinks the box crosses (name -> number of values)."""

    box: Box
    jets: rules.Context
    crossings: dict = field(default_factory=dict)

    def note(self, what: str, mask: torch.Tensor) -> None:
        count = int(mask.sum())
        if count:
            self.crossings[what] = self.crossings.get(what, 0) + count


@dataclass
class Condition:
    """A comparison of an input-dependent value: its result at x0 and where it is the same over the whole box."""

    value: torch.Tensor
    certain: torch.Tensor


TM_RULES: dict = {}


def _certify_as(op, fn) -> None:
    """The one way into ``TM_RULES``: refuses a second certified rule for an op and an op nobody declared."""
    if spec_of(op) is None:
        raise UnknownOpError(f"{op} has a certified rule but no declaration in hope_engine.ops: declare it there first")
    if op in TM_RULES:
        raise DuplicateRuleError(f"{op} already has a certified rule ({TM_RULES[op].__name__})")
    TM_RULES[op] = fn


def register(*names):
    """Decorator: the certified rule of the ops named (aten names; an unknown name or a second rule is refused)."""
    def deco(fn):
        for name in names:
            _certify_as(resolve(name), fn)
        return fn

    return deco


def lookup(target):
    if target is operator.getitem:
        return _getitem
    if target in TM_RULES:
        return TM_RULES[target]
    return TM_RULES.get(getattr(target, "overloadpacket", None))


def _getitem(ctx, op, seq, i):
    return seq[i]


def is_tm(x) -> bool:
    return isinstance(x, TM)


def _jet_rule(ctx: CertContext, op, *args, **kwargs):
    return rules.lookup(op)(ctx.jets, op, *args, **kwargs)


def _plain(x):
    """Conditions that hold over the whole box as their value; others refused."""
    if isinstance(x, Condition):
        if not bool(x.certain.all()):
            raise CertificationError("a comparison of an input-dependent value changes inside the box and its result "
                                     "is used as a number; only torch.where can branch on it soundly")
        return x.value
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(e) for e in x)
    return x


def _remainders(args, extra=None):
    """Arguments with each Taylor model replaced by its remainder (plus ``extra(x)``), constants by zeros."""
    def one(a):
        if isinstance(a, TM):
            r = a.r if extra is None else a.r + extra(a)
            return r.contiguous()
        if isinstance(a, torch.Tensor) and a.is_floating_point():
            return torch.zeros_like(a)
        if isinstance(a, (list, tuple)):
            return type(a)(one(e) for e in a)
        return a

    return tuple(one(a) for a in args)


def _pair(out, rem):
    """Zip jets with remainders (lists and tuples alike); anything else passes through."""
    if isinstance(out, Jet):
        return tm.make(out, rem)
    if isinstance(out, (list, tuple)):
        return type(out)(_pair(o, r) for o, r in zip(out, rem))
    return out


def _bounded(x: TM) -> torch.Tensor:
    """Where a Taylor model bounds its value: a finite remainder and finite coefficients. Elsewhere the value may be
    NaN somewhere in the box (an op outside its domain, a NaN weight), which torch propagates through clamps and
    bounded functions: they must not turn it into a finite range."""
    return torch.isfinite(x.r) & torch.isfinite(x.c).all(0)


def _unbounded_where(x: TM, mask: torch.Tensor) -> TM:
    """x with an infinite remainder where ``mask`` holds."""
    return tm.make(x, torch.where(mask, torch.full_like(x.r, torch.inf), x.r))


# ------------------------------------------------------------------------------------------------- data movement
def _move(ctx, op, *args, **kwargs):
    """Entries moved, copied or set to 0: the same op on the remainders (constants contribute 0)."""
    args = _plain(args)
    out = _jet_rule(ctx, op, *args, **kwargs)
    return _pair(out, op(*_remainders(args), **kwargs))


@register("constant_pad_nd")
def _pad(ctx, op, x, pad, value=0.0):
    out = _jet_rule(ctx, op, x, pad, value)
    return tm.make(out, op(x.r.contiguous(), pad, 0.0))


@register("_to_copy")
def _to_copy(ctx, op, x, **kwargs):
    dtype = kwargs.get("dtype")
    if dtype is not None and dtype != x.dtype:
        raise CertificationError(f"a cast from {x.dtype} to {dtype} inside the model rounds every value; certify "
                                 "a model that computes in one floating dtype")
    return _move(ctx, op, x, **kwargs)


@register("detach")
def _detach(ctx, op, x):
    """detach(x) has x's values: over the box it is x (autograd's stop-gradient is a convention of derivatives at one
    point, which ``expand`` follows; a bound on f's values over the box must follow x)."""
    return x


@register("neg")
def _neg(ctx, op, x):
    return tm.make(_jet_rule(ctx, op, x), x.r)


# ------------------------------------------------------------------------------------------ non-negative sums
def _terms_per_output(op, args, out) -> int:
    """An upper bound on how many terms one output of a non-negative sum adds (for the rounding slack)."""
    x = next(a for a in args if is_tm(a))
    numel = max(1, x.r.numel())
    out_numel = max(1, (out[0] if isinstance(out, (list, tuple)) else out).c[0].numel())
    n = 4 * math.ceil(numel / out_numel) + 8
    if op.overloadpacket in (aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d, aten.cumsum):
        n = max(n, numel + 8) if op.overloadpacket is aten.cumsum else n + 4 * math.prod(
            args[1] if isinstance(args[1], (list, tuple)) else [args[1]])
    return n


_DIVISOR = 6  # avg_pool2d / avg_pool3d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)


def _absolute_weights(op, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The arguments of the same sum with every weight replaced by its absolute value: an average pooling's
    ``divisor_override`` d < 0 gives weights 1 / d < 0 (all of one sign), so the op with |d| gives |weights|."""
    if op.overloadpacket not in (aten.avg_pool2d, aten.avg_pool3d):
        return args, kwargs
    if len(args) > _DIVISOR and args[_DIVISOR] is not None:
        return (*args[:_DIVISOR], abs(args[_DIVISOR]), *args[_DIVISOR + 1:]), kwargs
    if kwargs.get("divisor_override") is not None:
        return args, {**kwargs, "divisor_override": abs(kwargs["divisor_override"])}
    return args, kwargs


def _summing(ctx, op, *args, **kwargs):
    """Sums with weights w of one sign per output: the op with |w| on R + gamma_N (mass of the summed coefficients),
    rounded up."""
    args = _plain(args)
    x = next(a for a in args if is_tm(a))
    dtype = kwargs.get("dtype")
    if dtype is not None and dtype != x.dtype:
        raise CertificationError(f"{op_name(op)}(dtype={dtype}) of a {x.dtype} value rounds every sum to {dtype}; "
                                 "certify a model that computes in one floating dtype (drop dtype=)")
    out = _jet_rule(ctx, op, *args, **kwargs)
    n = _terms_per_output(op, args, out)
    g = gamma(n, ctx.box.weights.dtype)
    rem_args, rem_kwargs = _absolute_weights(op, _remainders(args, lambda a: g * tm.full_mass(a, ctx.box)), kwargs)
    rem = op(*rem_args, **rem_kwargs)
    return _pair(out, up(rem, n + 2))


# ------------------------------------------------------------------------------------------------ sums, products
def _as_tm(x, ctx, like: TM) -> TM:
    if is_tm(x):
        return x
    v = torch.as_tensor(_plain(x), dtype=like.dtype, device=like.device)
    return tm.constant(v, like.basis)


def _add_like(ctx, a, b, sign: float, alpha=1):
    box = ctx.box
    if is_tm(a) and is_tm(b):
        if alpha != 1:
            b = tm.scale(b, alpha, box)
        return tm.add(a, b, box, sign)
    if is_tm(a):
        return tm.add_constant(a, sign * alpha * _plain(b), box)
    b = tm.scale(b, sign * alpha, box) if sign * alpha != 1 else b
    return tm.add_constant(b, _plain(a), box)


@register("add")
def _add(ctx, op, a, b, *, alpha=1):
    return _add_like(ctx, a, b, 1.0, alpha)


@register("sub")
def _sub(ctx, op, a, b, *, alpha=1):
    return _add_like(ctx, a, b, -1.0, alpha)


@register("rsub")
def _rsub(ctx, op, a, b, *, alpha=1):
    return _add_like(ctx, b, a, -1.0, alpha)


@register("mul")
def _mul(ctx, op, a, b):
    if is_tm(a) and is_tm(b):
        return tm.mul(a, b, ctx.box)
    x, k = (a, b) if is_tm(a) else (b, a)
    k = _plain(k)
    if isinstance(k, torch.Tensor) and not k.is_floating_point():
        k = k.to(x.dtype)
    return tm.scale(x, k, ctx.box)


@register("square")
def _square(ctx, op, x):
    return tm.mul(x, x, ctx.box)


def reciprocal(x: TM, ctx) -> TM:
    return tm.compose(x, F.reciprocal, "reciprocal", ctx.box)


@register("div")
def _div(ctx, op, a, b, *, rounding_mode=None):
    if rounding_mode is not None:
        raise CertificationError(f"division with rounding_mode={rounding_mode!r} is piecewise constant")
    if not is_tm(b):
        b = _plain(b)
        if isinstance(b, torch.Tensor):
            inv = torch.reciprocal(b)
        else:  # as torch: a / 0 = a * inf
            inv = 1.0 / b if b != 0 else math.copysign(math.inf, b)
        return tm.scale(a, inv, ctx.box, roundings=2)
    inv = reciprocal(b, ctx)
    if is_tm(a):
        return tm.mul(a, inv, ctx.box)
    return tm.scale(inv, _plain(a), ctx.box)


# --------------------------------------------------------------------------------------------- linear maps
def _linear_map(ctx, op, a, b, inner: int):
    """op(a, b) bilinear with one constant side: centre through it, the remainder and rounding through |it|."""
    if is_tm(a) and is_tm(b):
        return tm.bilinear(op, a, b, ctx.box, inner)
    out = _jet_rule(ctx, op, a, b)
    g = gamma(inner + 2, a.dtype if is_tm(a) else b.dtype)
    if is_tm(a):
        rem = op(a.r + g * tm.full_mass(a, ctx.box), b.abs())
    else:
        rem = op(a.abs(), b.r + g * tm.full_mass(b, ctx.box))
    return tm.make(out, up(rem, inner + 4))


def _inner(a) -> int:
    return int(a.shape[-1]) if len(a.shape) else 1


@register("mm", "bmm", "matmul")
def _mm(ctx, op, a, b):
    return _linear_map(ctx, op, a, b, _inner(a))


@register("addmm", "baddbmm")
def _addmm(ctx, op, bias, a, b, *, beta=1, alpha=1):
    mm = aten.bmm.default if op.overloadpacket is aten.baddbmm else aten.mm.default
    prod = _linear_map(ctx, mm, a, b, _inner(a))
    if alpha != 1:
        prod = tm.scale(prod, alpha, ctx.box)
    if is_tm(bias):
        return tm.add(prod, tm.scale(bias, beta, ctx.box) if beta != 1 else bias, ctx.box)
    return tm.add_constant(prod, bias * beta if beta != 1 else bias, ctx.box)


@register("convolution")
def _convolution(ctx, op, x, weight, bias, *rest):
    if not is_tm(x) or is_tm(weight) or is_tm(bias):
        raise CertificationError("certified convolutions need constant weights and bias (the input may vary)")
    out = _jet_rule(ctx, op, x, weight, bias, *rest)
    n = weight.numel() + 2
    g = gamma(n, x.dtype)
    rem = op(x.r + g * tm.full_mass(x, ctx.box), weight.abs(), None, *rest)
    if bias is not None:
        rem = rem + g * bias.abs().reshape(-1, *([1] * (weight.dim() - 2)))
    return tm.make(out, up(rem, n + 4))


# --------------------------------------------------------------------------------------------- analytic functions
def _capped(ctx, out: TM, name: str, bounds: tuple, arg: TM) -> TM:
    """A bounded function's Taylor model whose remainder exceeds the function's range: the range itself (hull), except
    where the argument ``arg`` is unbounded (it may be NaN there, and f(NaN) is NaN, in no range)."""
    lo, hi = bounds
    wide = (out.r > (hi - lo) / 2) & _bounded(arg)
    if not bool(wide.any()):
        return out
    ctx.note(f"{name} (range cap)", wide)
    return _select(wide, _hull(torch.full_like(out.r, lo), torch.full_like(out.r, hi), out.basis), out)


@register("pow")
def _pow(ctx, op, base, exponent):
    box = ctx.box
    if is_tm(exponent):
        if is_tm(base):
            raise CertificationError("x ** y with both sides depending on the input has no certified rule")
        b = float(_plain(base)) if not isinstance(base, torch.Tensor) or base.numel() == 1 else None
        if b is None or b <= 0:
            raise CertificationError("c ** x needs a positive scalar base c")
        return tm.compose(tm.scale(exponent, math.log(b), box, roundings=2), F.exp, "exp", box)
    e = _plain(exponent)
    if isinstance(e, torch.Tensor):
        values = e.unique()
        if values.numel() != 1:
            raise CertificationError("x ** e with a tensor of different exponents has no certified rule")
        e = float(values)
    p = float(e)
    return tm.compose(base, lambda j: F.power(j, p), power_bound(p), box)


@register("polygamma")
def _polygamma(ctx, op, n, x):
    n = int(n)
    return tm.compose(x, lambda j: F.polygamma(n, j), polygamma_bound(n), ctx.box)


@register("softplus")
def _softplus(ctx, op, x, beta=1.0, threshold=20.0):
    """torch's softplus: x where beta x > threshold, else log(1 + exp(beta x)) / beta. Where the box straddles the
    threshold, the smooth function's model with its remainder widened by the jump, log(1 + exp(-threshold)) / |beta|
    (|smooth - x| = log(1 + exp(-beta x)) / |beta| is below that past the threshold)."""
    beta, threshold = float(beta), float(threshold)
    if beta == 0:
        raise CertificationError("softplus with beta=0: torch computes log(1 + exp(beta x)) / beta = log(2) / 0, "
                                 "infinite at every x, so there is no finite function to certify; use a non-zero beta")
    if not math.isfinite(beta):
        raise CertificationError(f"softplus with beta={beta:g} has no certified rule (its Taylor model scales by beta "
                                 "and 1 / beta); use a finite, non-zero beta")
    box = ctx.box
    z = tm.scale(x, beta, box) if beta != 1 else x
    out = tm.compose(z, lambda j: F.softplus(j, 1.0), "softplus", box)
    out = tm.scale(out, 1.0 / beta, box, roundings=2) if beta != 1 else out
    lo, hi = tm.enclosure(z, box)
    above, straddle = lo > threshold, (hi > threshold) & ~(lo > threshold)
    if not bool(above.any() or straddle.any()):
        return out
    ctx.note("softplus (its threshold)", straddle)
    jump = up(torch.tensor(-threshold, dtype=torch.float64).exp().log1p().div(abs(beta)).to(out.r.dtype), 4)
    widened = tm.make(out, torch.where(straddle, up(out.r + jump, 3), out.r))
    return _select(above, x, widened) if bool(above.any()) else widened


@register("_softmax", "_safe_softmax")
def _softmax(ctx, op, x, dim, *rest):
    """softmax(x) = e / sum(e), e = exp(x - shift) with a constant shift (the value's maximum): exact identity."""
    box = ctx.box
    if op.overloadpacket is aten._safe_softmax and bool((x.value == float("-inf")).all(dim).any()):
        raise CertificationError("fully masked attention rows (all -inf) have no certified rule")
    shift = x.value.amax(dim=dim, keepdim=True)
    e = tm.compose(tm.add_constant(x, -shift, box), F.exp, "exp", box)
    s = _summing(ctx, aten.sum.dim_IntList, e, [dim], True)
    return tm.mul(e, reciprocal(s, ctx), box)


@register("_log_softmax")
def _log_softmax(ctx, op, x, dim, half_to_float=False):
    box = ctx.box
    shift = x.value.amax(dim=dim, keepdim=True)
    z = tm.add_constant(x, -shift, box)
    s = _summing(ctx, aten.sum.dim_IntList, tm.compose(z, F.exp, "exp", box), [dim], True)
    return tm.add(z, tm.compose(s, F.log, "log", box), box, -1.0)


@register("var_mean", "var")
def _var_mean(ctx, op, x, dim=None, *, correction=1, keepdim=False):
    box = ctx.box
    dims = list(range(x.ndim)) if dim is None else list(dim)
    mean = _summing(ctx, aten.mean.dim, x, dims, True)
    dev = tm.add(x, mean, box, -1.0)
    count = math.prod(x.shape[d] for d in dims)
    ss = _summing(ctx, aten.sum.dim_IntList, tm.mul(dev, dev, box), dims, keepdim)
    dof = count - (correction if correction is not None else 1)
    # torch divides by max(dof, 0): 0 / 0 or s / 0, NaN or inf (with a warning): no bound
    var = tm.scale(ss, 1.0 / dof if dof > 0 else math.inf, box, roundings=2)
    if op.overloadpacket is aten.var:
        return var
    if not keepdim:
        mean = _move(ctx, aten.squeeze.dims, mean, dims)
    return var, mean


# ------------------------------------------------------------------------------------------------ piecewise
def _per_element(c: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return c * s.unsqueeze(0)


def _slope_relaxation(ctx, x: TM, alpha: float, name: str) -> TM:
    """leaky_relu(v) = alpha v + (1 - alpha) relu(v) (relu for alpha = 0), exact on one side of 0; across 0,
    relu(v) = s v + g with g in [0, G], G = max(s |lo|, (1 - s) hi), s = hi / (hi - lo) (any s in [0, 1] holds)."""
    box = ctx.box
    lo, hi = tm.enclosure(x, box)
    pos, neg = lo >= 0, hi <= 0
    cross = ~pos & ~neg
    ctx.note(name, cross)
    s = torch.where(cross, hi / torch.where(cross, hi - lo, torch.ones_like(hi)), pos.to(hi.dtype)).clamp(0, 1)
    s = torch.where(torch.isnan(s), torch.full_like(s, 0.5), s)  # an unbounded enclosure: any slope (G is inf)
    gmax = torch.where(cross, torch.maximum(s * (-lo), (1 - s) * hi), torch.zeros_like(hi))
    slope = alpha + (1 - alpha) * s
    c = _per_element(x.c, slope)
    c[0] = c[0] + (1 - alpha) * gmax / 2
    # rounding: of the slope (relative to |alpha| + |1 - alpha|, which any sign or size of alpha may make large),
    # of the products with it and of the shift
    k = 1 + abs(alpha) + abs(1 - alpha)
    u = unit_roundoff(x.dtype)
    r = slope.abs() * x.r + abs(1 - alpha) * gmax / 2 + 4 * k * u * (tm.full_mass(x, box) + x.r + gmax)
    return tm.make(Jet(c, x.basis), up(r, 8))


@register("relu")
def _relu(ctx, op, x):
    return _slope_relaxation(ctx, x, 0.0, "relu")


@register("leaky_relu")
def _leaky_relu(ctx, op, x, negative_slope=0.01):
    return _slope_relaxation(ctx, x, float(negative_slope), "leaky_relu")


@register("abs")
def _abs(ctx, op, x):
    """|v| = 2 relu(v) - v."""
    r = _slope_relaxation(ctx, x, 0.0, "abs")
    return tm.add(tm.scale(r, 2.0, ctx.box), x, ctx.box, -1.0)


def _hull(lo: torch.Tensor, hi: torch.Tensor, basis) -> TM:
    """The constant Taylor model (lo + hi) / 2 +- (hi - lo) / 2, rounded outward."""
    finite = torch.isfinite(lo) & torch.isfinite(hi)
    mid = torch.where(finite, (lo + hi) / 2, torch.zeros_like(lo))
    half = torch.where(finite, torch.maximum(hi - mid, mid - lo), torch.full_like(lo, torch.inf))
    return tm.constant(mid, basis, up(half, 4))


def _select(cond: torch.Tensor, a: TM, b: TM) -> TM:
    out = F.where_value(cond, a, b)
    return tm.make(out, torch.where(cond, a.r, b.r))


def _broadcast(x: TM, shape: torch.Size) -> TM:
    """x expanded to ``shape`` (a bound of clamp may broadcast the value to a larger shape)."""
    if x.shape == shape:
        return x
    c = x.c.reshape(x.c.shape[0], *([1] * (len(shape) - x.ndim)), *x.shape)
    return tm.make(Jet(c.expand(c.shape[0], *shape).clone(), x.basis), x.r.expand(shape).clone())


def _clamp_rule(ctx, x, lo_c, hi_c, name: str) -> TM:
    """clamp(v, a, b) = min(max(v, a), b), as torch computes it: b wherever a > b, NaN wherever v, a or b is NaN.

    Constant bounds (numbers or tensors): v where the enclosure lies inside [min(a, b), b], the bound where it lies
    beyond, else the hull. Bounds that vary with the input: max(v, a) = a + relu(v - a), min(w, b) = b - relu(b - w)."""
    box = ctx.box
    ref = next(t for t in (x, lo_c, hi_c) if is_tm(t))
    if is_tm(lo_c) or is_tm(hi_c):
        out = _as_tm(x, ctx, ref)
        if lo_c is not None:
            a = _as_tm(lo_c, ctx, ref)
            out = tm.add(a, _slope_relaxation(ctx, tm.add(out, a, box, -1.0), 0.0, name), box)
        if hi_c is not None:
            b = _as_tm(hi_c, ctx, ref)
            out = tm.add(b, _slope_relaxation(ctx, tm.add(b, out, box, -1.0), 0.0, name), box, -1.0)
        return out

    def bound(v):
        return None if v is None else torch.as_tensor(_plain(v), dtype=x.dtype, device=x.device)

    a, b = bound(lo_c), bound(hi_c)
    shape = torch.broadcast_shapes(x.shape, *(t.shape for t in (a, b) if t is not None))
    x = _broadcast(x, shape)
    a, b = (None if t is None else t.expand(shape) for t in (a, b))
    nan = ~_bounded(x)
    for t in (a, b):
        if t is not None:
            nan = nan | torch.isnan(t)
    if b is None:  # max(v, a) = a + relu(v - a)
        out = tm.add_constant(_slope_relaxation(ctx, tm.add_constant(x, -a, box), 0.0, name), a, box)
    elif a is None:  # min(v, b) = b - relu(b - v)
        inner = tm.add_constant(tm.scale(x, -1.0, box), b, box)
        out = tm.add_constant(tm.scale(_slope_relaxation(ctx, inner, 0.0, name), -1.0, box), b, box)
    else:
        a = torch.minimum(a, b)  # min(max(v, a), b) = b for every v where a > b: the same as clamp(v, b, b)
        lo, hi = tm.enclosure(x, box)
        inside = (lo >= a) & (hi <= b)
        below, above = (hi <= a) & ~inside, (lo >= b) | (a == b)
        ctx.note(name, ~(inside | below | above | nan))
        out = _select(inside, x, _hull(torch.clamp(lo, a, b), torch.clamp(hi, a, b), x.basis))
        out = _select(below, tm.constant(a.clone(), x.basis), _select(above, tm.constant(b.clone(), x.basis), out))
    return _unbounded_where(out, nan)


@register("hardtanh")
def _hardtanh(ctx, op, x, min_val=-1.0, max_val=1.0):
    return _clamp_rule(ctx, x, min_val, max_val, "hardtanh")


@register("clamp")
def _clamp(ctx, op, x, min=None, max=None):
    return _clamp_rule(ctx, x, min, max, "clamp")


@register("clamp_min")
def _clamp_min(ctx, op, x, min):
    return _clamp_rule(ctx, x, min, None, "clamp")


@register("clamp_max")
def _clamp_max(ctx, op, x, max):
    return _clamp_rule(ctx, x, None, max, "clamp")


@register("elu")
def _elu(ctx, op, x, alpha=1.0, scale=1.0, input_scale=1.0):
    """scale v (v > 0), alpha scale (exp(input_scale v) - 1) (v <= 0): each piece where the enclosure lies in it,
    else the hull of the two pieces' ranges. Each piece is monotone whatever the parameters' signs (celu passes
    input_scale = 1 / alpha < 0 for alpha < 0) and both are 0 at 0, so the hull is [min, max] of elu(lo), 0, elu(hi)."""
    box = ctx.box
    a, s, i = float(alpha), float(scale), float(input_scale)
    lo, hi = tm.enclosure(x, box)
    positive = tm.scale(x, s, box)
    negative = tm.scale(tm.compose(tm.scale(x, i, box), F.expm1, "expm1", box), a * s, box, roundings=2)
    cross = (lo < 0) & (hi > 0)
    ctx.note("elu", cross)
    at_lo, at_hi = op(lo, a, s, i), op(hi, a, s, i)
    zero = torch.zeros_like(lo)
    hull = _hull(torch.minimum(torch.minimum(at_lo, at_hi), zero), torch.maximum(torch.maximum(at_lo, at_hi), zero),
                 x.basis)
    # elu's own rounding at the ends: a few ulps of the value and of alpha scale (exp(.) - 1 cancels near 0)
    slack = 8 * unit_roundoff(lo.dtype) * (at_lo.abs() + at_hi.abs() + abs(a * s))
    hull.r = up(hull.r + slack, 4)
    return _select(cross, hull, _select(lo >= 0, positive, negative))


def _gather_flat(t: torch.Tensor, idx: torch.Tensor, nd: int) -> torch.Tensor:
    flat = t.reshape(*t.shape[:t.dim() - nd], -1)
    return flat.gather(-1, idx.reshape(*idx.shape[:idx.dim() - nd], -1)).reshape(idx.shape)


@register("max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices")
def _max_pool(ctx, op, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    """The chosen entry where its lower bound beats every other entry's upper bound in its window (windows that do
    not overlap), else the hull [max of lower bounds, max of upper bounds]."""
    nd = {aten.max_pool1d_with_indices: 1, aten.max_pool2d_with_indices: 2,
          aten.max_pool3d_with_indices: 3}[op.overloadpacket]
    args = (kernel_size, stride, padding, dilation, ceil_mode)
    out, idx = _jet_rule(ctx, op, x, *args)
    lo, hi = tm.enclosure(x, ctx.box)
    lo_max, hi_max = op(lo, *args)[0], op(hi, *args)[0]

    def seq(v):
        return list(v) * (nd if len(v) == 1 else 1) if isinstance(v, (list, tuple)) else [v] * nd

    ks, st, dl = seq(kernel_size), seq(stride) if len(seq(stride)) else seq(kernel_size), seq(dilation)
    if all(s >= k for s, k in zip(st, ks)) and all(d == 1 for d in dl):
        masked = hi.clone().reshape(*hi.shape[:hi.dim() - nd], -1)
        masked.scatter_(-1, idx.reshape(*idx.shape[:idx.dim() - nd], -1), float("-inf"))
        others = op(masked.reshape(hi.shape), *args)[0]
        certain = _gather_flat(lo, idx, nd) >= others
    else:
        certain = torch.zeros_like(lo_max, dtype=torch.bool)
    ctx.note("max_pool", ~certain)
    chosen = tm.make(out, _gather_flat(x.r, idx, nd))
    return _select(certain, chosen, _hull(lo_max, hi_max, x.basis)), idx


# ------------------------------------------------------------------------------------------- branches (where)
def _difference_bounds(ctx, a, b) -> tuple[torch.Tensor, torch.Tensor]:
    """(lo, hi) enclosing a - b over the box."""
    def bounds(v):
        if is_tm(v):
            return tm.enclosure(v, ctx.box)
        t = torch.as_tensor(_plain(v))
        return t, t

    (la, ha), (lb, hb) = bounds(a), bounds(b)
    return la - hb, ha - lb


def _value(x):
    return x.value if is_tm(x) else _plain(x)


@register("gt", "lt", "ge", "le")
def _compare(ctx, op, a, b):
    """A comparison, certain where the enclosure of a - b lies on one side of 0 (strictly, for the strict side)."""
    lo, hi = _difference_bounds(ctx, a, b)
    value = op(_value(a), _value(b))
    name = op.overloadpacket.__name__
    if name in ("gt", "le"):   # a > b  true iff a - b > 0
        certain = (lo > 0) | (hi <= 0)
    else:                      # a < b / a >= b: turn at a - b = 0 from the other side
        certain = (hi < 0) | (lo >= 0)
    return Condition(value, certain.expand(value.shape))


@register("where")
def _where(ctx, op, cond, a, b):
    ref = a if is_tm(a) else b
    if not is_tm(ref):
        raise CertificationError("where with a branch on the input but constant sides has no certified rule")
    a, b = _as_tm(a, ctx, ref), _as_tm(b, ctx, ref)
    if isinstance(cond, Condition):
        picked = _select(cond.value, a, b)
        uncertain = ~cond.certain
        if not bool(uncertain.any()):
            return picked
        ctx.note("where (a branch)", uncertain)
        (la, ha), (lb, hb) = tm.enclosure(a, ctx.box), tm.enclosure(b, ctx.box)
        hull = _hull(torch.minimum(la, lb), torch.maximum(ha, hb), ref.basis)
        return _select(~uncertain, picked, hull)
    if is_tm(cond):
        raise CertificationError("where with an input-dependent number as the condition has no certified rule")
    return _select(torch.as_tensor(cond).bool(), a, b)


@register("masked_fill")
def _masked_fill(ctx, op, x, mask, value):
    ref = x if is_tm(x) else value
    fill = _as_tm(value, ctx, ref) if is_tm(value) else tm.constant(
        torch.as_tensor(_plain(value), dtype=ref.dtype, device=ref.device).expand(ref.shape).clone(), ref.basis)
    return _where(ctx, aten.where.self, mask, fill, x if is_tm(x) else _as_tm(x, ctx, ref))


SHAPE_ONLY = ["zeros_like", "ones_like", "empty_like", "full_like", "new_zeros", "new_ones", "new_empty", "new_full",
              "scalar_tensor", "empty_strided"]


@register(*SHAPE_ONLY)
def _shape_only(ctx, op, x, *args, **kwargs):
    """Results that depend on the shape only: constants."""
    return op(_value(x), *_plain(args), **kwargs)


# ------------------------------------------------------------------------------------------- support and run
# ------------------------------------------------------------------- rules derived from the ops' declarations
def _from_bound(spec):
    """f(u) for an analytic f declared with a derivative bound: ``taylor_model.compose`` (range-capped)."""
    def rule(ctx, op, x):
        out = tm.compose(x, spec.fn, spec.bound, ctx.box)
        return _capped(ctx, out, spec.name, spec.range, x) if spec.range else out

    rule.__name__ = f"certified_{spec.name}"
    return rule


def _logit_arguments(x, eps=None) -> None:
    if eps is not None and float(eps) > 0.5:
        raise CertificationError(
            f"logit with eps={float(eps):g} > 0.5 has no certified rule: torch then maps x < eps to logit(eps) and "
            "every other x to logit(1 - eps), a jump at x = eps (not the clamp to [eps, 1 - eps] the rule follows); "
            "use eps <= 0.5 or None")


# op name -> a check that refuses the arguments its composition does not follow as torch does
ARGUMENT_CHECKS = {"logit": _logit_arguments}


def _from_composite(spec):
    """An op declared as a composition of other ops: the composition run on Taylor models, each part by its own
    certified rule (constants computed directly)."""
    check = ARGUMENT_CHECKS.get(spec.name)

    def rule(ctx, op, *args, **kwargs):
        args = _plain(args)
        if check is not None:
            check(*args, **kwargs)
        return spec.composite(caller(lookup, _has_tm, ctx), op, *args, **kwargs)

    rule.__name__ = f"certified_{spec.name}"
    return rule


for _op, _spec in list(SPECS.items()):
    if _spec.linear == "move":
        _certify_as(_op, _move)
    elif _spec.linear == "sum":
        _certify_as(_op, _summing)
    elif _spec.bound is not None and _spec.fn is not None:
        _certify_as(_op, _from_bound(_spec))
    elif _spec.composite is not None:
        _certify_as(_op, _from_composite(_spec))


def check_certifiable(traced) -> None:
    """Refuse, listing them all, the ops acting on the input that have no Taylor-model rule."""
    missing = sorted({str(node.target) for node in trace.input_dependents(traced, through_values=True)
                      if node.op == "call_function" and lookup(node.target) is None})
    if missing:
        raise UnsupportedOperationError(
            "cannot certify this model: these operations act on the input and have no certified (Taylor-model) "
            "remainder rule yet:\n" + "\n".join(f"  {op}" for op in missing)
            + "\nexpand() may still handle them (without a guaranteed error bound).", ops=missing)


def _has_tm(x) -> bool:
    """Whether x carries the expansion over the box: a Taylor model or a comparison of one, or a container of them."""
    return holds(x, (TM, Condition))


CERTIFIED = program.RuleTable("certified", lookup, _has_tm)


def run(traced, input_tm: TM, ctx: CertContext):
    """Push the input Taylor model through the graph (the one runner, ``program.run``, on the certified rules); the
    output structure holds Taylor models."""
    return program.run(traced, input_tm, ctx, table=CERTIFIED)
