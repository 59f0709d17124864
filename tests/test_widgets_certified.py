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
