"""Property tests: random architectures at random points against nested autograd (hypothesis)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.autograd import assert_matches_autograd
from torch import nn

from hope_engine import expand

D = torch.float64

SMOOTH = {
    "tanh": torch.tanh, "sigmoid": torch.sigmoid, "sin": torch.sin, "cos": torch.cos,
    "softplus": nn.functional.softplus, "gelu": nn.functional.gelu, "silu": nn.functional.silu,
    "mish": nn.functional.mish, "gelu_tanh": lambda u: nn.functional.gelu(u, approximate="tanh"),
    "elu": nn.functional.elu, "square": torch.square, "atan": torch.atan, "exp_scaled": lambda u: torch.exp(0.5 * u),
}


class RandomNet(nn.Module):
    """Linear layers with random activations, optional residual connections and a product of two branches."""

    def __init__(self, n: int, widths: list[int], acts: list[str], out: int, residual: bool, product: bool,
                 seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        sizes = [n, *widths]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.head = nn.Linear(sizes[-1], out)
        self.gate = nn.Linear(n, out) if product else None
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.7)
        self.acts, self.residual = acts, residual

    def forward(self, x):
        h = x
        for layer, act in zip(self.layers, self.acts):
            z = SMOOTH[act](layer(h))
            h = h + z if self.residual and z.shape == h.shape else z
        y = self.head(h)
        if self.gate is not None:
            y = y * torch.sigmoid(self.gate(x)) + y / (2.0 + torch.tanh(self.gate(x)))
        return y


@st.composite
def architectures(draw):
    n = draw(st.integers(1, 3))
    depth = draw(st.integers(1, 3))
    width = draw(st.integers(1, 4))
    widths = [width] * depth if draw(st.booleans()) else [draw(st.integers(1, 4)) for _ in range(depth)]
    acts = [draw(st.sampled_from(sorted(SMOOTH))) for _ in range(depth)]
    out = draw(st.integers(1, 2))
    net = RandomNet(n, widths, acts, out, residual=draw(st.booleans()), product=draw(st.booleans()),
                    seed=draw(st.integers(0, 2**31 - 1))).to(D).eval()
    batch = draw(st.integers(1, 2))
    coords = st.floats(-1.5, 1.5, allow_nan=False, allow_infinity=False)
    x0 = torch.tensor([[draw(coords) for _ in range(n)] for _ in range(batch)], dtype=D)
    order = draw(st.integers(1, 6 if n == 1 else (5 if n == 2 else 3)))
    terms = draw(st.sampled_from(["total", "pure"]))
    return net, x0, order, terms


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(architectures())
def test_random_architectures_match_nested_autograd(case):
    net, x0, order, terms = case
    p = assert_matches_autograd(net, x0, order, terms=terms, rtol=1e-10)
    # truncation is a prefix: the lower orders are the same numbers
    low = expand(net, x0, order - 1, terms=terms)
    torch.testing.assert_close(p.truncate(order - 1).coefficients, low.coefficients, rtol=1e-12, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 3), order=st.integers(0, 5), seed=st.integers(0, 2**31 - 1))
def test_pure_basis_is_the_unmixed_part_of_the_total_basis(n, order, seed):
    net = RandomNet(n, [3, 3], ["tanh", "sin"], 1, residual=False, product=True, seed=seed).to(D).eval()
    x0 = torch.randn(1, n, dtype=D, generator=torch.Generator().manual_seed(seed))
    total = expand(net, x0, order)
    pure = expand(net, x0, order, terms="pure")
    for m, alpha in enumerate(pure.basis.multi_indices()):
        torch.testing.assert_close(pure.coefficients[m], total.coefficient(alpha), rtol=1e-12, atol=1e-14)


@settings(max_examples=15, deadline=None)
@given(order=st.integers(1, 5), seed=st.integers(0, 2**31 - 1), shift=st.floats(-1.0, 1.0))
def test_recenter_keeps_the_polynomial(order, seed, shift):
    gen = torch.Generator().manual_seed(seed)
    net = RandomNet(2, [4], ["tanh"], 1, residual=False, product=False, seed=seed).to(D).eval()
    x0 = torch.randn(1, 2, dtype=D, generator=gen)
    p = expand(net, x0, order)
    q = p.recenter(x0 + shift)
    xs = x0 + torch.randn(4, 2, dtype=D, generator=gen)
    torch.testing.assert_close(q(xs), p(xs), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(q.recenter(x0).coefficients, p.coefficients, rtol=1e-8, atol=1e-9)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(architectures())
def test_random_architectures_match_nested_autograd_many(case):
    net, x0, order, terms = case
    assert_matches_autograd(net, x0, order, terms=terms, rtol=1e-10)
