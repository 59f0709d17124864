"""The recording tracer (record.py) against make_fx: same expansions, same reuse decisions, no dynamo import, and
never a graph reused past a value the run read."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from support.autograd import assert_matches_autograd
from torch import nn

from hope_engine import expand
from hope_engine.capture import trace
from hope_engine.errors import GraphEscapeError

D = torch.float64


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)
        self.norm = nn.LayerNorm(3)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h[:, 0] = h[:, 1] * 2  # an in-place write into a fresh tensor
        h.mul_(0.5)
        return self.norm(self.b(h) + x).softmax(-1)


class _Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 2, padding=1, padding_mode="reflect")
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x):
        h = F.avg_pool2d(torch.tanh(self.bn(self.c1(x))), 2)
        h = F.interpolate(self.c2(h), scale_factor=2, mode="bilinear")
        return F.gelu(h).flatten(1).sum(1, keepdim=True)


class _Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.1, batch_first=True)

    def forward(self, x):
        return self.enc(x.reshape(1, 3, 4)).mean((1, 2))


class _Ops(nn.Module):
    def forward(self, x):
        a, b = x.split(2, -1)
        s = torch.cat([a.sort(-1).values, b.cumsum(-1)], -1)
        m = torch.einsum("bi,bj->bij", s, x).amax(-1)
        return torch.where(m > 0, m, m.exp() - 1).clamp(-1, 1).topk(2).values


def _recurrent():
    torch.manual_seed(0)
    lstm = nn.LSTM(2, 3, batch_first=True)

    def f(x):
        return lstm(x.reshape(1, 3, 2))[0][:, -1]
    return f


ZOO = {
    "mlp-1d": (lambda: nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 1)), (2,)),
    "mlp-inplace-relu": (lambda: nn.Sequential(nn.Linear(2, 5), nn.ReLU(inplace=True), nn.Linear(5, 2)), (1, 2)),
    "silu-groupnorm": (lambda: nn.Sequential(nn.Linear(2, 4), nn.GroupNorm(2, 4), nn.SiLU(), nn.Linear(4, 1)), (3, 2)),
    "residual": (_Residual, (2, 3)),
    "conv": (_Conv, (1, 1, 4, 4)),
    "transformer": (_Tokens, (12,)),
    "ops": (_Ops, (1, 4)),
    "lstm": (_recurrent, (6,)),
}


def _both(make, shape, order=3):
    torch.manual_seed(0)
    model = make()
    if isinstance(model, nn.Module):
        model = model.to(D)
    else:
        for m in model.__closure__[0].cell_contents.modules():
            m.to(D)
    x0 = torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(2)) * 0.5
    out = {}
    for tracer in ("record", "make_fx"):
        old = trace.TRACER
        trace.TRACER = tracer
        trace.GRAPHS.clear()
        try:
            graph = trace.trace(model, x0)
            out[tracer] = (graph, expand(model, x0, order).coefficients)
        finally:
            trace.TRACER = old
            trace.GRAPHS.clear()
    return out


@pytest.mark.parametrize("name", list(ZOO))
def test_recorded_graph_expands_as_make_fx_does(name):
    got = _both(*ZOO[name])
    (rec, c_rec), (fx, c_fx) = got["record"], got["make_fx"]
    assert rec.graph_module is not fx.graph_module
    assert rec.reusable and fx.reusable
    torch.testing.assert_close(c_rec, c_fx, rtol=1e-13, atol=1e-13)


def test_recorder_is_the_tracer_that_ran():
    """Not a make_fx graph in disguise: the recorder names its placeholders p_<parameter> and x."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh()).to(D)
    trace.GRAPHS.clear()
    graph = trace.trace(net, torch.zeros(1, 2, dtype=D))
    names = [n.name for n in graph.graph_module.graph.nodes if n.op == "placeholder"]
    assert names == ["p_0_weight", "p_0_bias", "x"]


