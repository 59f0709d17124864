"""The rule table: for each aten op, how it acts on jets.

A rule receives the interpreter context and the op's arguments, where every argument that depends on the expansion
variables is a ``Jet`` and everything else is a plain value. Families:

- linear in the jet arguments (views, reductions, convolutions with constant weights...): the op applied to every
  coefficient at once (``torch.vmap`` over the coefficient axis); an affine op's constant part goes to coefficient 0;
- sums coefficient-wise, products of two jets through the basis' product table;
- analytic elementwise functions by recurrences (``functions``), piecewise ones by the branch the value takes;
- non-differentiable ops (comparisons, argmax, rounding) on the value only: their result is a constant.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from hope_engine.algebra import functions as jetfn
from hope_engine.algebra import jet as series
from hope_engine.algebra.derivative_bounds import BOUNDS as B
from hope_engine.algebra.jet import Jet
from hope_engine.errors import ExpansionError, UnsupportedOperationError
from hope_engine.ops import composites as C
from hope_engine.ops.composites import CELU, LOGSIGMOID, LOGSIGMOID_FORWARD, MISH, XLOGY
from hope_engine.ops.spec import ALIAS, NO_COST, Cost, OpSpec, Rule, caller, declare, resolve

aten = torch.ops.aten


@dataclass
class Context:
    """What a rule may need besides its arguments: the basis and a record of one-sided (kink) expansions."""

    basis: object
    kinks: dict = field(default_factory=dict)

    def note_kink(self, what: str, count: int) -> None:
        if count:
            self.kinks[what] = self.kinks.get(what, 0) + int(count)


RULES: dict[object, Rule] = {}  # op -> its exact rule (its declaration's ``exact``, ``spec.SPECS``), kept by ``defop``
VALUE_ONLY: set = set()  # the ops registered by ``defvalue`` (their result does not depend on the expansion variables)


def defop(op, rule: Rule, family: str = "rule", **declared):
    """The one way into the registry: declares op (``spec.declare``, which refuses a second declaration and unknown
    names) with ``rule`` as its exact rule; ``declared``: the declaration's other fields (``OpSpec``)."""
    key = declare(OpSpec(resolve(op), family, rule, **declared))
    RULES[key] = rule
    return key


def defrule(*ops, elementwise: bool = False, composite=None, linear: str | None = None, cost: Cost = NO_COST):
    """Decorator: the function is the exact rule of every op named (``rule(ctx, op, *args, **kwargs)``).
    elementwise: one argument carries the jet and the result has its shape (the paper rule's activations);
    composite: ``(call, *args, **kwargs)``, the op as other declared ops (the certified path runs it);
    linear: "move" or "sum" for an op linear in the jet (see ``spec.OpSpec``); cost: see ``spec.Cost``."""

    def deco(fn: Rule) -> Rule:
        for op in ops:
            defop(op, fn, elementwise=elementwise, composite=composite, linear=linear, cost=cost)
        return fn

    return deco


def deflinear(*ops, kind: str | None = None, cost: Cost = NO_COST) -> None:
    """Ops linear in their jet arguments: applied to every coefficient at once (``linear``). kind: "move" (entries
    moved, copied or set to 0), "sum" (non-negative weights at most 1), None (any other linear map)."""
    for op in ops:
        defop(op, linear, "linear", linear=kind, cost=cost)


def defvalue(*ops) -> None:
    """Ops whose result is piecewise constant (comparisons, rounding, argmax, *_like): computed on the values, a
    constant of the expansion; a jump the jet sits on is recorded as a kink (``value_only``)."""
    for op in ops:
        VALUE_ONLY.add(defop(op, value_only, "value"))


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
        out = fn(x)
        return out if singular is None else _guard_singular(op, x, singular(x.value), out, lambda: op(x.value))

    rule.__name__ = f"analytic_{getattr(fn, '__name__', 'fn')}"
    defop(op, rule, "analytic", elementwise=True, fn=fn, bound=bound, range=range, composite=composite, cost=cost)


def _refuse_singular(op, x: Jet, bad: torch.Tensor) -> None:
    """Raise an ExpansionError naming the op and the point where the jet x moves off a value in ``bad``."""
    moving = bad & _varies(x)
    if bool(moving.any()):
        where = tuple(moving.nonzero()[0].tolist())
        point = float(x.value[where]) if x.ndim else float(x.value)
        name = getattr(getattr(op, "overloadpacket", op), "__name__", str(op))
        raise ExpansionError(
            f"{name} is not analytic at {point:g} (element {where} of its argument, {int(moving.sum())} in all), and "
            "the expansion variables move its argument: no Taylor expansion exists at this point (a norm or a "
            "distance at 0, sqrt or log of 0...). Expand at a nearby point, or keep the argument away from it "
            "(sqrt(x + eps)).")


def _guard_singular(op, x: Jet, bad: torch.Tensor, out: Jet, value: Callable[[], torch.Tensor]) -> Jet:
    """``out`` = f(x), f not analytic where ``bad`` (its series there is inf/NaN): raise an ExpansionError naming the op
    and the point if the jet moves off such a value; where it does not move, f(x) is the constant f(x0)."""
    if not bool(bad.any()):
        return out
    _refuse_singular(op, x, bad)
    const = series.constant_jet(torch.as_tensor(value(), dtype=out.dtype, device=out.device).expand(out.shape)
                                .clone(), out.basis)
    return jetfn.where_value(bad, const, out)


def is_jet(x) -> bool:
    return isinstance(x, Jet)


def _value(x):
    """The value (coefficient 0) of a jet, recursively through lists and tuples."""
    if isinstance(x, Jet):
        return x.value
    if isinstance(x, (list, tuple)):
        return type(x)(_value(e) for e in x)
    return x


def _basis_of(args) -> object:
    for a in args:
        if isinstance(a, Jet):
            return a.basis
        if isinstance(a, (list, tuple)):
            b = _basis_of(a)
            if b is not None:
                return b
    return None


def _wrap(out, basis):
    if isinstance(out, torch.Tensor):
        return Jet(out, basis)
    if isinstance(out, (list, tuple)):
        return type(out)(_wrap(o, basis) for o in out)
    return out


# ------------------------------------------------------------------------------------------------ linear family
def apply_linear(op, args, kwargs):
    """op applied to every coefficient: jets (and lists holding jets) are batched over the coefficient axis."""
    basis = _basis_of(args)
    in_dims, call_args = [], []
    for a in args:
        if isinstance(a, Jet):
            call_args.append(a.c)
            in_dims.append(0)
        elif isinstance(a, (list, tuple)) and any(isinstance(e, Jet) for e in a):
            ref = next(e for e in a if isinstance(e, Jet)).c
            call_args.append([e.c if isinstance(e, Jet) else series.constant_jet(
                torch.as_tensor(e, dtype=ref.dtype, device=ref.device), basis).c for e in a])
            in_dims.append(0)
        else:
            call_args.append(a)
            in_dims.append(None)
    out = torch.vmap(lambda *xs: op(*xs, **kwargs), in_dims=tuple(in_dims))(*call_args)
    return _wrap(out, basis)


