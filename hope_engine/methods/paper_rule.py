"""The paper's rule (HOPE, Xiao et al., TPAMI 2024) as ``expand(..., method="hope")``: fast, exact for one hidden layer.

For a scalar output y the rule back-propagates, one layer at a time from the output, the vectors of *unmixed*
derivatives v_k(z) = d^k y / d z^k (k = 1..K, elementwise over the units of z). It assumes that every mixed derivative
d^k y / dz_i dz_j ... (i != j) of a hidden quantity z vanishes:

- output:                     v_1 = 1, v_k = 0 for k >= 2;
- linear op z = W u (+ b):    v_k(u) = (W^T)^{o k} v_k(z), with ^{o k} the elementwise k-th power, for every aten op
  on its own, as the paper's reference code does module by module (Conv2d, then AvgPool2d, then ...). Views, reshapes,
  transposes, slices, sums and max-pool selections have 0/1 entries, so v_k passes back through the transpose (the
  vector-Jacobian product); a convolution uses its weights raised to the k-th power; average pooling is a window sum
  (0/1) times 1/divisor, so v_k is scaled by 1/divisor^k (1/s^(2k) for an s x s window); mul by c scales by c^k;
- elementwise activation u -> f(u) (Faa di Bruno with partial Bell polynomials of the derivatives of f at u0):
  v_k(u) = sum_{j <= k} v_j(f(u)) B_{k,j}(f'(u0), ..., f^(k-j+1)(u0)). We get the B_{k,j} from the univariate Taylor
  series h(t) = f(u0 + t) - f(u0) (the engine's own rule, one variable): B_{k,j} = k!/j! [t^k] h(t)^j;
- where a value feeds several ops their contributions are summed.

Mixed partials in the input (terms="total") are formed, as the paper's code forms them at its first Linear layer, at
the *first layer* z = A x: the first linear op met from the input, after only ops that move, shift or scale single
entries (views, transposes, slices, negation, a standardization (x - mu) / sigma). For such an S, (W S)^{o k} =
W^{o k} S, so it does not matter on which side of them the power is taken. There
d^a y / dx^a = sum_i v_|a|(z)_i prod_j A_ij^{a_j}; for a pure a = k e_j this is the linear-op rule again, so
terms="pure" equals the pure part of terms="total". Where the input meets a nonlinearity or a sum of two branches
first, A is the identity (or that selection), and the mixed partials are 0.

Our reading where the paper and its code are silent: the code forms mixed partials only when its first module is a
Linear layer; we form them at whatever linear op comes first (a Conv2d included). The code's AvgPool2d weights are
1/(kh kw) (count_include_pad); we take each window's own divisor, which is the same there and PyTorch's value with
count_include_pad=False or a divisor_override. Ops the code does not have (mean, sum, cat, matmul with a constant...)
follow the same rule: their matrix entries raised to the k-th power.

Since the rule drops the mixed derivatives of every hidden quantity, it is exact only where they do vanish: one
nonlinear layer whose pre-activations are the first layer followed by ops whose outputs each read one entry (max
pooling, views, SIREN's w0 z). It is an approximation for two or more nonlinear layers (error growing with the order,
see ``benchmarks/run.py`` and docs/benchmarks.md) and already for Conv -> AvgPool before the first activation, where
the pooling mixes the convolution's outputs.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils import _pytree as pytree

from hope_engine.algebra import functions as F
from hope_engine.algebra import jet as series
from hope_engine.algebra.basis import make_basis
from hope_engine.algebra.jet import Jet
from hope_engine.algebra.polynomial import TaylorPolynomial, monomial_parents, output_index
from hope_engine.capture import trace
from hope_engine.errors import ExpansionError, GraphEscapeError, UnsupportedOperationError, warn_one_sided
from hope_engine.ops import rules
from hope_engine.ops.spec import declared, elementwise_ops, pointwise
from hope_engine.run import program

aten = torch.ops.aten

__all__ = ["expand_hope", "SUPPORTED_MODULES"]

# Leaf modules of torch.nn the rule covers; any other torch.nn leaf module is named in the error. (User-defined modules
# are checked op by op.)
SUPPORTED_MODULES = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool2d,
    nn.MaxPool3d, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.Identity, nn.Sequential, nn.ModuleList,
    # elementwise activations (their ops are checked one by one all the same)
    nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardtanh, nn.ReLU6, nn.Softplus, nn.Mish,
    nn.LogSigmoid, nn.CELU, nn.SELU, nn.Softsign, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.Threshold,
    nn.Hardsigmoid, nn.Hardswish,
)

# --------------------------------------------------------------------------------------------- op families
# Derived from the op declarations (hope_engine/ops, ``spec.OpSpec``): an op declared with the fact a list needs is
# taken without an edit here. What stays here is the paper rule's own: the ops of its trace variant that are not
# declared (dropout, the whole gelu and silu), the ops it treats as 0/1 matrices beyond the "move" ops, and the limits
# of its backward rules (ONE_ARGUMENT); every other op acting on the input is refused by name (``_classify``).

# the same entries in the same order, another shape or a copy (declared entries="reshape"; dropout: the identity in
# eval mode, not declared): v_k reshaped back
RESHAPES = declared(lambda s: s.entries == "reshape") | {aten.dropout, aten.feature_dropout, aten.alpha_dropout}
# 0/1 matrices, v_k passed back through the transpose: the "move" ops (entries moved, copied or set to 0), and the
# paper rule's own: sum (the one "sum" op whose weights are all 1), constant_pad_nd (a move plus a constant) and max
# pooling (at this point, the selection of each window's maximum)
STRUCTURAL = (declared(lambda s: s.linear == "move") - RESHAPES) | {
    aten.sum, aten.constant_pad_nd, aten.max_pool1d_with_indices, aten.max_pool2d_with_indices,
    aten.max_pool3d_with_indices}
# each output entry is one input entry (times a number), each input entry used at most once (declared entries=
# "reshape" or "injective"): for such an S, (W S)^{o k} = W^{o k} S, so these compose with the first layer W (as do
# mul/add by a constant of the input's shape)
MOVES = RESHAPES | declared(lambda s: s.entries == "injective")
# ops linear in one argument only: the argument positions that may carry derivatives (the backward rules below take
# one factor with derivatives, the other constant)
ONE_ARGUMENT = {aten.mul: (0, 1), aten.div: (0,), aten.mm: (0, 1), aten.bmm: (0, 1), aten.matmul: (0, 1),
                aten.addmm: (1, 2), aten.baddbmm: (1, 2), aten.convolution: (0,)}

# activations: every op declared elementwise (hope_engine.ops), plus the paper variant's whole gelu and silu
ELEMENTWISE = elementwise_ops() | {aten.gelu, aten.silu}
# ops acting entry by entry (declared ops torch tags pointwise; alias and _to_copy, copies torch does not tag): a
# connected group of them whose jets all come from one value s, each of s's shape, is one elementwise function of s
# (softsign, x * sigmoid(x) written out): an activation of s for the paper rule
POINTWISE = ELEMENTWISE | declared(lambda s: pointwise(s.op)) | {aten.alias, aten._to_copy}


def _packet(target):
    return getattr(target, "overloadpacket", target)


def _jet_positions(node, jets) -> list[int]:
    leaves = pytree.tree_leaves((node.args, node.kwargs))
    return [i for i, a in enumerate(leaves) if isinstance(a, torch.fx.Node) and a in jets]


def _accumulate(into: dict, key, value) -> None:
    into[key] = into[key] + value if key in into else value


def _sum_to(v: torch.Tensor, shape) -> torch.Tensor:
    """Reduce (K, *broadcast_shape) to (K, *shape): the transpose of broadcasting (entries 1)."""
    shape = tuple(shape)
    lead = v.dim() - 1 - len(shape)
    if lead > 0:
        v = v.sum(dim=tuple(range(1, 1 + lead)))
    dims = tuple(i + 1 for i, s in enumerate(shape) if s == 1 and v.shape[i + 1] != 1)
    if dims:
        v = v.sum(dim=dims, keepdim=True)
    return v


def _scale_by_powers(v: torch.Tensor, c) -> torch.Tensor:
    """v_k * c^k, k = 1..K (c a constant number or a tensor broadcasting against one v_k)."""
    K = v.shape[0]
    if not isinstance(c, torch.Tensor):
        c = torch.tensor(float(c), dtype=v.dtype, device=v.device)
    ks = torch.arange(1, K + 1, device=v.device).to(v.dtype)
    p = c.to(v.dtype).unsqueeze(0) ** ks.reshape(-1, *([1] * c.dim()))
    nd = max(v.dim() - 1, c.dim())
    return series.lift(v, nd) * series.lift(p, nd)


def _powers(w: torch.Tensor, K: int) -> list[torch.Tensor]:
    """[W^{o 1}, ..., W^{o K}], the elementwise powers of a weight."""
    out = [w]
    for _ in range(K - 1):
        out.append(out[-1] * w)
    return out


# ------------------------------------------------------------------------------- backward (linear ops table)
@dataclass
class _Step:
    """A linear node met on the way back: the values of its arguments and v, the derivative vectors (K, *out) of its
    output ({output index: v} for an op with several outputs)."""

    node: torch.fx.Node
    args: tuple
    kwargs: dict
    v: torch.Tensor | dict
    jets: set

    @property
    def order(self) -> int:
        return (next(iter(self.v.values())) if isinstance(self.v, dict) else self.v).shape[0]

    def jet_arg(self) -> tuple[int, torch.fx.Node]:
        """Position and node of the argument that carries derivatives (the first, for ops with one)."""
        return next((i, a) for i, a in enumerate(self.node.args) if isinstance(a, torch.fx.Node) and a in self.jets)

    def full_args(self) -> list:
        """Every positional schema argument, defaults filled in."""
        schema = self.node.target._schema.arguments
        return [self.args[i] if i < len(self.args) else self.kwargs.get(a.name, a.default_value)
                for i, a in enumerate(schema) if not a.kwarg_only]


Backward = Callable[[_Step], dict]
BACKWARD: dict[object, Backward] = {}


def _register(ops, rule: Backward) -> None:
    """Map each op (an aten overload packet) to its backward rule; an op registered twice is a bug."""
    for op in ops:
        if op in BACKWARD:
            raise ValueError(f"a backward rule for {op} is registered twice")
        BACKWARD[op] = rule


class _Unsupported(Exception):
    pass


def _reshape(s: _Step) -> dict:
    """Same entries, another shape: v_k reshaped back."""
    i, a = s.jet_arg()
    return {a: s.v.reshape(s.order, *s.args[i].shape)}


def _vjp(op, leaves: list, spec, pos: int, v: torch.Tensor, out_index: int | None) -> torch.Tensor:
    """u -> M^T u for every v_k, M the Jacobian of ``op`` in its flattened argument ``pos`` at these values."""
    def f(x):
        ls = list(leaves)
        ls[pos] = x
        a, kw = pytree.tree_unflatten(ls, spec)
        out = op(*a, **kw)
        return out if out_index is None else out[out_index]

    _, pullback = torch.func.vjp(f, leaves[pos])
    return torch.vmap(lambda g: pullback(g)[0])(v)


def _transpose(s: _Step, op=None) -> dict:
    """A 0/1 matrix is its own elementwise power: v_k(u) = M^T v_k(z), summed over outputs and uses of u."""
    leaves, spec = pytree.tree_flatten((s.args, s.kwargs))
    nodes = pytree.tree_leaves((s.node.args, s.node.kwargs))
    outputs = s.v.items() if isinstance(s.v, dict) else [(None, s.v)]
    contributions: dict = {}
    for pos in _jet_positions(s.node, s.jets):
        for index, v in outputs:
            _accumulate(contributions, nodes[pos], _vjp(op or s.node.target, leaves, spec, pos, v, index))
    return contributions


def _avg_pool(s: _Step) -> dict:
    """Average = window sum (0/1) times 1/divisor: v_k scaled by 1/divisor^k, then the window sum's transpose."""
    x, *rest = s.full_args()
    ones = torch.ones_like(x)
    window_sum = (*rest[:-1], 1)                                # divisor_override=1: the sum over each window
    entry = s.node.target(ones, *rest) / s.node.target(ones, *window_sum)   # 1/divisor of each output
    leaves, spec = pytree.tree_flatten(((x, *window_sum), {}))
    return {s.node.args[0]: _vjp(s.node.target, leaves, spec, 0, _scale_by_powers(s.v, entry), None)}


