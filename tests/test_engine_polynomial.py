"""TaylorPolynomial: evaluation, truncation, re-centring, terms, sympy/LaTeX export, derivatives of closed forms."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch
from support.indices import factorial_of, multi_indices
from torch import nn

from hope_engine import expand

D = torch.float64


def mlp(n: int = 2, out: int = 2) -> nn.Module:
    return nn.Sequential(nn.Linear(n, 6), nn.Tanh(), nn.Linear(6, 6), nn.SiLU(), nn.Linear(6, out)).to(D).eval()


def explicit_sum(p, x: torch.Tensor, point: int | None = None) -> torch.Tensor:
    """sum_m c_m prod_i (x_i - x0_i)^{a_mi}, one monomial at a time (x: (n,) values of the variables)."""
    x0 = p.center_values if point is None else p.center_values[point]
    total = 0
    for m, alpha in enumerate(p.basis.multi_indices()):
        mono = math.prod(float(x[i] - x0[i]) ** e for i, e in enumerate(alpha))
        c = p.coefficients[m] if point is None else p.coefficients[m, point]
        total = total + c * mono
    return total


# ------------------------------------------------------------------------------------------------ evaluation
def test_call_equals_the_explicit_sum():
    model = mlp(3)
    x0 = torch.randn(1, 3, dtype=D)
    p = expand(model, x0, 5, batched=False)
    xs = x0 + 0.3 * torch.randn(7, 1, 3, dtype=D)
    got = p(xs)                                                  # points shaped like model inputs
    assert got.shape == (7, 1, 2)
    for k in range(7):
        torch.testing.assert_close(got[k], explicit_sum(p, xs[k].reshape(-1)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p(xs.reshape(7, 3)), got, rtol=1e-12, atol=1e-12)  # or as (..., n)


def test_call_on_a_batch_uses_polynomial_i_for_point_i():
    model = mlp(2)
    x0 = torch.randn(3, 2, dtype=D)
    p = expand(model, x0, 4)
    x = x0 + 0.2 * torch.randn(3, 2, dtype=D)
    got = p(x)
    assert got.shape == (3, 2)
    for i in range(3):
        torch.testing.assert_close(got[i], explicit_sum(p, x[i], point=i), rtol=1e-12, atol=1e-12)
    grid = p(x0 + 0.1 * torch.randn(5, 3, 2, dtype=D))   # extra leading axes
    assert grid.shape == (5, 3, 2)


def test_polynomial_converges_to_the_model_at_rate_order_plus_one():
    model = mlp(2, out=1)
    x0 = torch.randn(1, 2, dtype=D)
    direction = torch.tensor([[0.6, -0.8]], dtype=D)
    for order in (2, 4):
        p = expand(model, x0, order)
        with torch.no_grad():
            errors = [float((p(x0 + h * direction) - model(x0 + h * direction)).abs()) for h in (0.02, 0.01)]
        assert errors[0] / errors[1] == pytest.approx(2 ** (order + 1), rel=0.15)


def test_value_and_derivatives_of_a_closed_form():
    """f = exp(2 x1 + x2) sin(x3): d^a f = 2^a1 exp(2 x1 + x2) sin^(a3)(x3)."""
    def f(x):
        return torch.exp(2 * x[:, :1] + x[:, 1:2]) * torch.sin(x[:, 2:])

    x0 = torch.tensor([[0.1, -0.3, 0.7]], dtype=D)
    p = expand(f, x0, 6, names=["a", "b", "c"])
    e = math.exp(2 * 0.1 - 0.3)
    for alpha in multi_indices(3, 6):
        want = 2 ** alpha[0] * e * math.sin(0.7 + alpha[2] * math.pi / 2)
        assert float(p.derivative(alpha)) == pytest.approx(want, rel=1e-12, abs=1e-13)
        assert float(p.coefficient(alpha)) == pytest.approx(want / factorial_of(alpha), rel=1e-12, abs=1e-13)
    assert float(p.derivative({"a": 2, "c": 1})) == pytest.approx(4 * e * math.cos(0.7), rel=1e-12)
    torch.testing.assert_close(p.derivatives()[p.basis.position((1, 2, 3))], p.derivative((1, 2, 3)))
    with pytest.raises(KeyError, match="degree 7 > order 6"):
        p.derivative((7, 0, 0))


# ------------------------------------------------------------------------------------------------ truncation
def test_truncate_is_a_prefix_and_equals_a_lower_order_expansion():
    model = mlp(3)
    x0 = torch.randn(2, 3, dtype=D)
    p = expand(model, x0, 6)
    for k in range(7):
        t = p.truncate(k)
        assert t.order == k and t.basis.size == math.comb(3 + k, k)
        assert t.basis.multi_indices() == p.basis.multi_indices()[: t.basis.size]
        assert t.coefficients.data_ptr() == p.coefficients.data_ptr()     # a view: no recomputation
        torch.testing.assert_close(t.coefficients, expand(model, x0, k).coefficients, rtol=1e-12, atol=1e-13)
    assert p.truncate(9).order == 6
    pure = expand(model, x0, 6, terms="pure")
    torch.testing.assert_close(pure.truncate(2).coefficients, expand(model, x0, 2, terms="pure").coefficients,
                               rtol=1e-12, atol=1e-13)


# ------------------------------------------------------------------------------------------------ re-centring
class Cubic(nn.Module):
    """f = x1 x2^2 + x1^3 - 2 x2 + 0.5: a network that IS a polynomial, so its expansion anywhere is exact."""

    def forward(self, x):
        x1, x2 = x[:, :1], x[:, 1:]
        return x1 * x2 ** 2 + x1 ** 3 - 2 * x2 + 0.5


def test_recenter_of_a_polynomial_model_equals_re_expanding_it():
    model = Cubic()
    x0 = torch.tensor([[0.4, -0.7]], dtype=D)
    x1 = torch.tensor([[-1.3, 0.9]], dtype=D)
    for order in (3, 5):
        moved = expand(model, x0, order).recenter(x1)
        torch.testing.assert_close(moved.coefficients, expand(model, x1, order).coefficients, rtol=1e-12,
                                   atol=1e-12)
        torch.testing.assert_close(moved.center, x1)


def test_recenter_equals_sympy_shift_of_the_polynomial():
    model = mlp(2, out=1)
    x0 = torch.tensor([[0.2, 0.5]], dtype=D)
    x1 = torch.tensor([[-0.4, 0.9]], dtype=D)
    p = expand(model, x0, 4)
    q = p.recenter(x1)
    a, b = sp.symbols("x1 x2", real=True)
    before = sp.Poly(sp.expand(p.to_sympy()), a, b)
    after = sp.Poly(sp.expand(q.to_sympy()), a, b)
    diff = before - after
    assert max((abs(float(c)) for c in diff.coeffs()), default=0.0) < 1e-11
    # and in coefficients around x1: sympy's Taylor coefficients of the same polynomial at x1
    for alpha in multi_indices(2, 4):
        d = sp.diff(before.as_expr(), a, alpha[0], b, alpha[1]).subs({a: -0.4, b: 0.9})
        assert float(q.derivative(alpha)) == pytest.approx(float(d), rel=1e-10, abs=1e-11)
    # the same polynomial: equal values everywhere
    xs = torch.randn(5, 2, dtype=D)
    torch.testing.assert_close(p(xs), q(xs), rtol=1e-10, atol=1e-10)


def test_recenter_a_batch_of_polynomials():
    model = Cubic()
    x0 = torch.randn(3, 2, dtype=D)
    x1 = torch.randn(3, 2, dtype=D)
    torch.testing.assert_close(expand(model, x0, 3).recenter(x1).coefficients, expand(model, x1, 3).coefficients,
                               rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------- terms and printing
def test_terms_are_sorted_by_magnitude_and_carry_derivatives():
    p = expand(mlp(2, out=1), torch.randn(1, 2, dtype=D), 4)
    everything = p.terms()
    assert len(everything) == p.basis.size
    mags = [abs(t.coefficient) for t in everything]
    assert mags == sorted(mags, reverse=True)
    top = p.terms(top=5)
    assert top == everything[:5]
    for t in everything:
        assert t.coefficient == pytest.approx(float(p.coefficient(t.alpha)), rel=1e-15)
        assert t.derivative == pytest.approx(float(p.derivative(t.alpha)), rel=1e-15)
    cut = 0.5 * mags[3]
    assert all(abs(t.coefficient) > cut for t in p.terms(threshold=cut))
    by_degree = [t.degree for t in p.terms(sort="degree")]
    assert by_degree == sorted(by_degree)
    with pytest.raises(ValueError, match="2 outputs per point"):
        expand(mlp(2, out=2), torch.randn(1, 2, dtype=D), 2).terms()


def test_to_sympy_matches_sympy_taylor_coefficients_of_the_closed_form():
    """f = sin(x1) exp(x2): sympy's own Taylor polynomial at x0 against the expansion of the torch function."""
    def f(x):
        return torch.sin(x[:, :1]) * torch.exp(x[:, 1:])

    a, b = sp.symbols("x1 x2", real=True)
    closed = sp.sin(a) * sp.exp(b)
    for center in ((0.0, 0.0), (0.3, -0.2)):
        order = 6
        p = expand(f, torch.tensor([center], dtype=D), order)
        expected = sum(
            sp.diff(closed, a, i, b, j).subs({a: center[0], b: center[1]}) / (sp.factorial(i) * sp.factorial(j))
            * (a - center[0]) ** i * (b - center[1]) ** j
            for i in range(order + 1) for j in range(order + 1 - i))
        diff = sp.Poly(sp.expand(p.to_sympy() - expected), a, b)
        assert max((abs(float(c)) for c in diff.coeffs()), default=0.0) < 1e-13
    # at the origin the printed polynomial is in monomials: sin(x1) exp(x2) = x1 + x1 x2 + x1 x2^2/2 - x1^3/6 ...
    p0 = expand(f, torch.zeros(1, 2, dtype=D), 3).to_sympy()
    assert sp.expand(p0 - (a + a * b + a * b ** 2 / 2 - a ** 3 / 6)) == 0