class _Reads(nn.Module):
    """A model whose graph depends on a value it reads; ``how`` says how it reads it."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.lin = nn.Linear(2, 2)
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        h = self.lin(x)
        how = self.how
        if how == "branch":
            return h.sin() if h.sum() > 0 else h.cos()
        if how == "int-index":
            return h[:, int(h.argmax())].exp()
        if how == "tolist":
            return h[:, h.argmax().tolist()].exp()
        if how == "numpy":
            return h[:, int(h.argmax().numpy()) % 2].exp()
        if how == "param-numpy":
            return h * float(self.scale.detach().numpy())
        if how == "mask":
            return h[h > 0].sum().reshape(1, 1) + h.sum()
        if how == "param-item":
            return h * (2.0 if self.scale.item() > 0 else -3.0)
        if how == "param-float":
            return h * (2.0 if float(self.scale) > 0 else -3.0)
        if how == "param-bool":
            return h * (2.0 if self.scale > 0 else -3.0)
        if how == "int-index-tensor":  # a fixed integer index: the shape does not depend on values
            return h[:, torch.tensor([1, 0])].exp()
        if how == "param-tolist":
            return h ** (2 if self.scale.tolist() > 0 else 3)
        raise ValueError(how)


READS = ["branch", "int-index", "mask", "param-item", "param-float", "param-bool"]
UNREADABLE = ["tolist", "numpy", "param-tolist", "param-numpy"]


def test_indexing_with_a_fixed_integer_tensor_keeps_the_graph_reusable():
    """aten.index is tagged data-dependent (a boolean mask makes its shape depend on values); an integer index
    tensor does not, so the graph is reused (and stays exact at other points)."""
    torch.manual_seed(0)
    model = _Reads("int-index-tensor").to(D)
    trace.GRAPHS.clear()
    assert trace.trace(model, torch.tensor([[0.7, -0.2]], dtype=D)).reusable
    for x0 in (torch.tensor([[0.7, -0.2]], dtype=D), torch.tensor([[-0.9, 0.6]], dtype=D)):
        assert_matches_autograd(model, x0, 3)
    assert len(trace.GRAPHS.graphs(model)) == 1


@pytest.mark.parametrize("how", READS)
def test_a_graph_that_read_a_value_is_not_reused(how):
    """Every way of reading a value makes the graph per-point; expansions on both sides of the decision are exact."""
    torch.manual_seed(0)
    model = _Reads(how).to(D)
    trace.GRAPHS.clear()
    points = [torch.tensor([[0.7, -0.2]], dtype=D), torch.tensor([[-0.9, 0.6]], dtype=D)]
    assert not trace.trace(model, points[0]).reusable
    for x0 in points:
        assert_matches_autograd(model, x0, 3)
    with torch.no_grad():
        model.scale.fill_(-0.5)  # the parameter's value decides the param-* branches
    for x0 in points:
        assert_matches_autograd(model, x0, 3)


@pytest.mark.parametrize("tracer", ["record", "make_fx"])
@pytest.mark.parametrize("how", UNREADABLE)
def test_bulk_reads_of_traced_values_are_refused_by_name(how, tracer, monkeypatch):
    """.numpy() / .tolist() see no values under the tracer: an error or, for .numpy(), garbage that became a silent
    wrong expansion (an int index read with .numpy() picked a made-up column). Now one error naming the line."""
    monkeypatch.setattr(trace, "TRACER", tracer)
    torch.manual_seed(0)
    model = _Reads(how).to(D)
    trace.GRAPHS.clear()
    with pytest.raises(GraphEscapeError, match=r"\.(numpy|tolist)\(\) at .*test_recorder.py"):
        expand(model, torch.tensor([[0.7, -0.2]], dtype=D), 2)


@pytest.mark.parametrize("tracer", ["record", "make_fx"])
def test_expansion_never_writes_into_the_model_or_the_point(tracer, monkeypatch):
    """A buffer updated in forward was written by every expansion (functionalization's write-back ran on the
    user's buffer); the expansion uses the updated value and leaves the model alone."""
    monkeypatch.setattr(trace, "TRACER", tracer)
    class Counts(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.register_buffer("seen", torch.zeros(2))

        def forward(self, x):
            self.seen.add_(1)
            x.mul_(2)
            return self.lin(x).tanh() + self.seen

    model = Counts().to(D)
    x0 = torch.tensor([[0.3, -0.1]], dtype=D)
    before, point = model.seen.clone(), x0.clone()
    trace.GRAPHS.clear()
    for _ in range(2):
        p = expand(model, x0, 2)
    assert torch.equal(model.seen, before) and torch.equal(x0, point)
    with torch.no_grad():
        expected = model.lin(2 * x0).tanh() + before + 1
    torch.testing.assert_close(p.coefficients[0].reshape(-1), expected.reshape(-1), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("case", ["circular-padding", "lstm"])
def test_writes_below_functionalization_are_recorded_and_functionalized(case):
    """C++ composites (circular padding) and decompositions (the LSTM cell's in-place gate activations on chunks of
    one buffer) write in place below functionalization; the recorder records those writes, functionalizes its graph
    and records it again, instead of handing the model to make_fx (which loads torch._dynamo)."""
    torch.manual_seed(0)
    if case == "lstm":
        model, x0 = _recurrent(), torch.randn(6, dtype=D) * 0.5
        for m in model.__closure__[0].cell_contents.modules():
            m.to(D)
    else:
        model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular"), nn.Tanh()).to(D)
        x0 = torch.randn(1, 1, 3, 3, dtype=D) * 0.5
    trace.GRAPHS.clear()
    graph = trace.trace(model, x0)
    assert graph.reusable and graph.graph_module.graph.find_nodes(op="placeholder")[-1].name == "x"
    assert not any(getattr(n.target, "_schema", None) is not None and n.target._schema.is_mutable
                   for n in graph.graph_module.graph.nodes)
    assert_matches_autograd(model, x0, 3)


def test_first_expansion_in_a_fresh_process_does_not_load_dynamo():
    """What keeps the first call fast (benchmarks/run.py --case cold-start times it): torch._dynamo (~1 s to import)
    stays unloaded through the first expansion of a plain model."""
    code = ("import sys, torch, hope_engine\n"
            "net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).double()\n"
            "hope_engine.expand(net, torch.zeros(2, dtype=torch.float64), 4)\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


# In-place programs: every kind of write and alias the recorder must see through functionalization; each step with an
# out-of-place twin that computes the same function (the autograd reference: autograd refuses some of these writes).
STEPS = {
    "iadd": (lambda h: h.add_(0.3), lambda h: h + 0.3),
    "tanh_": (lambda h: h.tanh_(), torch.tanh),
    "slice_mul": (lambda h: (h[:, :1].mul_(3.0), h)[1], lambda h: torch.cat([h[:, :1] * 3.0, h[:, 1:]], 1)),
    "view_write": (lambda h: (h.view(-1).__setitem__(0, h.view(-1)[1] * 2.0), h)[1],
                   lambda h: torch.cat([h.reshape(-1)[1:2] * 2.0, h.reshape(-1)[1:]]).reshape(h.shape)),
    "alias_after_write": (lambda h: (lambda a: (h.mul_(2.0), h + a[:, None])[1])(h[:, 0]),
                          lambda h: 2.0 * h + 2.0 * h[:, :1]),
    "cat": (lambda h: torch.cat([h, h.sin()], -1)[:, :h.shape[1]],) * 2,
    "addcmul_": (lambda h: h.addcmul_(h, h, value=0.1), lambda h: h + 0.1 * h * h),
    "clamp_": (lambda h: h.clamp_(-2.0, 2.0), lambda h: h.clamp(-2.0, 2.0)),
    "masked_fill": (lambda h: h.masked_fill(torch.arange(h.shape[1]) % 2 == 0, 0.5),) * 2,
    "transpose_write": (lambda h: (h.t()[0].add_(1.0), h)[1], lambda h: torch.cat([h[:, :1] + 1.0, h[:, 1:]], 1)),
    "fresh_buffer": (lambda h: (lambda z: (z.copy_(h.cos()), z * h)[1])(torch.empty_like(h)), lambda h: h.cos() * h),
}


class _Program(nn.Module):
    def __init__(self, n: int, width: int, steps: list[str], seed: int, twin: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        self.lin, self.head, self.steps, self.twin = nn.Linear(n, width), nn.Linear(width, 1), steps, twin

    def forward(self, x):
        h = self.lin(x)
        for s in self.steps:
            h = STEPS[s][1 if self.twin else 0](h)
        return self.head(h)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 3), width=st.integers(2, 4), steps=st.lists(st.sampled_from(sorted(STEPS)), max_size=4),
       seed=st.integers(0, 2**31 - 1), order=st.integers(1, 3))
def test_in_place_programs_record_exactly(n, width, steps, seed, order):
    """Random chains of in-place writes, views written through, aliases read after a write and fresh buffers: the
    recorded graph is reusable (no value was read) and exact against nested autograd of the out-of-place twin
    program (autograd itself refuses some of these writes, e.g. h.addcmul_(h, h))."""
    model = _Program(n, width, steps, seed).to(D).eval()
    x0 = torch.randn(1, n, dtype=D, generator=torch.Generator().manual_seed(seed % 1000)) * 0.5
    trace.GRAPHS.clear()
    graph = trace.trace(model, x0)
    assert graph.reusable
    assert graph.graph_module.graph.find_nodes(op="placeholder")[-1].name == "x"  # the recorder's graph
    twin = _Program(n, width, steps, seed, twin=True).to(D).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x0.clone()), twin(x0), rtol=1e-14, atol=1e-14)  # the twins agree
    assert_matches_autograd(model, x0, order, reference=twin)


def test_an_op_returning_tensors_among_numbers_is_not_followed_as_constants():
    """The recorder follows tensors one by one; an op returning a tensor next to a number (flash attention's outputs
    on CUDA) would leave that tensor untracked, a constant to every later op. It declines instead (make_fx traces)."""
    from hope_engine.capture import record

    lib = torch.library.Library("hope_test", "FRAGMENT")
    lib.define("scaled_and_count(Tensor x) -> (Tensor, int)")
    lib.impl("scaled_and_count", lambda x: (x * 2.0, 3), "CompositeExplicitAutograd")
    op = torch.ops.hope_test.scaled_and_count.default

    def f(x):
        y, k = op(x)
        return y * k

    x = torch.tensor([0.5, -0.25], dtype=D)
    with pytest.raises(record.Declined, match="tensors among other values"):
        record.record(lambda x: f(x.clone()), None, x, {}, {})


def _spy_make_fx(monkeypatch) -> list:
    """Record each make_fx trace the tracer falls back to."""
    calls: list = []
    make = trace._make

    def spy(*args, **kwargs):
        calls.append(args[2])
        return make(*args, **kwargs)

    monkeypatch.setattr(trace, "_make", spy)
    return calls


def test_a_recorder_bug_surfaces_instead_of_falling_back(monkeypatch):
    """A failure of the recorder's own code is a bug: it reaches the user as ``RecorderError`` (naming the cause and
    the way around it), where it used to be swallowed into a silent make_fx trace."""
    from hope_engine.capture import record

    monkeypatch.setattr(trace, "TRACER", "record")
    fallbacks = _spy_make_fx(monkeypatch)

    def broken(t):
        raise KeyError("a bookkeeping bug")

    monkeypatch.setattr(record, "_meta_like", broken)
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh()).to(D)
    trace.GRAPHS.clear()
    with pytest.raises(record.RecorderError, match="KeyError.*bookkeeping bug.*HOPE_TRACER=make_fx") as info:
        expand(net, torch.zeros(1, 2, dtype=D), 2)
    assert isinstance(info.value.__cause__, KeyError)
    assert fallbacks == []


