"""The collapsed basis is the image of the pure basis under summing its top block with weights: products, quotients
and recurrences computed collapsed equal the pure ones collapsed afterwards (a ring homomorphism)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hope_engine.algebra import kernels
from hope_engine.algebra.basis import make_basis, make_collapsed_basis
from hope_engine.algebra.jet import Jet, bilinear

DT = torch.float64


def _collapse(c: torch.Tensor, pure, weights) -> torch.Tensor:
    """Pure coefficients -> collapsed: the top block replaced by its weighted sum."""
    top = c[pure.block(pure.order)]
    w = torch.tensor(weights, dtype=c.dtype).reshape(-1, *([1] * (c.dim() - 1)))
    return torch.cat([c[:pure.offsets[pure.order]], (top * w).sum(0, keepdim=True)])


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 4), order=st.integers(1, 5), seed=st.integers(0, 1000))
def test_products_and_recurrences_commute_with_the_collapse(n, order, seed):
    g = torch.Generator().manual_seed(seed)
    pure = make_basis(n, order, "pure")
    weights = (torch.rand(n, generator=g, dtype=DT) * 2 - 1).tolist()
    coll = make_collapsed_basis(n, order, weights)
    a, b = (torch.randn(pure.size, 3, generator=g, dtype=DT) for _ in range(2))
    b[0] = b[0].abs() + 1
    ca, cb = _collapse(a, pure, weights), _collapse(b, pure, weights)
    for name, f in [("product", kernels.product), ("div", kernels.div)]:
        torch.testing.assert_close(f(ca, cb, coll), _collapse(f(a, b, pure), pure, weights), msg=name)
    torch.testing.assert_close(kernels.exp(ca, coll), _collapse(kernels.exp(a, pure), pure, weights))
    s, c = kernels.sin_cos(ca, coll)
    sp, cp = kernels.sin_cos(a, pure)
    torch.testing.assert_close(s, _collapse(sp, pure, weights))
    torch.testing.assert_close(c, _collapse(cp, pure, weights))
    y0 = torch.tanh(a[0])
    torch.testing.assert_close(kernels.riccati(ca, coll, y0, 1.0, 0.0, -1.0),
                               _collapse(kernels.riccati(a, pure, y0, 1.0, 0.0, -1.0), pure, weights))
    m = torch.randn(3, 3, generator=g, dtype=DT)
    mats = Jet(a.unsqueeze(-1) * m, pure), Jet(b.unsqueeze(-2) * m, pure)
    out = bilinear(torch.matmul, *mats).c
    cmats = Jet(ca.unsqueeze(-1) * m, coll), Jet(cb.unsqueeze(-2) * m, coll)
    torch.testing.assert_close(bilinear(torch.matmul, *cmats).c, _collapse(out, pure, weights))


def test_a_collapsed_basis_needs_one_weight_per_direction():
    with pytest.raises(ValueError, match="one weight per direction"):
        make_collapsed_basis(3, 2, [1.0, 2.0])


@pytest.mark.parametrize("operator", ["laplacian", "bilaplacian"])
def test_operators_differentiate_twice(operator):
    """gradcheck and gradgradcheck (finite differences) of an operator in the points: the fused second-order node
    and the univariate coefficients' node differentiate again."""
    import hope_engine

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).to(DT)
    op = getattr(hope_engine, operator)
    x = torch.randn(3, 2, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: op(net, p, create_graph=True, verify=False), (x,))
    assert torch.autograd.gradgradcheck(lambda p: op(net, p, create_graph=True, verify=False), (x,))


def test_a_weighted_second_order_operator_differentiates():
    """Unequal weights on the top degree (the weighted, not the fused-norm, path of the order-2 composition)."""
    from hope_engine import differential_operator

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).to(DT)
    x = torch.randn(3, 2, dtype=DT, requires_grad=True)
    op = {(2, 0): 1.0, (0, 2): 3.0}
    hess = torch.func.vmap(torch.func.hessian(lambda p: net(p.unsqueeze(0)).squeeze()))(x.detach())
    torch.testing.assert_close(differential_operator(net, x, op)[:, 0], hess[:, 0, 0] + 3 * hess[:, 1, 1])
    assert torch.autograd.gradgradcheck(
        lambda p: differential_operator(net, p, op, create_graph=True, verify=False), (x,))
