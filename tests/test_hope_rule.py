"""method="hope" (the paper's unmixed back-propagation rule): exact for one hidden layer, an approximation deeper.

The rule is also checked against an independent, hand-written transcription of the paper's formulas (partial Bell
polynomials from sympy) on a two-hidden-layer network, so the deviation the deeper tests see is the rule's, not a bug.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hope_engine import TaylorPolynomial, UnsupportedOperationError, expand
from hope_engine.baselines import floor, floor_inputs, nested_autograd

D = torch.float64


class Sine(nn.Module):
    def forward(self, x):
        return torch.sin(x)


def one_hidden(act: nn.Module, n: int = 3, width: int = 8, out: int = 1) -> nn.Module:
    return nn.Sequential(nn.Linear(n, width), act, nn.Linear(width, out)).to(D).eval()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def both(model, x0, order, **kw) -> tuple[TaylorPolynomial, TaylorPolynomial]:
    return expand(model, x0, order, **kw), expand(model, x0, order, method="hope", **kw)


ACTIVATIONS = [Sine(), nn.Tanh(), nn.Sigmoid(), nn.ELU(), nn.GELU(), nn.GELU(approximate="tanh"), nn.LeakyReLU(0.2),
               nn.ReLU()]


@pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: type(a).__name__ + getattr(a, "approximate", ""))
@pytest.mark.parametrize("terms", ["total", "pure"])
def test_one_hidden_layer_is_exact(act, terms):
    model = one_hidden(act)
    x0 = torch.randn(1, 3, dtype=D)
    exact, hope = both(model, x0, 6, terms=terms)
    assert hope.method == "hope"
    assert hope.basis is exact.basis
    assert hope.coefficients.shape == exact.coefficients.shape
    assert rel(hope.derivatives(), exact.derivatives()) < 1e-10


@pytest.mark.parametrize("terms", ["total", "pure"])
def test_one_hidden_layer_batch_and_outputs(terms):
    model = one_hidden(nn.Tanh(), out=3)
    x0 = torch.randn(4, 3, dtype=D)
    exact, hope = both(model, x0, 5, terms=terms)
    assert hope.coefficients.shape == exact.coefficients.shape == (hope.basis.size, 4, 3)
    assert rel(hope.coefficients, exact.coefficients) < 1e-10
    e1, h1 = both(model, x0, 5, terms=terms, output=2)
    assert h1.coefficients.shape == e1.coefficients.shape == (h1.basis.size, 4)
    assert rel(h1.coefficients, e1.coefficients) < 1e-10


def test_one_hidden_layer_variables_and_names():
    model = one_hidden(Sine(), n=4)
    x0 = torch.randn(1, 4, dtype=D)
    exact, hope = both(model, x0, 4, variables=[1, 3], names=["a", "b"])
    assert hope.names == ["a", "b"] and hope.n == 2
    assert rel(hope.coefficients, exact.coefficients) < 1e-10
    x = x0 + 0.01
    assert torch.allclose(hope(x), exact(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pool", [nn.AvgPool2d(2), nn.MaxPool2d(2), nn.Identity()], ids=["avg", "max", "none"])
@pytest.mark.parametrize("terms", ["total", "pure"])
def test_one_hidden_layer_conv(pool, terms):
    # Conv2d (+ pooling) is one linear map before the single nonlinearity: the rule uses its exact Jacobian there
    model = nn.Sequential(nn.Conv2d(1, 3, 3), pool, nn.Tanh(), nn.Flatten(), nn.LazyLinear(1)).to(D)
    x0 = torch.randn(1, 1, 8, 8, dtype=D)
    model(x0)
    model.eval()
    variables = None if terms == "pure" else [0, 9, 18, 27, 36]
    exact, hope = both(model, x0, 5 if terms == "pure" else 4, terms=terms, variables=variables)
    assert rel(hope.derivatives(), exact.derivatives()) < 1e-10


def test_one_hidden_layer_functional_ops():
    # transpose, bmm with a constant, mul by a constant, add, pow and reciprocal as functions
    torch.manual_seed(1)
    w = torch.randn(2, 3, 5, dtype=D)

    def f(x):                                          # x: (1, 6)
        h = torch.bmm(x.reshape(1, 2, 3).transpose(0, 1).transpose(0, 1).reshape(2, 1, 3), w)   # (2, 1, 5)
        h = 0.5 * h + 0.25
        u = torch.sigmoid(h) + torch.reciprocal(2.0 + h) - 0.3 * torch.pow(h, 3)
        return u.sum(dim=(0, 2)) * 2.0

    x0 = torch.randn(1, 6, dtype=D)
    exact, hope = both(f, x0, 5)
    assert rel(hope.derivatives(), exact.derivatives()) < 1e-10


def test_dropout_eval_flatten_unflatten_view():
    model = nn.Sequential(nn.Linear(2, 12), nn.Dropout(0.5), nn.Unflatten(1, (3, 4)), nn.Flatten(), Sine(),
                          nn.Linear(12, 1)).to(D).eval()
    x0 = torch.randn(1, 2, dtype=D)
    exact, hope = both(model, x0, 6)
    assert rel(hope.derivatives(), exact.derivatives()) < 1e-10


def test_matches_nested_autograd_one_hidden():
    model = one_hidden(nn.Tanh(), n=2)
    x0 = torch.randn(1, 2, dtype=D)
    hope = expand(model, x0, 5, method="hope")
    basis, ref = nested_autograd(model, x0, 5)
    assert basis is hope.basis
    assert rel(hope.derivatives().reshape(-1), ref.reshape(-1)) < 1e-10


def deep_sine(depth: int, n: int = 1, width: int = 32, gain: float = 2.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(n, width), Sine()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), Sine()]
    model = nn.Sequential(*layers, nn.Linear(width, 1)).to(D).eval()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(gain)
    return model


@pytest.mark.parametrize("n", [1, 2])
def test_deeper_nets_deviate(n):
    """The documented deviation: 3 hidden Sine layers, order >= 4 differs substantially; order 1 agrees."""
    model = deep_sine(3, n=n)
    x0 = torch.full((1, n), 0.1, dtype=D)
    exact, hope = both(model, x0, 6)
    ex, ho = exact.derivatives().reshape(-1), hope.derivatives().reshape(-1)
    first = exact.basis.block(1)
    assert rel(ho[first], ex[first]) < 1e-10
    for k in (4, 5, 6):
        blk = exact.basis.block(k)
        assert rel(ho[blk], ex[blk]) > 0.05, f"order {k} agrees unexpectedly"
    # the exact method is the one that agrees with nested autograd
    _, ref = nested_autograd(model, x0, 6)
    assert rel(ex, ref.reshape(-1)) < 1e-10
    assert rel(ho, ref.reshape(-1)) > 0.05


@torch.no_grad()
def _bell_reference(model: nn.Sequential, x0: float, order: int) -> list[float]:
    """The paper's rule for a 1-input MLP with sin activations, written out with sympy's partial Bell polynomials."""
    sympy = pytest.importorskip("sympy")
    lin = [m for m in model if isinstance(m, nn.Linear)]
    # forward: pre-activations z_l of every hidden layer
    zs, a = [], torch.tensor([[x0]], dtype=D)
    for m in lin[:-1]:
        z = m(a)
        zs.append(z[0])
        a = torch.sin(z)
    K = order
    # v[k-1] = d^k y / d a^k (unmixed) at the last hidden activations
    W = lin[-1].weight.detach()[0]
    v = [W if k == 1 else torch.zeros_like(W) for k in range(1, K + 1)]
    for li in range(len(zs) - 1, -1, -1):
        z = zs[li]
        derivs = [torch.sin(z + m * math.pi / 2) for m in range(K + 1)]    # sin^(m)(z)
        vz = []
        for k in range(1, K + 1):
            total = torch.zeros_like(z)
            for j in range(1, k + 1):
                syms = sympy.symbols(f"d1:{k - j + 2}")
                bell = sympy.bell(k, j, syms)
                fn = sympy.lambdify(syms, bell, "math")
                vals = [fn(*[float(derivs[m][i]) for m in range(1, k - j + 2)]) for i in range(z.numel())]
                total = total + v[j - 1] * torch.tensor(vals, dtype=D)
            vz.append(total)
        Wl = lin[li].weight.detach()
        v = [(Wl.T ** k) @ vz[k - 1] for k in range(1, K + 1)]           # (W^T)^{o k} v_k
    return [float(vk[0]) for vk in v]


def test_rule_matches_the_papers_formulas_on_two_hidden_layers():
    model = deep_sine(2, width=6, gain=1.5)
    ref = _bell_reference(model, 0.2, 5)
    hope = expand(model, torch.tensor([[0.2]], dtype=D), 5, method="hope")
    got = hope.derivatives()[1:].reshape(-1)
    assert torch.allclose(got, torch.tensor(ref, dtype=D), rtol=1e-10, atol=1e-12)
    assert rel(got, expand(model, torch.tensor([[0.2]], dtype=D), 5).derivatives()[1:].reshape(-1)) > 1e-3


def test_order_zero_and_constant_output():
    model = one_hidden(nn.Tanh())
    x0 = torch.randn(1, 3, dtype=D)
    p = expand(model, x0, 0, method="hope")
    assert torch.allclose(p.coefficients[0], model(x0))
    q = expand(lambda x: torch.ones(2, dtype=D), x0, 3, method="hope")
    assert torch.equal(q.coefficients[1:], torch.zeros_like(q.coefficients[1:]))


def test_unsupported_layers_are_named():
    model = nn.Sequential(nn.Linear(2, 4), nn.Softplus(), nn.LayerNorm(4), nn.Linear(4, 1)).to(D).eval()
    with pytest.raises(UnsupportedOperationError, match=r"Softplus") as info:
        expand(model, torch.zeros(1, 2, dtype=D), 3, method="hope")
    assert "LayerNorm" in str(info.value)
    assert "method='exact'" in str(info.value)


def test_product_of_two_network_quantities_is_unsupported():
    def f(x):
        return (torch.sin(x[:, :1]) * torch.cos(x[:, 1:])).sum(dim=1)

    with pytest.raises(UnsupportedOperationError, match="mul"):
        expand(f, torch.zeros(1, 2, dtype=D), 3, method="hope")


def test_float32():
    model = one_hidden(Sine()).float()
    x0 = torch.randn(1, 3)
    exact, hope = both(model, x0, 4)
    assert hope.coefficients.dtype == torch.float32
    assert rel(hope.coefficients, exact.coefficients) < 1e-4


def test_floor_baseline():
    model = one_hidden(Sine())
    x0 = torch.randn(2, 3, dtype=D)
    xs = floor_inputs(x0, 5)
    assert xs.shape == (10, 3)
    assert floor(model, x0, 5).shape == (10, 1)


def test_nested_autograd_subset_and_pure():
    model = one_hidden(nn.Tanh(), n=4)
    x0 = torch.randn(1, 4, dtype=D)
    basis, ref = nested_autograd(model, x0, 4, terms="pure", variables=[0, 2])
    p = expand(model, x0, 4, terms="pure")
    for m, a in enumerate(basis.multi_indices()):
        full = (a[0], 0, a[1], 0)
        assert torch.allclose(p.derivative(full)[0], ref[m, 0], rtol=1e-10, atol=1e-12)
