"""Convergence: truncation errors and R^2 against independent computations, radius estimates against functions whose
radius of convergence is known, and the paper's Table 2 trend for deep Sine MLPs."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import r2_score
from support.analysis import assert_image
from support.autograd import autograd_derivatives
from torch import nn

from hope_engine import expand
from hope_engine.analysis import convergence, derivative_ratios, estimate_radius
from hope_engine.models import sine_mlp


class Fn(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


X0 = torch.zeros(1, 1, dtype=torch.float64)


@pytest.mark.parametrize("f, radius, rel", [
    (lambda x: 1 / (1 - x), 1.0, 1e-9),  # c_k = 1
    (lambda x: 1 / (2 - x), 2.0, 1e-9),  # c_k = 2^-(k+1)
    (lambda x: torch.log1p(x), 1.0, 0.15),  # c_k = (-1)^(k+1) / k: the prefactor 1/k biases a finite fit slightly
])
def test_radius_estimate_of_known_series(f, radius, rel):
    p = expand(Fn(f).eval(), X0, 16)
    est = estimate_radius(p)
    assert abs(est.radius - radius) <= rel * radius, est.radius
    assert est.root.shape == (16,) and est.ratio.shape == (15,)


def test_radius_estimate_is_conservative_in_several_variables():
    # 1/(1 - x1 - x2): singular where x1 + x2 = 1, nearest at distance 1/sqrt(2); per-degree l1 norms are 2^k
    p = expand(Fn(lambda x: 1 / (1 - x.sum(-1, keepdim=True))).eval(), torch.zeros(1, 2, dtype=torch.float64), 10)
    r = estimate_radius(p).radius
    assert abs(r - 0.5) < 1e-9 and r <= 1 / math.sqrt(2)


def test_polynomial_model_has_infinite_radius_and_zero_error():
    p = expand(Fn(lambda x: 1 + x - 2 * x ** 3).eval(), X0, 8)
    assert estimate_radius(p).radius == math.inf
    c = convergence(Fn(lambda x: 1 + x - 2 * x ** 3).eval(), p, radii=[0.5, 1.0, 2.0])
    assert float(c.max_error[3:].max()) < 1e-12  # orders >= 3 are exact
    assert float(c.max_error[2, -1]) == pytest.approx(2 * 2.0 ** 3, rel=1e-12)  # order 2 misses -2 x^3 at |x| = 2


def test_errors_and_r2_match_direct_evaluation():
    model = sine_mlp([2, 16, 16, 1], seed=1)
    x0 = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    p = expand(model, x0, 6)
    c = convergence(model, p, radii=[0.2, 0.5, 1.0], samples=16, seed=3)
    assert c.max_error.shape == (7, 3) and c.r2.shape == (7, 3)
    # reference: the engine's own polynomial evaluation of each truncation at the same points, numpy/sklearn metrics
    x = x0 + c.offsets
    y = model(x).detach().reshape(-1)
    for i, k in enumerate(c.orders):
        pk = p.truncate(k)(x).reshape(-1)
        for j in range(3):
            inside = (c.offsets.norm(dim=1) <= float(c.radii[j]) + 1e-12)
            err = (pk[inside] - y[inside]).abs()
            assert float(c.max_error[i, j]) == pytest.approx(float(err.max()), rel=1e-9, abs=1e-15)
            assert float(c.rms_error[i, j]) == pytest.approx(float(err.pow(2).mean().sqrt()), rel=1e-9, abs=1e-15)
            assert float(c.r2[i, j]) == pytest.approx(r2_score(y[inside].numpy(), pk[inside].numpy()), rel=1e-9,
                                                      abs=1e-12)
    # higher orders are better near x0, and the R^2 of the highest order is ~1 within the smallest ball
    assert float(c.max_error[-1, 0]) < float(c.max_error[1, 0]) and float(c.r2[-1, 0]) > 0.999999


def test_valid_radius_and_best_order():
    model = Fn(torch.sin).eval()
    p = expand(model, X0, 9)
    grid = [0.1 * i for i in range(1, 21)]
    c = convergence(model, p, radii=grid)

    def t9_error(r: float) -> float:  # |sin r - T_9(r)| from the series, independent of the engine
        return abs(math.sin(r) - sum((-1) ** j * r ** (2 * j + 1) / math.factorial(2 * j + 1) for j in range(5)))

    expected = max(r for r in grid if all(t9_error(q) < 1e-6 for q in grid if q <= r))
    assert c.valid_radius(1e-6) == pytest.approx(expected, abs=1e-12)
    assert 1.2 < expected < 1.5
    assert c.best_order(1e-3, radius=0.5) == 3  # sin x - x + x^3/6 = O(x^5): 0.5^5/120 = 2.6e-4
    assert c.valid_radius(1e-6, order=1) < 0.2


def test_along_a_direction():
    model = sine_mlp([3, 8, 1], seed=2)
    p = expand(model, torch.zeros(1, 3, dtype=torch.float64), 5)
    d = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)
    c = convergence(model, p, direction=d, radii=[0.1, 0.3])
    assert torch.allclose(c.offsets[:2], torch.stack([d, -d]) / 3 * 0.1)
    assert c.network.shape == (4,)


def test_figures_render(tmp_path):
    m1 = sine_mlp([1, 16, 1], seed=0)
    c1 = convergence(m1, expand(m1, X0, 8))
    assert_image(c1.figure(), tmp_path / "line.png")
    m2 = sine_mlp([2, 16, 1], seed=0)
    c2 = convergence(m2, expand(m2, torch.zeros(1, 2, dtype=torch.float64), 6), samples=8)
    assert_image(c2.figure(), tmp_path / "contour.png")
    assert_image(c2.figure(kind="line", orders=[1, 3]), tmp_path / "line2.png")


def test_proof_table2_trend():
    """The paper's Table 2: 1-512-512-512-512-1 Sine MLP, W ~ U(-w0/m, w0/m) (m = fan-in), x0 = 0.

    |d^n f/dx^n| / |df/dx| for n = 2, 5, 10 falls with n for w0 <= 0.1 and grows by orders of magnitude for w0 >= 10.
    Biases keep nn.Linear's default U(-1/sqrt(m), 1/sqrt(m)): with zero biases the network is odd (sin(0) = 0) and
    every even derivative at 0 vanishes, so n = 2 and 10 would read 0; that variant is checked on odd orders.
    """
    ratios = {}
    for w0 in (0.01, 0.1, 10.0, 100.0):
        model = sine_mlp([1, 512, 512, 512, 512, 1], w0=w0, seed=0)
        p = expand(model, X0, 10)
        ratios[w0] = derivative_ratios(p, (2, 5, 10))
        r = ratios[w0]
        if w0 <= 0.1:
            assert r[2] > r[5] > r[10] and r[10] < 1e-6 * r[2], (w0, r)
            assert r[2] < 1
        else:
            assert r[2] < r[5] < r[10] and r[10] > 1e6 * r[2], (w0, r)
            assert r[5] > 100
    # the derivatives behind one row, against nested autograd (independent of the engine)
    model = sine_mlp([1, 512, 512, 512, 512, 1], w0=10.0, seed=0)
    ref = autograd_derivatives(model, X0, [(1,), (2,), (5,)]).reshape(-1)
    assert ratios[10.0][2] == pytest.approx(abs(float(ref[1] / ref[0])), rel=1e-8)
    assert ratios[10.0][5] == pytest.approx(abs(float(ref[2] / ref[0])), rel=1e-8)
    # the radius estimate follows: large for small w0, small for large w0
    radii = {w0: estimate_radius(expand(sine_mlp([1, 512, 512, 512, 512, 1], w0=w0, seed=0), X0, 10)).radius
             for w0 in (0.1, 10.0)}
    assert radii[0.1] > 10 > 1 > radii[10.0]
    # zero biases: odd network, same trend on odd orders 3, 5, 9
    for w0, falls in ((0.1, True), (10.0, False)):
        model = sine_mlp([1, 512, 512, 512, 512, 1], w0=w0, seed=0, bias=False)
        p = expand(model, X0, 10)
        r = derivative_ratios(p, (2, 3, 5, 9))
        assert r[2] == 0.0
        assert (r[3] > r[5] > r[9]) if falls else (r[3] < r[5] < r[9])
