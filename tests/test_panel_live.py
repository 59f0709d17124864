"""A panel follows its model with no refresh call, and its output keeps a static snapshot (kernel side, no browser).

Cells run in IPython's InteractiveShell, so the after-cell hook fires as in a notebook (``post_run_cell``). The
reference for "the panel shows the trained model" is nested float64 autograd on the trained model (its gradient and
Hessian at the point are the panel's degree-1 and degree-2 coefficients), and a fresh ``expand`` for the whole
polynomial.
"""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch
from IPython.terminal.interactiveshell import TerminalInteractiveShell
from IPython.testing.globalipapp import start_ipython
from IPython.utils.capture import capture_output

import hope_widgets.panel as panel_module
from hope_engine import expand
from hope_engine.capture import guard
from hope_widgets import HopePanel, live, snapshot

D = torch.float64
POINT = [0.2, -0.3]


@pytest.fixture(scope="module")
def shell():
    # start_ipython() answers None after its first call in a process (another test module made the shell)
    ip = start_ipython() or TerminalInteractiveShell.instance()
    ip.run_line_magic("load_ext", "hope_widgets")
    live.register(ip)  # (a no-op when %load_ext did it; the extension may have been loaded by another module)
    ip.run_cell("import torch\nfrom torch import nn")
    yield ip
    for name in ("net", "panel", "opt", "head", "Net", "x", "fpanel", "f", "inner"):
        ip.user_ns.pop(name, None)


def _run(shell, code: str) -> None:
    result = shell.run_cell(code)
    result.raise_error()


