"""Variable names with markup characters: a model whose inputs are a dict with keys like ``a"b``, ``<x>``, ``c'd&e``.

The names (and a title with the same characters) travel to the browser as they are; everything the front end puts
into markup goes through one escaping function (js/src/escape.js), correct in text and in attribute values. Checked
three ways: the panel's own payloads (Python), the escaping function and the SVG that js/src/plots.js writes (node),
and the panel rendered in JupyterLab in headless Chromium (marker ``browser``): each name is shown as exactly its
text, in the point controls, the direction selector, the plot's axis, the bar chart's labels and the term detail, and
no element or attribute was made from a name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.browser import jupyterlab, launch, run_all

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
KEYS = ['a"b', "<x>", "c'd&e"]
TITLE = "f<\"&'>"
# the model and the panel, as the notebook cell builds them (and this process, for the expected LaTeX)
MODEL_SOURCE = f"""\
import torch
from hope_widgets import HopePanel
KEYS = {KEYS!r}
def f(**d):
    return torch.sin(d[KEYS[0]]) * d[KEYS[1]] + d[KEYS[2]] ** 2 + d[KEYS[0]] * d[KEYS[2]]
point = {{k: torch.tensor([v], dtype=torch.float64) for k, v in zip(KEYS, [0.3, 0.2, 0.1])}}
panel = HopePanel(f, point, order=2, max_order=3, title={TITLE!r})
panel.direction = 1
"""
# attributes the panel's own elements may carry (KaTeX's output is checked apart: it escapes what it writes)
OWN_ATTRIBUTES = {
    "class", "style", "title", "type", "min", "max", "step", "value", "placeholder", "data-lm-suppress-shortcuts",
    "viewBox", "xmlns", "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "d", "width", "height", "points", "id",
    "fill", "fill-opacity", "stroke", "stroke-dasharray", "clip-path", "text-anchor", "textLength", "lengthAdjust",
    "data-term", "data-degree", "data-label", "data-latex", "data-order", "data-count", "data-render-ms",
    "data-paint-ms", "transform", "dx", "stroke-opacity", "stroke-width", "data-kernel", "data-pixel", "disabled",
}
BAR_ATTRIBUTES = {"x", "y", "width", "height", "fill", "class", "data-term", "data-label"}


def _panel():
    scope: dict = {}
    exec(MODEL_SOURCE, scope)
    return scope["panel"]


def test_the_panel_sends_the_names_as_they_are():
    panel = _panel()
    assert panel.names == KEYS and panel.names_tex == KEYS and panel.title == TITLE
    assert all(any(k in tex for tex in panel.term_records["tex"]) for k in KEYS)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_escaping_function_and_the_plots_markup():
    run = subprocess.run(["node", "--test", str(ROOT / "js" / "test" / "escape.test.mjs")], capture_output=True,
                         text=True, timeout=120, env={"PATH": os.environ["PATH"]}, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# pass 3" in run.stdout and "# fail 0" in run.stdout


# ---- in the browser


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[dict]:
    """JupyterLab on 127.0.0.1 with a notebook that shows the panel."""
    pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")
    notebook = {"cells": [{"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                           "source": MODEL_SOURCE + "panel"}],
                "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
                "nbformat": 4, "nbformat_minor": 5}
    with jupyterlab(tmp_path_factory.mktemp("lab"), {"names.ipynb": notebook}) as server:
        yield {"url": server["url"]["names.ipynb"], "log": server["log"]}


# every element of the panel: its tag, its attribute names, and whether it is inside KaTeX's output
ELEMENTS_JS = """panel => [...panel.querySelectorAll('*')].map(e => ({
    tag: e.tagName, attrs: e.getAttributeNames(),
    katex: !!e.closest('.katex, .katex-error') }))"""
# each shown term: its LaTeX as KaTeX keeps it (the annotation), or the raw TeX KaTeX could not parse (katex-error)
TERMS_JS = """panel => [...panel.querySelectorAll('.hope-formula .hope-term')].map(t => {
    const a = t.querySelector('annotation'); const err = t.querySelector('.katex-error');
    return err ? err.textContent : (a ? a.textContent : null); })"""


@pytest.mark.browser
def test_names_with_quotes_and_angle_brackets_in_the_browser(lab):
    from playwright.sync_api import sync_playwright

    expected = _panel()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(60_000)
            console: list[str] = []
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            try:
                _check_names(page, lab["url"], expected)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "hope_panel_names_failure.png"))
                print("browser console:\n" + "\n".join(console[-40:]))
                raise
            assert not console, console
        finally:
            browser.close()


def _check_names(page, url: str, expected) -> None:
    page.goto(url)
    page.wait_for_selector(".jp-NotebookPanel-toolbar .jp-KernelName")
    run_all(page)
    page.wait_for_selector(".hope-panel .hope-formula .hope-term", timeout=45_000)
    panel = page.locator(".hope-panel").first
    # the line along <x> (direction 1) is drawn once the kernel's line for it has arrived
    page.wait_for_function("""() => [...document.querySelectorAll('.hope-plot-line svg .hope-axis')]
        .some(e => e.textContent === 't along <x>')""", timeout=45_000)

    # the names and the title, as text, exactly
    assert panel.locator(".hope-title").text_content() == f"Taylor polynomial of {TITLE}"
    assert [(s or "").strip() for s in panel.locator(".hope-point-field").all_text_contents()] == KEYS
    assert panel.locator(".hope-direction option").all_text_contents() == ["diagonal (all inputs)", *KEYS]
    assert panel.locator(".hope-direction").input_value() == "1"

    # the formula: its LaTeX (with the names in it) as the kernel writes it, piece by piece as typeset
    formula = panel.locator(".hope-formula")
    assert formula.get_attribute("data-order") == "2"
    assert formula.get_attribute("data-latex") == expected.latex
    assert " ".join(panel.evaluate(TERMS_JS)) == expected.latex

    # the bars: the attributes they should have and no others; each names its term in data-label and <title>
    bars = panel.locator(".hope-plot-bars .hope-bar")
    count = bars.count()
    assert count == int(formula.get_attribute("data-count") or 0) > 3
    named = set()
    for k in range(count):
        bar = bars.nth(k)
        assert set(bar.evaluate("e => e.getAttributeNames()")) == BAR_ATTRIBUTES
        label = bar.get_attribute("data-label") or ""
        assert label == bar.locator("title").text_content()
        bar.hover()
        assert panel.locator(".hope-bar-label").text_content() == label
        named.update(key for key in KEYS if label.startswith(f"{key}: c = "))
    assert named == set(KEYS), named

    # the term detail: the hovered term by name
    terms = panel.locator(".hope-formula .hope-term")
    for k in range(terms.count()):
        terms.nth(k).hover()
        text = panel.locator(".hope-detail-text").text_content() or ""
        if text.endswith(f"term {KEYS[0]}·{KEYS[2]}"):
            break
    else:
        raise AssertionError(f"no term detail names {KEYS[0]}·{KEYS[2]}")

    # nothing was made from a name: no <x> element, no attribute outside the panel's own (KaTeX: valid names only)
    elements = panel.evaluate(ELEMENTS_JS)
    assert not [e for e in elements if e["tag"].lower() == "x"]
    stray = {(e["tag"], a) for e in elements if not e["katex"] for a in e["attrs"] if a not in OWN_ATTRIBUTES}
    assert not stray, stray
    odd = {a for e in elements for a in e["attrs"] if any(ch in a for ch in "\"'<>&:;=")}
    assert odd <= {"xmlns:xlink"}, odd
    panel.screenshot(path=str(ARTIFACTS / "hope_panel_names.png"))
