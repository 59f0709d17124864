"""method="hope" (the paper's unmixed back-propagation rule): exact for one hidden layer, an approximation deeper.

The rule is also checked against independent, hand-written transcriptions of the paper's formulas (partial Bell
polynomials from sympy on a two-hidden-layer MLP; dense conv/pool matrices raised to the k-th power, layer by layer, on
a conv-avgpool-tanh x2 CNN), so the deviation the deeper tests see is the rule's, not a bug.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hope_engine import TaylorPolynomial, UnsupportedOperationError, expand
from hope_engine.methods.baselines import floor, floor_inputs, nested_autograd

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


def conv_pool_tanh(pool: nn.Module, x0: torch.Tensor) -> nn.Module:
    model = nn.Sequential(nn.Conv2d(1, 3, 3), pool, nn.Tanh(), nn.Flatten(), nn.LazyLinear(1)).to(D)
    model(x0)
    return model.eval()


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2), nn.Identity()], ids=["max", "none"])
@pytest.mark.parametrize("terms", ["total", "pure"])
def test_one_hidden_layer_conv(pool, terms):
    # max pooling selects single entries (a 0/1 matrix, its own elementwise power): Conv2d stays the one linear layer
    x0 = torch.randn(1, 1, 8, 8, dtype=D)
    model = conv_pool_tanh(pool, x0)
    variables = None if terms == "pure" else [0, 9, 18, 27, 36]
    exact, hope = both(model, x0, 5 if terms == "pure" else 4, terms=terms, variables=variables)
    assert rel(hope.derivatives(), exact.derivatives()) < 1e-10


def test_conv_then_avgpool_is_two_layers_for_the_rule():
    # the paper applies its rule to AvgPool2d on its own ((P W)^{o k} != P^{o k} W^{o k}): exact at order 1 only
    x0 = torch.randn(1, 1, 8, 8, dtype=D)
    exact, hope = both(conv_pool_tanh(nn.AvgPool2d(2), x0), x0, 4, terms="pure")
    ex, ho = exact.derivatives().reshape(-1), hope.derivatives().reshape(-1)
    assert rel(ho[exact.basis.block(1)], ex[exact.basis.block(1)]) < 1e-10
    assert rel(ho[exact.basis.block(4)], ex[exact.basis.block(4)]) > 1e-2


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


class Standardize(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.register_buffer("mu", torch.randn(n, dtype=D))
        self.register_buffer("sigma", torch.rand(n, dtype=D) + 0.5)

    def forward(self, x):
        return (2.0 * (x - self.mu) / self.sigma).flatten(1)


def test_input_standardization_before_the_first_layer():
    # shifts and scalings of single entries compose with the first Linear without changing its powers: still exact,
    # mixed partials included
    model = nn.Sequential(Standardize(3), nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 1)).to(D).eval()
    x0 = torch.randn(1, 3, dtype=D)
    exact, hope = both(model, x0, 5)
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
    model = nn.Sequential(nn.Linear(2, 4), nn.Softmax(-1), nn.LayerNorm(4), nn.Linear(4, 1)).to(D).eval()
    with pytest.raises(UnsupportedOperationError, match=r"Softmax") as info:
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


# ------------------------------------------------------------------------------- a changed model is re-traced
class SineLayer(nn.Module):
    """SIREN's sin(w0 x), with w0 and the activation plain Python attributes (not parameters)."""

    def __init__(self, w0: float = 1.0):
        super().__init__()
        self.w0 = w0
        self.act = torch.sin

    def forward(self, x):
        return self.act(self.w0 * x)


@pytest.mark.parametrize("change", ["w0", "act"])
def test_changed_attribute_is_not_served_from_a_stale_graph(change):
    import copy

    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 6), SineLayer(), nn.Linear(6, 1)).to(D).eval()
    x0 = torch.randn(1, 2, dtype=D)
    before = expand(model, x0, 4, method="hope")
    if change == "w0":
        model[1].w0 = 3.0
    else:
        model[1].act = torch.cos
    after = expand(model, x0, 4, method="hope")
    fresh = expand(copy.deepcopy(model), x0, 4, method="hope")
    assert torch.allclose(after.coefficients, fresh.coefficients, rtol=1e-12, atol=1e-14)
    assert rel(after.coefficients, before.coefficients) > 1e-2
    # one hidden layer: the rule is exact, so the changed model's exact expansion agrees too
    assert rel(after.derivatives(), expand(model, x0, 4).derivatives()) < 1e-10