def linear(ctx, op, *args, **kwargs):
    fast = _LINEAR_FAST.get(op)
    if fast is not None and isinstance(args[0], Jet):
        out = fast(args[0], *args[1:], **kwargs)
        if out is not None:
            return out
    return apply_linear(op, args, kwargs)


# ------------------------------------------------------------ linear fast paths (no vmap): views and simple ops
# For the commonest ops of one jet with plain (non-jet) other arguments, the op on the coefficient tensor with its
# dimensions shifted past the coefficient axis is exactly what vmap's batching rule computes (same kernel, same
# values); anything unusual (a 0-d jet, a dimension out of range, an unexpected argument) returns None and goes
# through ``apply_linear``, which raises what the op itself would.
def _dim(d, ndim: int) -> int | None:
    """Dimension d of a value with ``ndim`` dimensions as a dimension of its coefficient tensor (None: not simple)."""
    if not isinstance(d, int) or ndim == 0 or not -ndim <= d < ndim:
        return None
    return d % ndim + 1


def _fast_clone(x: Jet, **kwargs) -> Jet | None:
    return Jet(x.c.clone(), x.basis) if not kwargs else None


def _fast_unsqueeze(x: Jet, d) -> Jet | None:
    d = _dim(d, x.ndim + 1)
    return None if d is None else Jet(x.c.unsqueeze(d), x.basis)


def _fast_squeeze_dim(x: Jet, d) -> Jet | None:
    d = _dim(d, x.ndim)
    return None if d is None else Jet(x.c.squeeze(d), x.basis)


def _fast_t(x: Jet) -> Jet | None:
    return Jet(x.c.transpose(1, 2), x.basis) if x.ndim == 2 else None


def _fast_transpose(x: Jet, d0, d1) -> Jet | None:
    d0, d1 = _dim(d0, x.ndim), _dim(d1, x.ndim)
    return None if d0 is None or d1 is None else Jet(x.c.transpose(d0, d1), x.basis)


def _fast_permute(x: Jet, dims) -> Jet | None:
    shifted = [_dim(d, x.ndim) for d in dims]
    if len(shifted) != x.ndim or None in shifted or len(set(shifted)) != len(shifted):
        return None
    return Jet(x.c.permute(0, *shifted), x.basis)


def _fast_neg(x: Jet) -> Jet:
    return Jet(torch.neg(x.c), x.basis)


def _fast_select(x: Jet, d, index) -> Jet | None:
    d = _dim(d, x.ndim)
    if d is None or not isinstance(index, int) or not -x.c.shape[d] <= index < x.c.shape[d]:
        return None
    return Jet(x.c.select(d, index), x.basis)


_LINEAR_FAST: dict = {
    aten.clone.default: _fast_clone,
    aten.unsqueeze.default: _fast_unsqueeze,
    aten.squeeze.dim: _fast_squeeze_dim,
    aten.t.default: _fast_t,
    aten.transpose.int: _fast_transpose,
    aten.permute.default: _fast_permute,
    aten.neg.default: _fast_neg,
    aten.select.int: _fast_select,
}


# views: the result shares the argument's coefficients
deflinear("permute", "transpose", "t", "expand", "alias", "slice", "select", "unsqueeze", "squeeze",
    "flatten", "unflatten", "split", "split_with_sizes", "chunk", "unbind", "narrow", "diagonal", "lift_fresh_copy",
    "movedim", "_reshape_alias", kind="move", cost=ALIAS)
# entries moved, copied or set to 0
deflinear("clone", "contiguous", "cat", "stack", "flip", "unsafe_split", "unsafe_split_with_sizes", "unsafe_chunk",
    "roll", "repeat", "unfold", "index_select", "gather", "index", "pixel_shuffle", "upsample_nearest1d",
    "upsample_nearest2d", "tril", "triu", "squeeze_copy", "view_copy", "permute_copy", "expand_copy", "t_copy",
    "transpose_copy", "unsqueeze_copy", "slice_copy", "select_copy", "alias_copy", "reflection_pad1d",
    "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d", "replication_pad3d",
    "_unsafe_index", "upsample_nearest3d", "im2col", "pixel_unshuffle", "channel_shuffle", kind="move")
# non-negative weights at most 1
deflinear("sum", "mean", "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_avg_pool1d",
    "upsample_bilinear2d", "upsample_linear1d", "cumsum", "trace", "upsample_trilinear3d", "col2im", kind="sum")
# other linear maps (a sign, bicubic weights of either sign)
deflinear("neg", "upsample_bicubic2d")


def _promoted(x, like: Jet):
    """A floating tensor argument as a constant jet (value in coefficient 0); anything else unchanged."""
    if isinstance(x, torch.Tensor) and x.is_floating_point():
        return series.constant_jet(x.to(like.dtype), like.basis)
    if isinstance(x, (list, tuple)):
        return type(x)(_promoted(e, like) for e in x)
    return x


@defrule("select_scatter", "slice_scatter", "diagonal_scatter", linear="move")
def affine(ctx, op, *args, **kwargs):
    """An op linear in all its floating tensor arguments together (writing src into self): a constant argument is a
    constant jet, so it reaches coefficient 0 only."""
    like = next(a for a in args if is_jet(a))
    return apply_linear(op, tuple(a if is_jet(a) else _promoted(a, like) for a in args), kwargs)


defrule("index_put", "masked_scatter", "index_add", "index_copy", "scatter_add")(affine)  # entries may add up


@defrule("copy")
def _copy(ctx, op, dst, src, non_blocking=False):
    """copy(dst, src): src broadcast to dst's shape and dtype."""
    dtype = dst.dtype
    if not is_jet(src):
        return op(_value(dst), src)
    shape = dst.shape
    return Jet(series.lift(src.c, len(shape)).expand(src.c.shape[0], *shape).to(dtype).clone(), src.basis)


@defrule("constant_pad_nd")
def _constant_pad(ctx, op, x, pad, value=0.0):
    """Pad every coefficient with 0 and the value with ``value`` (the pad value is a constant)."""
    out = apply_linear(op, (x, pad, 0.0), {})
    if value:
        out.c[0] = op(x.value, pad, value)
    return out


@defrule("fill")
def _fill(ctx, op, x, value):
    """x filled with value: a constant unless the value itself depends on the input."""
    if not is_jet(value):
        return op(_value(x), value)
    shape = x.shape
    return Jet(series.lift(value.c, len(shape)).expand(value.c.shape[0], *shape).clone(), value.basis)


