"""The paper's rule (HOPE, Xiao et al., TPAMI 2024) as ``expand(..., method="hope")``: fast, exact for one hidden layer.

For a scalar output y the rule back-propagates, from the output to the first hidden layer, the vectors of *unmixed*
derivatives v_k(z) = d^k y / d z^k (k = 1..K, elementwise over the units of z):

- output:                    v_1 = 1, v_k = 0 for k >= 2;
- linear map z = W x (+ b):  v_k(x) = (W^T)^{o k} v_k(z), with (W^T)^{o k} the elementwise k-th power. Views, reshapes,
  transposes, slices and max-pool selections have 0/1 entries, so they pass v_k through as their transpose does;
  Conv2d is W with its weights raised to the k-th power, AvgPool2d has entries 1/window, mul by c has c^k;
- elementwise activation u -> f(u) (Faa di Bruno with partial Bell polynomials of the derivatives of f at u0):
  v_k(u) = sum_{j <= k} v_j(f(u)) B_{k,j}(f'(u0), ..., f^(k-j+1)(u0)). We get the B_{k,j} from the univariate Taylor
  series h(t) = f(u0 + t) - f(u0) (the engine's own rule, one variable): B_{k,j} = k!/j! [t^k] h(t)^j;
- where a value feeds several layers the contributions are summed.

At the input, z = A x + c is the first hidden pre-activation (A: the Jacobian of the whole linear part of the network
before its first nonlinearity, e.g. Conv2d followed by AvgPool2d), and the rule forms every kept partial
d^a y / dx^a = sum_i v_|a|(z)_i prod_j A_ij^{a_j} (the Kronecker powers of A for terms="total", only its elementwise
powers for terms="pure").

This keeps d^k y / dz_i dz_j ... = 0 for i != j at every hidden layer. That is true for one hidden layer (where the rule
is exact) and false for two or more, where the result is an approximation whose error grows with the order (measured
in ``benchmarks/run.py``; see docs/benchmarks.md).
"""

from __future__ import annotations

import math
import operator
import warnings
import weakref

import torch
from torch import nn
from torch.func import functional_call
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils import _pytree as pytree

from . import functions as F
from . import rules, series
from .basis import make_basis
from .errors import ExpansionError, KinkWarning, UnsupportedOperationError
from .polynomial import TaylorPolynomial, monomial_parents
from .series import Jet

aten = torch.ops.aten

__all__ = ["expand_hope", "SUPPORTED_MODULES"]

# Leaf modules of torch.nn the rule covers; any other torch.nn leaf module is named in the error. (User-defined modules
# are checked op by op.)
SUPPORTED_MODULES = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool2d,
    nn.MaxPool3d, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.Identity, nn.Sigmoid, nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardtanh, nn.ReLU6,
    nn.Sequential, nn.ModuleList,
)


# ------------------------------------------------------------------------------------------------------ tracing
_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _make(model, x: torch.Tensor, mode: str):
    # No decomposition table: composite ops (linear, flatten, dropout...) arrive decomposed into the aten ops below, and
    # activations such as gelu stay single nodes (the paper treats an activation as one elementwise function).
    if isinstance(model, nn.Module):
        state = {**dict(model.named_parameters()), **dict(model.named_buffers())}

        def call(state, x):
            return functional_call(model, state, (x,))

        gm = make_fx(call, tracing_mode=mode, _allow_non_fake_inputs=True)(state, x)
        return gm, len(state)
    gm = make_fx(model, tracing_mode=mode, _allow_non_fake_inputs=True)(x)
    return gm, 0


def _trace(model, x: torch.Tensor):
    key = (tuple(x.shape), x.dtype, x.device)
    try:
        per_model = _cache.setdefault(model, {})
    except TypeError:
        per_model = {}
    if key in per_model:
        return per_model[key]
    from .trace import _eval_mode

    with _eval_mode(model), torch.no_grad():
        try:
            gm, index = _make(model, x, "fake")
            reusable = True
        except Exception as fake_error:  # noqa: BLE001 - value-dependent Python control flow: trace at this point
            try:
                gm, index = _make(model, x, "real")
                reusable = False
            except Exception:
                raise ExpansionError(
                    f"the model cannot be run on a point of shape {tuple(x.shape)}: {fake_error}") from fake_error
    if reusable:
        per_model[key] = (gm, index)
    return gm, index