def test_latex_contains_the_right_terms():
    def f(x):
        x1, x2 = x[:, :1], x[:, 1:]
        return 1 + 2 * x1 - 3 * x1 * x2 ** 2 + 1e-6 * x2

    p = expand(f, torch.zeros(1, 2, dtype=D), 4)
    assert p.latex() == r"1 + 2\, x_{1} + 1 \cdot 10^{-6}\, x_{2} - 3\, x_{1} x_{2}^{2}"
    assert p.latex(threshold=1e-3) == r"1 + 2\, x_{1} - 3\, x_{1} x_{2}^{2}"
    assert p._repr_latex_().startswith("$1 + 2") and p._repr_latex_().endswith("$")
    shifted = expand(f, torch.tensor([[0.5, -1.0]], dtype=D), 3).latex(threshold=1e-3)
    for piece in [r"(x_{1} - 0.5)", r"(x_{2} + 1)^{2}", r"- 3\, (x_{1} - 0.5) (x_{2} + 1)^{2}", r"+ 6\, (x_{1} - 0.5)"]:
        assert piece in shifted, (piece, shifted)
    named = expand(f, torch.zeros(1, 2, dtype=D), 3, names=["u", r"\theta"]).latex(threshold=1e-3)
    assert named == r"1 + 2\, u - 3\, u \theta^{2}"


def test_select_point_and_repr():
    model = mlp(2, out=3)
    p = expand(model, torch.randn(2, 2, dtype=D), 3)
    one = p.point(1).select(2)
    assert one.coefficients.shape == (p.basis.size, 1)
    torch.testing.assert_close(one.coefficients[:, 0], p.coefficients[:, 1, 2])
    assert "n=2, order=3" in repr(p) and "batch=2" in repr(p)
    assert p.to(torch.float32).coefficients.dtype == torch.float32