# ------------------------------------------------------------- the per-layer rule on a CNN, written out by hand
def _conv_matrix(weight: torch.Tensor, size: int, padding: int) -> torch.Tensor:
    """Dense matrix of a stride-1 Conv2d on a (C, size, size) input, (Co*Ho*Wo, C*size*size), by plain loops."""
    co, ci, kh, kw = weight.shape
    ho, wo = size + 2 * padding - kh + 1, size + 2 * padding - kw + 1
    m = torch.zeros(co * ho * wo, ci * size * size, dtype=D)
    for o in range(co):
        for i in range(ho):
            for j in range(wo):
                for c in range(ci):
                    for a in range(kh):
                        for b in range(kw):
                            ii, jj = i + a - padding, j + b - padding
                            if 0 <= ii < size and 0 <= jj < size:
                                m[(o * ho + i) * wo + j, (c * size + ii) * size + jj] += weight[o, c, a, b]
    return m


def _avgpool_matrix(channels: int, size: int, s: int) -> torch.Tensor:
    """Dense matrix of AvgPool2d(s) on a (channels, size, size) input: entries 1/s^2."""
    out = size // s
    m = torch.zeros(channels * out * out, channels * size * size, dtype=D)
    for c in range(channels):
        for i in range(out):
            for j in range(out):
                for a in range(s):
                    for b in range(s):
                        m[(c * out + i) * out + j, (c * size + i * s + a) * size + j * s + b] = 1 / s ** 2
    return m


def _tanh_derivatives(z: torch.Tensor, order: int) -> list[torch.Tensor]:
    """[tanh^(m)(z) for m = 1..order], from d/dz P(T) = P'(T) (1 - T^2) with T = tanh z (P as coefficient lists)."""
    t = torch.tanh(z)
    poly, out = [0.0, 1.0], []
    for _ in range(order):
        dp = [i * poly[i] for i in range(1, len(poly))]
        poly = [0.0] * (len(dp) + 2)
        for i, c in enumerate(dp):
            poly[i] += c
            poly[i + 2] -= c
        out.append(sum(c * t ** i for i, c in enumerate(poly)))
    return out


def _faa_di_bruno_reference(v: list[torch.Tensor], d: list[torch.Tensor]) -> list[torch.Tensor]:
    """v_k(u) = sum_j v_j B_{k,j}(d_1, d_2, ...), B by B_{n,k} = sum_i C(n-1, i-1) d_i B_{n-i,k-1}."""
    order = len(v)
    B = [[torch.zeros_like(d[0]) for _ in range(order + 1)] for _ in range(order + 1)]
    B[0][0] = torch.ones_like(d[0])
    for n in range(1, order + 1):
        for k in range(1, n + 1):
            B[n][k] = sum(math.comb(n - 1, i - 1) * d[i - 1] * B[n - i][k - 1] for i in range(1, n - k + 2))
    return [sum(v[j - 1] * B[k][j] for j in range(1, k + 1)) for k in range(1, order + 1)]


