"""The ops of layers: convolutions (the coefficient axis folded into the batch), average pooling, softmax and
log-softmax, variance, losses and distances."""

from __future__ import annotations

import math

import torch

from hope_engine.algebra import functions as jetfn
from hope_engine.algebra import jet as series
from hope_engine.algebra.jet import Jet
from hope_engine.ops.arithmetic import power
from hope_engine.ops.helpers import guard_singular, is_jet, kinks, no_rule, pair_jets, residual, scale_by_mask
from hope_engine.ops.linear import apply_linear
from hope_engine.ops.piecewise import absolute
from hope_engine.ops.rules import defrule
from hope_engine.ops.selections import amax
from hope_engine.ops.spec import Cost

aten = torch.ops.aten


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
    dof = count - (correction if correction is not None else 1)
    # torch divides by max(dof, 0): s / 0 is inf (NaN where s = 0), and so are the coefficients
    var = series.scale(apply_linear(aten.sum.dim_IntList, (series.mul(dev, dev), dims, keepdim), {}),
                       1.0 / dof if dof > 0 else math.inf)
    if op.overloadpacket is aten.var:
        return var
    if not keepdim:
        mean = apply_linear(aten.squeeze.dims, (mean, dims), {})
    return var, mean


# --------------------------------------------------------------------------------------------- losses, distances
def _reduce(x: Jet, reduction: int) -> Jet:
    """A loss' reduction: 0 none, 1 mean, 2 sum (linear: every coefficient)."""
    if reduction == 0:
        return x
    c = x.c.reshape(x.c.shape[0], -1)
    return Jet(c.mean(1) if reduction == 1 else c.sum(1), x.basis)


@defrule("huber_loss")
def _huber_loss(ctx, op, x, target, reduction=1, delta=1.0):
    """d = x - target: d^2 / 2 (|d| < delta), delta (|d| - delta / 2) otherwise; C^1 at |d| = delta (a kink from
    order 2), smooth at d = 0."""
    d = residual(x, target)
    v = d.value
    if d.basis.order >= 2:
        kinks(ctx, "huber_loss", v.abs() == delta, d)
    quad = series.scale(series.mul(d, d), 0.5)
    slope = torch.where(v >= 0, v.new_tensor(float(delta)), v.new_tensor(-float(delta)))
    lin = series.add_constant(scale_by_mask(d, slope), -0.5 * delta * delta)
    return _reduce(jetfn.where_value(v.abs() < delta, quad, lin), reduction)


@defrule("smooth_l1_loss")
def _smooth_l1_loss(ctx, op, x, target, reduction=1, beta=1.0):
    """d = x - target: d^2 / (2 beta) (|d| < beta), |d| - beta / 2 otherwise (|d| when beta = 0)."""
    if beta == 0:
        d = residual(x, target)
        return _reduce(absolute(ctx, aten.abs.default, d), reduction)
    return series.scale(_huber_loss(ctx, op, x, target, reduction, beta), 1.0 / beta)


@defrule("nll_loss_forward", "nll_loss2d_forward")
def _nll_loss(ctx, op, x, target, weight, reduction, ignore_index):
    """-w[t] x[t] per sample (0 where t = ignore_index), then none/mean (over the weights)/sum: linear in x."""
    if is_jet(weight):
        raise no_rule("nll_loss with class weights that depend on the input", "aten.nll_loss_forward")
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
    a, b = pair_jets(x1, x2)
    d = series.sub(Jet(a.c.unsqueeze(-2), a.basis), Jet(b.c.unsqueeze(-3), b.basis))
    if p == 2:
        sq = apply_linear(aten.sum.dim_IntList, (series.mul(d, d), [-1]), {})
        out = jetfn.power(sq, 0.5)
        return guard_singular(op, sq, sq.value == 0, out, lambda: sq.value.sqrt())
    mag = absolute(ctx, aten.abs.default, d)
    if p == 1:
        return apply_linear(aten.sum.dim_IntList, (mag, [-1]), {})
    if p == float("inf"):
        return amax(ctx, aten.amax.default, mag, [-1])
    if p == 0:
        return op(a.value, b.value, p, compute_mode)
    s = apply_linear(aten.sum.dim_IntList, (power(ctx, aten.pow.Tensor_Scalar, mag, p), [-1]), {})
    return guard_singular(op, s, s.value == 0, jetfn.power(s, 1.0 / p), lambda: s.value.pow(1.0 / p))
