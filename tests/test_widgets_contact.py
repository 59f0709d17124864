"""First contact with the panel: NaN results, the method toggle, one-line setting errors, a live radius, pixel names,
the synced state the browser reads, and the tracer loaded in the background by ``%load_ext``."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import traitlets
from IPython.terminal.interactiveshell import TerminalInteractiveShell
from IPython.testing.globalipapp import start_ipython

from hope_engine import expand
from hope_widgets import HopePanel
from hope_widgets import payloads as wdata
from hope_widgets.panel import PanelError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shell():
    # start_ipython() answers None after its first call in a process (another test module made the shell)
    ip = start_ipython() or TerminalInteractiveShell.instance()
    ip.run_line_magic("load_ext", "hope_widgets")
    return ip


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double().eval()


def strict_json(panel: HopePanel) -> str:
    """The synced state as the comm sends it; raises if any NaN / infinity would be serialised."""
    return json.dumps(panel.get_state(), allow_nan=False)


# ------------------------------------------------------------------------------------------------------ NaN / inf
def test_nan_result_is_strict_json_and_explained():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Out of range float values are not JSON compliant", no other warning
        panel = HopePanel(lambda x: torch.log(x[0]), torch.tensor([-1.0], dtype=torch.float64), order=3,
                          max_order=4)
        strict_json(panel)
    assert panel.term_records["c"][0] == "NaN" and panel.term_records["c"][1] == -1.0
    assert "NaN" in panel.warning and "domain" in panel.warning and "(-1)" in panel.warning
    assert "degree 0" in panel.warning and panel.error == ""
    assert "NaN" in panel.line["net"] and all(isinstance(v, (float, str)) for v in panel.line["net"])
    assert "nan" in panel.latex  # the engine's formula keeps the NaN term: nothing is hidden
    panel.point = [2.0]  # back in the domain: the warning goes, the numbers are plain floats again
    assert panel.warning == "" and all(isinstance(v, float) for v in panel.term_records["c"])


def test_infinite_result_is_strict_json_and_explained():
    panel = HopePanel(lambda x: torch.exp(1000.0 * x[0]), [1.0], order=2, max_order=3)  # exp(1000) overflows
    strict_json(panel)
    assert "infinite" in panel.warning and "Infinity" in panel.term_records["c"]
    panel.point = [0.0]
    assert panel.warning == ""


def test_nan_weights_are_shown_not_hidden(net):
    bad = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)).double()
    with torch.no_grad():
        bad[2].weight[0, 1] = float("nan")
    panel = HopePanel(bad, [0.1, 0.2], order=2, max_order=3)
    strict_json(panel)
    assert "NaN" in panel.warning and all(v == "NaN" for v in panel.term_records["c"])
    assert all(v == "NaN" for v in panel.line["net"])


def test_the_browser_formula_keeps_the_nan_term():
    from test_widgets_panel import js_formula

    panel = HopePanel(lambda x: torch.log(x[0]) + x[0] ** 2, [-1.0], order=3, max_order=4)
    assert js_formula(panel.term_records, 3, 0.0, "degree") == panel.latex
    assert js_formula(panel.term_records, 3, 10.0, "degree").startswith("nan")  # no threshold hides it


def test_nan_from_a_cell(shell):
    panel = shell.run_cell_magic("hope", "--point -1 --max-order 4", "log(x[0])")
    assert "NaN" in panel.warning and "domain" in panel.warning
    strict_json(panel)
    panel = shell.run_cell_magic("hope", "--point -1,2 --max-order 3", "sqrt(x[0]) + x[1]")
    assert "NaN" in panel.warning
    strict_json(panel)


def test_sanitize_every_depth():
    value = {"a": [1.0, float("nan"), [float("inf"), -float("inf")]], "b": (2.0, {"c": float("nan")}), "d": "x"}
    assert wdata.sanitize(value) == {"a": [1.0, "NaN", ["Infinity", "-Infinity"]], "b": [2.0, {"c": "NaN"}],
                                     "d": "x"}


def test_nan_in_a_heat_map():
    class LogImage(torch.nn.Module):
        def forward(self, x):
            return torch.log(x).sum(dim=(-1, -2)).reshape(-1)

    image = torch.rand(1, 1, 5, 5, dtype=torch.float64)
    image[0, 0, 2, 3] = -0.5
    panel = HopePanel(LogImage(), image, order=2, max_order=3)
    strict_json(panel)
    assert panel.mode == "heat" and "NaN" in panel.warning
    assert "NaN" in panel.heat["coef"][0] or "NaN" in panel.term_records["c"]


# ------------------------------------------------------------------------------------------------ method toggle
def test_method_toggle_follows_the_method_shown():
    def f(x):
        return torch.sin(x[0]) * x[1]  # a product of inputs: the paper's rule refuses it

    panel = HopePanel(f, [0.2, 0.3], order=3, max_order=4)
    before = panel.latex
    panel.method = "hope"
    assert "hope" in panel.error and "last good result" in panel.error
    assert panel.method == "exact" == panel.result["method"]  # the toggle shows what the panel shows
    assert panel.latex == before
    panel.point = [0.1, 0.3]
    assert panel.error == "" and panel.method == "exact"


# ---------------------------------------------------------------------------------------- one-line setting errors
@pytest.mark.parametrize(("name", "value", "words"), [
    ("order", 99, "order must be between 0 and max_order=8, got 99"),
    ("order", -1, "order must be between 0 and max_order=8, got -1"),
    ("point", [1.0, 2.0, 3.0], "point must have 2 values (one per input), got 3"),
    ("point", [float("nan"), 0.0], "point must be finite"),
    ("output", 5, "output must be between 0 and 0, got 5"),
    ("method", "newton", "method must be one of"),
    ("radius", -2.0, "radius must be a positive number"),
    ("direction", 7, "direction must be -1 (diagonal) or an input index"),
])
def test_setting_errors_are_one_short_line(net, name, value, words):
    panel = HopePanel(net, [0.1, 0.2], order=4, max_order=8)
    with pytest.raises(PanelError) as info:
        setattr(panel, name, value)
    message = str(info.value)
    assert words in message and "\n" not in message and len(message) < 120
    assert isinstance(info.value, ValueError) and isinstance(info.value, traitlets.TraitError)


def test_ipython_shows_a_setting_error_as_one_line(shell, net):
    shell.user_ns["panel"] = HopePanel(net, [0.1, 0.2], order=4, max_order=8)
    for cell, words in [("panel.order = 99", "order must be between 0 and max_order=8, got 99"),
                        ("panel.point = [1, 2, 3]", "point must have 2 values")]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            result = shell.run_cell(cell)
        assert isinstance(result.error_in_exec, PanelError)
        lines = [s for s in re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue()).splitlines() if s.strip()]
        assert len(lines) == 1 and words in lines[0], out.getvalue()
    shell.user_ns.pop("panel")


# ------------------------------------------------------------------------------------------------------ radius
def test_radius_is_live(net):
    panel = HopePanel(net, [0.1, 0.2], order=4, max_order=8, radius=1.0)
    assert panel.line["t"][-1] == pytest.approx(1.0)
    panel.point = [0.5, 0.2]
    panel.radius = 2.0
    assert panel.bounds == [[pytest.approx(-1.5), pytest.approx(2.5)], [pytest.approx(-1.8), pytest.approx(2.2)]]
    assert panel.line["t"][0] == pytest.approx(-2.0) and panel.line["t"][-1] == pytest.approx(2.0)
    d = wdata.direction_vector(2, -1, torch.float64)
    with torch.no_grad():
        assert panel.line["net"][-1] == pytest.approx(float(net(torch.tensor([0.5, 0.2]) + 2.0 * d)))


def test_synced_traits_are_the_ones_the_browser_reads():
    source = "\n".join(p.read_text() for p in (ROOT / "js" / "src").rglob("*.js"))
    synced = set(HopePanel.class_own_traits(sync=True))
    unread = sorted(name for name in synced if f'"{name}"' not in source)
    assert unread == [], f"synced traits the front end never reads: {unread}"
    assert {"radius", "terms_kind"}.isdisjoint(synced)


# ------------------------------------------------------------------------------------------------- pixel names
def test_image_terms_are_named_by_pixel():
    torch.manual_seed(4)
    cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                              torch.nn.Linear(2 * 4 * 4, 1)).double().eval()
    image = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    panel = HopePanel(cnn, image, order=2, max_order=3)
    assert panel.names[:3] == ["p[0][0]", "p[0][1]", "p[0][2]"] and panel.names[-1] == "p[5][5]"
    assert panel.names == panel.names_tex == wdata.pixel_names((1, 6, 6))
    ref = expand(cnn, image, 3, terms="pure", names=panel.names).truncate(2).select(0)
    assert panel.latex == ref.latex() and "p[" in panel.latex and "x_{" not in panel.latex
    assert panel.to_sympy().free_symbols  # one sympy symbol per pixel name
    assert panel.heat["image"] == pytest.approx(image.reshape(-1).tolist())
    assert wdata.pixel_names((3, 2, 2))[:2] == ["p[0][0][0]", "p[0][0][1]"]


# ------------------------------------------------------------------------------------------------ tracer warm-up
WARMUP_SCRIPT = """
import json, time
import torch
from IPython.testing.globalipapp import start_ipython
ip = start_ipython()
torch.manual_seed(0)
ip.user_ns["net"] = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
from hope_widgets import panel as pm
started = pm._warmup_thread is not None
torch.manual_seed(0)
ip.run_line_magic("load_ext", "hope_widgets")
thread = pm._warmup_thread
running = thread is not None and thread.name == "hope-tracer-warmup" and thread.daemon
thread.join()
import sys
loaded = all(m in sys.modules for m in ("torch.fx.experimental.symbolic_shapes", "sympy", "hope_engine.capture.record"))
loaded = loaded and "torch._dynamo" not in sys.modules  # the recorder does without it: not loaded for nothing
# the warm-up must not draw from the user's seeded random stream
untouched = torch.rand(4).tolist() == torch.rand(4, generator=torch.Generator().manual_seed(0)).tolist()
p = ip.run_line_magic("hope", "net --order 4")
print(json.dumps({"started_before": started, "running": running, "untouched": untouched, "loaded": loaded,
                  "report": pm.warmup_report(),
                  "timing": p.result["timing"], "seconds": p.result["seconds"]}))
