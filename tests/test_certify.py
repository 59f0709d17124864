"""Certified Taylor models: the remainder bounds |f - P| over the box on random architectures and boxes (10^4 samples
plus projected gradient ascent never exceed it), bounds() encloses f, the polynomial is expand's, and the API refuses
what it cannot certify. Tightness is printed (pytest -s), not asserted.

The comparison evaluates f and P in float64 itself, so each check allows the rounding of that evaluation:
1e-13 (1 + |f|), far below every remainder of interest.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from hope_engine import UnsupportedOperationError, certify, expand
from hope_engine.algebra.derivative_bounds import derivative_bound, derivative_polynomial
from hope_engine.api.sampling import sampled_error
from hope_engine.errors import ExpansionError
from hope_engine.io.cli import main
from hope_engine.models import sine_mlp

DT = torch.float64


class Fn(nn.Module):
    """An elementwise function as a module."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


ACTIVATIONS = {
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "sin": lambda: Fn(torch.sin), "cos": lambda: Fn(torch.cos),
    "exp": lambda: Fn(lambda x: torch.exp(0.5 * x)), "softplus": nn.Softplus, "relu": nn.ReLU,
    "leaky": lambda: nn.LeakyReLU(0.1), "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU, "abs": lambda: Fn(torch.abs),
    "hardtanh": nn.Hardtanh, "square": lambda: Fn(lambda x: x * x),
    "recip": lambda: Fn(lambda x: 1 / (2 + torch.sin(x))), "sqrt": lambda: Fn(lambda x: torch.sqrt(1 + x * x)),
}