def _mean(s: _Step) -> dict:
    """mean = sum times 1/count: v_k scaled by 1/count^k, then the sum's transpose."""
    count = s.args[s.jet_arg()[0]].numel() // max(math.prod(s.v.shape[1:]), 1)
    return _transpose(replace(s, v=_scale_by_powers(s.v, 1.0 / count)), op=aten.sum)


def _neg(s: _Step) -> dict:
    return {s.jet_arg()[1]: _scale_by_powers(s.v, -1.0)}


def _add(s: _Step) -> dict:
    """a + alpha b (sub: a - alpha b, rsub: b - alpha a): each jet argument gets v_k times its coefficient^k."""
    alpha = float(s.kwargs.get("alpha", 1))
    coefficients = {aten.add: (1.0, alpha), aten.sub: (1.0, -alpha), aten.rsub: (-alpha, 1.0)}[_packet(s.node.target)]
    contributions: dict = {}
    for a, c, value in zip(s.node.args[:2], coefficients, s.args[:2]):
        if isinstance(a, torch.fx.Node) and a in s.jets:
            _accumulate(contributions, a, _sum_to(s.v if c == 1.0 else _scale_by_powers(s.v, c), value.shape))
    return contributions


def _scale(s: _Step) -> dict:
    """u * c or u / c with c constant: v_k(u) = c^k v_k (1/c^k), summed over broadcast copies."""
    i, a = s.jet_arg()
    c = s.args[1 - i]
    if _packet(s.node.target) is aten.div:
        c = torch.reciprocal(c) if isinstance(c, torch.Tensor) else 1.0 / c
    return {a: _sum_to(_scale_by_powers(s.v, c), s.args[i].shape)}


