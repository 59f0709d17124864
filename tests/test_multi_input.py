"""Models of several inputs (positional, keyword, fixed masks and ids) and structured outputs expand as written."""

from __future__ import annotations

import pytest
import torch
from support.autograd import assert_close_derivatives, autograd_derivatives
from torch import nn

from hope_engine import ExpansionError, expand

D = torch.float64


class PINN(nn.Module):
    """u(x, t), a physics-informed net taking space and time separately."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, x, t):
        return self.net(torch.cat([x, t], dim=-1))


class Masked(nn.Module):
    """Data with a mask beside it and a dict output."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, data, mask=None, scale=1.0):
        h = torch.sin(self.lin(data * mask)) * scale
        return {"logits": h, "aux": h.sum(-1)}


def test_positional_inputs_are_concatenated_in_order_with_names():
    torch.manual_seed(0)
    model = PINN().to(D).eval()
    x = torch.tensor([[0.2, -0.1]], dtype=D)
    t = torch.tensor([[0.5]], dtype=D)
    p = expand(model, (x, t), 4)
    assert p.names == ["x_0", "x_1", "t"]
    alphas = p.basis.multi_indices()
    want = autograd_derivatives(lambda z: model(z[:, :2], z[:, 2:]), torch.cat([x, t], -1), alphas)
    assert_close_derivatives(p.derivatives(), want, [sum(a) for a in alphas])


def test_wrt_selects_inputs_and_holds_the_others_fixed():
    torch.manual_seed(0)
    model = PINN().to(D).eval()
    x = torch.tensor([[0.2, -0.1]], dtype=D)
    t = torch.tensor([[0.5]], dtype=D)
    p = expand(model, (x, t), 5, wrt="t")
    assert p.names == ["t"]
    alphas = p.basis.multi_indices()
    want = autograd_derivatives(lambda z: model(x, z), t, alphas)
    assert_close_derivatives(p.derivatives(), want, [sum(a) for a in alphas])
    p1 = expand(model, (x, t), 3, wrt=1)
    torch.testing.assert_close(p1.coefficients, p.truncate(3).coefficients)


def test_keyword_inputs_fixed_mask_and_output_key():
    torch.manual_seed(1)
    model = Masked().to(D).eval()
    data = torch.tensor([[0.3, -0.4, 0.1]], dtype=D)
    mask = torch.tensor([[1.0, 0.0, 1.0]], dtype=D)
    p = expand(model, {"data": data, "mask": mask, "scale": 2.0}, 3, wrt="data", output="logits")
    assert p.names == ["data_0", "data_1", "data_2"]
    alphas = p.basis.multi_indices()
    want = autograd_derivatives(lambda z: model(z, mask=mask, scale=2.0)["logits"], data, alphas)
    assert_close_derivatives(p.derivatives(), want, [sum(a) for a in alphas])
    aux = expand(model, {"data": data, "mask": mask}, 3, wrt="data", output=lambda out: out["aux"])
    want_aux = autograd_derivatives(lambda z: model(z, mask=mask)["aux"], data, alphas)
    assert_close_derivatives(aux.derivatives(), want_aux, [sum(a) for a in alphas])


def test_a_new_mask_is_seen_and_the_graph_reused_for_the_same_one():
    from hope_engine.capture import trace

    torch.manual_seed(1)
    model = Masked().to(D).eval()
    data = torch.tensor([[0.3, -0.4, 0.1]], dtype=D)
    mask = torch.ones(1, 3, dtype=D)
    a = expand(model, {"data": data, "mask": mask}, 2, wrt="data", output="logits")
    b = expand(model, {"data": data, "mask": mask}, 2, wrt="data", output="logits")
    torch.testing.assert_close(a.coefficients, b.coefficients)
    c = expand(model, {"data": data, "mask": torch.zeros(1, 3, dtype=D)}, 2, wrt="data", output="logits")
    assert torch.count_nonzero(c.coefficients[1:]) == 0
    assert trace.GRAPHS is not None


def test_integer_inputs_are_held_fixed_and_cannot_be_wrt():
    emb = nn.Embedding(5, 3).to(D)

    def f(ids, h):
        return torch.tanh(emb(ids) + h).sum(-1)

    ids = torch.tensor([[1, 3]])
    h = torch.zeros(1, 2, 3, dtype=D)
    p = expand(f, (ids, h), 2)
    assert p.n == 6
    with pytest.raises(ExpansionError, match="inputs_embeds"):
        expand(f, (ids, h), 2, wrt=0)


def test_tuple_output_needs_a_choice_and_takes_a_callable():
    torch.manual_seed(2)
    lin = nn.Linear(2, 2).to(D)

    def f(x):
        return torch.sin(lin(x)), torch.cos(lin(x))

    x0 = torch.tensor([[0.1, 0.2]], dtype=D)
    with pytest.raises(ExpansionError, match="returns 2 tensors"):
        expand(f, x0, 2)
    p = expand(f, x0, 3, output=lambda out: out[1])
    alphas = p.basis.multi_indices()
    assert_close_derivatives(p.derivatives(), autograd_derivatives(lambda z: f(z)[1], x0, alphas),
                             [sum(a) for a in alphas])


def test_bad_wrt_names_the_inputs():
    torch.manual_seed(0)
    model = PINN().to(D).eval()
    with pytest.raises(ExpansionError, match=r"wrt='y' is not one of the inputs \['x', 't'\]"):
        expand(model, (torch.zeros(1, 2, dtype=D), torch.zeros(1, 1, dtype=D)), 2, wrt="y")
    with pytest.raises(ExpansionError, match="one tensor"):
        expand(model.net, torch.zeros(1, 3, dtype=D), 2, wrt="x")
