"""The panel in a real browser: JupyterLab 4 on 127.0.0.1, Debian Chromium driven by Playwright.

Runs a notebook that does ``%load_ext hope_widgets`` and ``panel = %hope net``, checks the rendered polynomial,
moves the order slider (and times slider move -> rendered formula in the page), hovers a term, moves a point slider,
sets ``panel.order`` from Python, and writes a screenshot to test-artifacts/hope_panel.png. Then: an image input's
heat map (pixel names, the image under the map, a hovered bar named), a NaN result (log at -1: shown and explained,
no JSON warning), the paper's rule refused (the error line, the toggle back on "exact"), each with a screenshot; the
certified band as a funnel (narrower at the line's centre than at its ends), a heat-map pixel hovered (its p[r][c]
term, value, derivative and rank), legends of at least 11 px; a net retrained in place in a later cell (the panel's
formula follows, nothing touched); the notebook saved without widget state and reopened without a kernel (the static
snapshot shows the formula); and the shipped quickstart opened WITHOUT running it: its saved widget state draws the
panel, and the controls that need a kernel are off with a one-line note instead of spinning.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from support.browser import jupyterlab, launch, run_all

from hope_engine import expand
from hope_widgets.payloads import latex_terms, pixel_names

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
MODEL_SOURCE = """\
import torch
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
                          torch.nn.Linear(16, 1)).double().eval()
"""
MAGIC = "panel = %hope net --point 0.25,-0.5 --order 4 --max-order 8 --names x,y --radius 1.5"
IMAGE_SOURCE = """\
cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Tanh(), torch.nn.Flatten(),
                          torch.nn.Linear(4 * 10 * 10, 3)).double().eval()
image = torch.rand(1, 1, 12, 12, dtype=torch.float64)
%hope cnn --point-from image --max-order 4 --order 2 --output 1
"""
NAN_CELL = "%%hope --point -1 --max-order 4 --order 3\nlog(x[0])"
REFUSED_CELL = """\
def g(x):
    return torch.sin(x[0]) * x[1]