def _state(model) -> list:
    if isinstance(model, nn.Module):
        return list({**dict(model.named_parameters()), **dict(model.named_buffers())}.values())
    return []


# --------------------------------------------------------------------------------------------- op families
def _norm_dim(d: int, nd: int) -> int:
    return d % nd if nd else 0


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


def _powers_like(ks: torch.Tensor, c, nd: int):
    """c^k for k = 1..K as a (K, 1.., *c.shape) tensor (or a list of floats for a Python scalar c)."""
    if isinstance(c, torch.Tensor):
        return c.unsqueeze(0) ** ks.reshape(-1, *([1] * c.dim())).to(c.dtype)
    return [float(c) ** int(k) for k in ks.tolist()]


def _scale_by_powers(v: torch.Tensor, c) -> torch.Tensor:
    """v_k * c^k (c a constant scalar or tensor broadcasting against one v_k)."""
    K = v.shape[0]
    ks = torch.arange(1, K + 1, device=v.device)
    if isinstance(c, torch.Tensor):
        c = c.to(v.dtype)
        p = c.unsqueeze(0) ** ks.reshape(-1, *([1] * c.dim())).to(v.dtype)
        nd = max(v.dim() - 1, c.dim())
        return series.lift(v, nd) * series.lift(p, nd)
    f = torch.tensor([float(c) ** k for k in range(1, K + 1)], dtype=v.dtype, device=v.device)
    return v * f.reshape(-1, *([1] * (v.dim() - 1)))


def _vjp_structural(op, args, kwargs, pos, v, out_index=None):
    """Transpose of an op whose matrix has 0/1 entries (so its elementwise powers are itself), for each v_k."""
    leaves, spec = pytree.tree_flatten((args, kwargs))
    x = leaves[pos]

    def f(xx):
        ls = list(leaves)
        ls[pos] = xx
        a, kw = pytree.tree_unflatten(ls, spec)
        out = op(*a, **kw)
        return out[out_index] if out_index is not None else out

    _, pullback = torch.func.vjp(f, x)
    return torch.vmap(lambda g: pullback(g)[0])(v)


class _Unsupported(Exception):
    pass


RESHAPES = {aten.view, aten._unsafe_view, aten.reshape, aten.clone, aten.contiguous, aten.alias, aten.detach,
            aten._to_copy, aten.lift_fresh_copy, aten.flatten, aten.unflatten, aten.squeeze, aten.unsqueeze,
            aten.view_copy, aten.alias_copy, aten.squeeze_copy, aten.unsqueeze_copy, aten._reshape_alias,
            aten.dropout, aten.feature_dropout, aten.alpha_dropout}
STRUCTURAL = {aten.permute, aten.transpose, aten.t, aten.expand, aten.slice, aten.select, aten.cat, aten.stack,
              aten.split, aten.split_with_sizes, aten.chunk, aten.unbind, aten.narrow, aten.movedim, aten.flip,
              aten.roll, aten.repeat, aten.index_select, aten.gather, aten.index, aten.constant_pad_nd, aten.sum,
              aten.permute_copy, aten.transpose_copy, aten.t_copy, aten.expand_copy, aten.slice_copy,
              aten.select_copy, aten.diagonal, aten.pixel_shuffle, aten.upsample_nearest2d, aten.tril, aten.triu}
MAXPOOL = {aten.max_pool1d_with_indices: 1, aten.max_pool2d_with_indices: 2, aten.max_pool3d_with_indices: 3}
AVGPOOL = {aten.avg_pool2d, aten.avg_pool3d}
MATMUL = {aten.mm, aten.bmm, aten.matmul, aten.addmm, aten.baddbmm}
SCALED = {aten.mul, aten.div, aten.neg, aten.mean, aten.add, aten.sub, aten.rsub}
LINEAR = RESHAPES | STRUCTURAL | set(MAXPOOL) | AVGPOOL | MATMUL | SCALED | {aten.convolution}

ELEMENTWISE = {aten.sin, aten.cos, aten.tanh, aten.sigmoid, aten.exp, aten.expm1, aten.log, aten.log1p, aten.erf,
               aten.sqrt, aten.rsqrt, aten.reciprocal, aten.relu, aten.leaky_relu, aten.elu, aten.gelu, aten.silu,
               aten.pow, aten.hardtanh, aten.abs, aten.clamp, aten.clamp_min, aten.clamp_max, aten.square}


