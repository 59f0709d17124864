"""Tighter enclosures of certify: the polynomial range bound (monotone variables fixed on faces, Bernstein form),
input-domain splitting (branch and bound over sub-boxes of one traced graph, several orders per box) and
``verify_margin``. Every bound is checked against points of the box: dense samples (a quarter at vertices) plus
projected gradient ascent on +-f (``sampled_range``) never leave it. The slow sweep runs many more examples.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from hope_engine import certify
from hope_engine.algebra.basis import make_basis
from hope_engine.algebra.intervals import make_box, poly_range
from hope_engine.analysis import verified_accuracy, verify_margin
from hope_engine.analysis.robustness import Margins
from hope_engine.api.sampling import sampled_range
from hope_engine.certified.ranges import polynomial_range, positions
from hope_engine.certified.split import Split
from hope_engine.errors import ExpansionError

DT = torch.float64
ACTS = {"tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "softplus": nn.Softplus, "silu": nn.SiLU, "relu": nn.ReLU}


def _evaluate(c: torch.Tensor, basis, t: torch.Tensor) -> torch.Tensor:
    """p(t) = sum_a c_a t^a for points t (N, n), by direct monomial sums (an independent evaluation)."""
    return (t.unsqueeze(1) ** basis.indices.to(t.dtype)).prod(-1) @ c


def _points(radius: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(count, radius.numel(), generator=gen, dtype=radius.dtype) * 2 - 1
    u[: count // 4] = u[: count // 4].sign()
    return u * radius


def test_positions_match_the_basis_order():
    for n in (1, 2, 3, 7):
        for order in (0, 1, 3, 5):
            basis = make_basis(n, order)
            assert torch.equal(positions(basis, basis.indices), torch.arange(basis.size))


polynomials = st.fixed_dictionaries({
    "n": st.integers(1, 5), "order": st.integers(1, 5), "outputs": st.integers(1, 3), "seed": st.integers(0, 10_000),
    "log_radius": st.floats(-2, 0.5), "zero_radius": st.booleans(), "linear": st.floats(0, 5),
})


def _check_polynomial(a) -> None:
    if a["n"] > 3 and a["order"] > 3:
        a = {**a, "order": 3}
    basis = make_basis(a["n"], a["order"])
    gen = torch.Generator().manual_seed(a["seed"])
    c = torch.randn(basis.size, a["outputs"], generator=gen, dtype=DT)
    c = c / (1 + basis.degrees.to(DT)).reshape(-1, 1) ** 2
    c[1:a["n"] + 1] *= 1 + a["linear"]  # linear-dominated polynomials too (where the monotonicity test fires)
    radius = 10 ** a["log_radius"] * (0.3 + torch.rand(a["n"], generator=gen, dtype=DT))
    if a["zero_radius"]:
        radius[0] = 0
    lo, hi = polynomial_range(c, basis, radius)
    values = _evaluate(c, basis, _points(radius, 20_000, gen))
    slack = 1e-12 * (1 + values.abs().amax(0))
    assert torch.all(lo <= values.amin(0) + slack) and torch.all(values.amax(0) <= hi + slack)
    ilo, ihi = poly_range(c, make_box(basis, radius))
    assert torch.all(lo >= c[0] + ilo - slack) and torch.all(hi <= c[0] + ihi + slack)  # never wider


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(polynomials)
def test_polynomial_range_is_sound_and_never_wider(a):
    _check_polynomial(a)


def test_polynomial_range_is_exact_for_a_monotone_polynomial():
    """p = t1 + 2 t2 + 0.1 t1 t2 over [-1, 1]^2 is increasing in both: the bounds are p at two vertices."""
    basis = make_basis(2, 2)
    c = torch.zeros(basis.size, 1, dtype=DT)
    c[basis.position((1, 0))], c[basis.position((0, 1))], c[basis.position((1, 1))] = 1.0, 2.0, 0.1
    lo, hi = polynomial_range(c, basis, torch.ones(2, dtype=DT))
    assert float(lo) == pytest.approx(-3 + 0.1, abs=1e-12) and float(hi) == pytest.approx(3.1, abs=1e-12)


def _mlp(n: int, width: int, depth: int, act: str, out: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    prev = n
    for _ in range(depth):
        layers += [nn.Linear(prev, width), ACTS[act]()]
        prev = width
    layers.append(nn.Linear(prev, out))
    return nn.Sequential(*layers).to(DT).eval()


def _assert_encloses(model, cert, lower, upper, output=None) -> None:
    s = sampled_range(model, cert, points=4_000, steps=12, starts=4, output=output)
    slack = 1e-12 * (1 + s.high.abs().maximum(s.low.abs()))
    assert torch.all(lower <= s.low + slack), f"lower {lower.min():.6g} above a value {s.low.min():.6g}"
    assert torch.all(s.high <= upper + slack), f"upper {upper.max():.6g} below a value {s.high.max():.6g}"


architectures = st.fixed_dictionaries({
    "n": st.integers(1, 3), "width": st.integers(2, 8), "depth": st.integers(1, 2),
    "act": st.sampled_from(sorted(ACTS)),
    "out": st.integers(1, 2), "order": st.integers(1, 4), "log_radius": st.floats(-2, 0), "per_variable": st.booleans(),
    "boxes": st.integers(1, 12), "orders": st.sampled_from([None, (1,), (1, 2), (2, 4)]), "batch": st.integers(1, 2),
    "seed": st.integers(0, 10_000),
})


def _check_split(a) -> None:
    model = _mlp(a["n"], a["width"], a["depth"], a["act"], a["out"], a["seed"])
    gen = torch.Generator().manual_seed(a["seed"])
    x0 = torch.randn(a["batch"], a["n"], generator=gen, dtype=DT)
    radius = 10 ** a["log_radius"]
    if a["per_variable"]:
        radius = radius * torch.rand(a["n"], generator=gen, dtype=DT)
        radius[0] = 0.0 if a["n"] > 1 else radius[0]
    cert = certify(model, x0, order=a["order"], radius=radius)
    lower, upper = cert.bounds()
    _assert_encloses(model, cert, lower, upper)
    result = cert.split_bounds(Split(boxes=a["boxes"], tol=0.0, seconds=None, orders=a["orders"]))
    _assert_encloses(model, cert, result.lower, result.upper)
    assert result.leaves <= a["boxes"]
    assert torch.all(result.seen_low <= result.seen_high)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(architectures)
def test_split_bounds_enclose_f_on_random_architectures_and_boxes(a):
    _check_split(a)


@functools.lru_cache(maxsize=1)
def _trained_tanh(seed: int = 0) -> nn.Module:
    """A 2-16-16-1 tanh net fitted to sin(3 x) cos(3 y) on [-1, 1]^2 (curved, so wide boxes are hard)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)).to(DT)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(512, 2, generator=gen, dtype=DT) * 2 - 1
    y = torch.sin(3 * x[:, :1]) * torch.cos(3 * x[:, 1:])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        opt.step()
    return model.eval()