gp = %hope g --point 0.2,0.3 --max-order 4 --order 2
"""
CERTIFIED_CELL = "cp = %hope net --point 0.25,-0.5 --order 4 --max-order 8 --radius 1 --certify 1e-3"
# a net retrained in place by a later cell (retrain(): 40 Adam steps towards sin(x + y), seeded)
LIVE_SOURCE = """\
torch.manual_seed(5)
live_net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
def retrain(steps=40):
    torch.manual_seed(6)
    u = torch.rand(64, 2, dtype=torch.float64) * 2 - 1
    opt = torch.optim.Adam(live_net.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((live_net(u) - torch.sin(u.sum(1, keepdim=True))) ** 2).mean()
        loss.backward()
        opt.step()
"""
LIVE_CELL = LIVE_SOURCE + "lp = %hope live_net --point 0.1,0.2 --order 3 --max-order 4 --names x,y"
QUICKSTART = ROOT / "notebooks" / "01_quickstart.ipynb"
# float64 models: the browser shows 4-digit LaTeX, and float32 rounding (threads, kernels) could flip a digit
MAX_SHOWN = 60  # js/src/components/formula-view.js: terms typeset in the formula

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright python package is not installed")


def _expected(order: int) -> str:
    scope: dict = {}
    exec(MODEL_SOURCE, scope)  # the same seeded model the notebook builds
    poly = expand(scope["net"], torch.tensor([0.25, -0.5]), 8, names=["x", "y"])
    return poly.truncate(order).select(0).latex()


def _expected_image(order: int) -> str:
    scope: dict = {}
    exec(MODEL_SOURCE + IMAGE_SOURCE.rsplit("%hope", 1)[0], scope)
    poly = expand(scope["cnn"], scope["image"], 4, terms="pure", names=pixel_names((1, 12, 12)))
    return poly.truncate(order).select(1).latex()


def _expected_live(retrained: bool) -> str:
    scope: dict = {}
    exec("import torch\n" + LIVE_SOURCE, scope)  # the same seeded net (and training) as the notebook's
    if retrained:
        scope["retrain"]()
    poly = expand(scope["live_net"], torch.tensor([0.1, 0.2], dtype=torch.float64), 4, names=["x", "y"])
    return poly.truncate(3).select(0).latex()


def _js_fmt(v: float) -> str:
    """A number as the panel writes it (js/src/plots.js fmt): 3 significant digits, or 1.2e-4 outside [1e-3, 1e4)."""
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        mantissa, exponent = f"{v:.1e}".split("e")
        return f"{mantissa}e{int(exponent):+d}"
    r = float(f"{v:.3g}")
    return str(int(r)) if r.is_integer() else repr(r)


def _notebook() -> dict:
    def cell(src: str) -> dict:
        return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": src}

    return {"cells": [cell(MODEL_SOURCE + "%load_ext hope_widgets"), cell(MAGIC), cell(IMAGE_SOURCE), cell(""),
                      cell(NAN_CELL), cell(REFUSED_CELL), cell(CERTIFIED_CELL), cell(LIVE_CELL)],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
            "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Iterator[dict]:
    notebooks = {"hope.ipynb": _notebook(), "quickstart.ipynb": QUICKSTART}
    # the shipped quickstart is trusted, as a user does once (`jupyter trust notebooks/01_quickstart.ipynb`); not run
    with jupyterlab(tmp_path_factory.mktemp("lab"), notebooks, trusted=("quickstart.ipynb",)) as server:
        yield {"url": server["url"]["hope.ipynb"], "quickstart": server["url"]["quickstart.ipynb"],
               "log": server["log"], "root": server["log"].parent / "root"}


def _own_workspace(url: str, name: str) -> str:
    """The same notebook in a JupyterLab workspace of its own: the tabs of an earlier page (and their live panels,
    still held by their kernels) are not reopened beside it."""
    return url.replace("/lab/tree/", f"/lab/workspaces/{name}/tree/", 1)


def _rendered_latex(panel) -> str:
    """The formula as typeset in a panel: KaTeX keeps each piece's TeX in an annotation element."""
    pieces = panel.locator(".hope-formula .hope-term annotation").all_text_contents()
    return " ".join(p.strip() for p in pieces)


MOVE_JS = """([order]) => new Promise((resolve) => {
  const input = document.querySelector('.hope-order');
  const t0 = performance.now();
  input.value = String(order);
  input.dispatchEvent(new Event('input', { bubbles: true }));
  const t1 = performance.now();
  const formula = document.querySelector('.hope-formula');
  requestAnimationFrame(() => requestAnimationFrame(() => resolve({
    render_ms: t1 - t0, paint_ms: performance.now() - t0, order: formula.dataset.order,
  })));
})"""


def test_panel_in_jupyterlab(lab):
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(60_000)
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            try:
                _drive(page, lab["url"])
                _more_views(page)
                saved = _retrain_and_save(page, lab)
                page.close()
                log = lab["log"].read_text()
                assert "not JSON compliant" not in log and "Out of range float" not in log, log[-3000:]
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                page.set_default_timeout(60_000)
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                _saved_quickstart(page, _own_workspace(lab["quickstart"], "quickstart"))
                page.close()
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                page.set_default_timeout(60_000)
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                _static_snapshot(page, saved)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "hope_panel_failure.png"))
                print("browser console:\n" + "\n".join(console[-40:]))
                raise
        finally:
            browser.close()