def _packet(target):
    return getattr(target, "overloadpacket", target)


def _jet_positions(node, jets) -> list[int]:
    leaves, _ = pytree.tree_flatten((node.args, node.kwargs))
    return [i for i, a in enumerate(leaves) if isinstance(a, torch.fx.Node) and a in jets]


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
    if p in (aten.mul, aten.div, aten.mm, aten.bmm, aten.matmul, aten.convolution) and len(pos) != 1:
        return "unsupported"  # a product of two network quantities has no unmixed rule
    if p is aten.div and pos != [0]:
        return "unsupported"
    if p in (aten.addmm, aten.baddbmm) and (0 in pos or len(pos) != 1):
        return "unsupported"
    if p is aten.convolution and pos != [0]:
        return "unsupported"
    if p in LINEAR:
        return "linear"
    return "unsupported"


# ---------------------------------------------------------------------------------- backward (linear family)
def _backward_linear(node, env, jets, v):
    """Contributions {input node: v_k(input)} of one linear node, given v (K, *out) ({index: v} for tuple outputs)."""
    op = node.target
    p = _packet(op)
    args = pytree.tree_map_only(torch.fx.Node, lambda n: env[n], node.args)
    kwargs = pytree.tree_map_only(torch.fx.Node, lambda n: env[n], node.kwargs)
    K = (next(iter(v.values())) if isinstance(v, dict) else v).shape[0]
    ks = torch.arange(1, K + 1)

    def first_jet_arg():
        for i, a in enumerate(node.args):
            if isinstance(a, torch.fx.Node) and a in jets:
                return i, a
        raise _Unsupported

    if p in RESHAPES:
        i, a = first_jet_arg()
        return {a: v.reshape(K, *env[a].shape)}
    if p in (aten.t, aten.t_copy):
        i, a = first_jet_arg()
        return {a: v.transpose(-1, -2) if v.dim() == 3 else v}
    if p in (aten.transpose, aten.transpose_copy):
        i, a = first_jet_arg()
        nd = env[a].dim()
        d0, d1 = _norm_dim(node.args[1], nd), _norm_dim(node.args[2], nd)
        return {a: v.transpose(d0 + 1, d1 + 1)}
    if p in (aten.permute, aten.permute_copy):
        i, a = first_jet_arg()
        nd = env[a].dim()
        perm = [_norm_dim(d, nd) for d in node.args[1]]
        inv = [0] * nd
        for j, d in enumerate(perm):
            inv[d] = j
        return {a: v.permute(0, *[d + 1 for d in inv])}
    if p in MAXPOOL:
        nd = MAXPOOL[p]
        a = node.args[0]
        x = env[a]
        vo = v.get(0) if isinstance(v, dict) else v
        if vo is None:
            return {}
        idx = env[node][1]
        lead = x.shape[:x.dim() - nd]
        out = vo.new_zeros((K, *lead, math.prod(x.shape[x.dim() - nd:])))
        flat_idx = idx.reshape(*lead, -1).unsqueeze(0).expand(K, *lead, -1)
        out.scatter_add_(-1, flat_idx, vo.reshape(K, *lead, -1))
        return {a: out.reshape(K, *x.shape)}
    if p in STRUCTURAL or (isinstance(v, dict) and p in (aten.split, aten.unbind, aten.chunk,
                                                        aten.split_with_sizes)):
        leaves, _ = pytree.tree_flatten((node.args, node.kwargs))
        contributions = {}
        for pos in _jet_positions(node, jets):
            if isinstance(v, dict):
                total = None
                for oi, vv in v.items():
                    g = _vjp_structural(op, args, kwargs, pos, vv, out_index=oi)
                    total = g if total is None else total + g
                contrib = total
            else:
                contrib = _vjp_structural(op, args, kwargs, pos, v)
            n = leaves[pos]
            contributions[n] = contributions[n] + contrib if n in contributions else contrib
        return contributions
    if p in AVGPOOL:
        a = node.args[0]
        x = env[a]
        ones = torch.ones_like(x)
        full = list(args[1:]) + [[], [], [0], False, True, None][len(args) - 1:]
        kernel, stride, padding, ceil_mode, count_include_pad = full[:5]
        avg = op(ones, *args[1:])
        summed = op(ones, kernel, stride, padding, ceil_mode, count_include_pad, 1)
        entry = avg / summed  # 1/divisor of each output (the entries of the pooling matrix)
        scaled = v * entry.unsqueeze(0) ** (ks - 1).reshape(-1, *([1] * entry.dim())).to(v.dtype)
        return {a: _vjp_structural(op, args, kwargs, 0, scaled)}
    if p is aten.mean:
        i, a = first_jet_arg()
        x = env[a]
        count = x.numel() // max(env[node].numel(), 1)
        scaled = v * torch.tensor([float(count) ** -(k - 1) for k in range(1, K + 1)], dtype=v.dtype,
                                  device=v.device).reshape(-1, *([1] * (v.dim() - 1)))
        return {a: _vjp_structural(op, args, kwargs, 0, scaled)}
    if p is aten.neg:
        i, a = first_jet_arg()
        return {a: _scale_by_powers(v, -1.0)}
    if p in (aten.add, aten.sub, aten.rsub):
        alpha = node.kwargs.get("alpha", 1)
        coeff = [1.0, float(alpha)]
        if p is aten.sub:
            coeff = [1.0, -float(alpha)]
        elif p is aten.rsub:
            coeff = [-float(alpha), 1.0]
        out = {}
        for i, a in enumerate(node.args[:2]):
            if isinstance(a, torch.fx.Node) and a in jets:
                g = _sum_to(v if coeff[i] == 1.0 else _scale_by_powers(v, coeff[i]), env[a].shape)
                out[a] = out[a] + g if a in out else g
        return out
    if p in (aten.mul, aten.div):
        i, a = first_jet_arg()
        c = args[1 - i]
        if p is aten.div:
            c = torch.reciprocal(c) if isinstance(c, torch.Tensor) else 1.0 / c
        return {a: _sum_to(_scale_by_powers(v, c), env[a].shape)}
    if p in MATMUL:
        if p in (aten.addmm, aten.baddbmm):
            beta = node.kwargs.get("beta", 1)
            alpha = node.kwargs.get("alpha", 1)
            del beta
            lhs, rhs = node.args[1], node.args[2]
            vv = _scale_by_powers(v, alpha) if alpha != 1 else v
        else:
            lhs, rhs = node.args[0], node.args[1]
            vv = v
        left_is_jet = isinstance(lhs, torch.fx.Node) and lhs in jets
        A, B = env[lhs], env[rhs]
        if A.dim() == 1 or B.dim() == 1:
            raise _Unsupported
        out = []
        if left_is_jet:  # out = A B: v_k(A) = v_k(out) (B^{o k})^T
            Bk = None
            for k in range(K):
                Bk = B if Bk is None else Bk * B
                out.append(torch.matmul(vv[k], Bk.transpose(-1, -2)))
            return {lhs: torch.stack(out)}
        Ak = None
        for k in range(K):
            Ak = A if Ak is None else Ak * A
            out.append(torch.matmul(Ak.transpose(-1, -2), vv[k]))
        return {rhs: torch.stack(out)}
    if p is aten.convolution:
        a = node.args[0]
        x, w = env[a], args[1]
        stride, padding, dilation, transposed, output_padding, groups = args[3:9]
        out, wk = [], None
        for k in range(K):
            wk = w if wk is None else wk * w
            g = aten.convolution_backward(v[k], x, wk, None, stride, padding, dilation, transposed, output_padding,
                                          groups, [True, False, False])[0]
            out.append(g)
        return {a: torch.stack(out)}
    raise _Unsupported


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
    basis = make_basis(1, order, "total")
    c = u0.new_zeros((order + 1, *u0.shape))
    c[0] = u0
    if order >= 1:
        c[1] = 1
    u = Jet(c, basis)
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
    return rule(ctx, node.target, *args, **kwargs).c


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
        "bmm/matmul with a constant, transpose, pow, reciprocal and the activations sin, sigmoid, tanh, relu, "
        "leaky_relu, elu, gelu. Use method='exact' (the default), which is exact for any depth.",
        ops=sorted(set(ops)) + modules)