@defrule("masked_fill", cost=Cost(copies=2))
def _masked_fill(ctx, op, x, mask, value):
    """where(mask, value, x), the mask being a constant."""
    if not is_jet(x):
        x = series.constant_jet(x, value.basis)
    if not is_jet(value):
        value = series.constant_jet(torch.as_tensor(value, dtype=x.dtype, device=x.device), x.basis)
    return jetfn.where_value(_value(mask).bool(), value, x)


@defrule("view", "_unsafe_view", "reshape", linear="move", cost=ALIAS)
def _view(ctx, op, x, size):
    return Jet(x.c.reshape(x.c.shape[0], *size), x.basis)


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
        prod.c[0].add_(bias)  # prod is the matmul's fresh output: the bias goes into its value in place
        return prod
    return series.add_constant(prod, bias)


@defrule("convolution", cost=Cost(bilinear=True, gemm=True, copies=1))
def _convolution(ctx, op, x, weight, bias, *rest):
    if is_jet(weight) or is_jet(bias):
        if is_jet(x) and is_jet(weight):
            out = series.bilinear(lambda u, w: op(u, w, None, *rest), x, weight)
        else:
            out = apply_linear(op, (x, weight, None, *rest), {})
        if bias is None:
            return out
        b = bias if is_jet(bias) else series.constant_jet(bias, out.basis)
        return series.add(out, Jet(b.c.reshape(b.c.shape[0], -1, *([1] * (weight.ndim - 2))), b.basis))
    out = _folded(lambda v: op(v, weight, None, *rest), x.c, weight.dim())
    if bias is not None:
        out[0].add_(bias.reshape(-1, *([1] * (weight.dim() - 2))))
    return Jet(out, x.basis)


@defrule("_convolution")
def _legacy_convolution(ctx, op, x, weight, bias, stride, padding, dilation, transposed, output_padding, groups,
                        *flags):
    """aten._convolution (TorchScript-traced convolutions): aten.convolution with backend flags that do not change
    the result."""
    return _convolution(ctx, aten.convolution.default, x, weight, bias, stride, padding, dilation, transposed,
                        output_padding, groups)


def _folded(fn, c: torch.Tensor, batch_ndim: int) -> torch.Tensor:
    """fn (a linear op on a batch of ``batch_ndim``-dimensional inputs, e.g. a convolution or pooling) applied to
    every coefficient, the coefficient axis folded into the batch axis.

    Coefficients past the last nonzero one stay 0, so fn runs only on the rows up to it: the input layer's jet
    x0 + t is zero above degree 1, and the first convolution of a CNN (and its pooling) runs over 1 + n images, not M.
    """
    m = c.shape[0]
    if m == 1 or bool(c[-1].ne(0).any()):  # the usual case past the input layer: every row in use
        kept = m
    else:
        nonzero = c.reshape(m, -1).ne(0).any(dim=1).nonzero()
        kept = int(nonzero[-1]) + 1 if nonzero.numel() else 1
    part = c[:kept]
    batched = c.dim() - 1 == batch_ndim
    out = fn(part.reshape(kept * c.shape[1], *c.shape[2:]) if batched else part)
    out = out.reshape(kept, c.shape[1], *out.shape[1:]) if batched else out
    if kept == m:
        return out
    full = out.new_zeros((m, *out.shape[1:]))
    full[:kept] = out
    return full


@defrule("avg_pool1d", "avg_pool2d", "avg_pool3d", linear="sum", cost=Cost(copies=1))
def _avg_pool(ctx, op, x, *args):
    nd = {aten.avg_pool1d: 3, aten.avg_pool2d: 4, aten.avg_pool3d: 5}[op.overloadpacket]
    if x.ndim not in (nd - 1, nd):
        return apply_linear(op, (x, *args), {})
    return Jet(_folded(lambda v: op(v, *args), x.c, nd), x.basis)


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


@defrule("as_strided", linear="move", cost=ALIAS)
def _as_strided(ctx, op, x, size, stride, storage_offset=None):
    """A strided view of a contiguous value (the support check refuses others): the same view of each coefficient."""
    c = x.c.contiguous()
    per = c[0].numel()
    return Jet(c.as_strided((c.shape[0], *size), (per, *stride), c.storage_offset() + int(storage_offset or 0)),
               x.basis)


# ---------------------------------------------------------------------------------------------- sums, products
def _promote(x, basis, like: Jet) -> Jet:
    return series.as_jet(x, basis, like.c)


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
        return series.scale(a, 1 / b) if not isinstance(b, torch.Tensor) else series.scale(a, torch.reciprocal(b))
    _refuse_singular(op, b, b.value == 0)  # a pole (or 0/0) that the denominator moves across
    if not is_jet(a):
        a = series.constant_jet(torch.as_tensor(a, dtype=b.dtype, device=b.device), b.basis)
    return jetfn.div(a, b)


@defrule("square", elementwise=True, cost=Cost(product=True))
def _square(ctx, op, x):
    return series.mul(x, x)


@defrule("where", cost=Cost(copies=2))
def _where(ctx, op, cond, a, b):
    if is_jet(cond):
        cond = cond.value.bool()
    ref = a if is_jet(a) else b
    return jetfn.where_value(cond, _promote(a, ref.basis, ref), _promote(b, ref.basis, ref))


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


@defrule("pow", elementwise=True, cost=Cost(products=2, copies=2, weighted=True))
def _pow(ctx, op, base, exponent):
    """base^exponent: integer powers >= 0 by products, others by the recurrence u E y = p y E u (not analytic at
    base 0: refused there if the base moves), a jet exponent as exp(exponent log base)."""
    if is_jet(exponent):
        if is_jet(base):
            _refuse_singular(op, base, base.value == 0)
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
        out = _power(op, base, values[0])
        for p in values[1:]:
            out = jetfn.where_value(exponent == p, _power(op, base, p), out)
        return out
    return _power(op, base, exponent)


def _power(op, base: Jet, p: float) -> Jet:
    out = jetfn.power(base, p)
    if float(p).is_integer() and p >= 0:
        return out
    return _guard_singular(op, base, base.value == 0, out, lambda: torch.pow(base.value, p))


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


@defrule("_softmax", cost=Cost(products=2, copies=3))
def _softmax(ctx, op, x, dim, half_to_float=False):
    shift = x.value.amax(dim=dim, keepdim=True)
    e = jetfn.exp(series.add_constant(x, -shift))
    s = apply_linear(aten.sum.dim_IntList, (e, [dim], True), {})
    return jetfn.div(e, s)


@defrule("_safe_softmax", cost=Cost(products=2, copies=4))
def _safe_softmax(ctx, op, x, dim, dtype=None):
    """softmax, and 0 on rows that are entirely -inf (fully masked attention rows)."""
    out = _softmax(ctx, op, x, dim)
    masked = (x.value == float("-inf")).all(dim=dim, keepdim=True)
    if not bool(masked.any()):
        return out
    return jetfn.where_value(~masked, out, series.constant_jet(torch.zeros_like(out.value), out.basis))