def _matmul(s: _Step) -> dict:
    """out = alpha A B with one factor constant: v_k(A) = alpha^k v_k (B^{o k})^T, v_k(B) = alpha^k (A^{o k})^T v_k."""
    first = 1 if _packet(s.node.target) in (aten.addmm, aten.baddbmm) else 0
    lhs, rhs = s.node.args[first], s.node.args[first + 1]
    A, B = s.args[first], s.args[first + 1]
    if A.dim() == 1 or B.dim() == 1:
        raise _Unsupported
    alpha = s.kwargs.get("alpha", 1)
    v = s.v if alpha == 1 else _scale_by_powers(s.v, alpha)
    if isinstance(lhs, torch.fx.Node) and lhs in s.jets:
        g = torch.stack([vk @ bk.mT for vk, bk in zip(v, _powers(B, s.order))])
        return {lhs: _sum_to(g, A.shape)}
    g = torch.stack([ak.mT @ vk for vk, ak in zip(v, _powers(A, s.order))])
    return {rhs: _sum_to(g, B.shape)}


def _convolution(s: _Step) -> dict:
    """Convolution with weights W: v_k passes back through the transposed convolution with W^{o k}."""
    x, w, _, stride, padding, dilation, transposed, output_padding, groups = s.args[:9]
    g = [aten.convolution_backward(vk, x, wk, None, stride, padding, dilation, transposed, output_padding, groups,
                                   [True, False, False])[0] for vk, wk in zip(s.v, _powers(w, s.order))]
    return {s.node.args[0]: torch.stack(g)}


