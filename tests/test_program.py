"""The compiled graph runner (program.py) against a plain node-by-node interpreter written here, at every start node,
and the fused 1-d linear layer against autograd, the batched path and its own fallback."""

from __future__ import annotations

import math
import operator
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.autograd import assert_matches_autograd
from torch import nn

from hope_engine import expand
from hope_engine.algebra.basis import make_basis
from hope_engine.algebra.jet import Jet, holds
from hope_engine.capture import trace
from hope_engine.ops import rules
from hope_engine.run import program

D = torch.float64


def _reference_run(traced, input_jet, ctx) -> dict:
    """Every node's value, one node at a time: the rule where an argument holds a jet, the op itself otherwise."""
    env = {}
    state = traced.state_values()
    placeholders = [n for n in traced.graph_module.graph.nodes if n.op == "placeholder"]
    for node in traced.graph_module.graph.nodes:
        if node.op == "placeholder":
            i = placeholders.index(node)
            env[node] = input_jet if i == traced.input_index else state[i]
        elif node.op == "get_attr":
            env[node] = getattr(traced.graph_module, node.target)
        elif node.op == "output":
            env[node] = torch.fx.node.map_arg(node.args[0], env.__getitem__)
        else:
            args = torch.fx.node.map_arg(node.args, env.__getitem__)
            kwargs = torch.fx.node.map_arg(node.kwargs, env.__getitem__)
            if node.target is operator.getitem:
                env[node] = args[0][args[1]]
            elif any(holds(env[a]) for a in node.all_input_nodes):
                env[node] = rules.lookup(node.target)(ctx, node.target, *args, **kwargs)
            else:
                env[node] = node.target(*args, **kwargs)
    return env


def _input_jet(x0: torch.Tensor, order: int) -> Jet:
    basis = make_basis(x0.numel(), order, "total")
    c = x0.new_zeros((basis.size, *x0.shape))
    c[0] = x0
    c[1:1 + x0.numel()].view(x0.numel(), -1).copy_(torch.eye(x0.numel(), dtype=x0.dtype))
    return Jet(c, basis)


def _coefficients(v) -> torch.Tensor:
    while isinstance(v, (list, tuple)) and len(v) == 1:  # make_fx graphs return their output in a list
        v = v[0]
    return v.c if isinstance(v, Jet) else v


class _Mixed(nn.Module):
    """A 1-d net with fused-layer candidates of every kind: plain Linear, no bias, a Linear of a constant (never a
    jet), a float32 bias added after a matmul, a split, a layer norm, a clamp at infinity."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 6)
        self.b = nn.Linear(6, 4, bias=False)
        self.c = nn.Linear(2, 4)
        self.w = nn.Parameter(torch.randn(4, 4))
        self.register_buffer("b32", torch.randn(4, dtype=torch.float32))
        self.register_buffer("const", torch.randn(2))
        self.norm = nn.LayerNorm(4)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        p, q = h.split(3)
        h = torch.cat([torch.sin(p), q.exp()])
        h = self.b(h) + self.c(self.const)
        h = (h.unsqueeze(0) @ self.w.t()).squeeze(0) + self.b32
        return torch.clamp(self.norm(h), max=math.inf).sum()


@torch.no_grad()
@pytest.mark.parametrize("dtype,bias_dtype", [(D, torch.float32), (torch.float32, D), (D, D)])
def test_every_start_node_gives_the_reference_values(dtype, bias_dtype):
    """The hand-written layer's bias has another dtype than the product (either way) or the same one."""
    torch.manual_seed(0)
    model = _Mixed().to(dtype).eval()
    model.b32 = model.b32.to(bias_dtype)
    x0 = torch.tensor([0.2, -0.4, 0.7], dtype=dtype)
    traced = trace.trace(model, x0)
    gm = traced.graph_module
    assert len(program._linear_chains(gm.graph)) == 4  # a, b, c (on a constant) and the hand-written one
    ctx = rules.Context(make_basis(3, 4, "total"))
    env = _reference_run(traced, _input_jet(x0, 4), ctx)
    want = _coefficients(env[next(n for n in gm.graph.nodes if n.op == "output")])
    nodes = list(gm.graph.nodes)
    for k, start in enumerate(nodes):
        if start.op in ("placeholder", "output"):
            continue
        values = {n: env[n] for n in nodes[:k] if n.op != "placeholder"}
        got = program.run(traced, _input_jet(x0, 4), rules.Context(ctx.basis), resume_at=start, values=values)
        got = _coefficients(got)
        assert got.dtype == want.dtype
        torch.testing.assert_close(got, want, rtol=0, atol=0, msg=f"start at {start}")  # the same ops, in order