@defrule("_log_softmax", cost=Cost(products=2, copies=3))
def _log_softmax(ctx, op, x, dim, half_to_float=False):
    shift = x.value.amax(dim=dim, keepdim=True)
    z = series.add_constant(x, -shift)
    s = apply_linear(aten.sum.dim_IntList, (jetfn.exp(z), [dim], True), {})
    return series.sub(z, jetfn.log(s))


@defrule("var_mean", "var", cost=Cost(products=1, copies=2))
def _var_mean(ctx, op, x, dim=None, *, correction=1, keepdim=False):
    dims = list(range(x.ndim)) if dim is None else list(dim)
    mean = apply_linear(aten.mean.dim, (x, dims, True), {})
    dev = series.sub(x, mean)
    count = 1
    for d in dims:
        count *= x.shape[d]
    var = series.scale(apply_linear(aten.sum.dim_IntList, (series.mul(dev, dev), dims, keepdim), {}),
                       1.0 / max(count - (correction if correction is not None else 1), 0))
    if op.overloadpacket is aten.var:
        return var
    if not keepdim:
        mean = apply_linear(aten.squeeze.dims, (mean, dims), {})
    return var, mean


# ------------------------------------------------------------------------------------------------- piecewise
# A piecewise function at a point where its pieces meet is expanded with the piece PyTorch's forward takes there, and
# the point is recorded as a kink (a KinkWarning) when the pieces' series differ up to the expansion order and the jet
# moves off the point; a jet that is constant there (no nonzero coefficient past the value) never crosses it.
def _varies(x: Jet) -> torch.Tensor:
    """Elementwise: whether the jet has a nonzero coefficient past the value."""
    return (x.c[1:] != 0).any(0)


def _kinks(ctx, name, mask, x=None):
    """Record the values on a kink (mask), counting only those whose jet ``x`` moves off it when x is given."""
    if x is not None:
        mask = mask & _varies(x)
    ctx.note_kink(name, int(mask.sum()))


def _scale_by_mask(x: Jet, factor: torch.Tensor) -> Jet:
    return Jet(x.c * factor.to(x.dtype), x.basis)


def _constant_like(x: Jet, value) -> Jet:
    """The constant jet ``value`` broadcast to x's shape."""
    return series.constant_jet(torch.as_tensor(value, dtype=x.dtype, device=x.device).expand(x.shape).clone(),
                               x.basis)


@defrule("relu", elementwise=True)
def _relu(ctx, op, x):
    v = x.value
    _kinks(ctx, "relu", v == 0, x)
    return _scale_by_mask(x, v > 0)


@defrule("leaky_relu", elementwise=True)
def _leaky_relu(ctx, op, x, negative_slope=0.01):
    v = x.value
    if negative_slope != 1:
        _kinks(ctx, "leaky_relu", v == 0, x)
    return _scale_by_mask(x, torch.where(v > 0, torch.ones_like(v), torch.full_like(v, float(negative_slope))))


def _clamp_jet(ctx, name, x: Jet, lo, hi) -> Jet:
    """clamp(x, lo, hi) = min(max(x, lo), hi); bounds that are tensors or jets go through maximum/minimum."""
    if isinstance(lo, (Jet, torch.Tensor)) or isinstance(hi, (Jet, torch.Tensor)):
        out = x if lo is None else _maximum(ctx, aten.maximum.default, x, lo)
        return out if hi is None else _maximum(ctx, aten.minimum.default, out, hi)
    v = x.value
    inside = torch.ones_like(v, dtype=torch.bool)
    if lo is not None:
        inside &= v > lo
        _kinks(ctx, name, v == lo, x)
    if hi is not None:
        inside &= v < hi
        _kinks(ctx, name, v == hi, x)
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
def _abs(ctx, op, x):
    v = x.value
    _kinks(ctx, "abs", v == 0, x)
    return _scale_by_mask(x, torch.where(v >= 0, torch.ones_like(v), -torch.ones_like(v)))


@defrule("elu", elementwise=True, cost=Cost(copies=3))
def _elu(ctx, op, x, alpha=1.0, scale=1.0, input_scale=1.0):
    """scale x (x > 0), alpha scale (exp(input_scale x) - 1) (x <= 0, the branch taken at 0).

    At 0 the branches' k-th derivatives are scale [k = 1] and alpha scale input_scale^k: they differ at order 1 unless
    alpha input_scale = 1 (CELU, ELU with alpha 1), and always at order 2 — a kink only for expansions that reach it."""
    v = x.value
    a, s, i = float(alpha), float(scale), float(input_scale)
    if x.basis.order >= 2 or (x.basis.order == 1 and a * i != 1.0):
        _kinks(ctx, op.overloadpacket.__name__, v == 0, x)
    negative = series.scale(jetfn.expm1(series.scale(x, i)), a * s)
    return jetfn.where_value(v > 0, series.scale(x, s), negative)


@defrule("celu", elementwise=True, composite=CELU, cost=Cost(copies=3))
def _celu(ctx, op, x, alpha=1.0):
    """celu(x) = max(0, x) + min(0, alpha (exp(x / alpha) - 1)): elu with input_scale 1 / alpha (C^1 at 0, not C^2)."""
    return _elu(ctx, op, x, alpha, 1.0, 1.0 / float(alpha))


@defrule("_prelu_kernel", elementwise=True, composite=C.PRELU)
def _prelu(ctx, op, x, weight):
    """x (x > 0), weight x (x <= 0): a kink at 0 where weight != 1."""
    w = _value(weight)
    v = x.value
    _kinks(ctx, "prelu", (v == 0) & (w != 1), x)
    negative = series.mul(x, weight) if is_jet(weight) else series.scale(x, weight)
    return jetfn.where_value(v > 0, x, negative)


@defrule("threshold", elementwise=True)
def _threshold(ctx, op, x, threshold, value):
    """x where x > threshold, else the constant ``value``: a jump at x = threshold (a kink if value = threshold)."""
    v = x.value
    _kinks(ctx, "threshold", v == threshold, x)
    return jetfn.where_value(v > threshold, x, _constant_like(x, value))


@defrule("hardshrink", elementwise=True)
def _hardshrink(ctx, op, x, lambd=0.5):
    """x where |x| > lambd, else 0: jumps at x = +-lambd, constant 0 around 0."""
    v = x.value
    _kinks(ctx, "hardshrink", v.abs() == lambd, x)
    return _scale_by_mask(x, v.abs() > lambd)


@defrule("softshrink", elementwise=True, composite=C.SOFTSHRINK)
def _softshrink(ctx, op, x, lambd=0.5):
    """x - lambd (x > lambd), x + lambd (x < -lambd), else 0: kinks at x = +-lambd, constant 0 around 0."""
    v = x.value
    _kinks(ctx, "softshrink", v.abs() == lambd, x)
    out = _scale_by_mask(x, v.abs() > lambd)
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


