"""The certified band of the panel's line plot: a funnel, guaranteed to hold f at every point of the plotted line.

The line is x0 + t d, |t| <= radius. Along variable i (d = e_i) only that variable moves, so the box of |t| <= r is
|x_i - x0_i| <= r with the others held at x0; along the diagonal d = (1, ..., 1)/sqrt(n) every variable moves by at most
r/sqrt(n), so the box is that L-inf ball. ``certify`` bounds |f - P_k| over the box, hence on the part |t| <= r.

The funnel: the remainder R_k(r) certified on nested boxes r = LEVELS * radius (one certification of the traced graph
per level), so the band is tight near x0 and widens outward; at a point t the bound of the smallest level holding |t|
(and of every larger one: the least of them). Every order k <= K gives an enclosure P_k(t) +- R_k of f(t); the band
shown at order K is their intersection, with each R_k the least over the certifications at orders k..K (a
certification at order k' bounds every truncation k <= k' from one Taylor model). So raising the order never widens
the band.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from hope_engine import TaylorPolynomial, certify
from hope_engine.errors import describe

from .payloads import direction_vector, truncations_on_line

#: the funnel's levels: |t| <= r for r = each fraction of the plotted radius (nested boxes, one certification each)
LEVELS = (1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1.0)


def line_coefficients(poly: TaylorPolynomial, d: torch.Tensor) -> torch.Tensor:
    """(order + 1,) float64: a_m with P(x0 + t d) = sum_m a_m t^m for a polynomial of one output element
    (a_m = sum over |alpha| = m of c_alpha prod_i d_i^alpha_i)."""
    c = poly.coefficients.detach().reshape(poly.basis.size, -1)[:, 0].cpu().double()
    alpha = poly.basis.indices.cpu().double()
    weights = (d.double().reshape(1, -1) ** alpha).prod(dim=1)
    out = torch.zeros(poly.order + 1, dtype=torch.float64)
    return out.index_add_(0, poly.basis.degrees.cpu(), c * weights)


def _table(model: Callable, template: torch.Tensor, poly: TaylorPolynomial, batched: bool, order: int, output: int,
           direction: int, radius: float) -> dict[str, Any]:
    """One certification at ``order`` per funnel level: {"R": (order + 1, levels) float64, row k the bound on
    |f - P_k| (P_k: the panel's polynomial) over each level's box; "tm": the certificate of the whole line}."""
    n = poly.n
    variables = poly.variables
    if direction >= 0:
        chosen, per_t, d_cert = variables[direction:direction + 1], 1.0, torch.ones(1, dtype=torch.float64)
    else:
        chosen, per_t = variables, 1.0 / math.sqrt(n)
        d_cert = torch.full((n,), per_t, dtype=torch.float64)
    tm = certify(model, template, order=order, radius=radius * per_t, variables=chosen.tolist(), output=output,
                 batched=batched)
    # the certificate is about its own polynomial; the panel draws expand's: their difference along the line (both in
    # float64, bounded term by term over each level) joins the bound, so the band holds around the curve drawn
    drift = (line_coefficients(poly, direction_vector(n, direction, torch.float64))[:order + 1]
             - line_coefficients(tm.polynomial, d_cert)).abs()
    columns = []
    for fraction in LEVELS:
        level = tm if fraction == 1.0 else tm.with_radius(radius * fraction * per_t)
        rows = level.remainders_by_order().reshape(order + 1, -1)[:, 0].double()
        powers = (radius * fraction) ** torch.arange(order + 1, dtype=torch.float64)
        columns.append(rows + torch.cumsum(drift * powers, 0) * (1 + 1e-12))
    return {"R": torch.stack(columns, dim=1), "tm": tm, "per_t": per_t}


def funnel(tables: dict[int, dict[str, Any]], order: int) -> torch.Tensor:
    """(order + 1, levels): the bound used for P_k on each level: the least over the certifications at orders k..order
    and over the level's enclosing levels (a box inside a certified box is certified too): non-decreasing in the
    level."""
    best = torch.stack([torch.stack([tables[j]["R"][k] for j in range(k, order + 1)]).amin(dim=0)
                        for k in range(order + 1)])
    return best.flip(1).cummin(dim=1).values.flip(1)


def band_on_line(poly: TaylorPolynomial, direction: int, ts: list[float], radius: float, bounds: torch.Tensor,
                 order: int) -> tuple[list[float], list[float]]:
    """(lower, upper) at each t: the intersection over k <= order of P_k(t) +- the bound of the smallest level that
    holds |t| (``bounds``: from ``funnel``); +-inf where no order has a finite bound."""
    d = direction_vector(poly.n, direction, torch.float64)
    t = torch.tensor(ts, dtype=torch.float64)
    values = torch.tensor(truncations_on_line(poly, d, t), dtype=torch.float64)[:order + 1]
    radii = torch.tensor(LEVELS, dtype=torch.float64) * radius
    level = torch.searchsorted(radii * (1 + 1e-12), t.abs()).clamp(max=len(LEVELS) - 1)
    r = bounds[:, level]  # (order + 1, points)
    ok = torch.isfinite(r) & torch.isfinite(values)
    lower = torch.where(ok, values - r, torch.tensor(-math.inf, dtype=torch.float64)).amax(dim=0)
    upper = torch.where(ok, values + r, torch.tensor(math.inf, dtype=torch.float64)).amin(dim=0)
    # f(t) lies in every enclosure, so they meet; only the float64 evaluation of P_k could part them, by rounding
    crossed = lower > upper
    middle = (lower + upper) / 2
    lower, upper = torch.where(crossed, middle, lower), torch.where(crossed, middle, upper)
    return lower.tolist(), upper.tolist()


def certified_band(model: Callable, template: torch.Tensor, poly: TaylorPolynomial, batched: bool, order: int,
                   output: int, direction: int, radius: float, tol: float, ts: list[float],
                   tables: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The band payload at ``order`` along the line sampled at ``ts`` (``poly``: the panel's polynomial of the output,
    at max_order), or {"error", "order", "text"}. ``tables``: the certifications per order at this point and line,
    kept by the caller so the next order certifies only itself. Keys: remainder (order's bound on the whole line: one
    box), radii / widths (the funnel levels in t and the bound on |f - P_order| within each), lower / upper (the band at
    each t), tol, tol_radius (the largest |t| with |f - P_order| <= tol certified) and reason (why it is 0, and the
    fix), box, crossings, order, text; plain floats."""
    tables = {} if tables is None else tables
    if direction < 0 and poly.n > 1 and poly.basis.kind != "total":
        error = ("no certified band along the diagonal: the panel's polynomial has no mixed terms (terms='pure'), "
                 "and the certificate bounds the full Taylor polynomial; pick one variable's direction")
        return {"error": error, "order": order, "text": error}
    try:
        for k in range(order + 1):
            if k not in tables:
                tables[k] = _table(model, template, poly, batched, k, output, direction, radius)
        bounds = funnel(tables, order)
        lower, upper = band_on_line(poly, direction, ts, radius, bounds, order)
        tm = tables[order]["tm"]
        report = tm.radius_report(tol) if tol > 0 else None
    except Exception as e:  # noqa: BLE001 - an uncertifiable model keeps its plot, without a band
        error = f"no certified bound: {describe(e)}"
        return {"error": error, "order": order, "text": error}
    per_t = tables[order]["per_t"]
    band: dict[str, Any] = {
        "order": order, "remainder": float(tm.remainder.reshape(-1)[0]), "box": radius * per_t, "tol": tol,
        "tol_radius": None, "reason": "", "crossings": dict(tm.crossings),
        "radii": [radius * f for f in LEVELS], "widths": bounds[order].tolist(), "lower": lower, "upper": upper}
    if report is not None:
        band["tol_radius"] = float(report.radius.reshape(-1)[0]) / per_t
        if band["tol_radius"] == 0:
            band["reason"] = f"{report.reasons[0]}; fix: {report.fixes[0]}"
    band["text"] = band_text(band, radius)
    return band


def band_text(band: dict[str, Any], radius: float) -> str:
    """The band's header line: the funnel's bound near x0 and on the whole line, where |f - P| <= tol holds (or why
    nowhere, and the fix), and the kinks the line crosses."""
    if not band:
        return ""
    if "error" in band:
        return band["error"]
    widths, radii = band["widths"], band["radii"]
    text = (f"certified |f − P| ≤ {widths[0]:.2g} for |t| ≤ {radii[0]:.3g}, widening to ≤ {widths[-1]:.2g} at "
            f"|t| ≤ {radius:.3g}")
    rho = band.get("tol_radius")
    if rho is not None:
        text += f"; |f − P| ≤ {band['tol']:.3g} within |t| ≤ {rho:.3g}"
        if rho == 0:
            text += f": {band['reason']}"
        elif rho < radius:
            text += f" (radius={rho:.3g} plots only that part)"
    if band.get("crossings"):
        text += " (the line crosses a kink: " + ", ".join(band["crossings"]) + ")"
    return text
