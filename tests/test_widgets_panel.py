"""HopePanel without a browser: its state after order/point/output/method changes equals the engine's results."""

from __future__ import annotations

import math

import pytest
import sympy as sp
import torch
import traitlets

from hope_engine import expand
from hope_widgets import HopePanel
from hope_widgets import payloads as wdata


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(2, 12), torch.nn.Tanh(), torch.nn.Linear(12, 12), torch.nn.Sigmoid(),
                               torch.nn.Linear(12, 2)).eval()


@pytest.fixture
def panel(net):
    return HopePanel(net, torch.tensor([0.2, -0.3]), order=4, max_order=8, title="net")


def engine(net, point, order, output=0, **kw):
    return expand(net, torch.tensor(point), 8, **kw).truncate(order).select(output)


def js_formula(terms: dict, order: int, threshold: float, sort: str) -> str:
    """What the browser builds from the term records (a transcription of js/src/formula.js)."""
    c = [float(v) for v in terms["c"]]  # "NaN" / "Infinity" as sent, decoded as the browser does
    idx = [i for i, v in enumerate(c) if terms["deg"][i] <= order and v != 0
           and (not math.isfinite(v) or abs(v) > threshold)]  # a NaN / infinite term is never hidden
    if sort == "magnitude":
        idx.sort(key=lambda i: -abs(c[i]))
    else:
        idx.sort(key=lambda i: (terms["deg"][i], -abs(c[i])))
    pieces = []
    for pos, i in enumerate(idx):
        sign = "-" if c[i] < 0 else ("" if pos == 0 else "+")
        pieces.append(f"{sign} {terms['tex'][i]}" if sign else terms["tex"][i])
    return " ".join(pieces) if pieces else "0"


def test_initial_state_equals_engine(panel, net):
    ref = engine(net, [0.2, -0.3], 4)
    assert panel.latex == ref.latex()
    assert torch.equal(panel.polynomial.coefficients, ref.coefficients)
    assert panel.polynomial.order == 4 and panel.full_polynomial.order == 8
    assert panel.n_outputs == 2 and panel.mode == "line" and panel.error == "" and not panel.busy
    assert panel.bounds == [[pytest.approx(-0.8), pytest.approx(1.2)], [pytest.approx(-1.3), pytest.approx(0.7)]]


def test_order_changes_do_no_engine_work(panel, net, monkeypatch):
    import hope_widgets.panel as panel_module

    calls = []

    def forbidden(*a, **k):
        calls.append("expand")
        raise AssertionError("the order slider must not expand again")

    # recompute() shows any failure in the panel instead of raising, so the calls are counted as well
    monkeypatch.setattr(panel_module, "expand", forbidden)
    cached = panel._expand
    monkeypatch.setattr(panel, "_expand", lambda *a, **k: calls.append("_expand") or cached(*a, **k))
    terms_before = panel.term_records
    for k in range(9):
        panel.order = k
        assert panel.latex == engine(net, [0.2, -0.3], k).latex()
        assert js_formula(panel.term_records, k, 0.0, "degree") == panel.latex
    assert panel.term_records is terms_before  # the browser's data did not change: it filters what it has
    assert calls == [] and panel.error == ""  # no engine call, not even a cached lookup


@pytest.mark.parametrize("sort", ["degree", "magnitude"])
@pytest.mark.parametrize("threshold", [0.0, 1e-3, 1e-2])
def test_browser_formula_equals_engine_latex(panel, net, sort, threshold):
    panel.threshold, panel.sort = threshold, sort
    for k in (0, 2, 5, 8):
        panel.order = k
        expected = engine(net, [0.2, -0.3], k).latex(threshold=threshold, sort=sort)
        assert panel.latex == expected == js_formula(panel.term_records, k, threshold, sort)


def test_term_records_carry_exact_coefficient_and_derivative(panel):
    p = panel.full_polynomial.select(0)
    rec = panel.term_records
    for i, alpha in enumerate(rec["alpha"]):
        a = [0, 0]
        for v, e in alpha:
            a[v] = e
        assert rec["c"][i] == float(p.coefficient(a).reshape(()))
        assert rec["d"][i] == pytest.approx(float(p.derivative(a).reshape(())), rel=1e-6)
        assert rec["deg"][i] == sum(a)


def test_point_change_recomputes(panel, net):
    panel.point = [0.5, 0.1]
    assert panel.result["point"] == pytest.approx([0.5, 0.1])
    ref = engine(net, [0.5, 0.1], 4)
    assert panel.latex == ref.latex()
    assert torch.equal(panel.polynomial.coefficients, ref.coefficients)
    panel.point = torch.tensor([0.0, 0.25])  # tensors are accepted too
    assert panel.point == [0.0, 0.25] and panel.latex == engine(net, [0.0, 0.25], 4).latex()