def _reduce(x: Jet, reduction: int) -> Jet:
    """A loss' reduction: 0 none, 1 mean, 2 sum (linear: every coefficient)."""
    if reduction == 0:
        return x
    c = x.c.reshape(x.c.shape[0], -1)
    return Jet(c.mean(1) if reduction == 1 else c.sum(1), x.basis)


def _residual(x, target) -> Jet:
    ref = x if is_jet(x) else target
    return series.sub(_promote(x, ref.basis, ref), _promote(target, ref.basis, ref))


@defrule("huber_loss")
def _huber_loss(ctx, op, x, target, reduction=1, delta=1.0):
    """d = x - target: d^2 / 2 (|d| < delta), delta (|d| - delta / 2) otherwise; C^1 at |d| = delta (a kink from
    order 2), smooth at d = 0."""
    d = _residual(x, target)
    v = d.value
    if d.basis.order >= 2:
        _kinks(ctx, "huber_loss", v.abs() == delta, d)
    quad = series.scale(series.mul(d, d), 0.5)
    slope = torch.where(v >= 0, v.new_tensor(float(delta)), v.new_tensor(-float(delta)))
    lin = series.add_constant(_scale_by_mask(d, slope), -0.5 * delta * delta)
    return _reduce(jetfn.where_value(v.abs() < delta, quad, lin), reduction)


@defrule("smooth_l1_loss")
def _smooth_l1_loss(ctx, op, x, target, reduction=1, beta=1.0):
    """d = x - target: d^2 / (2 beta) (|d| < beta), |d| - beta / 2 otherwise (|d| when beta = 0)."""
    if beta == 0:
        d = _residual(x, target)
        return _reduce(_abs(ctx, aten.abs.default, d), reduction)
    return series.scale(_huber_loss(ctx, op, x, target, reduction, beta), 1.0 / beta)


@defrule("maximum", "minimum", cost=Cost(copies=2))
def _maximum(ctx, op, a, b):
    ref = a if is_jet(a) else b
    a, b = _promote(a, ref.basis, ref), _promote(b, ref.basis, ref)
    va, vb = a.value, b.value
    _kinks(ctx, op.overloadpacket.__name__, va == vb, series.sub(a, b))
    pick_a = va > vb if op.overloadpacket is aten.maximum else va < vb
    return jetfn.where_value(pick_a, a, b)


# --------------------------------------------------------- smooth functions whose PyTorch kernels branch on value
@defrule("softplus", elementwise=True, cost=Cost(products=2.5, copies=2))
def _softplus(ctx, op, x, beta=1.0, threshold=20.0):
    """torch's softplus: x where beta x > threshold, else log(1 + exp(beta x)) / beta (a kink where beta x equals
    the threshold: torch takes the smooth side there)."""
    smooth = jetfn.softplus(x, float(beta))
    z = float(beta) * x.value
    _kinks(ctx, "softplus (its threshold)", z == threshold, x)
    above = z > threshold
    return Jet(torch.where(above, x.c, smooth.c), x.basis) if bool(above.any()) else smooth


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
        zero = ~_varies(x) & (x.value == 0)
    else:
        xv = torch.as_tensor(x, dtype=ref.dtype, device=ref.device)
        out = series.scale(log_y, xv)
        zero = xv == 0
    out = jetfn.where_value(zero, _constant_like(out, 0.0), out)
    out.c[0] = op(_value(x), _value(y))
    return out


def _gather_flat(x: Jet, idx: torch.Tensor, ndim_pooled: int) -> Jet:
    """Select coefficients at flat spatial indices (as max pooling returns them) over the last ``ndim_pooled`` dims."""
    c = x.c
    m = c.shape[0]
    flat = c.reshape(m, *c.shape[1:c.dim() - ndim_pooled], -1)
    idx_flat = idx.reshape(*idx.shape[:idx.dim() - ndim_pooled], -1)
    out = flat.gather(-1, idx_flat.unsqueeze(0).expand(m, *idx_flat.shape))
    return Jet(out.reshape(m, *idx.shape), x.basis)


def pool_ties(v: torch.Tensor, out: torch.Tensor, idx: torch.Tensor, ndim_pooled: int, op, args) -> int:
    """Windows whose maximum is attained twice: mask the chosen entries and pool again."""
    masked = v.clone().reshape(*v.shape[:v.dim() - ndim_pooled], -1)
    masked.scatter_(-1, idx.reshape(*idx.shape[:idx.dim() - ndim_pooled], -1), float("-inf"))
    second = op(masked.reshape(v.shape), *args)[0]
    return int((second == out).sum())


@defrule("max_pool1d_with_indices", "max_pool2d_with_indices", "max_pool3d_with_indices")
def _max_pool(ctx, op, x, *args):
    nd = {aten.max_pool1d_with_indices: 1, aten.max_pool2d_with_indices: 2,
          aten.max_pool3d_with_indices: 3}[op.overloadpacket]
    v = x.value
    out, idx = op(v, *args)
    ctx.note_kink("max_pool", pool_ties(v, out, idx, nd, op, args))
    return _gather_flat(x, idx, nd), idx


@defrule("amax", "amin", cost=Cost(copies=1))
def _amax(ctx, op, x, dim=(), keepdim=False):
    if x.ndim == 0:  # the maximum of one value
        return x
    dims = sorted(d % x.ndim for d in (dim if len(dim) else range(x.ndim)))
    v = x.value
    keep = [d for d in range(x.ndim) if d not in dims]
    perm = keep + dims
    vp = v.permute(perm).reshape(*[v.shape[d] for d in keep], -1)
    cp = x.c.permute(0, *[p + 1 for p in perm]).reshape(x.c.shape[0], *vp.shape)
    pick = vp.argmax(-1, keepdim=True) if op.overloadpacket is aten.amax else vp.argmin(-1, keepdim=True)
    best = vp.gather(-1, pick)
    ctx.note_kink(op.overloadpacket.__name__, int(((vp == best).sum(-1) > 1).sum()))
    out = cp.gather(-1, pick.unsqueeze(0).expand(cp.shape[0], *pick.shape)).squeeze(-1)
    if keepdim:
        for d in dims:
            out = out.unsqueeze(d + 1)
    return Jet(out, x.basis)