def mlp(n: int, widths: list[int], acts: list[str], out: int, seed: int, norm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    prev = n
    for w, a in zip(widths, acts):
        layers += [nn.Linear(prev, w), ACTIVATIONS[a]()]
        if norm:
            layers.append(nn.LayerNorm(w))
        prev = w
    layers.append(nn.Linear(prev, out))
    return nn.Sequential(*layers).to(DT).eval()


def check_sound(model, cert, output=None, points: int = 10_000, steps: int = 15) -> float:
    """Assert the certificate against sampling + ascent; return the tightness remainder / found error (max)."""
    s = sampled_error(model, cert, points=points, steps=steps, output=output)
    slack = 1e-13 * (1 + s.high.abs().maximum(s.low.abs()))
    r = cert.remainder
    assert torch.all(s.error <= r + slack), f"found {s.error.max():.3e} > remainder {r.max():.3e}"
    lo, hi = cert.bounds()
    assert torch.all(lo <= s.low + slack) and torch.all(s.high <= hi + slack)
    finite = torch.isfinite(r) & (s.error > 0)
    return float((r[finite] / s.error[finite]).max()) if finite.any() else float("nan")


architectures = st.fixed_dictionaries({
    "n": st.integers(1, 3),
    "depth": st.integers(1, 3),
    "width": st.integers(2, 10),
    "acts": st.lists(st.sampled_from(sorted(ACTIVATIONS)), min_size=3, max_size=3),
    "out": st.integers(1, 2),
    "norm": st.booleans(),
    "order": st.integers(1, 5),
    "log_radius": st.floats(-3, 0),
    "per_variable": st.booleans(),
    "seed": st.integers(0, 10_000),
})


def _run_architecture(a) -> None:
    model = mlp(a["n"], [a["width"]] * a["depth"], a["acts"][:a["depth"]], a["out"], a["seed"], a["norm"])
    g = torch.Generator().manual_seed(a["seed"])
    x0 = torch.randn(1, a["n"], generator=g, dtype=DT)
    radius = 10 ** a["log_radius"]
    if a["per_variable"]:
        radius = radius * (0.25 + torch.rand(a["n"], generator=g, dtype=DT))
    cert = certify(model, x0, order=a["order"], radius=radius)
    # the polynomial is expand's Taylor polynomial whatever the box did (a hull, a void certificate)
    torch.testing.assert_close(cert.polynomial.coefficients, expand(model, x0, a["order"]).coefficients,
                               rtol=1e-9, atol=1e-12)
    check_sound(model, cert, points=10_000, steps=8)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(architectures)
def test_remainder_is_sound_on_random_architectures_and_boxes(a):
    _run_architecture(a)


def test_a_void_certificate_still_returns_the_taylor_polynomial():
    """Two-wide LayerNorms over a radius-1 box: the variance may reach 0, so no bound, and the hardtanh between them
    hulled its unbounded input (no crossing noted): the polynomial was that hull's centre, not f(x0) (found by CI)."""
    a = {"n": 1, "depth": 2, "width": 2, "acts": ["cos", "hardtanh", "abs"], "out": 1, "norm": True, "order": 1,
         "log_radius": 0.0, "per_variable": False, "seed": 0}
    _run_architecture(a)
    model = mlp(1, [2, 2], ["cos", "hardtanh"], 1, 0, True)
    x0 = torch.randn(1, 1, generator=torch.Generator().manual_seed(0), dtype=DT)
    cert = certify(model, x0, order=2, radius=1.0)
    assert torch.isinf(cert.remainder).all()
    torch.testing.assert_close(cert.polynomial.coefficients[0], model(x0).detach())


@pytest.mark.slow
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(architectures)
def test_remainder_is_sound_on_many_random_architectures(a):
    _run_architecture(a)


@pytest.mark.parametrize("act", ["tanh", "sin", "relu", "softplus"])
def test_full_check_with_ten_thousand_samples_and_ascent(act):
    model = mlp(2, [16, 16], [act, act], 2, seed=1)
    x0 = torch.tensor([[0.3, -0.2]], dtype=DT)
    for r in (0.01, 0.1, 0.5):
        cert = certify(model, x0, order=4, radius=r)
        ratio = check_sound(model, cert, points=10_000, steps=15)
        print(f"{act:9s} radius {r:<5} remainder {float(cert.remainder.max()):.3e}  tightness {ratio:.2f}")


def test_polynomial_is_expands():
    model = mlp(3, [8, 8], ["tanh", "sin"], 2, seed=3)
    x0 = torch.randn(4, 3, dtype=DT)
    for order in (0, 1, 3, 5):
        cert = certify(model, x0, order=order, radius=0.2)
        p = expand(model, x0, order=order)
        assert cert.polynomial.basis.multi_indices() == p.basis.multi_indices()
        torch.testing.assert_close(cert.polynomial.coefficients, p.coefficients, rtol=1e-12, atol=1e-14)


def test_batch_variables_and_output_selection():
    model = mlp(4, [6, 6], ["tanh", "softplus"], 3, seed=4)
    x0 = torch.randn(3, 4, dtype=DT)
    cert = certify(model, x0, order=3, radius=0.3, variables=[0, 2], output=1)
    assert cert.remainder.shape == (3,)
    p = expand(model, x0, order=3, variables=[0, 2], output=1)
    torch.testing.assert_close(cert.polynomial.coefficients, p.coefficients, rtol=1e-12, atol=1e-14)
    check_sound(model, cert, output=1)
    whole = certify(model, x0, order=3, radius=0.3, variables=[0, 2])
    assert whole.remainder.shape == (3, 3)
    torch.testing.assert_close(whole.remainder[:, 1], cert.remainder)


def test_unbatched_point_of_a_function():
    def f(x):  # x: (3,), no batch axis
        return torch.stack([torch.tanh(x).sum(), torch.exp(x[0]) * torch.sin(x[1] + x[2])])

    x0 = torch.tensor([0.1, -0.3, 0.2], dtype=DT)
    cert = certify(f, x0, order=4, radius=0.25)
    assert cert.remainder.shape == (2,)
    check_sound(f, cert)


def test_conv_pool_net():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(3, 2, 2), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 2)).to(DT).eval()
    x0 = torch.randn(1, 1, 6, 6, dtype=DT)
    cert = certify(model, x0, order=2, radius=0.05, variables=[0, 7, 14, 21])
    check_sound(model, cert)