def _drive(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(".jp-NotebookPanel-toolbar .jp-KernelName")
    run_all(page)

    # 1. the polynomial appears, typeset by KaTeX, equal to the engine's order-4 LaTeX
    page.wait_for_selector(".hope-formula .hope-term .katex", timeout=45_000)
    main = page.locator(".hope-panel").first
    formula = main.locator(".hope-formula")
    assert formula.get_attribute("data-order") == "4"
    expected4 = _expected(4)
    assert formula.get_attribute("data-latex") == expected4
    assert _rendered_latex(main) == expected4
    assert main.locator(".hope-plot-line svg path.hope-poly").count() == 1

    # 2. moving the order slider re-renders with the new order's terms, timed in the page
    timings = []
    for order in (2, 6, 1, 8, 3, 5, 0, 7, 2):
        r = page.evaluate(MOVE_JS, [order])
        assert r["order"] == str(order)
        timings.append(r)
        expected = _expected(order)
        assert formula.get_attribute("data-latex") == expected
        shown = main.locator(".hope-formula .hope-term").count()
        assert shown == min(MAX_SHOWN, len(latex_terms(expected)))
        degrees = [int(d) for d in main.locator(".hope-formula .hope-term").evaluate_all(
            "els => els.map(e => e.dataset.degree || '0')")]
        assert max(degrees) <= order
    assert _rendered_latex(main) == _expected(2)
    render = statistics.median(t["render_ms"] for t in timings)
    paint = statistics.median(t["paint_ms"] for t in timings)
    print(f"\nslider move -> formula and plots re-rendered: median {render:.2f} ms "
          f"(max {max(t['render_ms'] for t in timings):.2f} ms); to the next painted frame: median "
          f"{paint:.2f} ms (max {max(t['paint_ms'] for t in timings):.2f} ms)")
    assert render < 100

    # the same through Playwright's own input path
    main.locator(".hope-order").fill("3")
    page.wait_for_function("document.querySelector('.hope-formula').dataset.order === '3'")
    assert _rendered_latex(main) == _expected(3)

    # 3. hovering a term shows its exact coefficient and derivative
    main.locator(".hope-formula .hope-term").nth(1).hover()
    detail = main.locator(".hope-detail")
    assert "coefficient c =" in (detail.text_content() or "")
    assert detail.locator(".katex").count() == 1

    # 4. a point slider recomputes (debounced) in the kernel and the view follows
    moved = page.evaluate("""() => { const s = document.querySelector('.hope-point-slider');
        s.value = '0.75'; s.dispatchEvent(new Event('input', { bubbles: true })); return Number(s.value); }""")
    page.wait_for_function("!document.querySelector('.hope-info').textContent.includes('x₀ = (0.25,')")
    assert main.locator(".hope-error").is_hidden()
    assert abs(moved - 0.75) < 0.02  # the slider snaps to its step

    # 5. view -> Python and Python -> view: the kernel has the slider's order and point; panel.order = 5 redraws
    editor = page.locator(".jp-Cell").nth(3).locator(".cm-content")
    editor.click()
    page.keyboard.type("print(panel.order, round(panel.point[0], 9), panel.latex == panel.polynomial.latex())")
    page.keyboard.press("Shift+Enter")
    page.locator(".jp-Cell").nth(3).locator(".jp-OutputArea-output").first.wait_for()
    out = page.locator(".jp-Cell").nth(3).locator(".jp-OutputArea-output").first.text_content() or ""
    assert out.split() == ["3", str(round(moved, 9)), "True"], out
    latex3 = formula.get_attribute("data-latex")
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.type("panel.order = 5; print(panel.latex)")
    page.keyboard.press("Shift+Enter")
    page.wait_for_function("document.querySelector('.hope-formula').dataset.order === '5'")
    page.locator(".jp-Cell").nth(3).locator(".jp-OutputArea-output").first.wait_for()
    printed = (page.locator(".jp-Cell").nth(3).locator(".jp-OutputArea-output").first.text_content() or "").strip()
    assert printed == formula.get_attribute("data-latex") != latex3
    assert _rendered_latex(main) == printed
    formula.scroll_into_view_if_needed()
    main.locator(".hope-formula .hope-term").first.hover()
    main.screenshot(path=str(ARTIFACTS / "hope_panel.png"))
    print(f"screenshot: {ARTIFACTS / 'hope_panel.png'}")

    # method toggle: the paper's rule, with its difference from the exact expansion (or its error, shown in the panel)
    main.locator(".hope-method-hope").click()
    page.wait_for_function("""() => { const p = document.querySelector('.hope-panel');
        return p.querySelector('.hope-info').textContent.includes('paper rule (hope)')
            || p.querySelector('.hope-error').textContent.includes('hope'); }""")
    if main.locator(".hope-error").is_hidden():
        assert "paper rule vs exact at order 5" in (main.locator(".hope-info").text_content() or "")
        main.screenshot(path=str(ARTIFACTS / "hope_panel_paper_rule.png"))
    main.locator(".hope-method-exact").click()
    page.wait_for_function("document.querySelector('.hope-panel .hope-info').textContent.includes('· exact ·')")
    assert main.locator(".hope-formula").get_attribute("data-latex") == printed

    # 6. an image input: unmixed terms and a pixel heat map instead of the line plots
    image_panel = page.locator(".hope-panel").nth(1)
    assert image_panel.locator(".hope-plot-heat").is_visible() and image_panel.locator(".hope-plot-line").is_hidden()
    assert image_panel.locator(".hope-formula").get_attribute("data-latex") == _expected_image(2)
    assert image_panel.locator(".hope-heat-canvas").evaluate("c => c.width") >= 12
    image_panel.locator(".hope-order").fill("4")
    assert image_panel.locator(".hope-formula").get_attribute("data-latex") == _expected_image(4)
    assert "order 4" in (image_panel.locator(".hope-heat-legend").text_content() or "")
    image_panel.screenshot(path=str(ARTIFACTS / "hope_panel_heatmap.png"))


def _more_views(page) -> None:
    """The heat map in detail, a NaN result, and a refused method, each with a screenshot."""
    # the heat map: pixel names in the formula, the input image under the map, plain-words legend, a bar named on hover
    image_panel = page.locator(".hope-panel").nth(1)
    assert "p[" in (image_panel.locator(".hope-formula").get_attribute("data-latex") or "")
    assert "x_{" not in (image_panel.locator(".hope-formula").get_attribute("data-latex") or "")
    kinds = image_panel.locator(".hope-heat-kind option").all_text_contents()
    assert len(kinds) == 2 and not any("Σ" in k or "+radius" in k for k in kinds), kinds
    legend = image_panel.locator(".hope-heat-legend").text_content() or ""
    assert "red / blue" in legend and "p[row][col]" in legend, legend
    # a diverging map over the pixels: the canvas is not flat
    distinct = image_panel.locator(".hope-heat-canvas").evaluate("""c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; const seen = new Set();
        for (let i = 0; i < d.length; i += 28) seen.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]);
        return seen.size; }""")
    assert distinct > 20
    image_panel.locator(".hope-plot-bars .hope-bar").nth(1).hover()  # bar 0 is the constant term
    label = image_panel.locator(".hope-bar-label").text_content() or ""
    assert label.startswith("p[") and "c = " in label, label
    # titles fit: no plot title is wider than its plot
    for title in page.locator(".hope-plot svg .hope-plot-title").all():
        box, frame = title.bounding_box(), title.locator("xpath=..").bounding_box()
        if box and frame:
            assert box["x"] >= frame["x"] - 1 and box["x"] + box["width"] <= frame["x"] + frame["width"] + 1
    image_panel.screenshot(path=str(ARTIFACTS / "hope_panel_heatmap.png"))

    # the header sums the image up (its shape, min / max / mean), not x0 = (0, 0, ...)
    info = image_panel.locator(".hope-info").text_content() or ""
    assert info.startswith("input 1×12×12: min ") and "mean" in info and "x₀ = (" not in info, info
    # the input image in a panel of its own; the map's colour bar with its numeric range
    assert image_panel.locator(".hope-heat-image").evaluate("c => c.width") >= 12
    colorbar = image_panel.locator(".hope-colorbar").text_content() or ""
    assert re.search(r"−\S+.*0.*\+\S+", colorbar), colorbar
    # hovering a cell names its term p[r][c], with its value, derivative and rank
    image_panel.locator(".hope-order").fill("2")
    canvas = image_panel.locator(".hope-heat-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    row, col = 5, 7
    canvas.hover(position={"x": (col + 0.5) * box["width"] / 12, "y": (row + 0.5) * box["height"] / 12})
    hover = image_panel.locator(".hope-heat-hover").text_content() or ""
    assert hover.startswith(f"p[{row}][{col}]: input ") and "rank " in hover and " of 144 by |value|" in hover, hover
    scope: dict = {}
    exec(MODEL_SOURCE + IMAGE_SOURCE.rsplit("%hope", 1)[0], scope)
    poly = expand(scope["cnn"], scope["image"], 4, terms="pure", names=pixel_names((1, 12, 12))).select(1)
    alpha = tuple(1 if i == row * 12 + col else 0 for i in range(144))
    derivative = float(poly.coefficient(alpha).reshape(()))
    shown = re.search(rf"∂f/∂p\[{row}\]\[{col}\] = (\S+)", hover)
    assert shown and float(shown.group(1)) == pytest.approx(derivative, rel=0.051), hover
    assert f"input {_js_fmt(float(scope['image'][0, 0, row, col]))} · " in hover, hover
    image_panel.screenshot(path=str(ARTIFACTS / "hope_panel_heat_hover.png"))

    # legends, ticks and titles of the plots are at least 11 px on screen at 100% zoom
    sizes = page.evaluate("""() => [...document.querySelectorAll(
            '.hope-plot svg .hope-legend, .hope-plot svg .hope-tick, .hope-plot svg .hope-plot-title')]
        .filter(e => e.getBoundingClientRect().width > 0)
        .map(e => { const m = e.getScreenCTM();  // its scale, whatever its rotation
                    return parseFloat(getComputedStyle(e).fontSize) * Math.hypot(m.a, m.b); })""")
    assert sizes and min(sizes) >= 11 - 1e-6, min(sizes)

    # a NaN result: shown, explained, never a blank plot or a hidden term
    nan_panel = page.locator(".hope-panel").nth(2)
    nan_panel.scroll_into_view_if_needed()
    warning = nan_panel.locator(".hope-warning")
    assert warning.is_visible()
    text = warning.text_content() or ""
    assert "NaN" in text and "domain" in text, text
    assert nan_panel.locator(".hope-formula .hope-term-nonfinite").count() == 1
    assert "nan" in (nan_panel.locator(".hope-formula").get_attribute("data-latex") or "")
    nan_panel.locator(".hope-threshold").fill("-1")  # a threshold hides small terms, never the NaN one
    assert nan_panel.locator(".hope-formula .hope-term-nonfinite").count() == 1
    assert "NaN" in (nan_panel.locator(".hope-plot-line").text_content() or "")
    assert "NaN" in (nan_panel.locator(".hope-plot-error").text_content() or "")
    cell_outputs = page.locator(".jp-Cell").nth(4).locator(".jp-OutputArea-output")
    assert "JSON" not in " ".join(cell_outputs.all_text_contents())
    nan_panel.screenshot(path=str(ARTIFACTS / "hope_panel_nan.png"))

    # the paper's rule refuses a product of inputs: the error line says so, the toggle stays on the method shown
    refused = page.locator(".hope-panel").nth(3)
    refused.scroll_into_view_if_needed()
    refused.locator(".hope-method-hope").click()
    page.wait_for_function("""() => document.querySelectorAll('.hope-panel')[3]
        .querySelector('.hope-error').textContent.includes('hope')""")
    error = refused.locator(".hope-error").text_content() or ""
    assert "last good result" in error and "aten.mul" in error  # the whole message, with what to do
    page.wait_for_function("""() => document.querySelectorAll('.hope-panel')[3]
        .querySelector('.hope-method-exact').classList.contains('hope-active')""")
    assert "hope-active" not in (refused.locator(".hope-method-hope").get_attribute("class") or "")
    refused.screenshot(path=str(ARTIFACTS / "hope_panel_error.png"))

    # the certified band: a shaded P +- R along the line, the guarantee in words, and a tolerance the user can change
    page.wait_for_function("document.querySelectorAll('.hope-panel .hope-band').length >= 1", timeout=45_000)
    cert = page.locator(".hope-panel").nth(4)
    cert.scroll_into_view_if_needed()
    assert cert.locator(".hope-plot-line .hope-band").count() == 1
    info = cert.locator(".hope-band-info").text_content() or ""
    assert "certified |f − P| ≤" in info and "within |t| ≤" in info, info
    cert.locator(".hope-certify-tol").fill("1e-7")
    cert.locator(".hope-certify-tol").press("Enter")
    page.wait_for_function("""() => document.querySelectorAll('.hope-panel')[4]
        .querySelector('.hope-band-info').textContent.includes('1e-07')""")
    assert cert.locator(".hope-plot-line .hope-band-radius").count() == 2  # where |f - P| <= 1e-7 is certified
    cert.screenshot(path=str(ARTIFACTS / "hope_panel_certified.png"))
    # a funnel: certified on nested boxes around x0, the band is narrower at the line's centre than at its ends
    assert "widening to" in (cert.locator(".hope-band-info").text_content() or "")
    band = cert.locator(".hope-plot-line polygon.hope-band")
    assert band.count() == 1
    widths = band.evaluate("""p => {
        const pts = p.getAttribute('points').trim().split(/\\s+/).map(q => q.split(',').map(Number));
        const n = pts.length / 2;  // the upper edge left to right, then the lower edge right to left
        return Array.from({ length: n }, (_, i) => pts[2 * n - 1 - i][1] - pts[i][1]); }""")
    centre = widths[len(widths) // 2]
    assert len(widths) == 81 and centre < widths[0] and centre < widths[-1], widths
    cert.locator(".hope-plot-line").screenshot(path=str(ARTIFACTS / "hope_panel_funnel.png"))


def _saved_quickstart(page, url: str) -> None:
    """The shipped quickstart, opened and NOT run: the saved widget state draws the panel, and the order slider works
    without the kernel (it only filters the saved expansion)."""
    page.goto(url)
    page.wait_for_selector(".jp-Cell .jp-InputPrompt", timeout=60_000)
    # JupyterLab renders the cells near the viewport only: scroll down to the panel's cell
    for _ in range(30):
        if page.locator(".hope-panel").count():
            break
        page.mouse.move(800, 600)
        page.mouse.wheel(0, 500)
        page.wait_for_timeout(300)
    deadline = time.time() + 30  # the saved state is restored once the kernel is up
    while not page.locator(".hope-panel").count() and time.time() < deadline:
        page.wait_for_timeout(500)
    if not page.locator(".hope-panel").count():
        outputs = page.locator(".jp-Cell", has_text="%hope net").locator(".jp-OutputArea-output").all_text_contents()
        raise AssertionError(f"the saved quickstart shows no panel; its %hope cell shows: {outputs}")
    page.locator(".hope-panel").first.scroll_into_view_if_needed()
    page.wait_for_selector(".hope-panel .hope-formula .hope-term .katex", timeout=60_000)
    prompts = [p.strip() for p in page.locator(".jp-InputPrompt").all_text_contents()]
    assert "[*]:" not in prompts and any(re.fullmatch(r"\[\d+\]:", p) for p in prompts), prompts  # nothing ran
    panel = page.locator(".hope-panel").first
    formula = panel.locator(".hope-formula")
    assert formula.get_attribute("data-order") == "6" and "x y^{2}" in (formula.get_attribute("data-latex") or "")
    panel.locator(".hope-order").fill("2")
    page.wait_for_function("document.querySelector('.hope-formula').dataset.order === '2'")
    assert "x y^{2}" not in (formula.get_attribute("data-latex") or "")
    assert panel.locator(".hope-plot-line svg path.hope-poly").count() == 1
    # no kernel holds this panel (its state came from the file): the controls that would ask one are off, with a
    # one-line note, and nothing spins
    note = panel.locator(".hope-no-kernel")
    note.wait_for(state="visible", timeout=30_000)
    assert (note.text_content() or "").startswith("No kernel is connected to this panel")
    assert panel.get_attribute("data-kernel") == "none"
    assert panel.locator(".hope-point-slider").first.is_disabled()
    assert panel.locator(".hope-method-hope").is_disabled() and panel.locator(".hope-certify-tol").is_disabled()
    assert not panel.locator(".hope-order").is_disabled()  # the order still works without a kernel
    assert panel.locator(".hope-spinner.hope-active").count() == 0
    panel.screenshot(path=str(ARTIFACTS / "hope_quickstart_saved.png"))


def _retrain_and_save(page, lab) -> dict:
    """A net retrained in place in a later cell: the panel's formula follows, nothing touched. Then the notebook is
    saved (JupyterLab's default: without widget state) and copied without its kernelspec, to reopen without a kernel.
    Returns {"url": the copy, "latex": the formula on screen when saved}."""
    live = page.locator(".hope-panel").nth(5)
    live.scroll_into_view_if_needed()
    formula = live.locator(".hope-formula")
    before, after = _expected_live(False), _expected_live(True)
    assert before != after
    assert formula.get_attribute("data-latex") == before
    assert live.get_attribute("data-kernel") == "live"  # the panel found its kernel (js/src/components/kernel.js)
    editor = page.locator(".jp-Cell").nth(3).locator(".cm-content")
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.type("retrain()")
    page.keyboard.press("Shift+Enter")
    try:
        page.wait_for_function("""(old) => document.querySelectorAll('.hope-panel')[5]
            .querySelector('.hope-formula').dataset.latex !== old""", arg=before, timeout=30_000)
    except playwright_api.TimeoutError:
        raise AssertionError("the panel kept the old formula after its net was retrained in a later cell (the live "
                             "update after each cell: hope_widgets/panel.py)") from None
    assert formula.get_attribute("data-latex") == after
    assert _rendered_latex(live) == after
    live.screenshot(path=str(ARTIFACTS / "hope_panel_retrained.png"))

    # save (File > Save Notebook) and wait for the file to hold the live cell's output
    path = lab["root"] / "hope.ipynb"
    page.locator(".lm-MenuBar-itemLabel", has_text="File").first.click()
    page.locator(".lm-Menu-item[data-command='docmanager:save']").click()
    deadline = time.time() + 30
    while True:
        saved = json.loads(path.read_text())
        if saved["cells"][7]["outputs"]:
            break
        assert time.time() < deadline, "the notebook was not saved"
        page.wait_for_timeout(300)
    assert "widgets" not in saved["metadata"], "saved with widget state: the case to check is without it"
    outputs = json.dumps(saved["cells"][7]["outputs"])
    assert "static snapshot" in outputs, "the saved output of the panel holds no static snapshot: " + outputs[:2000]
    # reopened without a kernel: a kernelspec no server has, so JupyterLab cannot start the default one (it does
    # when the spec is missing and one kernel is installed) and asks; the test says "No Kernel"
    saved["metadata"]["kernelspec"] = {"name": "hope-no-such-kernel", "display_name": "none", "language": "python"}
    (lab["root"] / "hope_no_kernel.ipynb").write_text(json.dumps(saved))
    url = _own_workspace(lab["url"].replace("hope.ipynb", "hope_no_kernel.ipynb"), "static")
    return {"url": url, "latex": after}


def _static_snapshot(page, saved: dict) -> None:
    """The notebook saved without widget state, reopened without a kernel: the panel's output shows its static
    snapshot, the formula shown when it was saved."""
    page.goto(saved["url"])
    kernel = page.locator(".jp-NotebookPanel-toolbar .jp-KernelName")
    no_kernel = page.locator(".jp-Dialog button", has_text="No Kernel")
    deadline = time.time() + 60
    while (kernel.text_content() or "").strip() != "No Kernel" or no_kernel.count():
        if no_kernel.count() and no_kernel.first.is_visible():
            no_kernel.first.click()
        assert time.time() < deadline, f"the copy did not open without a kernel: {kernel.text_content()!r}"
        page.wait_for_timeout(300)
    cell = page.locator(".jp-Cell", has_text="lp = %hope live_net")
    cell.scroll_into_view_if_needed()
    output = cell.locator(".jp-OutputArea-output")
    deadline = time.time() + 30
    while "static snapshot" not in " ".join(output.all_text_contents()):
        assert time.time() < deadline, "no static snapshot is shown: " + " ".join(output.all_text_contents())[:2000]
        page.wait_for_timeout(300)
    text = " ".join(output.all_text_contents())
    numbers = re.findall(r"\d+\.\d+", saved["latex"])
    missing = [x for x in numbers if x not in text]
    assert numbers and not missing, f"the snapshot lacks the coefficients {missing} of {saved['latex']}: {text[:2000]}"
    assert cell.locator(".hope-panel").count() == 0  # no live panel: the snapshot stands in for it
    cell.screenshot(path=str(ARTIFACTS / "hope_static_snapshot.png"))