_register(RESHAPES, _reshape)
_register(STRUCTURAL, _transpose)
_register({aten.avg_pool2d, aten.avg_pool3d}, _avg_pool)
_register({aten.mean}, _mean)
_register({aten.neg}, _neg)
_register({aten.add, aten.sub, aten.rsub}, _add)
_register({aten.mul, aten.div}, _scale)
_register({aten.mm, aten.bmm, aten.matmul, aten.addmm, aten.baddbmm}, _matmul)
_register({aten.convolution}, _convolution)


# ------------------------------------------------------------------------------- backward (activations)
def _gelu_series(u: Jet, approximate: str = "none") -> Jet:
    if approximate == "tanh":
        inner = series.scale(series.add(u, series.scale(F.power(u, 3), 0.044715)), math.sqrt(2 / math.pi))
        return series.scale(series.mul(u, series.add_constant(F.tanh(inner), 1.0)), 0.5)
    return series.scale(series.mul(u, series.add_constant(F.erf(series.scale(u, 1 / math.sqrt(2))), 1.0)), 0.5)


def _univariate_series(node, env, jets, ctx, order: int) -> torch.Tensor:
    """Taylor coefficients a_m = f^(m)(u0) / m!, m = 0..K, of the elementwise function of this node: (K + 1, *shape)."""
    p = _packet(node.target)
    jet_arg = next(a for a in node.args if isinstance(a, torch.fx.Node) and a in jets)
    u0 = env[jet_arg]
    c = u0.new_zeros((order + 1, *u0.shape))
    c[0] = u0
    c[1] = 1
    u = Jet(c, make_basis(1, order, "total"))
    args = [u if a is jet_arg else env[a] if isinstance(a, torch.fx.Node) else a for a in node.args]
    kwargs = {k: env[a] if isinstance(a, torch.fx.Node) else a for k, a in node.kwargs.items()}
    if p is aten.gelu:
        return _gelu_series(u, kwargs.get("approximate", args[1] if len(args) > 1 else "none")).c
    if p is aten.silu:
        return series.mul(u, F.sigmoid(u)).c
    if p is aten.mul or p is aten.square:
        return series.mul(u, u).c
    rule = rules.lookup(node.target)
    if rule is None:
        raise _Unsupported
    out = rule(ctx, node.target, *args, **kwargs)
    return (out[0] if isinstance(out, (tuple, list)) else out).c  # (value, buffer) ops: the value


