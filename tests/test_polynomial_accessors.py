"""The public accessors callers use instead of re-deriving them: outputs per point, scalar selection, replace,
partial sums along points, term LaTeX."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hope_engine import expand

D = torch.float64


@pytest.fixture(scope="module")
def batched():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 3)).to(D)
    return expand(net, torch.rand(4, 2, dtype=D) - 0.5, 4)


def test_outputs_per_point(batched):
    assert batched.outputs_per_point == 3
    assert batched.select(1).outputs_per_point == 1


def test_scalar_selects_the_point_it_is_asked_for(batched):
    for i in range(4):
        s = batched.scalar(output=2, point=i)
        assert not s.batched and s.coefficients.shape == (batched.basis.size,)
        torch.testing.assert_close(s.coefficients, batched.coefficients[:, i, 2])
        torch.testing.assert_close(batched.scalar_coefficients(2, point=i), batched.coefficients[:, i, 2])
        assert batched.latex(output=2, point=i) == s.latex()
    with pytest.raises(ValueError, match="3 outputs per point"):
        batched.scalar()
    with pytest.raises(IndexError, match="point 9"):
        batched.scalar(0, point=9)


def test_partial_sums_are_the_truncations(batched):
    x = batched.center + 0.1
    sums = batched.partial_sums(x)
    assert sums.shape == (batched.order + 1, *batched(x).shape)
    for k in range(batched.order + 1):
        torch.testing.assert_close(sums[k], batched.truncate(k)(x))


def test_replace_and_term_latex(batched):
    s = batched.scalar(0, point=0)
    doubled = s.replace(coefficients=2 * s.coefficients)
    torch.testing.assert_close(doubled.coefficients, 2 * s.coefficients)
    term = s.terms(top=1)[0]
    assert s.term_latex(term.alpha, term.coefficient) in s.latex()


@pytest.mark.parametrize("typed", ["0.1", "-0.7", "1e-05", "3.14159", "0.3333333"])
def test_a_float32_point_reads_in_sympy_as_typed(typed):
    """sympy of a float32 model at x0 = 0.1 shows (x - 0.1), not (x - 0.100000001490116): the shortest decimal that is
    the same float32; a float64 point keeps Python's repr."""
    import sympy as sp

    poly = expand(torch.sin, torch.tensor([float(typed)]), 2, names=["x"])
    x = sp.Symbol("x", real=True)
    shift = poly.to_sympy().atoms(sp.Add)
    assert any(a == x - sp.Float(typed) or a == x + sp.Float(typed.lstrip("-")) for a in shift), shift
    exact = expand(torch.sin, torch.tensor([0.1], dtype=D), 2, names=["x"]).to_sympy()
    assert any(a == x - sp.Float(0.1) for a in exact.atoms(sp.Add))
