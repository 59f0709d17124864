"""Ops linear in their jet arguments (views, copies, sums, pads, interpolations...): the op applied to every coefficient
at once (``torch.vmap`` over the coefficient axis, or the op on the coefficient tensor itself for the commonest views);
an affine op's constant part goes to coefficient 0.

``deflinear`` declares them; kind: "move" (entries moved, copied or set to 0), "sum" (non-negative weights at most 1)
or None (any other linear map), and entries: "reshape" or "injective" where it holds (``spec.OpSpec``; the paper
rule's reshapes and first layer)."""

from __future__ import annotations

import torch

from hope_engine.algebra import jet as series
from hope_engine.algebra.jet import Jet
from hope_engine.ops.helpers import is_jet, value_of
from hope_engine.ops.rules import defop, defrule
from hope_engine.ops.spec import ALIAS, NO_COST, Cost

aten = torch.ops.aten


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


def deflinear(*ops, kind: str | None = None, entries: str | None = None, cost: Cost = NO_COST) -> None:
    """Ops linear in their jet arguments: applied to every coefficient at once (``linear``). kind: "move" (entries
    moved, copied or set to 0), "sum" (non-negative weights at most 1), None (any other linear map); entries:
    "reshape" (the same entries in the same order), "injective" (each result entry one argument entry times a number,
    each argument entry in at most one result entry) or None (``spec.OpSpec``)."""
    for op in ops:
        defop(op, linear, "linear", linear=kind, entries=entries, cost=cost)


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


def _fast_split(safe: str):
    """unsafe_split / unsafe_split_with_sizes / unsafe_chunk (no vmap batching rule): the same split of every
    coefficient (the safe op one axis further, each piece copied)."""
    def fast(x: Jet, sizes, dim=0) -> list | None:
        d = _dim(dim, x.ndim)
        if d is None:
            return None
        return [Jet(piece.clone(), x.basis) for piece in getattr(x.c, safe)(sizes, d)]
    return fast


_LINEAR_FAST: dict = {
    aten.unsafe_split.Tensor: _fast_split("split"),
    aten.unsafe_split_with_sizes.default: _fast_split("split_with_sizes"),
    aten.unsafe_chunk.default: _fast_split("chunk"),
    aten.clone.default: _fast_clone,
    aten.unsqueeze.default: _fast_unsqueeze,
    aten.squeeze.dim: _fast_squeeze_dim,
    aten.t.default: _fast_t,
    aten.transpose.int: _fast_transpose,
    aten.permute.default: _fast_permute,
    aten.neg.default: _fast_neg,
    aten.select.int: _fast_select,
}


# views, the result sharing the argument's coefficients: reshapes; injective ones (transposes, slices); the others
deflinear("alias", "unsqueeze", "squeeze", "flatten", "unflatten", "lift_fresh_copy", "_reshape_alias", kind="move",
          entries="reshape", cost=ALIAS)
deflinear("permute", "transpose", "t", "slice", "select", "split", "split_with_sizes", "chunk", "unbind", "narrow",
          "movedim", kind="move", entries="injective", cost=ALIAS)
deflinear("expand", "diagonal", kind="move", cost=ALIAS)
# entries moved, copied or set to 0: copies; injective ones (flips, rolls, slices); the others
deflinear("clone", "contiguous", "squeeze_copy", "view_copy", "unsqueeze_copy", "alias_copy", kind="move",
          entries="reshape")
deflinear("flip", "roll", "permute_copy", "transpose_copy", "t_copy", "slice_copy", "select_copy", "unsafe_split",
          "unsafe_split_with_sizes", "unsafe_chunk", kind="move", entries="injective")
deflinear("cat", "stack", "repeat", "unfold", "index_select", "gather", "index", "pixel_shuffle", "upsample_nearest1d",
          "upsample_nearest2d", "upsample_nearest3d", "tril", "triu", "expand_copy", "reflection_pad1d",
          "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d", "replication_pad3d",
          "_unsafe_index", "im2col", "pixel_unshuffle", "channel_shuffle", kind="move")
# non-negative weights at most 1
deflinear("sum", "mean", "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_avg_pool1d",
          "upsample_bilinear2d", "upsample_linear1d", "cumsum", "trace", "upsample_trilinear3d", "col2im", kind="sum")
# other linear maps: a sign (each entry once, times -1), bicubic weights of either sign
deflinear("neg", entries="injective")
deflinear("upsample_bicubic2d")


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
    if op.overloadpacket is aten.slice_scatter:
        args, kwargs = _slice_bounds(args, kwargs)
    return apply_linear(op, tuple(a if is_jet(a) else _promoted(a, like) for a in args), kwargs)


def _slice_bounds(args: tuple, kwargs: dict) -> tuple:
    """slice_scatter's end clamped to the dimension's size (``h[1:] = v`` records end = 2**63 - 1, which vmap's
    batching rule overflows on)."""
    names = ("self", "src", "dim", "start", "end", "step")
    bound = dict(zip(names, args)) | kwargs
    dim, end = bound.get("dim", 0), bound.get("end")
    size = bound["self"].shape[dim]
    if isinstance(end, int) and end > size:
        bound["end"] = size
    return tuple(bound[n] for n in names[:len(args)]), {k: bound[k] for k in kwargs}


defrule("index_put", "masked_scatter", "index_add", "index_copy", "scatter_add")(affine)  # entries may add up


@defrule("copy")
def _copy(ctx, op, dst, src, non_blocking=False):
    """copy(dst, src): src broadcast to dst's shape and dtype."""
    dtype = dst.dtype
    if not is_jet(src):
        return op(value_of(dst), src)
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
        return op(value_of(x), value)
    shape = x.shape
    return Jet(series.lift(value.c, len(shape)).expand(value.c.shape[0], *shape).clone(), value.basis)


@defrule("view", "_unsafe_view", "reshape", linear="move", entries="reshape", cost=ALIAS)
def _view(ctx, op, x, size):
    return Jet(x.c.reshape(x.c.shape[0], *size), x.basis)


@defrule("as_strided", linear="move", cost=ALIAS)
def _as_strided(ctx, op, x, size, stride, storage_offset=None):
    """A strided view of a contiguous value (the support check refuses others): the same view of each coefficient."""
    c = x.c.contiguous()
    per = c[0].numel()
    return Jet(c.as_strided((c.shape[0], *size), (per, *stride), c.storage_offset() + int(storage_offset or 0)),
               x.basis)