@pytest.mark.parametrize("radius", [0.02, 0.3])
def test_attention_layer_norm_and_softmax(radius):
    torch.manual_seed(6)
    attn = nn.MultiheadAttention(4, 2, batch_first=True).to(DT).eval()
    norm = nn.LayerNorm(4).to(DT)

    def f(x):  # x: (1, 3, 4)
        h = norm(x + attn(x, x, x, need_weights=False)[0])
        return torch.softmax(h, -1)

    x0 = torch.randn(1, 3, 4, dtype=DT)
    cert = certify(f, x0, order=2, radius=radius, variables=[0, 5])
    check_sound(f, cert, steps=10)


def test_products_and_division():
    def f(x):
        a, b = x[..., 0], x[..., 1]
        return (a * b + torch.exp(a) / (1.5 + torch.cos(b)) + torch.log(2 + a * a) + b ** 3)[..., None]

    x0 = torch.tensor([[0.4, -0.7]], dtype=DT)
    for r in (0.05, 0.5):
        check_sound(f, certify(f, x0, order=3, radius=r))


def test_remainder_shrinks_with_radius_like_the_next_order():
    model = sine_mlp([2, 16, 16, 1], seed=0)
    x0 = torch.tensor([[0.1, 0.2]], dtype=DT)
    r1 = float(certify(model, x0, order=3, radius=0.02).remainder.max())
    r2 = float(certify(model, x0, order=3, radius=0.01).remainder.max())
    assert 2.0 ** 3 < r1 / r2 < 2.0 ** 5.5  # about 2^(K+1) = 16


def test_kink_crossings_are_reported_and_sound():
    model = mlp(2, [8], ["relu"], 1, seed=7)
    x0 = torch.zeros(1, 2, dtype=DT)
    cert = certify(model, x0, order=2, radius=1.0)
    assert cert.crossings.get("relu", 0) > 0
    check_sound(model, cert)


def test_outside_the_domain_the_remainder_is_infinite():
    def f(x):
        return torch.log(x)

    cert = certify(f, torch.tensor([[0.2]], dtype=DT), order=2, radius=0.5)  # the box reaches x <= 0
    assert torch.isinf(cert.remainder).all()


def test_float32_model():
    torch.manual_seed(8)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).eval()
    x0 = torch.tensor([[0.3, 0.1]])
    cert = certify(model, x0, order=3, radius=0.1)
    assert cert.remainder.dtype == torch.float32
    double = certify(model.double(), x0.double(), order=3, radius=0.1)
    assert float(cert.remainder) >= float(double.remainder)  # the float32 rounding slack is larger


def test_certified_radius():
    model = mlp(2, [8], ["tanh"], 2, seed=9)
    x0 = torch.tensor([[0.2, 0.1]], dtype=DT)
    cert = certify(model, x0, order=3, radius=0.1)
    tol = 1e-6
    rho = cert.certified_radius(tol)
    assert rho.shape == cert.remainder.shape
    for i in range(2):
        at = certify(model, x0, order=3, radius=float(rho[0, i]), output=i)
        assert float(at.remainder) <= tol
        beyond = certify(model, x0, order=3, radius=float(rho[0, i]) * 1.05, output=i)
        assert float(beyond.remainder) > tol


@pytest.mark.parametrize("extra_orders", [0, 1, 2])
def test_order_zero_keeps_the_variation_of_the_input(extra_orders):
    """f = x1 + x2 at (0.05, 0.05), radius 1: P = f(x0), so R must hold sup |t1 + t2| = 2 (closed form) and the
    bounds the range [-1.9, 2.1] (f at the box's extreme corners); certified_radius(1e-6) is then at most 5e-7."""
    def f(x):
        return x[..., :1] + x[..., 1:]

    x0 = torch.tensor([[0.05, 0.05]], dtype=DT)
    cert = certify(f, x0, order=0, radius=1.0, extra_orders=extra_orders)
    low, high = f(x0 + torch.tensor([[-1.0, -1.0], [1.0, 1.0]], dtype=DT)).reshape(-1)
    lower, upper = cert.bounds()
    assert float(lower) <= float(low) and float(high) <= float(upper)
    assert float(cert.remainder) >= 2.0
    assert float(cert.certified_radius(1e-6)) <= 1e-6
    check_sound(f, cert, points=2000, steps=4)


