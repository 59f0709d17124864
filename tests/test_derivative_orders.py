"""``p.derivative(alpha)`` at any order: exact, no overflow, and the same as the matching ``p.derivatives()`` entry.

alpha! passes 2**64 at order 21 and the float64 range at order 171, so the factorial must never be turned into a
machine number whole; these tests compare against closed forms (every derivative of exp is exp) and ``derivatives()``.
"""

from __future__ import annotations

import math

import pytest
import torch

from hope_engine import expand

D = torch.float64


def _exp_sum(x: torch.Tensor) -> torch.Tensor:
    """exp(x1 + 2 x2): d^(a, b) = 2^b exp(x1 + 2 x2)."""
    return torch.exp(x[:, :1] + 2 * x[:, 1:])


@pytest.mark.parametrize("order", [21, 25, 40])
def test_every_derivative_of_exp_is_exp(order):
    x0 = torch.tensor([[0.3]], dtype=D)
    p = expand(torch.exp, x0, order)
    table = p.derivatives()
    for k in range(order + 1):
        got = p.derivative((k,))
        assert got.shape == (1, 1) and got.dtype == D
        assert float(got) == pytest.approx(math.exp(0.3), rel=1e-12)
        torch.testing.assert_close(got, table[k], rtol=1e-13, atol=0)


def test_mixed_partials_at_order_25_match_the_closed_form_and_derivatives():
    x0 = torch.tensor([[0.1, -0.2]], dtype=D)
    p = expand(_exp_sum, x0, 25)
    table = p.derivatives()
    e = math.exp(0.1 - 0.4)
    for m, alpha in enumerate(p.basis.multi_indices()):
        got = p.derivative(alpha)
        assert float(got) == pytest.approx(2 ** alpha[1] * e, rel=1e-11)
        torch.testing.assert_close(got, table[m], rtol=1e-13, atol=0)


def test_derivatives_past_the_float64_factorial_range_do_not_overflow():
    """171! overflows float64, but c * 171! = exp(x0) is an ordinary number: it comes out finite and right."""
    x0 = torch.tensor([[-0.5]], dtype=D)
    p = expand(torch.exp, x0, 172)
    for k in (150, 170, 171, 172):
        assert float(p.derivative((k,))) == pytest.approx(math.exp(-0.5), rel=1e-10)


def test_float32_and_batched_polynomials_keep_their_dtype_and_shape():
    x0 = torch.tensor([[0.2, 0.1], [-0.3, 0.4]], dtype=torch.float32)
    p = expand(_exp_sum, x0, 22)
    table = p.derivatives()
    for alpha in [(22, 0), (0, 22), (11, 11), (21, 1)]:
        got = p.derivative(alpha)
        assert got.dtype == torch.float32 and got.shape == (2, 1)
        torch.testing.assert_close(got, table[p.basis.position(alpha)], rtol=1e-5, atol=0)
        want = torch.tensor([[2.0 ** alpha[1] * math.exp(x + 2 * y)] for x, y in x0.tolist()])
        torch.testing.assert_close(got, want, rtol=1e-4, atol=0)


@pytest.mark.parametrize("kind", ["total", "pure"])
def test_basis_factorials_are_the_nearest_floats_to_the_integers(kind):
    """alpha! came from exp(lgamma) and was off by a few units in the last place from 17! on (106 of the 325
    two-variable multi-indices of degree <= 24), so derivatives() disagreed with derivative()."""
    from hope_engine.algebra.basis import make_basis

    basis = make_basis(2 if kind == "total" else 3, 24 if kind == "total" else 30, kind)
    exact = [math.prod(math.factorial(v) for v in a) for a in basis.multi_indices()]
    got = basis.factorials().tolist()
    for alpha, g, e in zip(basis.multi_indices(), got, exact):
        if sum(1 for v in alpha if v) <= 1:
            assert g == float(e), alpha  # one factorial: correctly rounded
        else:
            assert abs(g - e) <= 2 * math.ulp(float(e)), alpha  # a product of two: at most one rounding each