@defrule("max", "min", cost=Cost(copies=1))
def _max_dim(ctx, op, x, dim=None, keepdim=False):
    if dim is None:
        return _amax(ctx, aten.amax.default if op.overloadpacket is aten.max else aten.amin.default, x)
    v = x.value
    if x.ndim == 0:  # the maximum of one value, at index 0
        return x, torch.zeros((), dtype=torch.long, device=v.device)
    values, idx = (v.max if op.overloadpacket is aten.max else v.min)(dim, keepdim=True)
    ctx.note_kink(op.overloadpacket.__name__, int(((v == values).sum(dim) > 1).sum()))
    d = dim % x.ndim
    out = x.c.gather(d + 1, idx.unsqueeze(0).expand(x.c.shape[0], *idx.shape))
    if not keepdim:
        out, idx = out.squeeze(d + 1), idx.squeeze(d)
    return Jet(out, x.basis), idx


# ----------------------------------------------------------------------------------- value-only (zero series)
def value_only(ctx, op, *args, **kwargs):
    """A result autograd does not differentiate through (a comparison, rounding, an integer cast, ``detach``): its
    value at the point, a constant of the expansion."""
    _note_branch(ctx, op.overloadpacket, args, kwargs)
    return op(*_value(args), **{k: _value(v) for k, v in kwargs.items()})


_COMPARISONS = {aten.gt, aten.lt, aten.ge, aten.le, aten.eq, aten.ne}
_JUMPS_AT_ZERO = {aten.sign, aten.sgn, aten.heaviside}
_JUMPS_AT_INTEGERS = {aten.floor, aten.ceil, aten.trunc}


def _note_branch(ctx, packet, args, kwargs) -> None:
    """A piecewise-constant result taken where a jet sits on its jump (a comparison tie, sign at 0, floor at an
    integer, round at a half-integer) holds only on one side: a kink, when the jet moves off the point. This is what
    a branch ``where(x > 0, ...)`` tests, in user code or a decomposition."""
    if packet in _COMPARISONS and len(args) >= 2 and (is_jet(args[0]) or is_jet(args[1])):
        d = _residual(args[0], args[1])
        _kinks(ctx, f"{packet.__name__} (a branch)", d.value == 0, d)
        return
    x = args[0] if args else None
    if not is_jet(x):
        return
    v = x.value
    if packet in _JUMPS_AT_ZERO:
        _kinks(ctx, packet.__name__, v == 0, x)
    elif packet in _JUMPS_AT_INTEGERS:
        _kinks(ctx, packet.__name__, v == torch.floor(v), x)
    elif packet is aten.round:
        s = v * 10.0 ** int(kwargs.get("decimals", args[1] if len(args) > 1 else 0))
        _kinks(ctx, "round", (s.abs() - torch.floor(s.abs())) == 0.5, x)


defvalue("gt", "lt", "ge", "le", "eq", "ne", "sign", "argmax", "argmin", "isnan", "isinf", "isfinite",
    "logical_not", "logical_and", "logical_or", "floor", "ceil", "round", "trunc", "zeros_like", "ones_like",
    "empty_like", "full_like", "new_zeros", "new_ones", "new_empty", "new_full", "bitwise_not", "heaviside",
    "argsort", "floor_divide", "empty_strided", "scalar_tensor", "sgn", "isposinf", "isneginf", "signbit",
    "detach")


@defrule("_to_copy")
def _to_copy(ctx, op, x, **kwargs):
    """A cast: to a floating dtype, linear (every coefficient cast); to an integer or bool dtype, what autograd sees
    as a constant (the cast value; a jump where the value is an integer, for bool at 0)."""
    dtype = kwargs.get("dtype")
    if dtype is None or dtype.is_floating_point or dtype.is_complex:
        return linear(ctx, op, x, **kwargs)
    if is_jet(x):
        v = x.value
        _kinks(ctx, f"a cast to {dtype}", v == 0 if dtype is torch.bool else v == torch.trunc(v), x)
    return op(_value(x), **kwargs)


defop(operator.getitem, lambda ctx, op, seq, i: seq[i])


def lookup(target) -> Rule | None:
    """The rule for an fx node target (an OpOverload, its packet, or a Python function)."""
    rule = RULES.get(target)
    if rule is None:
        rule = RULES.get(getattr(target, "overloadpacket", None))
    return rule


def is_value_only(target) -> bool:
    return target in VALUE_ONLY or getattr(target, "overloadpacket", None) in VALUE_ONLY


# ------------------------------------------------------------------ ops that permute by value (sort, topk, median...)
# The value picks a permutation (or selection) of the elements; the result's jet is the same selection of the input's
# coefficients. Where two picked elements tie in value but not in jet, the order flips on one side: a kink.
def _take(x: Jet, idx: torch.Tensor, dim: int) -> Jet:
    """x's coefficients at ``idx`` along dim (torch.gather of every coefficient)."""
    d = dim % max(x.ndim, 1)
    if x.ndim == 0:
        return x
    return Jet(x.c.gather(d + 1, idx.unsqueeze(0).expand(x.c.shape[0], *idx.shape)), x.basis)


def _adjacent_ties(s: Jet, dim: int) -> int:
    """Neighbours along dim (of a sorted jet) equal in value, different in series."""
    if s.ndim == 0 or s.shape[dim] < 2:
        return 0
    d = dim % s.ndim
    n = s.shape[d]
    lo, hi = s.c.narrow(d + 1, 0, n - 1), s.c.narrow(d + 1, 1, n - 1)
    return int(((lo[0] == hi[0]) & (lo[1:] != hi[1:]).any(0)).sum())


def _ties_with(x: Jet, picked: Jet, dim: int) -> int:
    """Picked elements (keepdim along dim) that some element of x equals in value but not in series."""
    d = dim % x.ndim
    pc = series.lift(picked.c, x.ndim) if picked.ndim < x.ndim else picked.c
    if picked.ndim < x.ndim:
        pc = picked.c.unsqueeze(d + 1)
    same_value = x.c[0] == pc[0]
    other = (x.c[1:] != pc[1:]).any(0)
    return int((same_value & other).any(d).sum())


@defrule("sort")
def _sort(ctx, op, x, *args, **kwargs):
    """(values, indices): the permutation that sorts the value, applied to every coefficient."""
    values, idx = op(x.value, *args, **kwargs)
    dim = kwargs.get("dim", next((a for a in args if isinstance(a, int) and not isinstance(a, bool)), -1))
    out = _take(x, idx, dim) if x.ndim else x
    ctx.note_kink("sort (a tie)", _adjacent_ties(out, dim) if x.ndim else 0)
    return out, idx


@defrule("topk")
def _topk(ctx, op, x, k, dim=-1, largest=True, sorted=True):
    values, idx = op(x.value, k, dim, largest, sorted)
    if x.ndim == 0:
        return x, idx
    order = torch.sort(x.value, dim=dim, descending=largest, stable=True)[1]
    ranked = _take(x, order.narrow(dim % x.ndim, 0, min(k + 1, x.shape[dim])), dim)
    ctx.note_kink("topk (a tie)", _adjacent_ties(ranked, dim))
    return _take(x, idx, dim), idx


