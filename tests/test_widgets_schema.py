"""The panel's payload contract (hope_widgets/schema.py): one description, checked in Python and by the front end.

A payload change that one side does not know about fails here: the kernel's payloads are validated against the
schema (the panel refuses a bad one while HOPE_CHECK_PAYLOADS is set, as in this suite), js/src/schema.json and the
table in js/README.md must be the schema's current export, and js/test/payloads.test.mjs runs the browser's validator
and its payload readers on payloads real panels sent, comparing the keys they read with the schema's.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from hope_widgets import HopePanel, schema

ROOT = Path(__file__).resolve().parent.parent


def _state(panel: HopePanel) -> dict:
    return {name: getattr(panel, name) for name in schema.SCHEMA if panel.has_trait(name)}


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
    if panel.has_trait("certify_tol"):
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
    out.append({"name": "line error", "state": {**state, "line": {"error": "cannot evaluate the model"}}})
    return out


def test_the_schema_describes_exactly_the_synced_traits():
    synced = {name for name in HopePanel.class_own_traits(sync=True) if not name.startswith("_")}
    assert synced == set(schema.SCHEMA)
    assert set(schema.PAYLOADS) <= synced


def test_the_front_end_copy_and_the_readme_table_are_current():
    assert schema.JSON_PATH.read_text() == schema.to_json(), "run: python -m hope_widgets.schema"
    assert schema.markdown_table() in (ROOT / "js" / "README.md").read_text(), (
        "js/README.md's payload table is not hope_widgets.schema.markdown_table()")


def test_panel_payloads_match_the_schema(cases):
    for case in cases:
        for trait, value in case["state"].items():
            assert schema.validate(trait, value) == [], case["name"]
        json.dumps(case["state"], allow_nan=False)  # strict JSON: NaN / infinity travel as strings


def test_the_validator_refuses_what_the_browser_would_misread(cases):
    line = dict(cases[0]["state"]["line"])
    assert schema.validate("line", line) == []
    assert schema.validate("line", {**line, "net": [math.nan] * len(line["net"])})  # a NaN not encoded
    assert schema.validate("line", {**line, "extra": 1})  # a key the browser does not know
    assert schema.validate("line", {k: v for k, v in line.items() if k != "direction"})  # a key it needs, missing
    assert schema.validate("line", {**line, "net": line["net"][:-1]})  # columns of different lengths
    assert schema.validate("term_records", {**cases[0]["state"]["term_records"], "deg": [True]})  # bool is no int
    assert schema.validate("result", {}) and schema.validate("no_such_trait", 1)
    assert schema.validate("compare", {"relative": [None, 0.5, "NaN"]}) == []


def test_the_panel_refuses_a_payload_off_the_schema(cases):
    panel = HopePanel(lambda x: torch.sin(x[0]) * x[1], [0.1, 0.2], order=2, max_order=3)
    with pytest.raises(schema.PayloadError, match="unexpected key .points."):
        panel.line = {**panel.line, "points": []}
    with pytest.raises(schema.PayloadError, match="expected number"):
        schema.check("result", {**panel.result, "seconds": math.inf})


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_front_end_reads_the_payloads_as_the_schema_says(cases, tmp_path):
    path = tmp_path / "payloads.json"
    path.write_text(json.dumps(cases, allow_nan=False))
    run = subprocess.run(["node", "--test", str(ROOT / "js" / "test" / "payloads.test.mjs")], capture_output=True,
                         text=True, timeout=120,
                         env={"PATH": shutil.os.environ["PATH"], "HOPE_PAYLOADS_FILE": str(path)}, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# pass 3" in run.stdout