def expand_hope(model, x0: torch.Tensor, order: int, *, terms: str = "total", output=None, variables=None,
                names=None, batched: bool = False) -> TaylorPolynomial:
    """Taylor polynomial of ``model`` at ``x0`` by the paper's unmixed back-propagation rule (see the module text).

    Exact for networks with one hidden (nonlinear) layer; an approximation for deeper ones. Arguments as ``expand``:
    ``variables`` is a LongTensor of flat indices into one input row, ``x0`` is already validated.
    """
    if variables is None:
        variables = torch.arange(x0[0].numel() if batched else x0.numel())
    var_index = variables.to(torch.long)
    n = var_index.numel()
    bad_modules = _module_check(model)
    gm, input_index = _trace(model, x0)
    graph = gm.graph
    placeholders = [nd for nd in graph.nodes if nd.op == "placeholder"]
    input_node = placeholders[input_index]

    # forward with values (every intermediate kept: activations need their inputs, transposes their shapes)
    from .trace import _eval_mode

    env: dict = {}
    state = _state(model)
    for i, nd in enumerate(placeholders):
        env[nd] = x0 if i == input_index else state[i]
    output_node = None
    with torch.no_grad(), _eval_mode(model):
        for nd in graph.nodes:
            if nd.op == "placeholder":
                continue
            if nd.op == "get_attr":
                env[nd] = getattr(gm, nd.target)
            elif nd.op == "output":
                output_node = nd
            else:
                a = pytree.tree_map_only(torch.fx.Node, lambda m: env[m], nd.args)
                kw = pytree.tree_map_only(torch.fx.Node, lambda m: env[m], nd.kwargs)
                env[nd] = nd.target(*a, **kw)

    # nodes carrying derivatives: depend on the input and hold floating values
    def floating(val) -> bool:
        if isinstance(val, torch.Tensor):
            return val.is_floating_point()
        if isinstance(val, (list, tuple)):
            return any(floating(e) for e in val)
        return False

    jets = {input_node}
    for nd in graph.nodes:
        if nd.op == "call_function" and not rules.is_value_only(nd.target) and floating(env[nd]) \
                and any(a in jets for a in nd.all_input_nodes):
            jets.add(nd)
    kinds = {nd: _classify(nd, jets) for nd in graph.nodes if nd in jets and nd is not input_node}
    bad_ops = [str(nd.target) for nd, k in kinds.items() if k == "unsupported"]
    if bad_ops or bad_modules:
        raise _unsupported_error(bad_ops, bad_modules)

    outs = [o for o in pytree.tree_leaves(output_node.args[0]) if isinstance(o, torch.fx.Node)]
    if len(outs) != 1:
        raise ExpansionError(f"the model returns {len(outs)} tensors; expand a function that returns one")
    out_node = outs[0]
    y0 = env[out_node]
    basis = make_basis(n, order, terms)

    if out_node not in jets or order == 0:
        c = y0.new_zeros((basis.size, *y0.shape)) if y0.is_floating_point() else torch.zeros(
            (basis.size, *y0.shape), dtype=x0.dtype)
        c[0] = y0
        poly = TaylorPolynomial(basis, c, x0, var_index, batched, names=names, method="hope")
        return poly.select(output) if output is not None else poly

    # the linear region: nodes reached from the input through linear ops only; its frontier feeds the first nonlinearity
    region = {input_node}
    for nd in graph.nodes:
        if nd in kinds and kinds[nd] in ("linear", "getitem") and all(
                a in region for a in nd.all_input_nodes if a in jets):
            region.add(nd)
    frontier = [nd for nd in graph.nodes if nd in region and (
        nd is out_node or any(u in kinds and u not in region for u in nd.users))]
    frontier = [nd for nd in frontier if floating(env[nd]) and isinstance(env[nd], torch.Tensor)]

    # Jacobians A = dz/dx of the frontier values (exact: an order-1 jet pushed through the linear region)
    ctx = rules.Context(make_basis(n, 1, "total"))
    jac = _region_jacobians(graph, env, region, input_node, x0, var_index, batched, ctx)

    ctx_act = rules.Context(make_basis(1, order, "total"))
    series_cache: dict = {}
    per_point = y0[0].shape if batched else y0.shape
    numel = math.prod(per_point)
    if output is not None and (isinstance(output, int) or (isinstance(output, tuple) and all(
            isinstance(o, int) for o in output))):
        flat_out = [output % numel] if isinstance(output, int) else [_ravel(output, per_point)]
        selected = True
    else:
        flat_out = list(range(numel))
        selected = False
    if numel > 4096 and not selected:
        raise ExpansionError(f"method='hope' back-propagates one scalar output at a time and this model has {numel} "
                             "outputs per point: choose one with output=")

    factorials = basis.factorials(x0.dtype).to(x0.device)
    results = []
    for o in flat_out:
        seed = torch.zeros_like(y0)
        (seed.reshape(seed.shape[0], -1) if batched else seed.reshape(-1))[..., o] = 1
        v = {out_node: torch.cat([seed.unsqueeze(0), seed.new_zeros((order - 1, *seed.shape))])}
        with torch.no_grad():
            _backward(graph, env, jets, kinds, region, v, order, ctx_act, series_cache)
        d = _input_layer(basis, frontier, v, jac, batched, x0.shape[0] if batched else 1)
        value = (y0.reshape(y0.shape[0], -1) if batched else y0.reshape(-1))[..., o]
        d[0] = value
        results.append(d / factorials.reshape(-1, *([1] * (d.dim() - 1))))
    if ctx_act.kinks:
        where = ", ".join(f"{k} ({v} value{'s' if v > 1 else ''})" for k, v in ctx_act.kinks.items())
        warnings.warn(f"the reference point lies exactly on a kink of {where}: the expansion there is one-sided.",
                      KinkWarning, stacklevel=3)
    if selected:
        coefficients = results[0]
        poly = TaylorPolynomial(basis, coefficients, x0, var_index, batched, names=names, method="hope")
        return poly
    coefficients = torch.stack(results, dim=-1).reshape(basis.size, *y0.shape)
    poly = TaylorPolynomial(basis, coefficients, x0, var_index, batched, names=names, method="hope")
    return poly.select(output) if output is not None else poly


