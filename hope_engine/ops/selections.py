"""Ops whose value picks which entries carry the series: max pooling, amax/amin, max/min, sort, topk, k-th value and
median, running maxima, scatters. The result's jet is the same selection of the argument's coefficients; where two
candidates tie in value but not in series, the choice flips on one side: a kink."""

from __future__ import annotations

import torch

from hope_engine.algebra import jet as series
from hope_engine.algebra.jet import Jet
from hope_engine.ops.helpers import is_jet, no_rule, promote
from hope_engine.ops.linear import affine, apply_linear
from hope_engine.ops.rules import defrule
from hope_engine.ops.spec import Cost

aten = torch.ops.aten


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
def amax(ctx, op, x, dim=(), keepdim=False):
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
        return amax(ctx, aten.amax.default if op.overloadpacket is aten.max else aten.amin.default, x)
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


# ---------------------------------------------------------------------------------------------- scatters
@defrule("scatter")
def _scatter(ctx, op, x, dim, index, src, *, reduce=None):
    """Writing src into x at index (jointly linear in x and src; reduce="add" too); a scalar src is a constant."""
    if reduce == "multiply":
        raise no_rule("scatter(reduce='multiply') of input-dependent values", "aten.scatter.reduce")
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
        raise no_rule(f"scatter_reduce(reduce={reduce!r}) of input-dependent values", "aten.scatter_reduce.two")
    ref = x if is_jet(x) else src
    x, src = promote(x, ref.basis, ref), promote(src, ref.basis, ref)
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