@defrule("kthvalue", "median", "nanmedian", "mode")
def _kth(ctx, op, x, *args, **kwargs):
    """The element the value picks (k-th smallest, median: the lower middle one): its series."""
    name = op.overloadpacket.__name__
    if op.overloadpacket in (aten.median, aten.nanmedian) and not args and not kwargs:  # over all elements
        flat = Jet(x.c.reshape(x.c.shape[0], -1), x.basis)
        _, idx = getattr(torch, name)(flat.value, 0, keepdim=True)
        picked = _take(flat, idx, 0)
        ctx.note_kink(f"{name} (a tie)", _ties_with(flat, picked, 0))
        return Jet(picked.c.reshape(picked.c.shape[0]), x.basis)
    values, idx = op(x.value, *args, **kwargs)
    if x.ndim == 0:
        return x, idx
    if op.overloadpacket is aten.kthvalue:
        dim = kwargs.get("dim", args[1] if len(args) > 1 else -1)
        keepdim = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
    else:
        dim = kwargs.get("dim", args[0] if args else -1)
        keepdim = kwargs.get("keepdim", args[1] if len(args) > 1 else False)
    d = dim % x.ndim
    kept = idx if keepdim else idx.unsqueeze(d)
    picked = _take(x, kept, d)
    ctx.note_kink(f"{name} (a tie)", _ties_with(x, picked, d))
    return (picked if keepdim else Jet(picked.c.squeeze(d + 1), x.basis)), idx


@defrule("cummax", "cummin")
def _cummax(ctx, op, x, dim):
    """Running maximum: at each position the series of the element holding the maximum so far."""
    values, idx = op(x.value, dim)
    if x.ndim == 0:
        return x, idx
    out = _take(x, idx, dim)
    d, n = dim % x.ndim, x.shape[dim]
    if n > 1:  # a new element equal to the running extreme so far, with another series: a tie
        new = x.c.narrow(d + 1, 1, n - 1)
        held = out.c.narrow(d + 1, 0, n - 1)
        ctx.note_kink(f"{op.overloadpacket.__name__} (a tie)",
                      int(((new[0] == held[0]) & (new[1:] != held[1:]).any(0)).sum()))
    return out, idx


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


# ---------------------------------------------------------------------------------------------- scatters
def _no_rule(what: str, op: str) -> UnsupportedOperationError:
    """The error for a form of an op that has no Taylor rule (found while running: it depends on the arguments)."""
    return UnsupportedOperationError(f"cannot expand this model: {what} has no Taylor rule yet. Replace it, or wrap "
                                     "the model so that it acts only on constants.", ops=[op])


@defrule("scatter")
def _scatter(ctx, op, x, dim, index, src, *, reduce=None):
    """Writing src into x at index (jointly linear in x and src; reduce="add" too); a scalar src is a constant."""
    if reduce == "multiply":
        raise _no_rule("scatter(reduce='multiply') of input-dependent values", "aten.scatter.reduce")
    if isinstance(src, (Jet, torch.Tensor)):
        return affine(ctx, op, x, dim, index, src, **({"reduce": reduce} if reduce else {}))
    out = apply_linear(op, (x, dim, index, 0.0), {"reduce": reduce} if reduce else {})
    out.c[0] = op(x.value, dim, index, src, **({"reduce": reduce} if reduce else {}))
    return out


@defrule("scatter_reduce")
def _scatter_reduce(ctx, op, x, dim, index, src, reduce, *, include_self=True):
    """sum and mean: jointly linear in x and src. amax/amin: each target takes the series of the element the value
    picks (x's own where it is among the extremes, else the first src element), a kink on a tie."""
    if reduce in ("sum", "mean"):
        return affine(ctx, op, x, dim, index, src, reduce, include_self=include_self)
    if reduce not in ("amax", "amin"):
        raise _no_rule(f"scatter_reduce(reduce={reduce!r}) of input-dependent values", "aten.scatter_reduce.two")
    ref = x if is_jet(x) else src
    x, src = _promote(x, ref.basis, ref), _promote(src, ref.basis, ref)
    d = dim % x.ndim
    out_v = op(x.value, dim, index, src.value, reduce, include_self=include_self)
    touched = torch.zeros_like(out_v, dtype=torch.bool).scatter(d, index, True)
    src_c = src.c[(slice(None), *(slice(0, s) for s in index.shape))]
    achieves = src_c[0] == out_v.gather(d, index)
    self_wins = touched & (x.value == out_v) if include_self else torch.zeros_like(touched)
    pos = torch.arange(index.shape[d], device=index.device).reshape(-1, *([1] * (index.dim() - 1 - d)))
    pos = pos.expand(index.shape)
    big = index.shape[d]
    first = torch.full(out_v.shape, big, dtype=index.dtype, device=index.device)
    first = first.scatter_reduce(d, index, torch.where(achieves, pos, big), "amin", include_self=True)
    winner = achieves & (pos == first.gather(d, index)) & ~self_wins.gather(d, index)
    count = torch.zeros(out_v.shape, dtype=torch.long, device=index.device).scatter_add(d, index, achieves.long())
    count = count + self_wins.long()
    ctx.note_kink(f"scatter_reduce {reduce} (a tie)", int((count > 1).sum()))
    keep = ~touched | self_wins
    placed = torch.zeros_like(x.c).scatter_add(d + 1, index.unsqueeze(0).expand(src_c.shape),
                                              src_c * winner.to(x.dtype))
    return Jet(x.c * keep.to(x.dtype) + placed, x.basis)


# ------------------------------------------------------------------------------------- functions of two tensors
def _pair_jets(a, b) -> tuple[Jet, Jet]:
    ref = a if is_jet(a) else b
    return _promote(a, ref.basis, ref), _promote(b, ref.basis, ref)


@defrule("atan2")
def _atan2(ctx, op, y, x):
    """atan2(y, x), analytic except at (0, 0)."""
    y, x = _pair_jets(y, x)
    _kinks(ctx, "atan2 (a jump of 2 pi on its cut y = 0, x < 0)", (y.value == 0) & (x.value < 0), y)
    out = jetfn.atan2(y, x)
    both = Jet(torch.stack(torch.broadcast_tensors(*series.aligned(y, x)), -1), y.basis)
    bad = ((y.value == 0) & (x.value == 0))
    return _guard_singular(op, both, bad.unsqueeze(-1).expand(both.shape), out, lambda: op(y.value, x.value)) \
        if bool(bad.any()) else out


@defrule("hypot")
def _hypot(ctx, op, a, b):
    """sqrt(a^2 + b^2), a cone (not analytic) at (0, 0)."""
    a, b = _pair_jets(a, b)
    bad = (a.value == 0) & (b.value == 0)
    if bool(bad.any()):
        both = Jet(torch.stack(torch.broadcast_tensors(*series.aligned(a, b)), -1), a.basis)
        _refuse_singular(op, both, bad.unsqueeze(-1).expand(both.shape))
        safe_a = Jet(a.c.clone(), a.basis)
        safe_a.c[0] = torch.where(bad, torch.ones_like(a.value), a.value)
        out = jetfn.hypot(safe_a, b)
        return jetfn.where_value(bad, _constant_like(out, 0.0), out)
    return jetfn.hypot(a, b)


