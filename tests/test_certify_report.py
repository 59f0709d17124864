"""The certificate's by-products: a bound for every truncation from one Taylor model (``remainders_by_order``), the
same polynomial over another box (``with_radius``) and ``radius_report``: where |f - P| <= tol holds and, where
nowhere, why (float32's rounding floor, a kink, a domain edge, a NaN point) with the fix that works."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hope_engine import certify
from hope_engine.errors import ExpansionError

DT = torch.float64


def _net(dtype=DT, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 12), nn.Tanh(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype).eval()


def _sampled(model, cert, order: int, points: int = 4000) -> float:
    """max over random points of the box (a quarter at its corners) of |f - P_order|, both evaluated in float64."""
    poly = cert.polynomial.truncate(order).to(DT)
    gen = torch.Generator().manual_seed(1)
    u = torch.rand(points, poly.n, generator=gen, dtype=DT) * 2 - 1
    u[: points // 4] = u[: points // 4].sign()
    x = poly.center.reshape(1, -1) + u * cert.radius.to(DT)
    with torch.no_grad():
        f = model.to(DT)(x).reshape(-1)
    return float((f - poly(x).reshape(-1)).abs().max())


@pytest.mark.parametrize("radius", [0.05, 0.4])
def test_every_truncation_is_bounded_by_its_row(radius):
    model = _net()
    cert = certify(model, torch.tensor([0.3, -0.2], dtype=DT), order=5, radius=radius)
    rows = cert.remainders_by_order()
    assert rows.shape == (6, *cert.remainder.shape) and torch.equal(rows[-1], cert.remainder)
    for k in range(6):
        assert _sampled(model, cert, k) <= float(rows[k]) + 1e-13
    # the lower truncations from the order-5 model are bounds like certify(order=k)'s: same order of magnitude
    for k in (1, 3):
        direct = float(certify(model, torch.tensor([0.3, -0.2], dtype=DT), order=k, radius=radius).remainder)
        assert float(rows[k]) <= 2 * direct


def test_with_radius_is_certify_at_that_radius():
    model = _net()
    x0 = torch.tensor([0.3, -0.2], dtype=DT)
    cert = certify(model, x0, order=4, radius=0.3)
    for r in (0.01, [0.05, 0.2]):
        again = certify(model, x0, order=4, radius=r)
        other = cert.with_radius(r)
        assert torch.equal(other.remainder, again.remainder)
        assert torch.equal(other.remainders_by_order(), again.remainders_by_order())
        assert torch.equal(other.radius, again.radius)


def test_certified_radius_of_a_lower_truncation():
    model = _net()
    x0 = torch.tensor([0.3, -0.2], dtype=DT)
    cert = certify(model, x0, order=5, radius=0.3)
    tol = 1e-6
    rho = float(cert.certified_radius(tol, order=3))
    assert rho > 0
    assert float(cert.with_radius(rho).remainders_by_order()[3]) <= tol
    assert float(cert.with_radius(rho * 1.05).remainders_by_order()[3]) > tol
    with pytest.raises(ExpansionError, match="order must be an integer between 0 and 5"):
        cert.certified_radius(tol, order=6)


def test_float32_rounding_floor_is_named_and_double_fixes_it():
    model = _net(torch.float32)
    x0 = torch.tensor([0.3, -0.2])
    cert = certify(model, x0, order=4, radius=0.3)
    report = cert.radius_report(1e-6)
    floor = float(report.floor)
    assert float(report.radius) == 0 and floor > 1e-6
    assert "rounding floor of float32" in report.reasons[0] and "model.double()" in report.fixes[0]
    assert "certified on no box" in report.text() and "float32" in report.text()
    # the floor is what the smallest box reaches: a tol above it is met on some box
    assert float(cert.certified_radius(2 * floor)) > 0
    # the fix works: the same net in float64 meets the tolerance on a box
    double = certify(_net(torch.float32).double(), x0.double(), order=4, radius=0.3).radius_report(1e-6)
    assert float(double.radius) > 0 and double.reasons == ("",) and "certified within radius" in double.text()


def test_float64_floor_kink_and_domain_reasons():
    tiny = certify(_net(), torch.tensor([0.3, -0.2], dtype=DT), order=3, radius=0.1).radius_report(1e-30)
    assert float(tiny.radius) == 0 and "rounding floor of float64" in tiny.reasons[0]
    assert f"{float(tiny.floor):.2g}" in tiny.fixes[0]

    relu = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 1)).to(DT).eval()
    with torch.no_grad():
        relu[0].weight.fill_(1.0)
        relu[0].bias.zero_()
    kink = certify(relu, torch.tensor([0.0], dtype=DT), order=2, radius=0.1).radius_report(1e-14)
    assert float(kink.radius) == 0 and "kink (relu)" in kink.reasons[0] and "off the kink" in kink.fixes[0]

    # log at 1e-12: the coefficients are finite, but every box tried (2^-30 of the radius and up) reaches 0
    edge = certify(torch.log, torch.tensor([1e-12], dtype=DT), order=2, radius=1.0).radius_report(1e-3)
    assert float(edge.radius) == 0 and "edge of a function's domain" in edge.reasons[0]

    outside = certify(torch.log, torch.tensor([-1.0], dtype=DT), order=2, radius=0.1).radius_report(1e-3)
    assert float(outside.radius) == 0 and "outside the domain" in outside.reasons[0]