def test_fused_layers_match_autograd_and_the_batched_point():
    torch.manual_seed(1)
    model = _Mixed().to(D).eval()
    model.b32 = model.b32.float()
    assert_matches_autograd(model, torch.tensor([0.1, 0.5, -0.3], dtype=D), 4)
    mlp = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4, bias=False), nn.Sigmoid(), nn.Linear(4, 2))
    x0 = torch.tensor([0.1, 0.5, -0.3], dtype=D)
    one = expand(mlp.to(D), x0, 5)
    batched = expand(mlp, x0.unsqueeze(0), 5)  # a (1, 3) point runs addmm, no fused layer
    torch.testing.assert_close(one.coefficients, batched.coefficients[:, 0], rtol=1e-13, atol=1e-15)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), widths=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       bias=st.lists(st.booleans(), min_size=4, max_size=4), act=st.sampled_from(["tanh", "silu", "sigmoid"]),
       order=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_random_mlps_on_one_point_match_autograd(n, widths, bias, act, order, seed):
    torch.manual_seed(seed)
    sizes = [n, *widths, 1]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1], bias=bias[i]))
        if i < len(sizes) - 2:
            layers.append({"tanh": nn.Tanh(), "silu": nn.SiLU(), "sigmoid": nn.Sigmoid()}[act])
    model = nn.Sequential(*layers).to(D).eval()
    x0 = torch.rand(n, dtype=D) - 0.5
    assert_matches_autograd(model, x0, order)
    traced = trace.trace(model, x0)
    assert len(program._linear_chains(traced.graph_module.graph)) == len(sizes) - 1
    assert all(n.target is not torch.ops.aten.clone.default for n in traced.graph_module.graph.nodes)  # no input copy


def test_generated_names_cover_keywords_and_nonfinite_constants():
    def f(a, **kw):
        return a * kw["from"] + (kw["lambda"] == math.inf)

    graph = torch.fx.Graph()
    s = graph.placeholder("s")
    graph.placeholder("x")
    out = graph.call_function(f, (s,), {"from": 2.0, "lambda": math.inf})
    graph.output(out)
    fn = program.compile_graph(types.SimpleNamespace(graph=graph), input_index=1)  # fx's own codegen refuses it
    assert fn(None, [torch.tensor(3.0)], None, None).item() == 7.0


def test_a_rule_error_points_into_readable_generated_source():
    fn = program.compile_graph(trace.trace(nn.Linear(2, 1).to(D), torch.zeros(1, 2, dtype=D)).graph_module, 2)
    with pytest.raises(Exception) as info:
        fn(None, [None, None], None, None)  # no weight: the op itself fails inside the generated function
    frames = [tb for tb in info.traceback if "<hope graph" in str(tb.path)]
    assert frames and "_run" in str(frames[0].name)


def test_generated_source_is_released_with_its_function():
    """Per-point graphs are compiled on every call: their source must not pile up in linecache."""
    import gc
    import linecache

    gm = trace.trace(nn.Linear(2, 1).to(D), torch.zeros(1, 2, dtype=D)).graph_module
    fns = [program.compile_graph(gm, 2) for _ in range(20)]
    names = {f.__code__.co_filename for f in fns}
    assert len(names) == 20 and all(name in linecache.cache for name in names)
    del fns
    gc.collect()
    assert not any(name in linecache.cache for name in names)
