"""The surrogate module against closed forms and an independent reference: a direct float64 sum of
c_a prod_i (x_i - x0_i)^a_i written here, term by term (the surrogate and ``p(x)`` share the engine's monomial table,
so comparing them would not catch a fault there)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hope_engine import expand
from hope_engine.analysis import estimate_radius, surrogate
from hope_engine.models import sine_mlp


def direct_sum(p, x: torch.Tensor) -> torch.Tensor:
    """sum over the basis of c_a prod_i (x_i - x0_i)^a_i at points x (..., n), float64: (..., outputs)."""
    q = p.point(0) if p.batched else p
    t = x.double() - q.center_values.double().reshape(-1)
    c = q.coefficients.detach().double().reshape(q.basis.size, -1)
    out = torch.zeros(*t.shape[:-1], c.shape[1], dtype=torch.float64)
    for m, alpha in enumerate(q.basis.multi_indices()):
        term = torch.ones(t.shape[:-1], dtype=torch.float64)
        for i, a in enumerate(alpha):
            term = term * t[..., i] ** a
        out += term[..., None] * c[m]
    return out


def test_horner_one_variable_matches_the_series():
    class Exp(nn.Module):
        def forward(self, x):
            return torch.exp(x)

    x0 = torch.tensor([[0.5]], dtype=torch.float64)
    s = surrogate(expand(Exp().eval(), x0, 12))
    assert s.horner
    x = torch.linspace(-0.5, 1.5, 101, dtype=torch.float64).reshape(-1, 1)
    t = x - 0.5
    expected = math.exp(0.5) * sum(t ** k / math.factorial(k) for k in range(13))  # closed-form Taylor polynomial
    assert torch.allclose(s(x), expected, rtol=1e-14, atol=1e-14)
    assert s(x).shape == (101, 1)
    assert s(torch.tensor([0.7, 0.8], dtype=torch.float64)).shape == (2, 1)  # points given as bare values


def test_several_variables_and_outputs_match_polynomial_call():
    model = sine_mlp([3, 16, 16, 4], seed=0)
    p = expand(model, torch.tensor([[0.1, -0.3, 0.2]], dtype=torch.float64), 5)
    s = surrogate(p)
    assert not s.horner
    x = torch.rand(7, 5, 3, dtype=torch.float64)
    got = s(x)
    assert got.shape == (7, 5, 4)
    assert torch.allclose(got, direct_sum(p, x), rtol=1e-12, atol=1e-13)
    assert s.radius == pytest.approx(min(estimate_radius(p, output=i).radius for i in range(4)))
    one = surrogate(p, output=2)
    assert torch.allclose(one(x), got[..., 2])


def test_radius_from_the_model_and_float32():
    model = sine_mlp([1, 32, 32, 1], seed=0)
    p = expand(model, torch.zeros(1, 1, dtype=torch.float64), 10)
    s = surrogate(p, model=model, tol=1e-4, radii=torch.linspace(0.05, 1.0, 20))
    r = s.radius
    assert 0 < r <= 1.0
    x = torch.linspace(-r, r, 201, dtype=torch.float64).reshape(-1, 1)
    with torch.no_grad():
        assert float((s(x) - model(x)).abs().max()) < 1e-4  # within the radius the error bound holds (1-D: +-r)
    s32 = surrogate(p, dtype=torch.float32)
    assert s32(x).dtype == torch.float32
    assert torch.allclose(s32(x).double(), s(x), atol=1e-5)


def test_batched_polynomial_needs_one_point():
    model = sine_mlp([2, 8, 1], seed=0)
    p = expand(model, torch.linspace(-0.5, 0.5, 6, dtype=torch.float64).reshape(3, 2), 3)  # three centers
    with pytest.raises(ValueError, match="point"):
        surrogate(p)
    s = surrogate(p.point(1))
    x = torch.rand(4, 2, dtype=torch.float64)
    assert torch.allclose(s(x), direct_sum(p.point(1), x), rtol=1e-12, atol=1e-13)
