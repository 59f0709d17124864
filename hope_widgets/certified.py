"""The certified band of the panel's line plot: |f - P_k| <= R on every point of the plotted segment, guaranteed.

The segment is x0 + t d, |t| <= radius. Along variable i (d = e_i) only that variable moves, so the box is
|x_i - x0_i| <= radius with the others held at x0; along the diagonal d = (1, ..., 1)/sqrt(n) every variable moves by
at most radius/sqrt(n), so the box is that L-inf ball. ``certify`` bounds |f - P_k| over the box, hence on the segment.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from hope_engine import certify
from hope_engine.errors import describe


def certified_band(model: Callable, template: torch.Tensor, variables: torch.Tensor, batched: bool, order: int,
                   output: int, direction: int, radius: float, tol: float) -> dict[str, Any]:
    """{"remainder": R, "box": per-variable half-width, "tol": tol, "tol_radius": the largest |t| whose box is
    certified with R <= tol, "crossings": kinks the box crosses} or {"error": why no certificate}; plain floats."""
    n = variables.numel()
    if direction >= 0:
        chosen, half_width, scale = variables[direction:direction + 1], radius, 1.0
    else:
        chosen, half_width, scale = variables, radius / math.sqrt(n), math.sqrt(n)
    try:
        tm = certify(model, template, order=order, radius=half_width, variables=chosen.tolist(), output=output,
                     batched=batched)
        remainder = float(tm.remainder.reshape(-1)[0])
        tol_radius = float(tm.certified_radius(tol).reshape(-1)[0]) * scale if tol > 0 else None
    except Exception as e:  # noqa: BLE001 - an uncertifiable model keeps its plot, without a band
        return {"error": f"no certified bound: {describe(e)}"}
    return {"remainder": remainder, "box": half_width, "tol": tol, "tol_radius": tol_radius,
            "crossings": dict(tm.crossings)}


def band_text(band: dict[str, Any], radius: float) -> str:
    """The info line: what is certified, in words."""
    if not band:
        return ""
    if "error" in band:
        return band["error"]
    text = f"certified |f − P| ≤ {band['remainder']:.3g} on the plotted segment (|t| ≤ {radius:.3g})"
    if band.get("tol_radius") is not None:
        text += f"; |f − P| ≤ {band['tol']:.3g} within |t| ≤ {band['tol_radius']:.3g}"
    if band.get("crossings"):
        text += " (the box crosses a kink: " + ", ".join(band["crossings"]) + ")"
    return text
