"""The panel's certified band: a guaranteed |f - P| bound along the plotted line, and where it meets a tolerance."""

from __future__ import annotations

import pytest
import torch
from IPython.terminal.interactiveshell import TerminalInteractiveShell
from IPython.testing.globalipapp import start_ipython
from torch import nn

from hope_engine import certify
from hope_widgets import HopePanel
from hope_widgets.panel import PanelError

D = torch.float64


def _net() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).to(D).eval()


def _sup_error_on_line(panel: HopePanel) -> float:
    """max over the plotted line of |network - P_order| (the line payload's own samples, plus a finer grid)."""
    line = panel.line
    poly = torch.tensor(line["poly"][panel.order], dtype=D)
    net = torch.tensor(line["net"], dtype=D)
    return float((net - poly).abs().max())


@pytest.mark.parametrize("direction", [0, 1, -1])
def test_band_bounds_the_error_along_the_line(direction):
    panel = HopePanel(_net(), [0.2, -0.3], order=3, max_order=6, radius=0.6, certify_tol=1e-4)
    panel.direction = direction
    band = panel.band
    assert band["order"] == 3 and band["remainder"] > 0 and "certified |f − P|" in band["text"]
    assert _sup_error_on_line(panel) <= band["remainder"] * (1 + 1e-12) + 1e-15
    # where the remainder meets the tolerance, a certificate at that radius says so
    rho = band["tol_radius"]
    assert rho is not None and 0 < rho
    variables = None if direction < 0 else [direction]
    box = rho / 2 ** 0.5 if direction < 0 else rho
    tm = certify(_net(), torch.tensor([0.2, -0.3], dtype=D), order=3, radius=box, variables=variables)
    assert float(tm.remainder) <= 1e-4 * (1 + 1e-9)


def test_band_follows_the_order_and_turns_off():
    panel = HopePanel(_net(), [0.2, -0.3], order=2, max_order=6, certify_tol=1e-3)
    r2 = panel.band["remainder"]
    panel.order = 5
    assert panel.band["order"] == 5 and panel.band["remainder"] < r2
    panel.certify_tol = 0
    assert panel.band == {}


def test_band_is_off_by_default_and_costs_nothing(monkeypatch):
    import hope_widgets.panel as panel_module

    def forbidden(*a, **k):
        raise AssertionError("no certification unless asked for")

    monkeypatch.setattr(panel_module, "certified_band", forbidden)
    panel = HopePanel(_net(), [0.2, -0.3], order=2, max_order=4)
    panel.order = 3
    assert panel.band == {}


def test_bad_tolerance_is_one_line():
    panel = HopePanel(_net(), [0.2, -0.3], order=2, max_order=4)
    with pytest.raises(PanelError, match="certify_tol must be a non-negative number"):
        panel.certify_tol = -1.0


def test_magic_certify_option():
    ip = start_ipython() or TerminalInteractiveShell.instance()
    ip.run_line_magic("load_ext", "hope_widgets")
    ip.user_ns["certnet"] = _net()
    try:
        panel = ip.run_line_magic("hope", "certnet --point 0.2,-0.3 --certify 1e-3 --order 3")
        assert panel.certify_tol == 1e-3 and panel.band["remainder"] > 0
    finally:
        ip.user_ns.pop("certnet")


def _line_errors(panel: HopePanel, order: int, reach: float, points: int = 201) -> float:
    """max of |network - P_order| at ``points`` evenly spaced t in [-reach, reach] on the panel's line (the network
    by its own forward pass, P by the engine's evaluation, both in float64)."""
    import math

    n = len(panel.point)
    d = torch.zeros(n, dtype=D)
    if panel.direction < 0:
        d[:] = 1 / math.sqrt(n)
    else:
        d[panel.direction] = 1.0
    t = torch.linspace(-reach, reach, points, dtype=D)
    x = torch.tensor(panel.point, dtype=D).reshape(1, -1) + t[:, None] * d[None, :]
    with torch.no_grad():
        f = panel.model(x.to(next(panel.model.parameters()).dtype)).double().reshape(-1)
    p = panel.full_polynomial.select(panel.output).truncate(order).to(D)
    return float((f - p(x).reshape(-1)).abs().max())


@pytest.mark.parametrize("direction", [0, -1])
def test_funnel_is_sound_on_every_level_and_tight_near_x0(direction):
    panel = HopePanel(_net(), [0.2, -0.3], order=1, max_order=6, radius=0.8, certify_tol=1e-6)
    panel.direction = direction
    for order in (1, 3, 5):
        panel.order = order
        band = panel.band
        radii, widths = band["radii"], band["widths"]
        assert radii[-1] == pytest.approx(0.8) and len(radii) == len(widths) >= 5
        assert all(a <= b for a, b in zip(widths, widths[1:])), widths  # monotone in the radius
        for r, w in zip(radii, widths):
            assert _line_errors(panel, order, r) <= w * (1 + 1e-9) + 1e-15
        # the band itself holds the network at every plotted point
        line = panel.line
        for lo, f, hi in zip(band["lower"], line["net"], band["upper"]):
            assert lo - 1e-12 <= f <= hi + 1e-12
        width = [hi - lo for lo, hi in zip(band["lower"], band["upper"])]
        centre = len(width) // 2
        assert width[centre] < width[0] and width[centre] < width[-1]
        # near x0 far tighter than the one box over the whole line (the band before the funnel: P +- remainder)
        assert width[centre] < 0.05 * 2 * band["remainder"]
        assert widths[-1] <= band["remainder"] * (1 + 1e-12)


def test_raising_the_order_never_widens_the_band():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1))  # float32
    panel = HopePanel(net, [0.25, -0.5], order=0, max_order=8, radius=0.5, certify_tol=1e-3)
    previous = None
    for order in range(9):
        panel.order = order
        band = panel.band
        width = [hi - lo for lo, hi in zip(band["lower"], band["upper"])]
        if previous is not None:
            assert all(w <= p * (1 + 1e-12) for w, p in zip(width, previous)), order
        previous = width


def test_float32_band_says_why_no_radius_meets_the_tolerance():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))  # float32, PyTorch's default
    panel = HopePanel(net, [0.25, -0.5], order=4, max_order=6, radius=0.5, certify_tol=1e-7)
    band = panel.band
    assert band["tol_radius"] == 0
    assert "rounding floor of float32" in band["reason"] and "model.double()" in band["reason"]
    assert "within |t| ≤ 0: the rounding floor of float32" in band["text"]
    double = HopePanel(net.double(), [0.25, -0.5], order=4, max_order=6, radius=0.5, certify_tol=1e-7)
    assert double.band["tol_radius"] > 0 and double.band["reason"] == ""
