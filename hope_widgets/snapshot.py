"""The panel as static HTML: what a notebook keeps of it when saved without widget state or read without a kernel.

``render(panel)`` writes the polynomial shown (plain HTML: sub- and superscripts, no KaTeX or script), its LaTeX,
and the plots as inline SVG -- the network against the polynomial along the plotted line (with the certified band
when it is on) and the error of every order on that line, or, for image inputs, the map of the first-order
coefficients -- marked "static snapshot". A ``<style>`` rule hides it wherever the live panel is drawn in the same
output area (JupyterLab, Notebook 7 and 6, nbviewer with widget state); GitHub, nbviewer without widget state and an
untrusted or kernel-less notebook show it.
"""

from __future__ import annotations

import html
import math
from typing import Any

MAX_TERMS = 60  # terms written out; the rest are counted
MAX_LATEX_TERMS = 300  # terms in the snapshot's LaTeX
WIDTH, HEIGHT = 380, 210
MARGIN = (44, 12, 28, 26)  # left, right, top, bottom
NET_COLOUR, POLY_COLOUR, BAND_COLOUR = "#1f1f1f", "#d2691e", "#2e6b47"
#: hides the snapshot where the live panel (``.hope-panel``, js/src/index.js) is drawn in the same output area
HIDE_WHEN_LIVE = (".jp-OutputArea:has(.hope-panel) .hope-static, .output:has(.hope-panel) .hope-static"
                  "{display:none}")


def number(v: float, digits: int = 4) -> str:
    """``v`` to ``digits`` significant digits as HTML (1.5·10<sup>−7</sup>), NaN and infinity in words."""
    if not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("∞" if v > 0 else "−∞")
    s = f"{v:.{digits}g}"
    if "e" in s:
        mant, exp = s.split("e")
        s = f"{mant}·10<sup>{int(exp)}</sup>"
    return s.replace("-", "−")


def name_html(name: str) -> str:
    """A variable name: x1 -> x<sub>1</sub> (as the LaTeX writes it), anything else escaped as it is."""
    head = name.rstrip("0123456789")
    tail = name[len(head):]
    if head and tail and "[" not in name and "_" not in name:
        return f"<i>{html.escape(head)}</i><sub>{tail}</sub>"
    return f"<i>{html.escape(name)}</i>" if name.isidentifier() else html.escape(name)


def monomial_html(alpha: list[list[int]], names: list[str], center: list[float]) -> str:
    """prod_i (x_i - x0_i)^a_i as HTML (just x_i where x0_i = 0), "" for the constant; ``alpha`` sparse, as the term
    records carry it: [[variable, power], ...]."""
    parts = []
    for i, e in alpha:
        c0 = center[i]
        base = name_html(names[i])
        if c0 != 0:
            base = f"({base} {'−' if c0 > 0 else '+'} {number(abs(c0))})"
        parts.append(base if e == 1 else f"{base}<sup>{e}</sup>")
    return " ".join(parts)


def shown_terms(records: dict[str, list], order: int, threshold: float, sort: str) -> list[int]:
    """The terms the panel shows, as indices into its term records: degree <= order, |c| > threshold (a NaN or
    infinite one always), by degree or magnitude -- the browser's filter (js/src/formula.js), so the LaTeX they make
    is ``TaylorPolynomial.latex``'s."""
    c = [_real(v) for v in records["c"]]
    idx = [i for i, v in enumerate(c) if records["deg"][i] <= order and v != 0
           and (not math.isfinite(v) or abs(v) > threshold)]
    size = [abs(v) if math.isfinite(v) else math.inf for v in c]
    if sort == "magnitude":
        idx.sort(key=lambda i: -size[i])
    else:
        idx.sort(key=lambda i: (records["deg"][i], -size[i]))
    return idx


