"""Which axis of a traced graph's output holds the batch's points: the input's axis 0 followed through the graph.

A batched expansion takes output row b for point b's output only where the output's axis 0 *is* the input's axis 0
carried through the ops (elementwise ops, a matrix product on the left, views that keep the leading dimension,
reductions over other axes, softmax over any). An output whose axis 0 merely has the batch's size (the column sums of a
square batch, one row picked, a product that contracts the batch) does not hold the points, whatever its size.

Each node gets the axis carrying the input's axis 0 (an int), None (no axis does: a constant, or the batch axis summed,
contracted or picked) or ``UNKNOWN`` (an op this walk does not follow); where the output's is unknown, the sizes decide
as before (``rows_are_points`` is True).
"""

from __future__ import annotations

import math
import operator

import torch

aten = torch.ops.aten
UNKNOWN = "unknown"


def rows_are_points(traced, output=None) -> bool:
    """Whether axis 0 of the traced graph's output holds the batch's points (True where no graph is known or the
    walk cannot tell). ``output``: a selection of one entry per point keeps that axis (``select_output``)."""
    if traced is None:
        return True
    cache = traced.__dict__.setdefault("_derived", {})
    if "batch axis" not in cache:
        cache["batch axis"] = output_axis(traced)
    axis = cache["batch axis"]
    return axis == 0 or axis == UNKNOWN


def output_axis(traced):
    """The axis of the graph's (one) output that carries the input's axis 0: an int, None or ``UNKNOWN``."""
    graph = traced.graph_module.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    axes: dict = {placeholders[traced.input_index]: 0}
    for node in graph.nodes:
        if node.op == "call_function":
            try:
                axes[node] = _axis(node, axes)
            except (TypeError, ValueError, IndexError, KeyError, AttributeError):
                axes[node] = UNKNOWN
        elif node.op == "output":
            leaves: list = []
            torch.fx.node.map_aggregate(node.args[0], leaves.append)
            tensors = [v for v in leaves if isinstance(v, torch.fx.Node)]
            return axes.get(tensors[0]) if len(tensors) == 1 else UNKNOWN
    return UNKNOWN


def _shape(node) -> tuple | None:
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _combine(found: list):
    """Several arguments' axes in the output: one int agreed on, None where none carries, else UNKNOWN."""
    if any(a == UNKNOWN for a in found):
        return UNKNOWN
    ints = {a for a in found if a is not None}
    if not ints:
        return None
    return ints.pop() if len(ints) == 1 else UNKNOWN


