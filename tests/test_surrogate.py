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


# ------------------------------------------------------------------------ surrogate(model, domain=..., method=...)
class Cubic(nn.Module):
    """f(x) = 1 + 2 x1 - 3 x1 x2 + 0.5 x2^3, an exact polynomial of degree 3."""

    def forward(self, x):
        x1, x2 = x[..., 0:1], x[..., 1:2]
        return 1 + 2 * x1 - 3 * x1 * x2 + 0.5 * x2 ** 3


class SinProduct(nn.Module):
    def forward(self, x):
        return torch.sin(3 * x[..., 0:1]) * x[..., 1:2]


def test_fit_surrogate_of_a_polynomial_is_the_polynomial():
    domain = ([-1.0, 0.0], [2.0, 1.0])
    s = surrogate(Cubic().eval(), domain=domain, method="fit", order=3, timing=False)
    x = torch.rand(200, 2, dtype=torch.float64) * torch.tensor([3.0, 1.0]) + torch.tensor([-1.0, 0.0])
    x1, x2 = x[:, 0:1], x[:, 1:2]
    assert torch.allclose(s(x), 1 + 2 * x1 - 3 * x1 * x2 + 0.5 * x2 ** 3, rtol=1e-10, atol=1e-10)
    v = s.validity
    assert v.method == "fit" and v.order == 3 and v.monomials == 10 and v.valid_fraction == 1.0 and v.max_error < 1e-9
    assert s.radius == pytest.approx(0.5 * v.valid_box)  # the smallest half-width is 0.5


def test_fit_surrogate_solves_the_normal_equations():
    """The fitted coefficients (in t = x - c) against numpy's least squares on the same samples, monomials written
    term by term here."""
    import numpy as np

    from hope_engine.analysis.surrogate_fit import as_box

    domain = ([-1.0, -0.5], [1.0, 1.5])
    s = surrogate(SinProduct().eval(), domain=domain, method="fit", order=4, samples=300, seed=3, timing=False)
    box = as_box(domain)
    xs = box.sample(300, 3)  # the sampler the fit used (seed 3)
    t = (xs - box.center).numpy()
    alphas = s.polynomial.basis.multi_indices()
    a = np.stack([t[:, 0] ** i * t[:, 1] ** j for i, j in alphas], 1)
    y = (np.sin(3 * xs[:, 0].numpy()) * xs[:, 1].numpy())
    ref = np.linalg.lstsq(a, y, rcond=None)[0]
    assert np.allclose(s.coefficients[:, 0].numpy(), ref, rtol=1e-8, atol=1e-10)


def test_validity_of_a_taylor_surrogate_against_the_closed_form_error():
    class Exp(nn.Module):
        def forward(self, x):
            return torch.exp(x)

    pts = torch.linspace(-1, 1, 401, dtype=torch.float64).reshape(-1, 1)
    s = surrogate(Exp().eval(), domain=([-1.0], [1.0]), method="taylor", order=3, points=pts, rtol=0.01)
    p3 = sum(pts ** k / math.factorial(k) for k in range(4))  # the Taylor polynomial of exp at 0
    rel = (p3 - torch.exp(pts)).abs().reshape(-1) / (math.e - 1 / math.e)
    assert s.validity.valid_fraction == pytest.approx(float((rel <= 0.01).double().mean()))
    assert s.validity.max_error == pytest.approx(float(rel.max()), rel=1e-9)
    # the valid centred interval: up to the first invalid point on either side
    assert s.validity.valid_box == pytest.approx(float(pts.abs().reshape(-1)[rel > 0.01].min()))
    assert s.validity.network_ms > 0 and s.validity.surrogate_ms > 0
    old = surrogate(expand(Exp().eval(), torch.zeros(1, 1, dtype=torch.float64), 3), model=Exp().eval(),
                    points=pts, rtol=0.01)  # a TaylorPolynomial with a model and points gets the same report
    assert old.validity.valid_fraction == s.validity.valid_fraction


def test_auto_takes_the_valid_one_and_says_when_a_surrogate_is_slower():
    from hope_engine.analysis.surrogate_fit import Validity

    s = surrogate(SinProduct().eval(), domain=([-1.0, -1.0], [1.0, 1.0]), rtol=0.01, timing=False)
    names = {(c.method, c.order) for c in s.candidates}
    assert names == {(m, k) for m in ("taylor", "fit") for k in (2, 4, 6, 8, 12, 16)}
    assert s.validity.valid_fraction == 1.0
    valid = [c for c in s.candidates if c.valid_fraction == 1.0]
    assert s.validity.monomials == min(c.monomials for c in valid)  # the cheapest valid candidate
    taylor4 = next(c for c in s.candidates if c.method == "taylor" and c.order == 4)
    assert taylor4.valid_fraction < 1.0  # sin(3 x1) x2 at order 4 is not within 1% of the range at the box's edge
    slow = Validity("taylor", 3, 286, 0.01, 0.5, 0.1, 0.05, 0.4, 442, "given points", 1.0, 4.0)
    assert slow.speedup == 0.25 and "SLOWER" in str(slow)
    with pytest.raises(ValueError, match="domain"):
        surrogate(SinProduct().eval(), method="fit")
    with pytest.raises(ValueError, match="one bound per input"):  # scalar bounds, and nothing says n = 2
        surrogate(SinProduct().eval(), domain=(-1.0, 1.0), method="fit", timing=False)
    with pytest.raises(ValueError, match="method"):
        surrogate(SinProduct().eval(), domain=(-1, 1), method="chebyshev")
