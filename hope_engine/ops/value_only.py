"""Ops autograd does not differentiate through (comparisons, rounding, argmax, *_like, casts to integer or bool dtypes,
``detach``): computed on the values, constants of the expansion (a zero series). A jump the jet sits on (a comparison
tie, sign at 0, floor at an integer, round at a half-integer) holds only on one side: a kink. ``defvalue`` declares
them (``rules.is_value_only``: the walks of the graph stop at them)."""

from __future__ import annotations

import torch

from hope_engine.ops.helpers import is_jet, kinks, residual, value_of
from hope_engine.ops.linear import linear
from hope_engine.ops.rules import VALUE_ONLY, defop, defrule

aten = torch.ops.aten


def value_only(ctx, op, *args, **kwargs):
    """A result autograd does not differentiate through (a comparison, rounding, an integer cast, ``detach``): its
    value at the point, a constant of the expansion."""
    _note_branch(ctx, op.overloadpacket, args, kwargs)
    return op(*value_of(args), **{k: value_of(v) for k, v in kwargs.items()})


def defvalue(*ops) -> None:
    """Ops whose result is piecewise constant (comparisons, rounding, argmax, *_like): computed on the values, a
    constant of the expansion; a jump the jet sits on is recorded as a kink (``value_only``)."""
    for op in ops:
        VALUE_ONLY.add(defop(op, value_only, "value"))


_COMPARISONS = {aten.gt, aten.lt, aten.ge, aten.le, aten.eq, aten.ne}
_JUMPS_AT_ZERO = {aten.sign, aten.sgn, aten.heaviside}
_JUMPS_AT_INTEGERS = {aten.floor, aten.ceil, aten.trunc}


def _note_branch(ctx, packet, args, kwargs) -> None:
    """A piecewise-constant result taken where a jet sits on its jump (a comparison tie, sign at 0, floor at an
    integer, round at a half-integer) holds only on one side: a kink, when the jet moves off the point. This is what
    a branch ``where(x > 0, ...)`` tests, in user code or a decomposition."""
    if packet in _COMPARISONS and len(args) >= 2 and (is_jet(args[0]) or is_jet(args[1])):
        d = residual(args[0], args[1])
        kinks(ctx, f"{packet.__name__} (a branch)", d.value == 0, d)
        return
    x = args[0] if args else None
    if not is_jet(x):
        return
    v = x.value
    if packet in _JUMPS_AT_ZERO:
        kinks(ctx, packet.__name__, v == 0, x)
    elif packet in _JUMPS_AT_INTEGERS:
        kinks(ctx, packet.__name__, v == torch.floor(v), x)
    elif packet is aten.round:
        s = v * 10.0 ** int(kwargs.get("decimals", args[1] if len(args) > 1 else 0))
        kinks(ctx, "round", (s.abs() - torch.floor(s.abs())) == 0.5, x)


defvalue("gt", "lt", "ge", "le", "eq", "ne", "sign", "argmax", "argmin", "isnan", "isinf", "isfinite",
    "logical_not", "logical_and", "logical_or", "floor", "ceil", "round", "trunc", "zeros_like", "ones_like",
    "empty_like", "full_like", "new_zeros", "new_ones", "new_empty", "new_full", "bitwise_not", "heaviside",
    "argsort", "floor_divide", "empty_strided", "scalar_tensor", "sgn", "isposinf", "isneginf", "signbit",
    "detach")


@defrule("_to_copy", entries="reshape")
def _to_copy(ctx, op, x, **kwargs):
    """A cast: to a floating dtype, linear (every coefficient cast); to an integer or bool dtype, what autograd sees
    as a constant (the cast value; a jump where the value is an integer, for bool at 0)."""
    dtype = kwargs.get("dtype")
    if dtype is None or dtype.is_floating_point or dtype.is_complex:
        return linear(ctx, op, x, **kwargs)
    if is_jet(x):
        v = x.value
        kinks(ctx, f"a cast to {dtype}", v == 0 if dtype is torch.bool else v == torch.trunc(v), x)
    return op(value_of(x), **kwargs)