"""

NO_WARMUP_SCRIPT = """
import json
import torch
from hope_widgets import HopePanel
net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
first = HopePanel(net, [0.0, 0.0], order=2, max_order=4).result["timing"]
second = HopePanel(net, [0.5, 0.0], order=2, max_order=4).result["timing"]
print(json.dumps({"first": first, "second": second}))
"""


def _run(script: str) -> dict:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_load_ext_loads_the_tracer_in_the_background():
    out = _run(WARMUP_SCRIPT)
    assert not out["started_before"] and out["running"] and out["untouched"] and out["loaded"]
    assert out["report"]["ok"] is True and out["report"]["seconds"] > 0
    # the first %hope after the warm-up pays no loading: its timing line is a plain "expanded in ... s"
    assert re.fullmatch(r"expanded in [0-9.e-]+ s", out["timing"]), out["timing"]


def test_a_first_call_without_warm_up_says_so():
    out = _run(NO_WARMUP_SCRIPT)
    assert out["first"].endswith("(first call: loading the tracer, once per session)"), out
    assert "first call" not in out["second"], out


# ------------------------------------------------------------------------------------------ long formulas, wrapped
def test_wrap_latex_breaks_long_polynomials_at_terms(net):
    from hope_widgets import wrap_latex

    tex = expand(net, torch.tensor([0.1, 0.2], dtype=torch.float64), 4, names=["x", "y"]).latex()
    wrapped = wrap_latex(tex, per_line=4)
    assert wrapped.startswith("\\begin{aligned}&") and wrapped.endswith("\\end{aligned}")
    rows = wrapped[len("\\begin{aligned}&"):-len("\\end{aligned}")].split(" \\\\\n&")
    assert len(rows) == -(-15 // 4)  # 15 terms of degree <= 4 in two variables, 4 per line
    assert " ".join(rows) == tex  # nothing lost, nothing reordered
    assert wrap_latex("x + y", per_line=4) == "x + y"