def _autograd_terms(model, point: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient and Hessian of the scalar model at ``point`` by nested float64 autograd."""
    x = torch.tensor(point, dtype=D, requires_grad=True)
    (g,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
    hessian = torch.stack([torch.autograd.grad(g[i], x, retain_graph=True)[0] for i in range(len(point))])
    return g.detach(), hessian


def _assert_shows(panel: HopePanel, model) -> None:
    """The panel's polynomial is the model's as it is now: degree 1 and 2 against autograd, all of it against a fresh
    expansion."""
    p = panel.full_polynomial.select(0)
    g, h = _autograd_terms(model, panel.point)
    for i in range(2):
        e = tuple(int(j == i) for j in range(2))
        torch.testing.assert_close(p.coefficient(e).reshape(()), g[i], rtol=1e-10, atol=1e-12)
        for j in range(2):
            a = tuple(int(k == i) + int(k == j) for k in range(2))
            torch.testing.assert_close(p.derivative(a).reshape(()), h[i, j], rtol=1e-9, atol=1e-11)
    fresh = expand(model, torch.tensor(panel.point, dtype=D), panel.max_order)
    torch.testing.assert_close(panel.full_polynomial.coefficients, fresh.coefficients, rtol=1e-12, atol=1e-14)


TRAIN = """
opt = torch.optim.Adam({params}, lr=0.05)
for _ in range(30):
    opt.zero_grad()
    x = torch.rand(32, 2, dtype=torch.float64) * 2 - 1
    ((net(x).squeeze(-1) - torch.sin(3 * x[:, 0]) * x[:, 1]) ** 2).mean().backward()
    opt.step()
"""


def test_the_hook_is_registered_once(shell):
    HopePanel(lambda x: x[0] ** 2 + x[1], POINT, order=2, max_order=2)  # (a panel made in IPython registers it too)
    shell.run_line_magic("load_ext", "hope_widgets")
    assert live.registered_shell() is shell
    assert shell.events.callbacks["post_run_cell"].count(live.after_cell) == 1


def test_a_panel_follows_in_place_training_of_its_net(shell):
    _run(shell, "torch.manual_seed(3)\n"
                "net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double()\n"
                "panel = %hope net --point 0.2,-0.3 --order 3 --max-order 4")
    panel, net = shell.user_ns["panel"], shell.user_ns["net"]
    before = panel.full_polynomial.coefficients.clone()
    _assert_shows(panel, net)
    _run(shell, TRAIN.format(params="net.parameters()"))  # a later cell: no refresh call anywhere
    assert not torch.allclose(panel.full_polynomial.coefficients, before)
    _assert_shows(panel, net)
    assert panel.notice.startswith(panel_module.UPDATED_NOTE) and panel.error == ""
    with torch.no_grad():
        assert panel.line["net"][40] == pytest.approx(float(net(torch.tensor(POINT, dtype=D))), rel=1e-12)


def test_a_panel_follows_in_place_training_of_a_global_module_its_net_calls(shell):
    _run(shell, "torch.manual_seed(4)\n"
                "head = nn.Linear(8, 1).double()\n"
                "class Net(nn.Module):\n"
                "    def __init__(self):\n"
                "        super().__init__()\n"
                "        self.body = nn.Linear(2, 8).double()\n"
                "    def forward(self, x):\n"
                "        return head(torch.tanh(self.body(x)))\n"   # head: a global of the notebook, not a child
                "net = Net()\n"
                "panel = %hope net --point 0.2,-0.3 --order 2 --max-order 3")
    panel, net = shell.user_ns["panel"], shell.user_ns["net"]
    before = panel.full_polynomial.coefficients.clone()
    _run(shell, TRAIN.format(params="head.parameters()"))  # only the global module is trained
    assert not torch.allclose(panel.full_polynomial.coefficients, before)
    _assert_shows(panel, net)
    assert panel.notice.startswith(panel_module.UPDATED_NOTE)


def test_a_function_panel_follows_a_global_module_rebound_and_retrained(shell):
    _run(shell, "torch.manual_seed(5)\n"
                "inner = nn.Linear(2, 3).double()\n"
                "def f(x):\n"
                "    return torch.sin(inner(x)).sum(-1)\n"
                "fpanel = %hope f --point 0.2,-0.3 --order 2 --max-order 3")
    panel = shell.user_ns["fpanel"]
    f = shell.user_ns["f"]
    _run(shell, "with torch.no_grad():\n    inner.weight.mul_(1.7)")  # in place
    _assert_shows(panel, f)
    _run(shell, "inner = nn.Linear(2, 3).double()")  # the global rebound to a new module
    _assert_shows(panel, f)


def test_nothing_is_recomputed_when_nothing_changed(shell, monkeypatch):
    _run(shell, "torch.manual_seed(6)\n"
                "net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double()\n"
                "panel = %hope net --point 0.2,-0.3 --order 3 --max-order 4")
    panel = shell.user_ns["panel"]
    view, status = panel.view, panel.status

    def forbidden(*a, **k):
        raise AssertionError("an unchanged model must not be expanded again")

    monkeypatch.setattr(panel_module, "expand", forbidden)
    _run(shell, "x = 1 + 1\nwith torch.no_grad():\n    net(torch.zeros(1, 2, dtype=torch.float64))")
    assert live.after_cell() == []
    assert panel.view is view and panel.status is status  # nothing was sent to the browser either


def test_the_output_carries_a_static_snapshot_that_follows_retraining(shell):
    with capture_output() as shown:
        _run(shell, "torch.manual_seed(7)\n"
                    "net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double()\n"
                    "panel = %hope net --point 0.2,-0.3 --order 2 --max-order 3 --names x,y")
    panel, net = shell.user_ns["panel"], shell.user_ns["net"]
    widget = [o for o in shown.outputs if "application/vnd.jupyter.widget-view+json" in o.data]
    static = [o for o in shown.outputs if "text/html" in o.data]
    assert len(widget) == 1 and widget[0].data["application/vnd.jupyter.widget-view+json"]["model_id"] == \
        panel.model_id
    assert len(static) == 1 and "static snapshot" in static[0].data["text/html"]
    assert static[0].transient == {"display_id": f"hope-static-{panel.model_id}"}
    bundle, _ = panel._repr_mimebundle_()  # one bundle for front ends that take one: widget view and snapshot
    assert "application/vnd.jupyter.widget-view+json" in bundle and "static snapshot" in bundle["text/html"]

    def slope_text() -> str:  # d f / d x at the point by autograd, as the snapshot writes a coefficient
        g, _ = _autograd_terms(net, POINT)
        return snapshot.number(abs(float(g[0])))

    first = static[0].data["text/html"]
    assert slope_text() in first and "<svg" in first
    with capture_output() as updates:
        _run(shell, TRAIN.format(params="net.parameters()"))
    sent = [o for o in updates.outputs if o.update]
    assert len(sent) == 1 and sent[0].transient == {"display_id": f"hope-static-{panel.model_id}"}
    second = sent[0].data["text/html"]
    assert second != first and slope_text() in second and slope_text() not in first
    assert second == panel.static_html()


def test_follow_updates_during_training_and_ends_on_the_trained_model():
    torch.manual_seed(8)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    panel = HopePanel(net, POINT, order=2, max_order=3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    initial = panel.full_polynomial.coefficients.clone()
    seen = []
    with panel.follow(opt, every=0.0, budget=1.0) as follower:
        for _ in range(5000):  # (until the throttle let two updates through: as long as an update takes)
            opt.zero_grad()
            net(torch.rand(16, 2, dtype=D)).pow(2).mean().backward()
            opt.step()
            seen.append(panel.full_polynomial.coefficients.clone())
            if follower.updates >= 2:
                break
        during = follower.updates
    # updates came during the loop, each showing the model of its step; leaving the block shows the last step
    assert during == 2 and not torch.equal(seen[-1], initial)
    assert not opt._optimizer_step_post_hooks  # the step hook is gone after the block
    _assert_shows(panel, net)
    with pytest.raises(ValueError, match="budget"):
        panel.follow(budget=0)


def test_recompute_sees_a_data_write_to_a_large_model_that_the_token_does_not():
    torch.manual_seed(9)
    net = torch.nn.Sequential(torch.nn.Linear(2, 128), torch.nn.Tanh(), torch.nn.Linear(128, 128), torch.nn.Tanh(),
                              torch.nn.Linear(128, 1)).double()
    assert sum(p.numel() for p in net.parameters()) > guard.VALUE_LIMIT  # read by version counters
    panel = HopePanel(net, POINT, order=2, max_order=2)
    with torch.no_grad():
        net[4].weight.data.mul_(2.0)  # through .data: no version counter moves
    assert not panel.follow_model()
    panel.recompute()
    _assert_shows(panel, net)
    with torch.no_grad():
        net[4].weight.mul_(0.5)  # in place: the version counter moves
    assert panel.follow_model() and panel.notice.startswith(panel_module.UPDATED_NOTE)
    _assert_shows(panel, net)


def test_a_closed_and_deleted_panel_is_not_kept_alive():
    torch.manual_seed(10)
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    panel = HopePanel(net, POINT, order=2, max_order=2)
    assert panel in live.live_panels()
    ref = weakref.ref(panel)
    panel.close()  # (ipywidgets keeps every widget until it is closed)
    assert ref() not in live.live_panels()
    del panel
    gc.collect()
    assert ref() is None
    with torch.no_grad():
        net[0].weight.mul_(2.0)
    assert all(p._model is not net for p in live.live_panels())
    assert math.isfinite(len(live.after_cell()))


def test_the_snapshot_shows_what_the_panel_shows():
    """The snapshot's LaTeX is the engine's ``latex`` of the shown polynomial for any order, threshold and sort; a heat
    map has one cell per pixel."""
    import html
    import re

    torch.manual_seed(11)
    net = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1)).double()
    panel = HopePanel(net, POINT, order=4, max_order=6, names=["x", "y"])
    for order, threshold, sort in ((4, 0.0, "degree"), (2, 1e-2, "magnitude"), (6, 1e-3, "degree"), (0, 0.0, "degree")):
        panel.order, panel.threshold, panel.sort = order, threshold, sort
        latex = re.search(r"<pre[^>]*>(.*?)</pre>", panel.static_html(), re.S).group(1)
        assert html.unescape(latex) == panel.polynomial.latex(threshold=threshold, sort=sort)

    class Image(torch.nn.Module):
        def forward(self, x):
            return (torch.sin(x) * torch.linspace(-1, 1, 20, dtype=D).reshape(4, 5)).sum(dim=(-1, -2)).reshape(-1)

    image = torch.rand(1, 1, 4, 5, dtype=D)
    heat = HopePanel(Image(), image, order=2, max_order=2)
    text = heat.static_html()
    assert heat.mode == "heat" and text.count("<rect") == 4 * 5 + 3  # the pixels and the three legend swatches
    slope = float(torch.cos(image[0, 0, 3, 4]) * 1.0)  # d/dp of sin(p) * w with w = 1 at the last pixel
    assert f"p[3][4] = {snapshot.number(slope)}<" in text and "static snapshot" in text