def _faa_di_bruno(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """v_k(u) = sum_j v_j(f(u)) B_{k,j}(f', f'', ...), k = 1..K, from a (K + 1, *shape) = f^(m)(u0)/m! and v (K, ...).

    In Taylor coefficients: v_k(u)/k! = sum_j (v_j/j!) [t^k] h^j with h(t) = f(u0 + t) - f(u0). Multiplying by h is the
    lower-triangular Toeplitz matrix T[d, e] = [t^(d-e)] h on the coefficient vector, so sum_j c_j h^j is evaluated
    by Horner: r = c_K h; r = c_j h + T r for j = K-1..1 (one batched K x K product per step).
    """
    K = v.shape[0]
    shape = torch.broadcast_shapes(a.shape[1:], v.shape[1:])
    N = math.prod(shape)
    h = a[1:].expand(K, *shape).reshape(K, N).T                  # (N, K): h[:, d] = [t^(d+1)] h
    fact = torch.tensor([math.factorial(k) for k in range(1, K + 1)], dtype=v.dtype, device=v.device)
    c = (v.expand(K, *shape).reshape(K, N) / fact.unsqueeze(1)).T  # (N, K): c_j = v_j / j!
    lag = torch.arange(K).unsqueeze(1) - torch.arange(K).unsqueeze(0) - 1   # d - e - 1
    T = h[:, lag.clamp(min=0)] * (lag >= 0).to(h.dtype)              # (N, K, K)
    r = c[:, K - 1:K] * h
    for j in range(K - 2, -1, -1):
        r = c[:, j:j + 1] * h + torch.bmm(T, r.unsqueeze(-1)).squeeze(-1)
    return (r * fact).T.reshape(K, *shape)


# --------------------------------------------------------------------------------------- the graph, classified
def _classify(node, jets) -> str:
    """'linear', 'activation', 'getitem' or 'unsupported' for a node whose value depends on the input."""
    if node.target is operator.getitem:
        return "getitem"
    p = _packet(node.target)
    pos = _jet_positions(node, jets)
    if p in ELEMENTWISE:
        return "activation" if len(pos) == 1 or (p is aten.square) else "unsupported"
    if p is aten.mul and len(node.args) == 2 and node.args[0] is node.args[1]:
        return "activation"  # x * x: the elementwise square
    if p in ONE_ARGUMENT and (len(pos) != 1 or pos[0] not in ONE_ARGUMENT[p]):
        return "unsupported"  # e.g. a product of two network quantities: no unmixed rule
    return "linear" if p in BACKWARD else "unsupported"


def _elementwise_regions(graph, env: dict, jets: set, kinds: dict) -> dict:
    """Groups of pointwise nodes whose jets all come from one value s (of s's shape) that the paper rule cannot take
    op by op (x / (1 + |x|): a quotient of two network quantities) are one elementwise function g(s) of s: each node of
    the group read outside it becomes a "region" activation of s (its series g^(m)(s0) / m! from the exact rules on
    s0 + t), the others "internal". Returns {exit node: (s, the group's nodes in graph order)}; ``kinds`` updated."""
    source: dict = {}
    for nd in graph.nodes:
        if nd not in kinds or _packet(nd.target) not in POINTWISE:
            continue
        roots = {source.get(a, a) for a in nd.all_input_nodes if a in jets}
        if len(roots) != 1:
            continue
        s = next(iter(roots))
        if isinstance(env[nd], torch.Tensor) and isinstance(env[s], torch.Tensor) and env[nd].shape == env[s].shape:
            source[nd] = s
    groups: dict = {}
    for nd, s in source.items():
        groups.setdefault(s, []).append(nd)
    regions = {}
    for s, members in groups.items():
        if not any(kinds[m] == "unsupported" for m in members):
            continue
        inside = set(members)
        for m in members:
            if any(u not in inside for u in m.users):
                kinds[m] = "region"
                regions[m] = (s, members)
            else:
                kinds[m] = "internal"
    return regions


def _region_series(src, members: list, regions: dict, env: dict, ctx, order: int) -> dict:
    """{exit: g^(m)(s0) / m!} for every exit of the group over s: its nodes run by their exact rules on s0 + t."""
    s0 = env[src]
    c = s0.new_zeros((order + 1, *s0.shape))
    c[0] = s0
    c[1] = 1
    jenv = {src: Jet(c, make_basis(1, order, "total"))}
    for nd in members:
        args = pytree.tree_map_only(torch.fx.Node, lambda m: jenv.get(m, env[m]), nd.args)
        kwargs = pytree.tree_map_only(torch.fx.Node, lambda m: jenv.get(m, env[m]), nd.kwargs)
        jenv[nd] = rules.lookup(nd.target)(ctx, nd.target, *args, **kwargs)
    return {nd: jenv[nd].c for nd in members if regions.get(nd, (None,))[0] is src}


def _moves_entries(node, env: dict, jets: set) -> bool:
    """Each output entry is a number times one input entry (plus a constant), each input entry used at most once."""
    p = _packet(node.target)
    if p in MOVES:
        return True
    pos = _jet_positions(node, jets)
    if p not in (aten.mul, aten.div, aten.add, aten.sub, aten.rsub) or len(pos) != 1 or (p is aten.div and pos != [0]):
        return False
    return env[node].shape == env[node.args[pos[0]]].shape  # no broadcast copies of the input


def _first_layer(graph, kinds: dict, env: dict, jets: set, input_node, out_node) -> tuple[set, list]:
    """(nodes composed into the first layer, frontier): the input and what only moves its entries, plus the first
    linear op on each such value; the frontier holds the values z = A x where the mixed partials are formed."""
    moved, first = {input_node}, set()
    for nd in graph.nodes:
        sources = [a for a in nd.all_input_nodes if a in jets]
        if nd not in kinds or not sources or not all(a in moved for a in sources):
            continue
        if kinds[nd] == "getitem" or (kinds[nd] == "linear" and _moves_entries(nd, env, jets)):
            moved.add(nd)
        elif kinds[nd] == "linear" and len(_jet_positions(nd, jets)) == 1 and isinstance(env[nd], torch.Tensor):
            first.add(nd)
    layer = moved | first
    frontier = [nd for nd in graph.nodes if nd in layer and isinstance(env[nd], torch.Tensor) and (
        nd in first or nd is out_node or any(u in kinds and u not in layer for u in nd.users))]
    return layer, frontier


# ----------------------------------------------------------------------------------------------- the method
def _module_check(model) -> list[str]:
    bad = []
    if isinstance(model, nn.Module):
        for name, m in model.named_modules():
            if type(m).__module__.startswith("torch.nn") and not isinstance(m, SUPPORTED_MODULES) \
                    and not list(m.children()):
                bad.append(f"{name or '<model>'} ({type(m).__name__})")
    return bad


def _unsupported_error(ops: list[str], modules: list[str]) -> UnsupportedOperationError:
    lines = []
    if modules:
        lines.append("layers: " + ", ".join(modules))
    if ops:
        lines.append("operations: " + ", ".join(sorted(set(ops))))
    return UnsupportedOperationError(
        "method='hope' (the paper's rule) does not cover this model:\n  " + "\n  ".join(lines)
        + "\nIt covers Linear, Conv, AvgPool, MaxPool, Flatten/Unflatten/view, Dropout (eval), add, mul by a constant, "
        "bmm/matmul with a constant, transpose, and every elementwise function of one value (the activations, "
        "analytic or piecewise, and pointwise formulas of one value such as x / (1 + |x|)). Use method='exact' "
        "(the default), which is exact for any depth.",
        ops=sorted(set(ops)) + modules)


def _trace(model, x0: torch.Tensor, stamp=None) -> trace.TracedModel:
    """The shared tracer's graph with activations kept whole (cached, re-traced when the model's code changes)."""
    try:
        return trace.trace(model, x0, variant="paper") if stamp is None else trace.trace(model, x0, "paper", stamp)
    except GraphEscapeError:
        raise
    except Exception as e:
        raise ExpansionError(f"the model cannot be run on a point of shape {tuple(x0.shape)}: {e}") from e


@torch.no_grad()
def _forward(traced: trace.TracedModel, x0: torch.Tensor) -> tuple[dict, object, object]:
    """Every intermediate value at x0 (activations need their inputs, transposes their shapes), by the one runner on
    plain values; input and output nodes."""
    gm = traced.graph_module
    trace.require_one_output(traced)
    _, env = program.run(traced, x0, None, table=program.PLAIN, keep=True)
    placeholders = [nd for nd in gm.graph.nodes if nd.op == "placeholder"]
    outs = [o for o in pytree.tree_leaves(trace.output_node(traced).args[0]) if isinstance(o, torch.fx.Node)]
    return env, placeholders[traced.input_index], outs[0]


def _floating(val) -> bool:
    if isinstance(val, torch.Tensor):
        return val.is_floating_point()
    if isinstance(val, (list, tuple)):
        return any(_floating(e) for e in val)
    return False


def _derivative_nodes(graph, env: dict, input_node) -> set:
    """Nodes that carry derivatives: they depend on the input and hold floating values."""
    jets = {input_node}
    for nd in graph.nodes:
        if nd.op == "call_function" and not rules.is_value_only(nd.target) and _floating(env[nd]) \
                and any(a in jets for a in nd.all_input_nodes):
            jets.add(nd)
    return jets


def _selected_outputs(output, per_point) -> tuple[list[int], bool]:
    """Flat indices of the scalar outputs to back-propagate, and whether ``output`` chose one."""
    numel = math.prod(per_point)
    if output is not None and (isinstance(output, int) or (
            isinstance(output, tuple) and all(isinstance(o, int) for o in output))):
        return [output_index(per_point, output)], True
    if numel > 4096:
        raise ExpansionError(f"method='hope' back-propagates one scalar output at a time and this model has {numel} "
                             "outputs per point: choose one with output=")
    return list(range(numel)), False


def expand_hope(model, x0: torch.Tensor, order: int, *, terms: str = "total", output=None, variables=None,
                names=None, batched: bool = False, memory_budget: int | None = None,
                time_budget: float | None = None, stamp=None) -> TaylorPolynomial:
    """Taylor polynomial of ``model`` at ``x0`` by the paper's unmixed back-propagation rule (see the module text).

    Exact for networks with one hidden (nonlinear) layer; an approximation for deeper ones. Arguments as ``expand``:
    ``variables`` is a LongTensor of flat indices into one input row, ``x0`` is already validated; ``stamp``: the
    model's guard stamp, taken once by ``prepare_call``.
    """
    if variables is None:
        variables = torch.arange(x0[0].numel() if batched else x0.numel())
    var_index = variables.to(torch.long)
    n = var_index.numel()
    bad_modules = _module_check(model)
    traced = _trace(model, x0, stamp)
    gm = traced.graph_module
    from hope_engine.run.cost import (
        check_hope_budget,  # refuse over the memory/time budget before anything of size M exists
    )

    check_hope_budget(traced, x0, n, order, terms, memory_budget, time_budget)
    graph = gm.graph
    env, input_node, out_node = _forward(traced, x0)
    jets = _derivative_nodes(graph, env, input_node)
    kinds = {nd: _classify(nd, jets) for nd in graph.nodes if nd in jets and nd is not input_node}
    regions = _elementwise_regions(graph, env, jets, kinds)
    bad_ops = [str(nd.target) for nd, k in kinds.items() if k == "unsupported"]
    if bad_ops or bad_modules:
        raise _unsupported_error(bad_ops, bad_modules)

    y0 = env[out_node]
    basis = make_basis(n, order, terms)
    if out_node not in jets or order == 0:
        return _constant(basis, y0, x0, var_index, batched, names, output)

    layer, frontier = _first_layer(graph, kinds, env, jets, input_node, out_node)
    jac = _first_layer_jacobians(graph, env, layer, input_node, x0, var_index, batched)
    ctx = rules.Context(make_basis(1, order, "total"))
    series_cache: dict = {}
    flat_out, selected = _selected_outputs(output, y0[0].shape if batched else y0.shape)
    factorials = basis.factorials(x0.dtype).to(x0.device)
    results = []
    for o in flat_out:
        seed = torch.zeros_like(y0)
        (seed.reshape(seed.shape[0], -1) if batched else seed.reshape(-1))[..., o] = 1
        v = {out_node: torch.cat([seed.unsqueeze(0), seed.new_zeros((order - 1, *seed.shape))])}
        with torch.no_grad():
            _backward(graph, env, jets, kinds, layer, v, order, ctx, series_cache, regions)
        d = _input_layer(basis, frontier, v, jac, batched, x0.shape[0] if batched else 1)
        d[0] = (y0.reshape(y0.shape[0], -1) if batched else y0.reshape(-1))[..., o]
        results.append(d / factorials.reshape(-1, *([1] * (d.dim() - 1))))
    _warn_kinks(ctx)
    if selected:
        return TaylorPolynomial(basis, results[0], x0, var_index, batched, names=names, method="hope")
    coefficients = torch.stack(results, dim=-1).reshape(basis.size, *y0.shape)
    poly = TaylorPolynomial(basis, coefficients, x0, var_index, batched, names=names, method="hope")
    return poly.select(output) if output is not None else poly


def _constant(basis, y0, x0, var_index, batched, names, output) -> TaylorPolynomial:
    """The polynomial of an output that does not depend on the input (or of order 0): the value alone."""
    dtype = y0.dtype if y0.is_floating_point() else x0.dtype
    c = torch.zeros((basis.size, *y0.shape), dtype=dtype, device=y0.device)
    c[0] = y0
    poly = TaylorPolynomial(basis, c, x0, var_index, batched, names=names, method="hope")
    return poly.select(output) if output is not None else poly


def _warn_kinks(ctx: rules.Context) -> None:
    warn_one_sided(ctx.kinks, stacklevel=4)


@torch.no_grad()
def _first_layer_jacobians(graph, env, layer, input_node, x0, var_index, batched) -> dict:
    """A = dz/dx (n, *z_shape) of every value of the first layer: an order-1 jet pushed through it (exact)."""
    ctx = rules.Context(make_basis(var_index.numel(), 1, "total"))
    basis = ctx.basis
    c = x0.new_zeros((basis.size, *x0.shape))
    c[0] = x0
    flat = c.reshape(basis.size, x0.shape[0], -1) if batched else c.reshape(basis.size, -1)
    flat[1 + torch.arange(basis.n, device=x0.device), ..., var_index.to(x0.device)] = 1
    jenv = {input_node: Jet(c, basis)}
    for nd in graph.nodes:
        if nd not in layer or nd is input_node:
            continue
        args = pytree.tree_map_only(torch.fx.Node, lambda m: jenv.get(m, env[m]), nd.args)
        kwargs = pytree.tree_map_only(torch.fx.Node, lambda m: jenv.get(m, env[m]), nd.kwargs)
        if nd.target is operator.getitem:
            jenv[nd] = args[0][args[1]]
        else:
            jenv[nd] = rules.lookup(nd.target)(ctx, nd.target, *args, **kwargs)
    return {nd: j.c[1:] for nd, j in jenv.items() if isinstance(j, Jet)}


def _backward(graph, env, jets, kinds, layer, v: dict, order: int, ctx, series_cache: dict, regions: dict) -> None:
    """Propagate unmixed derivative vectors from the output down to the first layer (v updated in place)."""
    for nd in reversed(graph.nodes):
        if nd not in kinds or nd in layer or nd not in v:
            continue
        vo = v.pop(nd)
        kind = kinds[nd]
        if kind == "getitem":
            src, i = nd.args
            _accumulate(v.setdefault(src, {}), i, vo)
        elif kind == "activation":
            if isinstance(vo, dict):  # (value, buffer) ops (log_sigmoid_forward): only the value carries derivatives
                vo = vo[0]
            if nd not in series_cache:
                series_cache[nd] = _univariate_series(nd, env, jets, ctx, order)
            src = next(x for x in nd.args if isinstance(x, torch.fx.Node) and x in jets)
            _accumulate(v, src, _sum_to(_faa_di_bruno(series_cache[nd], vo), env[src].shape))
        elif kind == "region":
            src, members = regions[nd]
            if nd not in series_cache:
                series_cache.update(_region_series(src, members, regions, env, ctx, order))
            _accumulate(v, src, _faa_di_bruno(series_cache[nd], vo))
        else:
            step = _Step(nd, torch.fx.node.map_arg(nd.args, env.__getitem__),
                         torch.fx.node.map_arg(nd.kwargs, env.__getitem__), vo, jets)
            try:
                contributions = BACKWARD[_packet(nd.target)](step)
            except _Unsupported:
                raise _unsupported_error([str(nd.target)], []) from None
            for src, g in contributions.items():
                _accumulate(v, src, g)


@torch.no_grad()
def _input_layer(basis, frontier, v: dict, jac: dict, batched: bool, batch: int) -> torch.Tensor:
    """d^a y = sum_i v_|a|(z)_i prod_j A_ij^{a_j} over the frontier values z (A = dz/dx): (M,) or (M, B)."""
    parent, var = monomial_parents(basis)
    total = None
    for z in frontier:
        if z not in v:
            continue
        vz = v[z]
        A = jac[z]                                              # (n, *z_shape)
        if batched and vz.dim() > 1 and vz.shape[1] != batch:
            if batch != 1:
                raise ExpansionError("method='hope' with a batch of points needs a model that treats the rows of "
                                     "its input independently; expand the points one at a time")
            vz, A = vz.unsqueeze(1), A.unsqueeze(1)
        if batched:
            vz = vz.reshape(vz.shape[0], vz.shape[1], -1)       # (K, B, I)
            A = A.reshape(A.shape[0], A.shape[1], -1)           # (n, B, I)
        else:
            vz = vz.reshape(vz.shape[0], 1, -1)
            A = A.reshape(A.shape[0], 1, -1)
        d = vz.new_zeros((basis.size, vz.shape[1]))
        prev = torch.ones_like(A[:1])
        for k in range(1, basis.order + 1):
            blk = basis.block(k)
            lo = basis.offsets[k - 1]
            q = prev[parent[blk] - lo] * A[var[blk]]           # (width, B, I): the Kronecker/elementwise powers
            d[blk] = torch.einsum("mbi,bi->mb", q, vz[k - 1])
            prev = q
        total = d if total is None else total + d
    if total is None:
        total = torch.zeros((basis.size, 1), dtype=next(iter(jac.values())).dtype)
    return total if batched else total[:, 0]