def test_split_tightens_a_wide_box_and_the_hull_holds():
    model = _trained_tanh()
    x0 = torch.tensor([[0.2, -0.3]], dtype=DT)
    cert = certify(model, x0, order=4, radius=0.3)
    whole = cert.bounds()
    result = cert.split_bounds(Split(boxes=32, tol=0.01, seconds=None, orders=(2, 4)))
    s = sampled_range(model, cert, points=10_000, steps=30)
    _assert_encloses(model, cert, result.lower, result.upper)
    true = float(s.high - s.low)
    split_width, whole_width = float(result.upper - result.lower), float(whole[1] - whole[0])
    print(f"width / sampled range: whole box {whole_width / true:.3f}, {result.leaves} boxes {split_width / true:.3f}")
    assert split_width < whole_width
    assert split_width <= 1.05 * true  # tol 0.01 of the range seen at the centres, which lies inside the true range
    assert result.stop in ("tolerance", "boxes")


def test_bounds_split_argument_and_certify_default_agree():
    model = _trained_tanh()
    x0 = torch.tensor([[0.5, 0.1]], dtype=DT)
    spec = Split(boxes=8, tol=0.0, seconds=None)
    a = certify(model, x0, order=3, radius=0.2).bounds(split=spec)
    b = certify(model, x0, order=3, radius=0.2, split=spec).bounds()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    whole = certify(model, x0, order=3, radius=0.2).bounds()
    torch.testing.assert_close(certify(model, x0, order=3, radius=0.2, split=spec).bounds(split=False), whole)
    with pytest.raises(ExpansionError, match="split must be"):
        certify(model, x0, order=3, radius=0.2).bounds(split="many")
    with pytest.raises(ExpansionError, match="boxes"):
        Split(boxes=0)
    with pytest.raises(ExpansionError, match="orders"):
        Split(orders=(-1,))