def polynomial_html(records: dict[str, list], shown: list[int], names: list[str], center: list[float]) -> str:
    """The terms ``shown`` (indices into the term ``records``) as HTML, the first ``MAX_TERMS`` written out."""
    out = []
    for pos, i in enumerate(shown[:MAX_TERMS]):
        c = _real(records["c"][i])
        mono = monomial_html(records["alpha"][i], names, center)
        mag = number(abs(c)) if math.isfinite(c) else number(c)
        body = mag if not mono else (mono if mag == "1" else f"{mag} {mono}")
        sign = ("−" if c < 0 else "") if pos == 0 else ("− " if c < 0 else "+ ")
        out.append(f'<span style="white-space:nowrap">{sign}{body}</span>')  # a term is never broken
    if not out:
        return "0"
    more = len(shown) - MAX_TERMS
    if more > 0:
        out.append(f"+ … ({more} more term{'s' if more != 1 else ''})")
    return " ".join(out)


def polynomial_latex(records: dict[str, list], shown: list[int]) -> str:
    """The LaTeX of the terms ``shown``, as ``TaylorPolynomial.latex`` writes it (each record carries its body)."""
    pieces = []
    for pos, i in enumerate(shown):
        c = _real(records["c"][i])
        sign = "-" if c < 0 else ("" if pos == 0 else "+")
        pieces.append(f"{sign} {records['tex'][i]}" if sign else records["tex"][i])
    return " ".join(pieces) if pieces else "0"