def _norm(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def _axis(node, axes: dict):
    inputs = node.all_input_nodes
    carried = [axes.get(a) for a in inputs]
    if all(a is None for a in carried):
        return None
    if any(a == UNKNOWN for a in carried):
        return UNKNOWN
    target = node.target
    if target is operator.getitem:
        return axes.get(node.args[0])
    packet = getattr(target, "overloadpacket", None)
    rule = _RULES.get(packet)
    if rule is not None:
        return rule(node, axes)
    if packet in _SAME_SHAPE or torch.Tag.pointwise in getattr(target, "tags", ()):
        return _broadcast(node, axes)
    return UNKNOWN


def _broadcast(node, axes: dict):
    """Elementwise with broadcasting: an argument's axis d of k dims is the output's d + (ndim - k)."""
    out = _shape(node)
    if out is None:
        return UNKNOWN
    found = []
    for a in node.all_input_nodes:
        d, shape = axes.get(a), _shape(a)
        if d is None:
            continue
        if shape is None:
            return UNKNOWN
        pos = d + len(out) - len(shape)
        if out[pos] != shape[d]:
            return UNKNOWN
        found.append(pos)
    return _combine(found)


def _first(node, axes: dict):
    """The axis of the first argument (the op's other tensor arguments must not carry the batch)."""
    if any(axes.get(a) is not None for a in node.all_input_nodes if a is not node.args[0]):
        return UNKNOWN
    return axes.get(node.args[0])


def _view(node, axes: dict):
    """A view or reshape keeps the batch axis where the dimensions before it keep their product and it its size."""
    d, before, after = axes.get(node.args[0]), _shape(node.args[0]), _shape(node)
    if d is None or before is None or after is None:
        return UNKNOWN if d is not None else None
    lead = math.prod(before[:d])
    for k in range(len(after)):
        if math.prod(after[:k]) == lead and after[k] == before[d]:
            return k
    return UNKNOWN


def _expand(node, axes: dict):
    d, before, after = axes.get(node.args[0]), _shape(node.args[0]), _shape(node)
    return UNKNOWN if before is None or after is None else d + len(after) - len(before)


def _permute(node, axes: dict):
    d = axes.get(node.args[0])
    dims = [_norm(int(i), len(node.args[1])) for i in node.args[1]]
    return dims.index(d)


def _transpose(node, axes: dict):
    d, shape = axes.get(node.args[0]), _shape(node.args[0])
    if node.target is aten.t.default:
        return {0: 1, 1: 0}.get(d, d) if shape is not None and len(shape) == 2 else d
    d0, d1 = (_norm(int(i), len(shape)) for i in node.args[1:3])
    return d1 if d == d0 else d0 if d == d1 else d


def _select(node, axes: dict):
    d, shape = _first(node, axes), _shape(node.args[0])
    if not isinstance(d, int):
        return d
    dim = _norm(int(node.args[1]), len(shape))
    return None if dim == d else d - 1 if dim < d else d


def _slice(node, axes: dict):
    d, shape = _first(node, axes), _shape(node.args[0])
    if not isinstance(d, int):
        return d
    dim = _norm(int(node.args[1]) if len(node.args) > 1 else 0, len(shape))
    if dim != d:
        return d
    return d if _shape(node) == shape else None  # (a part of the batch: its rows are not the points)


def _reduce(node, axes: dict):
    """Reductions over ``dim`` (a list, an int, or every axis): the batch axis reduced is gone."""
    if len(node.args) > 1 and isinstance(node.args[1], torch.fx.Node):  # max(a, b), min(a, b): elementwise
        return _broadcast(node, axes)
    d, shape = axes.get(node.args[0]), _shape(node.args[0])
    if any(axes.get(a) is not None for a in node.all_input_nodes if a is not node.args[0]):
        return UNKNOWN
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if dims is None or dims == []:
        return None
    dims = [dims] if isinstance(dims, int) else list(dims)
    dims = {_norm(int(i), len(shape)) for i in dims}
    if d in dims:
        return None
    keepdim = bool(node.kwargs.get("keepdim", False)) or any(
        a is True for a in node.args[2:] if isinstance(a, bool))
    return d if keepdim else d - sum(1 for i in dims if i < d)


def _along(node, axes: dict):
    """An op along one dimension that keeps the shape (softmax, cumsum, sort): the batch axis stays."""
    return _first(node, axes)


def _mm(node, axes: dict):
    a, b = node.args[-2], node.args[-1]
    found = [{0: 0, 1: None}.get(axes.get(a)), {1: 1, 0: None}.get(axes.get(b))]
    if node.target.overloadpacket is aten.addmm:
        found.append(_broadcast_one(node.args[0], node, axes))
    return _combine(found)


def _bmm(node, axes: dict):
    a, b = node.args[-2], node.args[-1]
    found = [{0: 0, 1: 1, 2: None}.get(axes.get(a)), {0: 0, 1: None, 2: 2}.get(axes.get(b))]
    if node.target.overloadpacket is aten.baddbmm:
        found.append(_broadcast_one(node.args[0], node, axes))
    return _combine(found)


def _broadcast_one(arg, node, axes: dict):
    d, shape, out = axes.get(arg), _shape(arg), _shape(node)
    if d is None or not isinstance(arg, torch.fx.Node):
        return None
    return UNKNOWN if shape is None or out is None else d + len(out) - len(shape)


def _cat(node, axes: dict):
    tensors = node.args[0]
    first = next(t for t in tensors if isinstance(t, torch.fx.Node))
    dim = _norm(int(node.args[1]) if len(node.args) > 1 else int(node.kwargs.get("dim", 0)), len(_shape(first)))
    found = [axes.get(t) for t in tensors if isinstance(t, torch.fx.Node)]
    axis = _combine(found)
    return UNKNOWN if axis == dim else axis


def _flip(node, axes: dict):
    """flip, roll: along the batch axis the rows are not the points any more."""
    d, shape = _first(node, axes), _shape(node.args[0])
    if not isinstance(d, int):
        return d
    dims = node.args[-1] if node.target.overloadpacket is aten.flip else (
        node.args[2] if len(node.args) > 2 else node.kwargs.get("dims", ()))
    dims = [dims] if isinstance(dims, int) else list(dims)
    if not dims and node.target.overloadpacket is aten.roll:
        return None  # (rolled flat)
    return None if d in {_norm(int(i), len(shape)) for i in dims} else d


def _batch_first(node, axes: dict):
    """Ops on (N, C, ...) inputs (convolution, pooling, padding of the trailing axes): axis 0 stays axis 0."""
    d = _first(node, axes)
    return d if d in (0, None) else UNKNOWN


def _embedding(node, axes: dict):
    if axes.get(node.args[0]) is not None:
        return UNKNOWN
    return axes.get(node.args[1])


_SAME_SHAPE = {aten.clone, aten._to_copy, aten.detach, aten.alias, aten.lift_fresh_copy, aten.copy, aten.zeros_like,
               aten.ones_like, aten.empty_like, aten.full_like, aten.fill, aten.native_dropout, aten.where,
               aten.masked_fill, aten.clamp, aten.hardtanh, aten.leaky_relu, aten.elu, aten.softplus, aten.gelu,
               aten.silu, aten.mish, aten.prelu, aten.relu, aten.sigmoid, aten.tanh}
_RULES = {
    **dict.fromkeys([aten.view, aten._unsafe_view, aten.reshape, aten.unsqueeze, aten.squeeze, aten.flatten,
                     aten.unflatten, aten.view_as], _view),
    aten.expand: _expand,
    aten.permute: _permute,
    **dict.fromkeys([aten.transpose, aten.t], _transpose),
    aten.select: _select,
    aten.slice: _slice,
    **dict.fromkeys([aten.sum, aten.mean, aten.amax, aten.amin, aten.var, aten.std, aten.var_mean, aten.std_mean,
                     aten.prod, aten.logsumexp, aten.max, aten.min, aten.argmax, aten.argmin, aten.any, aten.all],
                    _reduce),
    **dict.fromkeys([aten._softmax, aten._log_softmax, aten.softmax, aten.log_softmax, aten.cumsum, aten.cumprod,
                     aten.sort, aten.argsort, aten.logcumsumexp], _along),
    **dict.fromkeys([aten.mm, aten.addmm], _mm),
    **dict.fromkeys([aten.bmm, aten.baddbmm], _bmm),
    aten.cat: _cat,
    **dict.fromkeys([aten.convolution, aten._convolution, aten.avg_pool1d, aten.avg_pool2d, aten.avg_pool3d,
                     aten.max_pool2d_with_indices, aten.max_pool3d_with_indices, aten._adaptive_avg_pool2d,
                     aten._adaptive_avg_pool3d, aten.adaptive_max_pool2d, aten.upsample_nearest2d,
                     aten.upsample_bilinear2d, aten.reflection_pad1d, aten.reflection_pad2d,
                     aten.replication_pad1d, aten.replication_pad2d, aten.pixel_shuffle, aten.pixel_unshuffle,
                     aten.channel_shuffle, aten.im2col, aten.native_group_norm], _batch_first),
    aten.embedding: _embedding,
    aten.flip: _flip,
    aten.roll: _flip,
}


def _reduce_default(node, axes: dict):
    """A reduction without ``dim`` (``sum.default``): every axis."""
    return None if len(node.args) < 2 and "dim" not in node.kwargs else _reduce(node, axes)


for _packet in (aten.sum, aten.mean, aten.amax, aten.amin, aten.prod, aten.max, aten.min, aten.argmax, aten.argmin,
                aten.any, aten.all):
    _RULES[_packet] = _reduce_default