def _ravel(index: tuple, shape) -> int:
    flat = 0
    for i, s in zip(index, shape):
        flat = flat * s + (i % s)
    return flat


def _region_jacobians(graph, env, region, input_node, x0, var_index, batched, ctx) -> dict:
    basis = ctx.basis
    n = basis.n
    c = x0.new_zeros((basis.size, *x0.shape))
    c[0] = x0
    flat = c.reshape(basis.size, x0.shape[0], -1) if batched else c.reshape(basis.size, -1)
    flat[1 + torch.arange(n, device=x0.device), ..., var_index.to(x0.device)] = 1
    jenv = {input_node: Jet(c, basis)}
    with torch.no_grad():
        for nd in graph.nodes:
            if nd not in region or nd is input_node:
                continue
            args = pytree.tree_map_only(torch.fx.Node, lambda m: jenv.get(m, env[m]), nd.args)
            kwargs = pytree.tree_map_only(torch.fx.Node, lambda m: jenv.get(m, env[m]), nd.kwargs)
            if nd.target is operator.getitem:
                jenv[nd] = args[0][args[1]]
            else:
                jenv[nd] = rules.lookup(nd.target)(ctx, nd.target, *args, **kwargs)
    return {nd: j.c[1:] for nd, j in jenv.items() if isinstance(j, Jet)}


def _backward(graph, env, jets, kinds, region, v: dict, order: int, ctx, series_cache: dict) -> None:
    """Propagate unmixed derivative vectors from the output down to the frontier of the linear region (in place)."""

    def accumulate(node, contrib):
        if node in v:
            v[node] = v[node] + contrib
        else:
            v[node] = contrib

    for nd in reversed(list(graph.nodes)):
        if nd not in kinds or nd in region or nd not in v:
            continue
        vo = v.pop(nd)
        kind = kinds[nd]
        if kind == "getitem":
            src, i = nd.args
            slot = v.setdefault(src, {})
            slot[i] = slot[i] + vo if i in slot else vo
            continue
        if kind == "activation":
            if nd not in series_cache:
                series_cache[nd] = _univariate_series(nd, env, jets, ctx, order)
            a = series_cache[nd]
            src = next(x for x in nd.args if isinstance(x, torch.fx.Node) and x in jets)
            accumulate(src, _sum_to(_faa_di_bruno(a, vo), env[src].shape))
            continue
        try:
            contributions = _backward_linear(nd, env, jets, vo)
        except _Unsupported:
            raise _unsupported_error([str(nd.target)], []) from None
        for src, g in contributions.items():
            accumulate(src, g)


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
