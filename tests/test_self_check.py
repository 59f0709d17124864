"""Every expansion checks itself against the model's own torch run (``hope_engine.api.verify``), batches whose rows
interact are expanded row by row, and concurrent calls on one model are safe."""

import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hope_engine import VerificationError, expand, expand_many
from hope_engine.capture import trace
from hope_engine.ops import rules

D = torch.float64
aten = torch.ops.aten


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).to(D).eval()


def test_checks_run_and_are_recorded():
    p = expand(_net(), torch.tensor([0.3, -0.2], dtype=D), 4)
    assert p.checks == ("value", "gradient")
    assert expand(_net(), torch.tensor([0.3, -0.2], dtype=D), 4, verify=False).checks == ()


def test_at_a_kink_only_the_value_is_checked():
    with pytest.warns(UserWarning, match="kink"):
        p = expand(nn.ReLU(), torch.tensor([0.0, 1.0], dtype=D), 2)
    assert p.checks == ("value",)


class Scaled(nn.Module):
    """A constant tensor attribute: a constant of the traced graph."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1).to(D)
        self.scale = torch.tensor(2.0, dtype=D)

    def forward(self, x):
        return self.lin(x).sin() * self.scale


def _corrupt_cached_constants(model, factor):
    for traced in trace.GRAPHS.graphs(model):
        gm = traced.graph_module
        for node in gm.graph.nodes:
            if node.op == "get_attr" and getattr(gm, node.target).dim() == 0:
                setattr(gm, node.target, getattr(gm, node.target) * factor)


def test_a_stale_cached_graph_is_caught_and_traced_afresh():
    """A cached graph that no longer computes the model (stands for any staleness the guard misses) is caught by the
    self-check; the expansion is retraced, checked again and right."""
    model, x0 = Scaled(), torch.tensor([0.3, -0.2], dtype=D)
    want = expand(model, x0, 3, verify=False).coefficients.clone()
    _corrupt_cached_constants(model, 3.0)
    wrong = expand(model, x0, 3, verify=False).coefficients  # the corrupted graph, unchecked
    assert not torch.allclose(wrong, want)
    got = expand(model, x0, 3)
    torch.testing.assert_close(got.coefficients, want, rtol=1e-13, atol=1e-13)
    assert "value" in got.checks  # (the first derivatives: checked once per traced graph)


@pytest.fixture
def wrong_sin_rule():
    """sin's rule replaced by cos's: an op the engine would differentiate unlike torch."""
    original = rules.RULES[aten.sin]
    rules.RULES[aten.sin] = rules.RULES[aten.cos]
    trace.GRAPHS.clear()
    yield
    rules.RULES[aten.sin] = original
    trace.GRAPHS.clear()


def test_a_wrong_expansion_raises_instead_of_returning(wrong_sin_rule):
    x0 = torch.tensor([0.3, -0.2], dtype=D)
    with pytest.raises(VerificationError, match="does not match the model's own torch run") as e:
        expand(lambda x: torch.sin(x).sum(), x0, 3)
    assert "verify=False" in str(e.value) and e.value.check == "value"
    p = expand(lambda x: torch.sin(x).sum(), x0, 3, verify=False)  # documented: no guarantee
    assert p.checks == ()


def test_a_wrong_first_derivative_alone_is_caught():
    """A graph whose value is right but whose derivative is not (autograd's stop-gradient missing)."""
    x0 = torch.tensor([0.3, -0.2], dtype=D)
    original = rules.RULES[aten.detach]
    rules.RULES[aten.detach] = rules.RULES[aten.clone]  # detach differentiated through
    trace.GRAPHS.clear()
    try:
        with pytest.raises(VerificationError) as e:
            expand(lambda x: (x + (x ** 2).detach()).sum(), x0, 2)
        assert e.value.check == "gradient"
    finally:
        rules.RULES[aten.detach] = original
        trace.GRAPHS.clear()


# ---------------------------------------------------------------------------------------- batches whose rows interact
COUPLED = {
    "every row times the last": lambda x: (x * x[-1:]).sum(1),
    "centering": lambda x: torch.tanh(x - x.mean(0)) @ torch.tensor([1.0, -2.0], dtype=D),
    "softmax over the batch": lambda x: torch.softmax(x, 0)[:, 0] * x[:, 1],
    "norm of the whole batch": lambda x: x[:, 0] / x.norm() + x[:, 1] ** 2,
}


@pytest.mark.parametrize("name", sorted(COUPLED))
def test_rows_that_interact_are_expanded_each_with_the_others_fixed(name):
    from support.autograd import autograd_derivatives

    f = COUPLED[name]
    torch.manual_seed(1)
    x0 = torch.rand(4, 2, dtype=D) + 0.5
    p = expand(f, x0, 3)
    assert p.checks == ("value", "gradient")
    for i in range(4):  # row i's derivatives in row i's input, the other rows fixed
        def row(r, i=i):
            return f(torch.cat([x0[:i], r.reshape(1, -1), x0[i + 1:]]))[i]

        want = autograd_derivatives(row, x0[i], p.basis.multi_indices()).reshape(-1)
        torch.testing.assert_close(p.point(i).derivatives().reshape(-1), want, rtol=1e-10, atol=1e-12)


def test_expand_many_refuses_rows_that_interact():
    x = torch.rand(6, 2, dtype=D)
    with pytest.raises(Exception, match="rows interact"):
        expand_many(COUPLED["centering"], x, 2, chunk_size=2, progress=False)


@settings(max_examples=8, deadline=None, derandomize=True)
@given(st.integers(1, 7))
def test_expand_many_is_the_same_for_every_chunk_size(chunk):
    net = _net(3)
    x = torch.linspace(-1, 1, 14, dtype=D).reshape(7, 2)
    whole = expand(net, x, 3).coefficients
    got = expand_many(net, x, 3, chunk_size=chunk, progress=False)
    torch.testing.assert_close(got.coefficients, whole, rtol=1e-13, atol=1e-13)
    assert "value" in got.checks  # (the first derivatives: checked once per traced graph)


# ----------------------------------------------------------------------------------------------------- threads
def test_four_threads_on_a_cold_model_agree_and_restore_its_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 16), nn.Dropout(0.1), nn.Tanh(), nn.BatchNorm1d(16), nn.Linear(16, 1)).to(D)
    model.train()
    x0 = torch.tensor([[0.3, -0.2, 0.1]], dtype=D)
    results, errors = [None] * 4, []

    def work(i):
        try:
            results[i] = expand(model, x0 + 0.0, 4).coefficients
        except Exception as e:  # noqa: BLE001 (collected and reported below)
            errors.append(e)

    for _ in range(3):
        trace.GRAPHS.clear()
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        with pytest.warns(UserWarning):
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert not errors, errors
        assert all(m.training for m in model.modules()), "a module was left in eval mode"
        for r in results[1:]:
            torch.testing.assert_close(r, results[0], rtol=0, atol=0)
    model.eval()
    torch.testing.assert_close(results[0], expand(model, x0, 4).coefficients, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("f", [lambda x: torch.sin(1.3 * x).t() @ x.cos(), lambda x: x.sin().sum(0)],
                         ids=["output rows are not the batch rows", "output without the batch axis"])
def test_outputs_whose_rows_are_not_the_points_are_checked_as_one_polynomial(f):
    """The first derivatives of a batched point whose output does not keep the batch axis: variable i is seeded in
    every input row, so autograd's gradient summed over the rows is what the polynomial holds (a false mismatch
    before)."""
    for x0 in (torch.zeros(1, 2, dtype=D), torch.tensor([[0.3, -0.2]], dtype=D), torch.rand(3, 2, dtype=D)):
        assert expand(f, x0, 2, verify="full").checks == ("value", "gradient")


def test_expand_many_refuses_rows_that_read_the_last_row():
    x = torch.tensor([[1.0], [2.0], [3.0]], dtype=D)
    with pytest.raises(Exception, match="rows interact"):
        expand_many(COUPLED["every row times the last"], x, 1, chunk_size=1, progress=False)


class AssignsData(nn.Module):
    """Writes its weight through .data in forward: torch's value follows the write."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([3.0, 4.0], dtype=D))

    def forward(self, x):
        self.w.data = self.w.data / self.w.data.norm()
        return (self.w * x).sum(-1, keepdim=True)


def test_an_assignment_to_data_is_not_a_read():
    model, x0 = AssignsData(), torch.tensor([0.2, 0.5], dtype=D)
    want = float((torch.tensor([0.6, 0.8], dtype=D) * x0).sum())
    p = expand(model, x0, 1, verify=False)
    assert abs(float(p.coefficients[0]) - want) < 1e-14