def _real(v: Any) -> float:
    """A number as the payloads carry it ("NaN", "Infinity" and "-Infinity" as strings) back to a float."""
    return float(v) if isinstance(v, (int, float, str)) else math.nan


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    """Round ticks inside [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _path(xs: list[float], ys: list[float], sx, sy, lo: float, hi: float) -> str:
    """An SVG path through the finite points inside [lo, hi] (a gap wherever a value is NaN or off the plot)."""
    d, pen = [], False
    for x, y in zip(xs, ys):
        if math.isfinite(y) and lo <= y <= hi:
            d.append(f"{'L' if pen else 'M'}{sx(x):.1f},{sy(y):.1f}")
            pen = True
        else:
            pen = False
    return " ".join(d)


def _frame(title: str, xlo: float, xhi: float, ylo: float, yhi: float, xlabel: str, log: bool = False):
    """The axes of one plot: (opening SVG text, x scale, y scale)."""
    left, right, top, bottom = MARGIN
    sx = _scale(xlo, xhi, left, WIDTH - right)
    sy = _scale(ylo, yhi, HEIGHT - bottom, top)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="10" role="img">',
             f"<title>{html.escape(title)}</title>",
             f'<text x="{left}" y="14" font-size="11" fill="#1f1f1f">{html.escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{WIDTH - left - right}" height="{HEIGHT - top - bottom}" '
             'fill="none" stroke="#999" stroke-width="0.8"/>']
    for v in _ticks(xlo, xhi):
        parts.append(f'<text x="{sx(v):.1f}" y="{HEIGHT - bottom + 12}" text-anchor="middle" fill="#555">'
                     f"{number(v, 3)}</text>")
    for v in _ticks(ylo, yhi):
        label = number(10 ** v, 2) if log else number(v, 3)
        parts.append(f'<line x1="{left}" x2="{WIDTH - right}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" stroke="#e4e4e4" '
                     f'stroke-width="0.6"/><text x="{left - 4}" y="{sy(v) + 3:.1f}" text-anchor="end" '
                     f'fill="#555">{label}</text>')
    parts.append(f'<text x="{(left + WIDTH - right) / 2:.0f}" y="{HEIGHT - 2}" text-anchor="middle" '
                 f'fill="#555">{html.escape(xlabel)}</text>')
    return parts, sx, sy


def line_svg(line: dict[str, Any], band: dict[str, Any], order: int) -> str:
    """The network and the order-``order`` polynomial along the plotted line x0 + t d (and the certified band)."""
    ts = [_real(v) for v in line["t"]]
    net = [_real(v) for v in line["net"]]
    poly = [_real(v) for v in line["poly"][min(order, len(line["poly"]) - 1)]]
    lower = [_real(v) for v in band.get("lower", [])]
    upper = [_real(v) for v in band.get("upper", [])]
    finite = [v for v in net + poly if math.isfinite(v)]
    if not finite:
        return ""
    lo, hi = min(finite), max(finite)
    pad = 0.08 * (hi - lo) or 0.5
    lo, hi = lo - pad, hi + pad
    parts, sx, sy = _frame(f"network and polynomial (order {order}) along the line", ts[0], ts[-1], lo, hi,
                           "t (distance from the point along the line)")
    if len(lower) == len(ts) == len(upper):
        edge = [(t, min(max(v, lo), hi)) for t, v in zip(ts, upper) if math.isfinite(v)]
        back = [(t, min(max(v, lo), hi)) for t, v in zip(ts, lower) if math.isfinite(v)][::-1]
        if edge and back:
            points = " ".join(f"{sx(t):.1f},{sy(v):.1f}" for t, v in edge + back)
            parts.append(f'<polygon points="{points}" fill="{BAND_COLOUR}" fill-opacity="0.18" stroke="none"/>')
    parts.append(f'<path d="{_path(ts, net, sx, sy, lo, hi)}" fill="none" stroke="{NET_COLOUR}" stroke-width="2"/>')
    parts.append(f'<path d="{_path(ts, poly, sx, sy, lo, hi)}" fill="none" stroke="{POLY_COLOUR}" '
                 'stroke-width="1.6" stroke-dasharray="5 3"/>')
    left, top = MARGIN[0], MARGIN[2]
    legend = [("network", NET_COLOUR), (f"polynomial, order {order}", POLY_COLOUR)]
    if lower:
        legend.append(("certified band", BAND_COLOUR))
    for i, (label, colour) in enumerate(legend):
        y = top + 12 + 13 * i
        parts.append(f'<line x1="{left + 8}" x2="{left + 26}" y1="{y - 3}" y2="{y - 3}" stroke="{colour}" '
                     f'stroke-width="2"/><text x="{left + 30}" y="{y}" fill="#1f1f1f">{html.escape(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def error_svg(line: dict[str, Any], order: int) -> str:
    """max over the line of |P_k - f| for every order k (log scale), the shown order marked."""
    net = [_real(v) for v in line["net"]]
    errors = []
    for row in line["poly"]:
        diffs = [abs(_real(p) - f) for p, f in zip(row, net) if math.isfinite(_real(p)) and math.isfinite(f)]
        errors.append(max(diffs) if diffs else math.nan)
    logs = [math.log10(max(e, 1e-17)) for e in errors if math.isfinite(e)]
    if not logs:
        return ""
    lo, hi = math.floor(min(logs)), math.ceil(max(logs))
    hi = hi if hi > lo else lo + 1
    ks = list(range(len(errors)))
    parts, sx, sy = _frame("max |P_k − f| on the line, by order k", 0, max(len(errors) - 1, 1), lo, hi, "order k",
                           log=True)
    ys = [math.log10(max(e, 1e-17)) if math.isfinite(e) else math.nan for e in errors]
    parts.append(f'<path d="{_path(ks, ys, sx, sy, lo, hi)}" fill="none" stroke="{POLY_COLOUR}" stroke-width="1.4"/>')
    for k, y in zip(ks, ys):
        if math.isfinite(y):
            current = k == order
            parts.append(f'<circle cx="{sx(k):.1f}" cy="{sy(y):.1f}" r="{4 if current else 2.5}" '
                         f'fill="{POLY_COLOUR if current else "#fff"}" stroke="{POLY_COLOUR}"/>')
    parts.append("</svg>")
    return "".join(parts)


def heat_svg(heat: dict[str, Any]) -> str:
    """The first-order coefficients c_{e_i} per pixel (channels summed) on a diverging scale, with its range."""
    rows, cols, channels = int(heat["rows"]), int(heat["cols"]), int(heat["channels"])
    if not heat.get("coef"):
        return ""
    first = [_real(v) for v in heat["coef"][0]]
    cells = rows * cols
    values = [sum(first[k * cells + p] for k in range(channels) if k * cells + p < len(first)) for p in range(cells)]
    scale = max((abs(v) for v in values if math.isfinite(v)), default=0.0) or 1.0
    size = max(3, min(14, 300 // max(rows, cols)))
    width, height = cols * size, rows * size
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width + 150}" height="{max(height, 60) + 22}" '
             f'font-family="sans-serif" font-size="10" role="img">',
             "<title>first-order coefficient of each pixel</title>",
             '<text x="0" y="12" font-size="11" fill="#1f1f1f">first-order coefficient of each pixel</text>']
    for p, v in enumerate(values):
        r, c = divmod(p, cols)
        parts.append(f'<rect x="{c * size}" y="{20 + r * size}" width="{size}" height="{size}" '
                     f'fill="{_diverging(v / scale)}"><title>{html.escape(_pixel(r, c))} = {number(v)}</title>'
                     "</rect>")
    x = width + 12
    for i, (label, v) in enumerate(((number(scale, 3), 1.0), ("0", 0.0), (number(-scale, 3), -1.0))):
        y = 20 + i * 22
        parts.append(f'<rect x="{x}" y="{y}" width="14" height="14" fill="{_diverging(v)}" stroke="#999" '
                     f'stroke-width="0.5"/><text x="{x + 20}" y="{y + 11}" fill="#1f1f1f">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _pixel(r: int, c: int) -> str:
    return f"p[{r}][{c}]"


def _diverging(u: float) -> str:
    """-1 (blue) .. 0 (white) .. 1 (red); NaN grey."""
    if not math.isfinite(u):
        return "#9e9e9e"
    u = max(-1.0, min(1.0, u))
    end = (178, 24, 43) if u > 0 else (33, 102, 172)
    r, g, b = (round(255 + (e - 255) * abs(u)) for e in end)
    return f"#{r:02x}{g:02x}{b:02x}"


def render(panel: Any) -> str:
    """The static snapshot of ``panel`` as it is now (its order, output, threshold, sort, point and result)."""
    view, status = panel.view, panel.status
    result = view.get("result", {})
    point = [_real(v) for v in result.get("point", [])]
    at = ", ".join(number(v) for v in point[:8]) + (", …" if len(point) > 8 else "")
    title = html.escape(view.get("title") or "model")
    output = f", output {panel.output} of {panel.n_outputs}" if panel.n_outputs > 1 else ""
    head = (f"<b>{title}</b> around ({at}): order {panel.order} of {panel.max_order}, method "
            f"{html.escape(str(result.get('method', panel.method)))}{output}")
    lines = []
    for key, colour in (("error", "#b00020"), ("warning", "#8a1c00"), ("notice", "#8a6100")):
        if status.get(key):
            lines.append(f'<div style="color:{colour};font-size:12px">{html.escape(status[key])}</div>')
    plots = []
    if view.get("mode") == "line" and "t" in view.get("line", {}):
        plots += [line_svg(view["line"], view.get("band", {}), panel.order), error_svg(view["line"], panel.order)]
        if view.get("band", {}).get("text"):
            lines.append(f'<div style="color:#2e6b47;font-size:12px">{html.escape(view["band"]["text"])}</div>')
    elif view.get("mode") == "heat" and view.get("heat"):
        plots.append(heat_svg(view["heat"]))
    records = view.get("term_records", {"c": [], "deg": [], "alpha": [], "tex": []})
    shown = shown_terms(records, panel.order, panel.threshold, panel.sort)
    formula = polynomial_html(records, shown, view.get("names", []), point)
    latex = polynomial_latex(records, shown[:MAX_LATEX_TERMS])
    if len(shown) > MAX_LATEX_TERMS:
        latex += f" \\dots  % the first {MAX_LATEX_TERMS} of {len(shown)} terms: panel.latex has them all"
    return "".join([
        f"<style>{HIDE_WHEN_LIVE}</style>",
        '<div class="hope-static" style="font-family:sans-serif;font-size:13px;border:1px solid #dcdcdc;'
        'border-radius:6px;padding:8px 10px;max-width:1080px">',
        '<div style="color:#6b6b6b;font-size:11px">static snapshot of the hope panel (run the cell for the live '
        "panel)</div>",
        f"<div>{head}</div>", *lines,
        f'<div class="hope-static-formula" style="background:#f4f5f7;border-radius:4px;padding:6px 8px;margin:6px 0;'
        f'line-height:1.7">P(x) = {formula}</div>',
        f'<details><summary style="font-size:11px;color:#6b6b6b">LaTeX</summary><pre style="white-space:pre-wrap">'
        f"{html.escape(latex)}</pre></details>",
        '<div style="display:flex;flex-wrap:wrap;gap:8px">', *plots, "</div></div>"])
