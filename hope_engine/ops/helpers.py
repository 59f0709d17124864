"""What the rule families share: the jet test, the values of arguments, constants promoted next to a jet, the record of
kinks, the refusal at a singular point, and the error for a form of an op that has no rule."""

from __future__ import annotations

from collections.abc import Callable

import torch

from hope_engine.algebra import functions as jetfn
from hope_engine.algebra import jet as series
from hope_engine.algebra.jet import Jet
from hope_engine.errors import ExpansionError, UnsupportedOperationError


def is_jet(x) -> bool:
    return isinstance(x, Jet)


def value_of(x):
    """The value (coefficient 0) of a jet, recursively through lists and tuples."""
    if isinstance(x, Jet):
        return x.value
    if isinstance(x, (list, tuple)):
        return type(x)(value_of(e) for e in x)
    return x


def promote(x, basis, like: Jet) -> Jet:
    """x as a jet of ``basis`` (a constant: its value in coefficient 0), shaped as ``like``'s coefficients allow."""
    return series.as_jet(x, basis, like.c)


def pair_jets(a, b) -> tuple[Jet, Jet]:
    ref = a if is_jet(a) else b
    return promote(a, ref.basis, ref), promote(b, ref.basis, ref)


def residual(x, target) -> Jet:
    ref = x if is_jet(x) else target
    return series.sub(promote(x, ref.basis, ref), promote(target, ref.basis, ref))


def constant_like(x: Jet, value) -> Jet:
    """The constant jet ``value`` broadcast to x's shape."""
    return series.constant_jet(torch.as_tensor(value, dtype=x.dtype, device=x.device).expand(x.shape).clone(),
                               x.basis)


def scale_by_mask(x: Jet, factor: torch.Tensor) -> Jet:
    return Jet(x.c * factor.to(x.dtype), x.basis)


def varies(x: Jet) -> torch.Tensor:
    """Elementwise: whether the jet has a nonzero coefficient past the value."""
    return (x.c[1:] != 0).any(0)


def kinks(ctx, name, mask, x=None):
    """Record the values on a kink (mask), counting only those whose jet ``x`` moves off it when x is given."""
    if x is not None:
        mask = mask & varies(x)
    ctx.note_kink(name, int(mask.sum()))


def refuse_singular(op, x: Jet, bad: torch.Tensor) -> None:
    """Raise an ExpansionError naming the op and the point where the jet x moves off a value in ``bad``."""
    moving = bad & varies(x)
    if bool(moving.any()):
        where = tuple(moving.nonzero()[0].tolist())
        point = float(x.value[where]) if x.ndim else float(x.value)
        name = getattr(getattr(op, "overloadpacket", op), "__name__", str(op))
        raise ExpansionError(
            f"{name} is not analytic at {point:g} (element {where} of its argument, {int(moving.sum())} in all), and "
            "the expansion variables move its argument: no Taylor expansion exists at this point (a norm or a "
            "distance at 0, sqrt or log of 0...). Expand at a nearby point, or keep the argument away from it "
            "(sqrt(x + eps)).")


def guard_singular(op, x: Jet, bad: torch.Tensor, out: Jet, value: Callable[[], torch.Tensor]) -> Jet:
    """``out`` = f(x), f not analytic where ``bad`` (its series there is inf/NaN): raise an ExpansionError naming the op
    and the point if the jet moves off such a value; where it does not move, f(x) is the constant f(x0)."""
    if not bool(bad.any()):
        return out
    refuse_singular(op, x, bad)
    const = series.constant_jet(torch.as_tensor(value(), dtype=out.dtype, device=out.device).expand(out.shape)
                                .clone(), out.basis)
    return jetfn.where_value(bad, const, out)


def no_rule(what: str, op: str) -> UnsupportedOperationError:
    """The error for a form of an op that has no Taylor rule (found while running: it depends on the arguments)."""
    return UnsupportedOperationError(f"cannot expand this model: {what} has no Taylor rule yet. Replace it, or wrap "
                                     "the model so that it acts only on constants.", ops=[op])
