"""The panel is never stale: model changes are seen by recompute(), by a point move and back, and by method toggles."""

from __future__ import annotations

import torch
from torch import nn

from hope_engine import expand
from hope_widgets import HopePanel

D = torch.float64


def _net() -> nn.Sequential:
    torch.manual_seed(7)
    return nn.Sequential(nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 1)).to(D).eval()


def _fresh(net, point) -> torch.Tensor:
    return expand(net, torch.tensor(point, dtype=D), 6).coefficients


def _retrain(net) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        x = torch.rand(16, 2, dtype=D)
        ((net(x) - torch.sin(3 * x[:, :1])) ** 2).mean().backward()
        opt.step()


def test_retraining_in_place_is_seen_by_recompute():
    net = _net()
    panel = HopePanel(net, [0.2, -0.3], order=4, max_order=6)
    before = panel.full_polynomial.coefficients.clone()
    _retrain(net)
    panel.recompute()
    assert not torch.allclose(panel.full_polynomial.coefficients, before)
    torch.testing.assert_close(panel.full_polynomial.coefficients, _fresh(net, [0.2, -0.3]), rtol=0, atol=0)


def test_retraining_is_seen_after_moving_the_point_away_and_back():
    net = _net()
    panel = HopePanel(net, [0.2, -0.3], order=4, max_order=6)
    panel.point = [0.5, 0.5]
    _retrain(net)
    panel.point = [0.2, -0.3]
    torch.testing.assert_close(panel.full_polynomial.coefficients, _fresh(net, [0.2, -0.3]), rtol=0, atol=0)


def test_updates_through_data_replaced_parameters_and_swapped_modules_are_seen():
    net = _net()
    panel = HopePanel(net, [0.2, -0.3], order=4, max_order=6)
    changes = [
        lambda: net[0].weight.data.mul_(1.5),                                   # .data: no version counter bump
        lambda: setattr(net[2], "weight", nn.Parameter(torch.randn(1, 6, dtype=D))),
        lambda: net.__setitem__(1, nn.Sigmoid()),
        lambda: net.load_state_dict({k: v * 0.5 for k, v in net.state_dict().items()}),
    ]
    for change in changes:
        before = panel.full_polynomial.coefficients.clone()
        change()
        panel.recompute()
        assert not torch.allclose(panel.full_polynomial.coefficients, before)
        torch.testing.assert_close(panel.full_polynomial.coefficients, _fresh(net, [0.2, -0.3]), rtol=0, atol=0)


def test_an_unchanged_model_is_served_from_the_panel_cache(monkeypatch):
    net = _net()
    panel = HopePanel(net, [0.2, -0.3], order=4, max_order=6)
    panel.point = [0.5, 0.5]
    import hope_widgets.panel as panel_module

    def forbidden(*a, **k):
        raise AssertionError("the engine should not run for a point already expanded on an unchanged model")

    monkeypatch.setattr(panel_module, "expand", forbidden)
    panel.point = [0.2, -0.3]
    assert panel.error == ""


ENCODER = nn.Linear(2, 6)  # a global module the model's forward reads (not one of its children)


class _GlobalEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(6, 1)

    def forward(self, x):
        return self.head(torch.tanh(ENCODER(x)))


class _ListedLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = [nn.Linear(2, 6), nn.Linear(6, 1)]  # a plain list: not children, not in parameters()

    def forward(self, x):
        return self.layers[1](torch.tanh(self.layers[0](x)))


def _step(module: nn.Module, model: nn.Module) -> None:
    """One in-place optimizer step on ``module``'s weights (a module ``model``'s forward reads)."""
    opt = torch.optim.SGD(module.parameters(), lr=0.5)
    opt.zero_grad()
    x = torch.rand(16, 2, dtype=D)
    ((model(x) - torch.sin(3 * x[:, :1])) ** 2).mean().backward()
    opt.step()


def test_a_global_module_or_a_module_in_a_plain_list_retrained_in_place_is_seen():
    """The panel's cache key is the engine's guard stamp plus the values of every tensor its walk met: one notion of
    "the model changed", which reaches modules outside the model's children."""
    global ENCODER
    torch.manual_seed(7)
    ENCODER = nn.Linear(2, 6).to(D)
    encoded = _GlobalEncoder().to(D).eval()
    listed = _ListedLayers().eval()
    for layer in listed.layers:
        layer.to(D)
    for model, retrained in ((encoded, ENCODER), (listed, listed.layers[0])):
        panel = HopePanel(model, [0.2, -0.3], order=4, max_order=6)
        before = panel.full_polynomial.coefficients.clone()
        _step(retrained, model)
        panel.recompute()
        assert not torch.allclose(panel.full_polynomial.coefficients, before)
        torch.testing.assert_close(panel.full_polynomial.coefficients, _fresh(model, [0.2, -0.3]), rtol=0, atol=0)
        panel.point = [0.5, 0.5]  # and after moving away and back
        with torch.no_grad():
            next(iter(retrained.parameters())).data.mul_(0.5)  # (.data: no version counter moves)
        panel.point = [0.2, -0.3]
        torch.testing.assert_close(panel.full_polynomial.coefficients, _fresh(model, [0.2, -0.3]), rtol=0, atol=0)
