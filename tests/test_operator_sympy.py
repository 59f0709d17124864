"""differential_operator takes its operator as a sympy expression of derivatives too: the same as the dict form,
which is checked against torch.func in test_operators.py; here against a closed form."""

from __future__ import annotations

import pytest
import sympy as sp
import torch

from hope_engine import ExpansionError, differential_operator, laplacian


def test_sympy_operator_on_a_closed_form():
    x, y = sp.symbols("x y")
    u = sp.Function("u")(x, y)
    op = 3 * u.diff(x, 1, y, 2) - u + u.diff(x, 2) + u.diff(y, 2)
    pts = torch.tensor([[0.3, -0.7], [1.1, 0.4]], dtype=torch.float64)

    def f(p):  # sin(x) exp(y): u_xyy = cos x e^y, u_xx + u_yy = 0
        return torch.sin(p[:, 0]) * torch.exp(p[:, 1])

    want = 3 * torch.cos(pts[:, 0]) * torch.exp(pts[:, 1]) - f(pts)
    torch.testing.assert_close(differential_operator(f, pts, op, names=["x", "y"]), want)
    torch.testing.assert_close(laplacian(f, pts), torch.zeros(2, dtype=torch.float64), atol=1e-14, rtol=0)


def test_sympy_terms_that_are_not_derivatives_are_refused():
    x, y = sp.symbols("x y")
    u = sp.Function("u")(x, y)
    pts = torch.zeros(1, 2, dtype=torch.float64)
    with pytest.raises(ExpansionError, match="derivative of the function"):
        differential_operator(lambda p: p.sum(-1), pts, u.diff(x) + sp.sin(x), names=["x", "y"])
    with pytest.raises(ExpansionError, match="not one of the inputs"):
        differential_operator(lambda p: p.sum(-1), pts, u.diff(x), names=["a", "b"])