def test_bad_points_are_refused(panel):
    with pytest.raises(traitlets.TraitError, match="2 values"):
        panel.point = [1.0, 2.0, 3.0]
    with pytest.raises(traitlets.TraitError, match="finite"):
        panel.point = [math.nan, 0.0]
    with pytest.raises(traitlets.TraitError, match="between 0 and max_order=8"):
        panel.order = 9
    with pytest.raises(traitlets.TraitError, match="output must be between 0 and 1"):
        panel.output = 2


def test_output_selector(panel, net):
    panel.output = 1
    assert panel.latex == engine(net, [0.2, -0.3], 4, output=1).latex()
    assert panel.line["net"][40] == pytest.approx(float(net(torch.tensor([0.2, -0.3]))[1].detach()), abs=1e-6)


def test_line_data_matches_network_and_polynomial(panel, net):
    panel.direction = 0
    line = panel.line
    assert len(line["t"]) == wdata.LINE_POINTS and len(line["poly"]) == 9
    for j in (0, 20, 60, 80):
        t = line["t"][j]
        x = torch.tensor([0.2 + t, -0.3])
        assert line["net"][j] == pytest.approx(float(net(x)[0].detach()), abs=1e-6)
        for k in (1, 4, 8):
            assert line["poly"][k][j] == pytest.approx(float(panel.full_polynomial.truncate(k)(x)[0]), abs=1e-5)
    # the order-8 polynomial is closer to the network near the point than the order-1 one
    err = [max(abs(a - b) for a, b in zip(row[30:51], line["net"][30:51])) for row in line["poly"]]
    assert err[8] < err[1]


def test_failure_keeps_last_good_result(panel, net):
    def broken(x):
        raise RuntimeError("boom")

    good = panel.latex
    panel._model = broken
    panel.clear_cache()
    panel.point = [0.9, 0.9]
    assert "boom" in panel.error and "last good result" in panel.error
    assert panel.latex == good and not panel.busy
    panel._model = net
    panel.point = [0.2, -0.3]
    assert panel.error == "" and panel.latex == good


def test_method_toggle(panel, net):
    before = panel.latex
    panel.method = "hope"
    assert panel.error == ""  # a failing paper rule fails this test (it used to pass as "not installed yet")
    ref = expand(net, torch.tensor([0.2, -0.3]), 8, method="hope").truncate(4).select(0)
    assert panel.latex == ref.latex() and panel.result["method"] == "hope"
    assert len(panel.compare["relative"]) == 9 and panel.compare["relative"][1] == pytest.approx(0, abs=1e-6)
    panel.method = "exact"
    assert panel.error == "" and panel.latex == before and panel.compare == {}


def test_exports(panel, net):
    panel.order = 3
    ref = engine(net, [0.2, -0.3], 3)
    assert torch.equal(panel.polynomial.coefficients, ref.coefficients)
    expr = panel.to_sympy()
    x1, x2 = sp.symbols("x1 x2", real=True)
    value = float(expand(net, torch.tensor([0.2, -0.3]), 3)(torch.tensor([0.3, -0.1]))[0])
    assert float(expr.subs({x1: 0.3, x2: -0.1})) == pytest.approx(value, abs=1e-6)
    panel.threshold = 1e-2
    assert all(abs(float(c)) > 1e-2 for c in panel.to_sympy().as_coefficients_dict().values())


def test_constructor_errors(net):
    with pytest.raises(ValueError, match="order must be between 0 and 3"):
        HopePanel(net, [0.0, 0.0], order=5, max_order=3)
    with pytest.raises(ValueError, match="method"):
        HopePanel(net, [0.0, 0.0], method="newton")
    with pytest.raises(ValueError, match="radius"):
        HopePanel(net, [0.0, 0.0], radius=-1)
    with pytest.raises(ValueError, match="names has 3 entries"):
        HopePanel(net, [0.0, 0.0], names=["a", "b", "c"])


def test_image_input_gives_a_heat_map():
    torch.manual_seed(2)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(3 * 6 * 6, 4)).eval()
    image = torch.rand(1, 1, 8, 8)
    panel = HopePanel(cnn, image, order=3, max_order=4, output=2)
    assert panel.mode == "heat" and panel.terms_kind == "pure" and panel.line == {}
    heat = panel.heat
    assert (heat["rows"], heat["cols"], heat["n"]) == (8, 8, 64) and len(heat["coef"]) == 4
    ref = expand(cnn, image, 4, terms="pure", names=wdata.pixel_names((1, 8, 8))).select(2)  # p[row][col] names
    for j in range(1, 5):
        for i in (0, 27, 63):
            alpha = [0] * 64
            alpha[i] = j
            assert heat["coef"][j - 1][i] == float(ref.coefficient(alpha).reshape(()))
    assert panel.latex == ref.truncate(3).latex()
    panel.point = (image + 0.1).reshape(-1)
    assert panel.latex == expand(cnn, image + 0.1, 4, terms="pure", names=panel.names).truncate(3).select(2).latex()