@defrule("logaddexp", "logaddexp2")
def _logaddexp(ctx, op, a, b):
    """log(e^a + e^b) (log2(2^a + 2^b) = logaddexp(a ln 2, b ln 2) / ln 2): smooth everywhere."""
    a, b = _pair_jets(a, b)
    if op.overloadpacket is aten.logaddexp:
        return jetfn.logaddexp(a, b)
    ln2 = math.log(2.0)
    out = series.scale(jetfn.logaddexp(series.scale(a, ln2), series.scale(b, ln2)), 1 / ln2)
    out.c[0] = op(a.value, b.value)
    return out


@defrule("remainder", "fmod")
def _remainder(ctx, op, a, b):
    """a - q b with the quotient q = floor(a / b) (remainder) or trunc(a / b) (fmod) taken at the value: a constant
    away from the jumps, where the result is 0 (a jump when a - q b moves)."""
    out_v = op(_value(a), _value(b))
    av = torch.as_tensor(_value(a))
    bv = torch.as_tensor(_value(b), dtype=out_v.dtype, device=out_v.device)
    q = torch.round((av - out_v) / bv)  # the integer quotient PyTorch used
    a, b = _pair_jets(a, b)
    out = series.sub(a, series.scale(b, q))
    jump = out_v == 0 if op.overloadpacket is aten.remainder else (out_v == 0) & (q != 0)  # fmod is x near 0
    _kinks(ctx, f"{op.overloadpacket.__name__} (a jump)", jump, out)
    out = out.with_coefficients(out.c.expand(out.c.shape[0], *out_v.shape).clone())
    out.c[0] = out_v
    return out


@defrule("copysign")
def _copysign(ctx, op, a, b):
    """|a| with the sign of b: a times +-1 chosen by the values' sign bits; a kink at a = 0, a jump at b = 0."""
    av = torch.as_tensor(_value(a))
    bv = torch.as_tensor(_value(b))
    if is_jet(b):
        _kinks(ctx, "copysign (a jump)", (bv == 0) & (av != 0), b)
    if not is_jet(a):
        return op(av, bv)
    _kinks(ctx, "copysign", av == 0, a)
    factor = torch.where(torch.signbit(av) == torch.signbit(bv), 1.0, -1.0).to(a.dtype)
    out = series.scale(a, factor)
    out.c[0] = op(av, bv)
    return out


@defrule("fmax", "fmin")
def _fmax(ctx, op, a, b):
    """maximum/minimum that take the other argument where one is NaN."""
    a, b = _pair_jets(a, b)
    va, vb = a.value, b.value
    _kinks(ctx, op.overloadpacket.__name__, va == vb, series.sub(a, b))
    pick_a = (va > vb if op.overloadpacket is aten.fmax else va < vb) | torch.isnan(vb)
    return jetfn.where_value(pick_a, a, b)


# ------------------------------------------------------------------------------------ special functions
defanalytic("erfinv", jetfn.erfinv, _at_unit, bound=B["erfinv"], cost=Cost(products_per_order=3, copies=4))
defanalytic("lgamma", jetfn.lgamma, _poles, bound=B["lgamma"], cost=Cost(products_per_order=1, copies=2))
defanalytic("digamma", lambda x: jetfn.polygamma(0, x), _poles, bound=B["digamma"],
            cost=Cost(products_per_order=1, copies=2))


@defrule("polygamma", elementwise=True, cost=Cost(products_per_order=1, copies=2))
def _polygamma(ctx, op, n, x):
    """psi^(n)(x): poles at 0, -1, -2, ..."""
    out = jetfn.polygamma(n, x)
    return _guard_singular(op, x, (x.value <= 0) & (x.value == torch.floor(x.value)), out, lambda: op(n, x.value))


# --------------------------------------------------------------------------------------------- losses, distances
@defrule("nll_loss_forward", "nll_loss2d_forward")
def _nll_loss(ctx, op, x, target, weight, reduction, ignore_index):
    """-w[t] x[t] per sample (0 where t = ignore_index), then none/mean (over the weights)/sum: linear in x."""
    if is_jet(weight):
        raise _no_rule("nll_loss with class weights that depend on the input", "aten.nll_loss_forward")
    total_weight = op(x.value, target, weight, reduction, ignore_index)[1]
    cdim = 1 if x.ndim >= 2 else 0
    valid = target != ignore_index
    t = torch.where(valid, target, torch.zeros_like(target))
    picked = x.c.gather(cdim + 1, t.unsqueeze(cdim).unsqueeze(0).expand(x.c.shape[0], *t.unsqueeze(cdim).shape))
    picked = picked.squeeze(cdim + 1)
    w = (weight[t] if weight is not None else torch.ones_like(t, dtype=x.dtype)) * valid.to(x.dtype)
    loss = Jet(-picked * w, x.basis)
    if reduction == 0:
        return loss, total_weight
    summed = Jet(loss.c.reshape(loss.c.shape[0], -1).sum(1), x.basis)
    return (series.scale(summed, 1 / w.sum()) if reduction == 1 else summed), total_weight


@defrule("_cdist_forward")
def _cdist(ctx, op, x1, x2, p, compute_mode=None):
    """||x1_i - x2_j||_p over the last axis: a sum of |d|^p to the power 1/p (sqrt of squares for p = 2, refused at a
    zero distance that moves), sum |d| for p = 1, max |d| for p = inf."""
    a, b = _pair_jets(x1, x2)
    d = series.sub(Jet(a.c.unsqueeze(-2), a.basis), Jet(b.c.unsqueeze(-3), b.basis))
    if p == 2:
        sq = apply_linear(aten.sum.dim_IntList, (series.mul(d, d), [-1]), {})
        out = jetfn.power(sq, 0.5)
        return _guard_singular(op, sq, sq.value == 0, out, lambda: sq.value.sqrt())
    mag = _abs(ctx, aten.abs.default, d)
    if p == 1:
        return apply_linear(aten.sum.dim_IntList, (mag, [-1]), {})
    if p == float("inf"):
        return _amax(ctx, aten.amax.default, mag, [-1])
    if p == 0:
        return op(a.value, b.value, p, compute_mode)
    s = apply_linear(aten.sum.dim_IntList, (_pow(ctx, aten.pow.Tensor_Scalar, mag, p), [-1]), {})
    return _guard_singular(op, s, s.value == 0, jetfn.power(s, 1.0 / p), lambda: s.value.pow(1.0 / p))