def _paper_rule_cnn(model: nn.Sequential, x0: torch.Tensor, order: int, basis, variables: list[int]) -> torch.Tensor:
    """The paper's rule layer by layer (every linear layer through its elementwise k-th power, tanh by Faa di Bruno),
    the mixed partials formed at the first layer: d^a y = sum_i v_|a|(z)_i prod_j W_ij^{a_j}."""
    conv1, pool1, _, conv2, pool2, _, _, lin = model
    c1 = conv1.weight.shape[0]
    M1 = _conv_matrix(conv1.weight.detach(), 10, 0)
    P1 = _avgpool_matrix(c1, 8, 2)
    M2 = _conv_matrix(conv2.weight.detach(), 4, 1)
    P2 = _avgpool_matrix(conv2.weight.shape[0], 4, 2)
    x = x0.reshape(-1)
    z1 = P1 @ (M1 @ x + conv1.bias.detach().repeat_interleave(64))
    z2 = P2 @ (M2 @ torch.tanh(z1) + conv2.bias.detach().repeat_interleave(16))
    y = lin.weight.detach()[0] @ torch.tanh(z2) + lin.bias.detach()[0]
    assert torch.allclose(y, model(x0).reshape(()), rtol=1e-12)  # the dense transcription is the network

    def through(W: torch.Tensor, v: list[torch.Tensor]) -> list[torch.Tensor]:
        return [(W.T ** k) @ v[k - 1] for k in range(1, order + 1)]

    v = through(lin.weight.detach(), [torch.ones(1, dtype=D)] + [torch.zeros(1, dtype=D)] * (order - 1))
    v = through(M2, through(P2, _faa_di_bruno_reference(v, _tanh_derivatives(z2, order))))
    v = through(P1, _faa_di_bruno_reference(v, _tanh_derivatives(z1, order)))   # v_k at the first conv's output
    out = torch.zeros(basis.size, dtype=D)
    out[0] = y
    for m, a in enumerate(basis.multi_indices()):
        k = sum(a)
        if k:
            prod = torch.ones(M1.shape[0], dtype=D)
            for j, aj in zip(variables, a):
                prod = prod * M1[:, j] ** aj
            out[m] = (v[k - 1] * prod).sum()
    return out


def small_cnn(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2), nn.Tanh(), nn.Conv2d(2, 2, 3, padding=1),
                         nn.AvgPool2d(2), nn.Tanh(), nn.Flatten(), nn.Linear(8, 1)).to(D).eval()


@pytest.mark.parametrize("terms", ["pure", "total"])
def test_rule_matches_the_papers_formulas_layer_by_layer_on_a_cnn(terms):
    model = small_cnn()
    x0 = torch.randn(1, 1, 10, 10, dtype=D)
    variables = list(range(100)) if terms == "pure" else [0, 11, 45, 57, 99]
    hope = expand(model, x0, 4, method="hope", terms=terms, variables=variables)
    ref = _paper_rule_cnn(model, x0, 4, hope.basis, variables)
    assert rel(hope.derivatives().reshape(-1), ref) < 1e-10


def test_linear_after_linear_is_its_own_layer():
    # x -> Linear -> Linear -> tanh -> Linear: the first Linear forms the mixed partials, the second passes v_k back
    # through its own W^{o k}, as the paper does layer by layer
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1)).to(D).eval()
    x0 = torch.randn(1, 2, dtype=D)
    hope = expand(model, x0, 5, method="hope")
    W1, W2, W3 = (model[i].weight.detach() for i in (0, 1, 3))
    z = model[:2](x0)[0].detach()
    v = _faa_di_bruno_reference([W3[0]] + [torch.zeros(3, dtype=D)] * 4, _tanh_derivatives(z, 5))
    v = [(W2.T ** k) @ v[k - 1] for k in range(1, 6)]
    ref = [float(model(x0).detach())] + [float((v[sum(a) - 1] * W1[:, 0] ** a[0] * W1[:, 1] ** a[1]).sum())
                                for a in hope.basis.multi_indices()[1:]]
    assert rel(hope.derivatives().reshape(-1), torch.tensor(ref, dtype=D)) < 1e-12
    assert rel(hope.derivatives(), expand(model, x0, 5).derivatives()) > 1e-3  # (W2 W1)^{o k} is not that


def test_backward_table_refuses_a_second_rule_for_an_op():
    from hope_engine.methods import paper_rule as hope_rule

    assert hope_rule.BACKWARD[torch.ops.aten.convolution] is hope_rule._convolution
    with pytest.raises(ValueError, match="registered twice"):
        hope_rule._register({torch.ops.aten.convolution}, hope_rule._transpose)
    assert hope_rule.BACKWARD[torch.ops.aten.convolution] is hope_rule._convolution


@pytest.mark.parametrize("pool", [nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False),
                                  nn.AvgPool2d(3, stride=2, padding=1), nn.AvgPool2d(2, divisor_override=3)],
                         ids=["own-count", "with-pad", "override"])
