"""Every elementwise function works in every path: exact, certify (sound) and the paper rule, from one declaration.

The net is x -> W2 f(W1 x + b1) + b2 (one hidden layer, where the paper's rule is exact): the paper rule must give the
exact expansion's coefficients, the certificate's polynomial must be the exact one and its remainder must hold at
sampled points of the box, and the exact expansion must match nested float64 autograd. The list of functions is
checked against the declarations: declaring an elementwise op without a case here fails ``test_every_declared_...``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hope_engine import certify, expand
from hope_engine.io import op_table
from hope_engine.ops.spec import SPECS, op_name

D = torch.float64
ORDER, RADIUS = 3, 0.05


# name -> (centre of the hidden pre-activation, the function as the model calls it); centres inside each domain and
# away from kinks, so every path has a Taylor expansion to agree on
FUNCTIONS = {
    "exp": (0.3, torch.exp), "expm1": (0.3, torch.expm1), "log": (1.5, torch.log), "log1p": (0.5, torch.log1p),
    "sin": (0.3, torch.sin), "cos": (0.3, torch.cos), "tanh": (0.3, torch.tanh), "sigmoid": (0.3, torch.sigmoid),
    "erf": (0.3, torch.erf), "sqrt": (1.5, torch.sqrt), "rsqrt": (1.5, torch.rsqrt),
    "reciprocal": (1.5, torch.reciprocal), "sinh": (0.3, torch.sinh), "cosh": (0.3, torch.cosh),
    "tan": (0.3, torch.tan), "atan": (0.3, torch.atan), "asin": (0.2, torch.asin), "acos": (0.2, torch.acos),
    "asinh": (-0.8, torch.asinh), "acosh": (2.0, torch.acosh), "atanh": (0.2, torch.atanh),
    "erfc": (0.3, torch.erfc), "exp2": (0.3, torch.exp2), "log2": (1.5, torch.log2), "log10": (1.5, torch.log10),
    "erfinv": (0.2, torch.erfinv), "lgamma": (1.5, torch.lgamma), "digamma": (1.5, torch.digamma),
    "special_erfcx": (0.3, torch.special.erfcx),
    "mish": (0.3, F.mish), "log_sigmoid": (0.3, F.logsigmoid), "log_sigmoid_forward": (-0.4, F.logsigmoid),
    "celu": (-0.4, lambda h: F.celu(h, alpha=1.0)), "sinc": (0.3, torch.sinc),
    "xlogy": (1.5, lambda h: torch.xlogy(torch.tensor(0.7, dtype=D), h)),
    "special_xlogy": (1.5, lambda h: torch.special.xlogy(h, h)),
    "special_xlog1py": (0.5, lambda h: torch.special.xlog1py(torch.tensor(0.7, dtype=D), h)),
    "softplus": (0.3, F.softplus), "elu": (-0.4, F.elu), "relu": (0.5, F.relu),
    "leaky_relu": (-0.5, F.leaky_relu), "hardtanh": (0.3, F.hardtanh), "clamp": (0.3, lambda h: h.clamp(-1, 1)),
    "clamp_min": (0.5, lambda h: h.clamp(min=0.0)), "clamp_max": (-0.5, lambda h: h.clamp(max=0.0)),
    "abs": (0.5, torch.abs), "square": (0.3, torch.square), "pow": (1.5, lambda h: h ** 2.5),
    "logit": (0.4, torch.logit), "polygamma": (1.5, lambda h: torch.polygamma(2, h)),
    "threshold": (0.5, lambda h: F.threshold(h, 0.1, -1.0)), "hardshrink": (0.8, F.hardshrink),
    "softshrink": (0.8, F.softshrink), "_prelu_kernel": (-0.5, lambda h: F.prelu(h, torch.tensor([0.2], dtype=D))),
    # written out by torch into several pointwise ops of one value (no op of their own)
    "softsign": (0.3, F.softsign), "tanhshrink": (0.3, F.tanhshrink), "selu": (-0.4, F.selu), "silu": (0.3, F.silu),
    "gelu": (0.3, F.gelu), "hardswish": (0.5, F.hardswish), "hardsigmoid": (0.5, F.hardsigmoid),
}
# ops whose certified rule is not there yet, by reason (checked: they are refused by name, never certified wrongly)
NOT_CERTIFIED = {"threshold": "a jump: no certified rule", "hardshrink": "a jump: no certified rule"}


class OneHidden(nn.Module):
    def __init__(self, fn, centre: float, n: int = 2, width: int = 5, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(0.3 * torch.randn(width, n, generator=g, dtype=D))
        self.b1 = nn.Parameter(centre + 0.05 * torch.randn(width, generator=g, dtype=D))
        self.w2 = nn.Parameter(torch.randn(1, width, generator=g, dtype=D))
        self.fn = fn

    def forward(self, x):
        return self.fn(x @ self.w1.T + self.b1) @ self.w2.T


def _net(name: str) -> OneHidden:
    centre, fn = FUNCTIONS[name]
    return OneHidden(fn, centre).eval()


X0 = torch.tensor([[0.1, -0.2]], dtype=D)


def test_every_declared_elementwise_op_has_a_case():
    declared = {op_name(op) for op, spec in SPECS.items() if spec.elementwise}
    assert declared <= set(FUNCTIONS), sorted(declared - set(FUNCTIONS))


def _autograd_derivative(model, x0: torch.Tensor, alpha: tuple[int, ...]) -> float:
    """d^alpha model(x0) by nested float64 autograd (an independent reference)."""
    x = x0.clone().requires_grad_(True)
    y = model(x).sum()
    for i, a in enumerate(alpha):
        for _ in range(a):
            if not y.requires_grad:  # a derivative that is constant in x: the next one is 0
                return 0.0
            (g,) = torch.autograd.grad(y, x, create_graph=True, allow_unused=True)
            if g is None:
                return 0.0
            y = g[0, i]
    return float(y.detach())


# torch's backward of these multiplies by 1/6 rounded to float32 (checked against central differences: the expansion
# agrees with them to 1e-10, autograd is 3e-8 off)
FLOAT32_BACKWARD = {"hardsigmoid", "hardswish"}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_exact_matches_autograd(name):
    model = _net(name)
    p = expand(model, X0, ORDER)
    tol = 1e-7 if name in FLOAT32_BACKWARD else 1e-9
    if name == "hardsigmoid":  # affine between -3 and 3 (torch has no second derivative of it): closed form 0
        assert p.coefficients.reshape(-1)[3:].abs().max() == 0
    for alpha in [(1, 0), (0, 1)] if name == "hardsigmoid" else [(1, 0), (0, 1), (2, 0), (1, 1), (0, 3), (2, 1)]:
        got = float(p.derivative(alpha).reshape(-1)[0])
        want = _autograd_derivative(model, X0, alpha)
        assert math.isclose(got, want, rel_tol=tol, abs_tol=1e-11), (alpha, got, want)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_paper_rule_is_exact_on_one_hidden_layer(name):
    model = _net(name)
    exact = expand(model, X0, ORDER)
    paper = expand(model, X0, ORDER, method="hope")
    torch.testing.assert_close(paper.coefficients, exact.coefficients, rtol=1e-9, atol=1e-11)


def _box_points(count: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    corners = torch.tensor([[a, b] for a in (-1, 1) for b in (-1, 1)], dtype=D)
    inside = 2 * torch.rand(count, 2, generator=g, dtype=D) - 1
    return X0 + RADIUS * torch.cat([corners, inside])


@pytest.mark.parametrize("name", sorted(set(FUNCTIONS) - set(NOT_CERTIFIED)))
def test_certificate_holds(name):
    model = _net(name)
    cert = certify(model, X0, ORDER, RADIUS)
    exact = expand(model, X0, ORDER)
    torch.testing.assert_close(cert.polynomial.coefficients.reshape(-1), exact.coefficients.reshape(-1),
                               rtol=1e-9, atol=1e-12)
    r = float(cert.remainder.reshape(-1)[0])
    assert math.isfinite(r) and r < 1e-2, r
    pts = _box_points(512)
    with torch.no_grad():
        f = model(pts).reshape(-1)
    p = cert.polynomial(pts).reshape(-1)
    worst = float((f - p).abs().max())
    assert worst <= r, (worst, r)


@pytest.mark.parametrize("name", sorted(NOT_CERTIFIED))
def test_ops_without_a_certified_rule_are_refused_by_name(name):
    from hope_engine import UnsupportedOperationError

    with pytest.raises(UnsupportedOperationError) as info:
        certify(_net(name), X0, ORDER, RADIUS)
    assert info.value.ops


def test_the_generated_op_table_is_current():
    from pathlib import Path

    page = Path(__file__).resolve().parent.parent / "docs" / "ops.md"
    assert page.read_text() == op_table.markdown(), "run: python -m hope_engine.io.op_table > docs/ops.md"
