"""The panel's contract (hope_widgets/contract.schema.json): ten synced traits, typed once, validated once.

The schema is the single source: the panel's synced traits are exactly its properties, the panel refuses a ``view`` or
``status`` off it (while HOPE_CHECK_PAYLOADS is set, as in this suite), js/src/contract.d.ts is its current export
(node js/contract-types.mjs), and js/test/payloads.test.mjs runs the browser's payload readers on views real panels
sent, comparing the keys they read with the schema's.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from hope_widgets import HopePanel, contract

ROOT = Path(__file__).resolve().parent.parent


def _state(panel: HopePanel) -> dict:
    return {name: getattr(panel, name) for name in contract.TRAITS}


@pytest.fixture(scope="module")
def cases() -> list[dict]:
    """States of panels in every mode the browser draws: line (exact, with the paper rule's comparison, with the
    certified band), heat map, NaN coefficients, a line that could not be evaluated."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).eval()
    out = []
    panel = HopePanel(net, torch.tensor([0.2, -0.3]), order=3, max_order=5)
    out.append({"name": "line", "state": _state(panel)})
    panel.method = "hope"
    out.append({"name": "line, paper rule vs exact", "state": _state(panel)})
    panel.method = "exact"
    panel.certify_tol = 1e-3
    out.append({"name": "line, certified band", "state": _state(panel)})

    class Image(torch.nn.Module):
        def forward(self, x):
            return (x ** 2).sum(dim=(-1, -2)).reshape(-1) + x[..., 0, 0].reshape(-1)

    heat = HopePanel(Image(), torch.rand(1, 1, 4, 4), order=2, max_order=3)
    out.append({"name": "heat map", "state": _state(heat)})
    nan = HopePanel(lambda x: torch.log(x[0]) + x[0] ** 2, [-1.0], order=3, max_order=4)
    out.append({"name": "NaN coefficients", "state": _state(nan)})
    state = _state(panel)
    out.append({"name": "line error",
                "state": {**state, "view": {**state["view"], "line": {"error": "cannot evaluate the model"}}}})
    return out


def test_the_synced_traits_are_the_schema_s_ten():
    synced = {name for name in HopePanel.class_own_traits(sync=True) if not name.startswith("_")}
    assert synced == set(contract.TRAITS) and len(synced) == 10
    assert set(contract.SETTINGS) == synced - {"view", "status"}
    # the browser finds a name in the status, else the view, else the settings (js/src/index.js): no name twice
    names = [*contract.SETTINGS, *contract.VIEW_KEYS, *contract.STATUS_KEYS]
    assert len(names) == len(set(names))


def test_the_front_end_types_are_generated_from_the_schema():
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    run = subprocess.run(["node", str(ROOT / "js" / "contract-types.mjs"), "--check"], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    types = (ROOT / "js" / "src" / "contract.d.ts").read_text()
    for name in ("HopePanelState", "View", "Status", "TermRecords", "Line", "Heat", "Compare", "Result", "Band"):
        assert f"export interface {name} {{" in types


def test_panel_states_match_the_schema(cases):
    import jsonschema

    for case in cases:
        jsonschema.Draft202012Validator(contract.SCHEMA).validate(case["state"])  # the whole synced state
        assert contract.errors("View", case["state"]["view"]) == [], case["name"]
        assert contract.errors("Status", case["state"]["status"]) == [], case["name"]
        json.dumps(case["state"], allow_nan=False)  # strict JSON: NaN / infinity travel as strings


def test_the_validator_refuses_what_the_browser_would_misread(cases):
    view = cases[0]["state"]["view"]
    line = view["line"]

    def view_errors(**changes):
        return contract.errors("View", {**view, **changes})

    assert view_errors() == []
    assert view_errors(line={**line, "net": [math.nan] * len(line["net"])})  # a NaN not encoded
    assert view_errors(line={**line, "extra": 1}) == ["View.line: Additional properties are not allowed ('extra' was "
                                                      "unexpected)"]  # the closest alternative is named
    assert view_errors(line={k: v for k, v in line.items() if k != "direction"}) == [
        "View.line: 'direction' is a required property"]
    assert "columns of different lengths" in view_errors(line={**line, "net": line["net"][:-1]})[0]
    assert view_errors(term_records={**view["term_records"], "deg": [True] * len(view["term_records"]["deg"])})
    assert view_errors(result={}) and view_errors(title=None) and view_errors(extra=1)
    assert view_errors(compare={"relative": [None, 0.5, "NaN"]}) == []
    assert contract.errors("Status", {"busy": 0, "error": "", "notice": "", "warning": ""})
    assert contract.errors("NoSuchThing", {})


def test_the_panel_refuses_a_payload_off_the_schema():
    panel = HopePanel(lambda x: torch.sin(x[0]) * x[1], [0.1, 0.2], order=2, max_order=3)
    with pytest.raises(contract.PayloadError, match="'points' was unexpected"):
        panel.view = {**panel.view, "line": {**panel.line, "points": []}}
    with pytest.raises(contract.PayloadError, match="not strict JSON"):
        panel.view = {**panel.view, "result": {**panel.result, "seconds": math.inf}}
    with pytest.raises(contract.PayloadError, match="busy"):
        panel.status = {**panel.status, "busy": "no"}


def test_views_and_statuses_are_read_only_by_name():
    panel = HopePanel(lambda x: torch.sin(x[0]) * x[1], [0.1, 0.2], order=2, max_order=3)
    for key in ("names", "names_tex", "bounds", "term_records", "line", "heat", "compare", "result", "band"):
        assert getattr(panel, key) is panel.view[key]
    for key in contract.STATUS_KEYS:
        assert getattr(panel, key) == panel.status[key]
    assert (panel.max_order, panel.n_outputs, panel.mode) == (3, 1, "line")
    with pytest.raises(AttributeError):
        panel.term_records = {}


def test_a_setting_that_changes_nothing_shown_sends_nothing():
    panel = HopePanel(lambda x: torch.sin(x[0]) * x[1], [0.1, 0.2], order=2, max_order=3)
    sent = []
    panel.observe(lambda change: sent.append(change["name"]), names=["view", "status"])
    panel.order, panel.threshold, panel.sort = 3, 1e-3, "magnitude"  # the browser filters what it has
    assert sent == []
    panel.title = "f"
    assert sent == ["view"] and panel.view["title"] == "f"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_front_end_reads_the_payloads_as_the_schema_says(cases, tmp_path):
    path = tmp_path / "payloads.json"
    path.write_text(json.dumps(cases, allow_nan=False))
    run = subprocess.run(["node", "--test", str(ROOT / "js" / "test" / "payloads.test.mjs")], capture_output=True,
                         text=True, timeout=120,
                         env={"PATH": shutil.os.environ["PATH"], "HOPE_PAYLOADS_FILE": str(path)}, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# pass 3" in run.stdout and "# fail 0" in run.stdout


def test_the_saved_quickstart_panel_is_in_the_contract():
    """notebooks/01_quickstart.ipynb is saved with its panel's state (JupyterLab draws it before anything runs): that
    state has the ten traits, and its view and status match the schema."""
    import jsonschema

    notebook = json.loads((ROOT / "notebooks" / "01_quickstart.ipynb").read_text())
    state = notebook["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    (panel,) = [m["state"] for m in state.values() if m["model_name"] == "AnyModel"]
    assert {k for k in panel if not k.startswith("_")} - {"layout", "tabbable", "tooltip"} == set(contract.TRAITS)
    jsonschema.Draft202012Validator(contract.SCHEMA).validate({k: panel[k] for k in contract.TRAITS})
    assert contract.errors("View", panel["view"]) == []