def test_avgpool_entries_are_raised_to_the_kth_power(pool):
    # tanh -> AvgPool -> tanh -> Linear: v_k passes through the pooling matrix P (its entries from autograd here)
    # raised elementwise to the k-th power; at the input A is the identity, so the pure derivatives are v_k itself
    torch.manual_seed(5)
    model = nn.Sequential(nn.Tanh(), pool, nn.Tanh(), nn.Flatten(), nn.LazyLinear(1)).to(D)
    x0 = torch.randn(1, 1, 5, 5, dtype=D)
    model(x0)
    model.eval()
    hope = expand(model, x0, 4, method="hope", terms="pure")
    h = torch.tanh(x0)
    P = torch.autograd.functional.jacobian(pool, h).reshape(-1, 25)
    z = (P @ h.reshape(-1)).detach()
    v = _faa_di_bruno_reference([model[4].weight.detach()[0]] + [torch.zeros(z.numel(), dtype=D)] * 3,
                                _tanh_derivatives(z, 4))
    v = _faa_di_bruno_reference([(P.T ** k) @ v[k - 1] for k in range(1, 5)],
                                _tanh_derivatives(x0.reshape(-1), 4))
    got = hope.derivatives()[1:].reshape(4, 25)          # pure basis: order by order, variable by variable
    assert rel(got, torch.stack(v)) < 1e-12


# ops the rule takes from their declarations alone (a "move" op: its 0/1 matrix; a pointwise op in a group of one
# value): between a first layer and one activation, the rule is exact
DECLARED = {
    "reflection_pad1d": lambda z: F.pad(z.reshape(1, 2, 4), (2, 1), mode="reflect"),
    "replication_pad2d": lambda z: F.pad(z.reshape(1, 1, 2, 4), (1, 1, 1, 1), mode="replicate"),
    "upsample_nearest1d": lambda z: F.interpolate(z.reshape(1, 2, 4), scale_factor=2, mode="nearest"),
    "unfold": lambda z: z.reshape(8).unfold(0, 3, 2),
    "pixel_unshuffle": lambda z: F.pixel_unshuffle(z.reshape(1, 2, 2, 2), 2),
    "im2col": lambda z: F.unfold(z.reshape(1, 2, 2, 2), 2),
    "slice_scatter": lambda z: torch.slice_scatter(z.reshape(2, 4), z.reshape(2, 4)[:, :2], 1, 2, 4),
    "as_strided": lambda z: z.reshape(8).as_strided((3, 3), (2, 1)),
    "atan2 of one value": lambda z: torch.atan2(z, 1.0 + z * z),
    "masked_fill of one value": lambda z: z.masked_fill(z > 0.3, 0.2) / (1 + z.abs()),
}


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_ops_taken_from_their_declarations_are_exact_on_one_hidden_layer(name):
    torch.manual_seed(2)
    first = nn.Linear(3, 8).to(D)

    def f(x):
        u = torch.tanh(DECLARED[name](first(x)))
        return (u * torch.linspace(0.3, 1.2, u.numel(), dtype=D).reshape(u.shape)).sum().reshape(1, 1)

    exact, hope = both(f, torch.tensor([[0.3, -0.2, 0.5]], dtype=D), 4)
    assert rel(hope.derivatives(), exact.derivatives()) < 1e-10


def test_op_families_come_from_the_declarations():
    from hope_engine.methods import paper_rule
    from hope_engine.ops.spec import SPECS

    aten = torch.ops.aten
    for op, spec in SPECS.items():
        assert (op in paper_rule.RESHAPES) == (spec.entries == "reshape"), op
        if spec.linear == "move":
            assert op in paper_rule.BACKWARD, op
        if spec.entries is not None:
            assert op in paper_rule.MOVES, op
    # the reshapes, 0/1 matrices and first-layer ops the rule had by hand before they were declared
    assert {aten.view, aten.reshape, aten.flatten, aten.clone, aten._to_copy} <= paper_rule.RESHAPES
    assert {aten.permute, aten.expand, aten.cat, aten.gather, aten.sum, aten.max_pool2d_with_indices,
            aten.constant_pad_nd} <= paper_rule.STRUCTURAL
    assert {aten.transpose, aten.slice, aten.select, aten.flip, aten.neg} <= paper_rule.MOVES
    assert not {aten.expand, aten.cat, aten.diagonal, aten.detach} & paper_rule.MOVES
