"""expand(..., create_graph=True): the coefficients carry autograd history to the parameters and the point, and
their gradients equal nested float64 autograd (torch.func) on both kernel backends."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from hope_engine import ExpansionError, expand
from hope_engine.algebra.kernels import use_backend

DT = torch.float64


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 1)).to(DT)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_gradient_of_a_coefficient_wrt_weights_and_point(backend):
    m = _net()
    x0 = torch.tensor([[0.3, -0.2]], dtype=DT, requires_grad=True)
    with use_backend(backend):
        p = expand(m, x0, 3, create_graph=True)
    c = p.coefficients[p.basis.position((1, 2))].sum()
    gw, gx = torch.autograd.grad(c, [m[0].weight, x0])
    params = {k: v.detach() for k, v in m.named_parameters()}

    def coefficient(w, x):  # d^3 f / dx1 dx2^2 / (1! 2!)
        f = lambda z: functional_call(m, {**params, "0.weight": w}, (z.unsqueeze(0),)).squeeze()  # noqa: E731
        return jacrev(jacrev(jacrev(f)))(x)[0, 1, 1] / 2

    rw, rx = torch.func.grad(coefficient, argnums=(0, 1))(m[0].weight.detach(), x0.detach()[0])
    torch.testing.assert_close(gw, rw)
    torch.testing.assert_close(gx[0], rx)


def test_without_create_graph_nothing_is_recorded_and_accessors_work_with_it():
    m = _net()
    x0 = torch.tensor([[0.3, -0.2]], dtype=DT, requires_grad=True)
    assert not expand(m, x0, 2).coefficients.requires_grad
    p = expand(m, x0, 3, create_graph=True)
    assert p.coefficients.requires_grad
    x = torch.tensor([[0.35, -0.1]], dtype=DT)
    assert p(x).requires_grad and p.derivative((1, 1)).requires_grad
    assert "x" in p.latex() and str(p.to_sympy()) and p.terms()
    torch.testing.assert_close(p.truncate(2)(x).detach(), expand(m, x0.detach(), 2)(x))
    with pytest.raises(ExpansionError, match="create_graph"):
        expand(m, x0, 2, create_graph="yes")