@pytest.mark.parametrize("act", ["tanh", "relu", "sin"])
def test_order_zero_without_extra_orders_is_sound(act):
    model = mlp(2, [6], [act], 2, seed=11)
    x0 = torch.tensor([[0.2, -0.3]], dtype=DT)
    for r in (0.01, 0.3):
        check_sound(model, certify(model, x0, order=0, radius=r, extra_orders=0), points=2000, steps=4)


def test_refusals():
    model = mlp(2, [4], ["tanh"], 1, seed=0)
    x0 = torch.zeros(1, 2, dtype=DT)
    with pytest.raises(ExpansionError, match="terms='total'"):
        certify(model, x0, terms="pure")
    with pytest.raises(ExpansionError, match="radius"):
        certify(model, x0, radius=[0.1, 0.2, 0.3])
    with pytest.raises(UnsupportedOperationError, match="cumprod") as info:
        certify(lambda x: torch.cumprod(x, -1).sum(-1, keepdim=True), x0)
    assert any("cumprod" in op for op in info.value.ops)


def test_derivative_polynomials_and_bounds_match_autograd():
    """tanh^(n) = P_n(tanh) and the enclosures hold at sampled points (n = 1..6)."""
    x = torch.linspace(-3, 3, 61, dtype=DT, requires_grad=True)
    for name, fn in (("tanh", torch.tanh), ("sigmoid", torch.sigmoid), ("exp", torch.exp), ("sin", torch.sin),
                     ("erf", torch.erf), ("softplus", nn.functional.softplus)):
        y = fn(x)
        for n in range(1, 7):
            (y,) = torch.autograd.grad(y.sum(), x, create_graph=True)
            if name in ("tanh", "sigmoid"):
                p = derivative_polynomial(name, n)
                s = fn(x)
                torch.testing.assert_close(sum(c * s ** k for k, c in enumerate(p)), y, rtol=1e-10, atol=1e-10)
            lo, hi = x.detach() - 0.05, x.detach() + 0.05
            bound = derivative_bound(name, lo, hi, n)
            assert torch.all(y.detach().abs() / math.factorial(n) <= bound)


def test_cli_certify(tmp_path, capsys):
    model = sine_mlp([2, 8, 1], seed=0)
    path = tmp_path / "m.ts"
    torch.jit.trace(model, torch.zeros(1, 2, dtype=DT)).save(str(path))
    assert main(["certify", str(path), "--point=0.1,-0.2", "--radius", "0.05", "--order", "3"]) == 0
    out = capsys.readouterr().out
    assert "remainder" in out and "f over the box:" in out
    cert = certify(model, torch.tensor([[0.1, -0.2]], dtype=DT), order=3, radius=0.05)
    printed = float(out.split("certified):")[1].split()[0])
    assert printed == pytest.approx(float(cert.remainder.max()), rel=1e-4)


def test_a_point_without_batch_axis_certifies_through_the_fused_layers():
    """A 1-d point runs nn.Linear as one fused linear_1d node (exact rule: a matmul; certified: its composition):
    the certificate equals the one of the same point with a batch axis."""
    model = mlp(3, [6, 5], ["tanh", "sigmoid"], 1, seed=2)
    x0 = torch.tensor([0.1, -0.2, 0.3], dtype=DT)
    flat = certify(model, x0, order=3, radius=0.05)
    batched = certify(model, x0.unsqueeze(0), order=3, radius=0.05)
    torch.testing.assert_close(flat.polynomial.coefficients.reshape(-1), batched.polynomial.coefficients.reshape(-1))
    torch.testing.assert_close(flat.remainder.reshape(-1), batched.remainder.reshape(-1), rtol=1e-6, atol=1e-15)