def test_a_decline_still_falls_back_to_make_fx(monkeypatch):
    """What the recorder declines on purpose (here an op returning a tensor next to a number, which it could not
    follow) is traced by make_fx, and the graph computes the model."""
    from hope_engine.capture import record

    monkeypatch.setattr(trace, "TRACER", "record")
    fallbacks = _spy_make_fx(monkeypatch)
    declined: list = []
    original = record.record

    def spy(*args, **kwargs):
        try:
            return original(*args, **kwargs)
        except record.Declined as e:
            declined.append(str(e))
            raise

    monkeypatch.setattr(record, "record", spy)
    lib = torch.library.Library("hope_test", "FRAGMENT")
    lib.define("halved_and_count(Tensor x) -> (Tensor, int)")
    lib.impl("halved_and_count", lambda x: (x * 0.5, 3), "CompositeExplicitAutograd")
    op = torch.ops.hope_test.halved_and_count.default

    def f(x):
        y, k = op(x.tanh())
        return y * k

    x0 = torch.tensor([[0.3, -0.4]], dtype=D)
    trace.GRAPHS.clear()
    graph = trace.trace(f, x0)
    assert declined and "tensors among other values" in declined[0]
    assert fallbacks == ["fake"]
    torch.testing.assert_close(graph.graph_module(x0), f(x0), rtol=0, atol=0)


def test_the_models_own_error_is_reported_without_a_make_fx_trace(monkeypatch):
    """A model that fails on its own (a shape mismatch) fails in the recorder's run with its own message, explained
    as before; make_fx (and its ~1 s import) is not tried only to fail the same way."""
    from hope_engine.errors import ExpansionError

    monkeypatch.setattr(trace, "TRACER", "record")
    fallbacks = _spy_make_fx(monkeypatch)
    net = nn.Sequential(nn.Linear(3, 2), nn.Tanh()).to(D)
    trace.GRAPHS.clear()
    with pytest.raises(ExpansionError, match=r"shape \(1, 2\).*mat1 and mat2.*Linear\(3, \.\.\.\)"):
        expand(net, torch.zeros(1, 2, dtype=D), 2)
    assert fallbacks == []