def test_split_with_output_selection_and_unbatched_points():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 3)).to(DT).eval()
    x0 = torch.tensor([0.1, -0.4, 0.3], dtype=DT)  # no batch axis
    cert = certify(model, x0, order=2, radius=0.4, output=1, batched=False)
    result = cert.split_bounds(Split(boxes=6, tol=0.0, seconds=None))
    _assert_encloses(model, cert, result.lower, result.upper, output=1)


def test_split_goal_positive_verifies_or_finds_a_point():
    model = _trained_tanh()
    cert = certify(model, torch.tensor([[0.5, 0.0]], dtype=DT), order=2, radius=0.1)  # f > 0 near (0.5, 0)
    low = float(sampled_range(model, cert, points=2_000, steps=10).low)
    result = cert.split_bounds(Split(boxes=32, seconds=None), goal="positive")
    assert (result.stop == "verified") == (float(result.lower) > 0)
    assert low > 0 and result.stop == "verified"
    cert = certify(model, torch.tensor([[0.0, 0.5]], dtype=DT), order=2, radius=0.3)  # f changes sign in the box
    result = cert.split_bounds(Split(boxes=32, seconds=None), goal="positive")
    assert result.stop == "falsified" and float(result.witness.value.min()) <= 0


# ------------------------------------------------------------------------------------------------ verify_margin
@functools.lru_cache(maxsize=1)
def _classifier(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small smooth CNN on 6x6 images of 3 classes (bright top rows, bright left columns, dark), fitted briefly."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(300, 1, 6, 6, generator=gen, dtype=DT) * 0.3
    y = torch.arange(300) % 3
    x[y == 0, :, :2, :] += 0.6
    x[y == 1, :, :, :2] += 0.6
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(12, 3)).to(DT)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x, y


def _check_margins(model, x, label, eps, v) -> None:
    """The certified lower bounds sit below every margin found by sampling + ascent over the ball."""
    margins = Margins(model, label, v.lower.numel(), DT)
    cert = certify(margins, x, order=1, radius=eps)
    s = sampled_range(margins, cert, points=2_000, steps=15, starts=2)
    others = [j for j in range(v.lower.numel()) if j != label]
    assert torch.all(v.lower[others] <= s.low.reshape(-1) + 1e-12)
    if v.verdict == "verified":
        assert torch.all(s.low > 0)
    if v.verdict == "falsified":
        point = v.counterexample
        assert float((point - x).abs().max()) <= eps * (1 + 1e-12)
        assert int(model(point).argmax()) != label


@pytest.mark.parametrize("eps", [0.01, 0.2])
def test_verify_margin_is_sound(eps):
    model, x, y = _classifier()
    verdicts = set()
    for i in range(3):
        v = verify_margin(model, x[i:i + 1], int(y[i]), eps, split=Split(boxes=6, seconds=None))
        verdicts.add(v.verdict)
        assert math.isinf(float(v.lower[int(y[i])]))
        if v.verdict != "misclassified":
            _check_margins(model, x[i:i + 1], int(y[i]), eps, v)
    if eps == 0.01:
        assert verdicts == {"verified"}


def test_verify_margin_misclassified_and_refusals():
    model, x, y = _classifier()
    wrong = (int(model(x[:1]).argmax()) + 1) % 3
    v = verify_margin(model, x[:1], wrong, 0.01)
    assert v.verdict == "misclassified" and not v.verified
    acc, certs = verified_accuracy(model, x[:4], y[:4], 0.01)
    assert acc == sum(c.verified for c in certs) / 4
    with pytest.raises(ExpansionError, match="label"):
        verify_margin(model, x[:1], 7, 0.01)
    with pytest.raises(ExpansionError, match="one input"):
        verify_margin(model, x[:2], 0, 0.01)
    with pytest.raises(ExpansionError, match="eps"):
        verify_margin(model, x[:1], 0, -1.0)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(polynomials)
def test_polynomial_range_sweep(a):
    _check_polynomial(a)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(architectures)
def test_split_bounds_sweep(a):
    _check_split(a)
