"""What the panel sends to the browser, computed from one expansion: pure functions of a ``TaylorPolynomial``.

Everything here is derived once per expansion (or per output / line direction); the order slider, the threshold and
the sort only filter these records in the browser, so they cost no kernel work at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hope_engine import TaylorPolynomial

# latex_number is the engine's number format, so the browser's LaTeX equals p.latex(); pixel_names its p[r][c] names
from hope_engine.algebra.polynomial import latex_number, pixel_names  # noqa: F401 - pixel_names re-exported

LATEX_DIGITS = 4  # the engine's default for TaylorPolynomial.latex
LINE_POINTS = 81
#: how a non-finite number travels to the browser (JSON has no NaN or infinity); ``Number(s)`` in JS reads them back
NONFINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def sanitize(value: Any) -> Any:
    """``value`` with every NaN / infinity (at any depth of dicts, lists and tuples) replaced by the string "NaN",
    "Infinity" or "-Infinity", so the synced state is strict JSON: jupyter_client warns about bare NaN ("Out of range
    float values are not JSON compliant") and the browser would read it as null. The front end decodes the three
    strings back to numbers (js/src/decode.js); hope_widgets/contract.schema.json types every payload."""
    if isinstance(value, float):
        return value if math.isfinite(value) else NONFINITE["nan" if math.isnan(value) else str(value)]
    if isinstance(value, dict):
        return {k: sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    return value


def nonfinite_message(poly: TaylorPolynomial, point: list[float]) -> str:
    """One line saying which coefficients of ``poly`` are NaN or infinite and why, or "" when all are finite."""
    c = poly.coefficients.detach().reshape(poly.basis.size, -1)
    bad = ~torch.isfinite(c).all(dim=1)
    if not bool(bad.any()):
        return ""
    kinds = [word for word, found in (("NaN", bool(torch.isnan(c).any())), ("infinite", bool(torch.isinf(c).any())))
             if found]
    degrees = sorted({int(d) for d in poly.basis.degrees[bad.cpu()].tolist()})
    at = ", ".join(f"{v:.4g}" for v in point[:6]) + (", ..." if len(point) > 6 else "")
    count = int(bad.sum())
    return (f"{count} of {poly.basis.size} coefficients {'is' if count == 1 else 'are'} {' or '.join(kinds)} (degree "
            f"{', '.join(map(str, degrees))}): the point ({at}) left the domain of a function the model applies "
            f"(log or sqrt of a negative number, a division by zero, an overflow); move the point")


def scalar_coefficients(poly: TaylorPolynomial) -> torch.Tensor:
    """(M,) float64 coefficients of a polynomial of one output element at one reference point."""
    c = poly.coefficients
    if c[0].numel() != 1:
        raise ValueError(f"expected one output element, got output shape {tuple(c.shape[1:])}")
    return c.detach().reshape(c.shape[0]).cpu().double()


def output_count(poly: TaylorPolynomial) -> int:
    """Number of output elements per reference point."""
    lead = 2 if poly.batched else 1
    return math.prod(poly.coefficients.shape[lead:])


def term_records(poly: TaylorPolynomial) -> dict[str, list[Any]]:
    """Every nonzero term of a scalar polynomial in basis order, columnar.

    Keys: ``deg`` (degree), ``c`` (coefficient), ``d`` (derivative d^a f(x0)), ``tex`` (the LaTeX body exactly as
    ``TaylorPolynomial.latex`` writes it, without the sign), ``alpha`` (sparse multi-index: [[variable, power], ...]).
    The browser filters by order and threshold and sorts as ``terms()`` does (stable sorts from basis order), so the
    formula it shows is the engine's ``p.truncate(order).latex(threshold=..., sort=...)``.
    """
    c = scalar_coefficients(poly)
    factorials = poly.basis.factorials()
    rows = poly.basis.multi_indices()
    degrees = poly.basis.degrees.tolist()
    out: dict[str, list[Any]] = {"deg": [], "c": [], "d": [], "tex": [], "alpha": []}
    for m, v in enumerate(c.tolist()):
        if v == 0.0:
            continue
        alpha = rows[m]
        mag = latex_number(abs(v), LATEX_DIGITS)
        mono = poly.monomial_text(alpha, style="latex")
        body = mag if mono == "1" else (mono if mag == "1" else f"{mag}\\, {mono}")
        out["deg"].append(int(degrees[m]))
        out["c"].append(v)
        out["d"].append(v * float(factorials[m]))
        out["tex"].append(body)
        out["alpha"].append([[i, e] for i, e in enumerate(alpha) if e])
    return out


def latex_names(names: list[str]) -> list[str]:
    """Variable names as the engine writes them in LaTeX (x1 -> x_{1})."""
    from hope_engine.algebra.polynomial import latex_name

    return [latex_name(s) for s in names]


def direction_vector(n: int, direction: int, dtype: torch.dtype) -> torch.Tensor:
    """Unit vector of the plotted line: e_i for direction i >= 0, the diagonal (1, ..., 1)/sqrt(n) for -1."""
    if direction < 0:
        return torch.full((n,), 1.0 / math.sqrt(n), dtype=dtype)
    d = torch.zeros(n, dtype=dtype)
    d[direction] = 1.0
    return d


def network_on_line(model: Callable, template: torch.Tensor, variables: torch.Tensor, center: torch.Tensor,
                    direction: torch.Tensor, ts: torch.Tensor, output: int) -> list[float]:
    """The model's output element ``output`` at x0 + t d for each t (one forward pass per point: any model works)."""
    values = []
    module = model if isinstance(model, nn.Module) else None
    was_training = module.training if module is not None else False
    try:
        if module is not None:
            module.eval()
        with torch.no_grad():
            for t in ts.tolist():
                x = template.clone()
                flat = x.reshape(-1)
                flat[variables] = (center + t * direction).to(x.dtype)
                y = model(x)
                y = y[0] if isinstance(y, (tuple, list)) else y
                values.append(float(torch.as_tensor(y).reshape(-1)[output]))
    finally:
        if module is not None and was_training:
            module.train()
    return values


def truncations_on_line(poly: TaylorPolynomial, direction: torch.Tensor, ts: torch.Tensor) -> list[list[float]]:
    """Row k: the order-k truncation of a scalar polynomial at x0 + t d for every t, evaluated in float64 (the
    engine's ``partial_sums``: all orders from one table of monomials)."""
    p = poly.scalar(point=0).to(torch.float64)
    points = p.center_values.reshape(1, -1) + ts.double()[:, None] * direction.double()[None, :]
    return p.partial_sums(points).reshape(p.order + 1, -1).tolist()


def line_data(model: Callable, template: torch.Tensor, poly: TaylorPolynomial, output: int, direction: int,
              radius: float) -> dict[str, Any]:
    """Network and every truncation along the line x0 + t d, |t| <= radius (the convergence plot)."""
    n = poly.n
    d = direction_vector(n, direction, torch.float64)
    ts = torch.linspace(-radius, radius, LINE_POINTS, dtype=torch.float64)
    center = poly.center_values.reshape(-1).double()
    net = network_on_line(model, template, poly.variables, center, d, ts, output)
    return {"t": ts.tolist(), "net": net, "poly": truncations_on_line(poly, d, ts), "direction": direction}


def pure_coefficients(poly: TaylorPolynomial) -> list[list[float]]:
    """Row j-1: the unmixed coefficients c_{j e_i} of every variable i, for j = 1..order (heat maps)."""
    c = scalar_coefficients(poly)
    n, basis = poly.n, poly.basis
    rows = []
    for j in range(1, poly.order + 1):
        idx = [basis.position(tuple(j if v == i else 0 for v in range(n))) for i in range(n)]
        rows.append(c[idx].tolist())
    return rows


def image_grid(row_shape: tuple[int, ...], n: int) -> tuple[int, int]:
    """(rows, cols) of the heat map: the input's last two axes when the input is an image, else a near-square grid."""
    if len(row_shape) >= 2 and math.prod(row_shape) == n:
        return int(row_shape[-2]), int(row_shape[-1])
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def heat_data(poly: TaylorPolynomial, row_shape: tuple[int, ...], radius: float,
              point: list[float] | None = None) -> dict[str, Any]:
    """Pure-derivative attribution for image-like inputs: per-pixel unmixed coefficients, summed over channels, and
    the input itself (``image``: per-pixel values, averaged over channels) for the picture under the map."""
    n = poly.n
    rows, cols = image_grid(row_shape, n)
    channels = max(1, n // (rows * cols))
    out: dict[str, Any] = {"rows": rows, "cols": cols, "channels": channels, "n": n, "shape": list(row_shape),
                           "coef": pure_coefficients(poly), "radius": radius}
    if point is not None and len(point) == n and n == rows * cols * channels:
        values = torch.tensor(point, dtype=torch.float64).reshape(channels, rows * cols).mean(dim=0)
        out["image"] = values.tolist()
    return out


def relative_difference(poly: TaylorPolynomial, reference: TaylorPolynomial) -> list[float | None]:
    """||c - c_ref|| / ||c_ref|| over the terms of degree <= k both keep, for k = 0..order (None where c_ref is 0).

    Shows how far the paper's rule (``method="hope"``) is from the exact expansion at each order.
    """
    a, b = scalar_coefficients(poly), scalar_coefficients(reference)
    rows = poly.basis.multi_indices()
    pairs = [(m, reference.basis.position(alpha)) for m, alpha in enumerate(rows) if alpha in reference.basis]
    out: list[float | None] = []
    for k in range(min(poly.order, reference.order) + 1):
        kept = [(i, j) for i, j in pairs if sum(rows[i]) <= k]
        ia = torch.tensor([i for i, _ in kept], dtype=torch.long)
        ib = torch.tensor([j for _, j in kept], dtype=torch.long)
        den = float(torch.linalg.vector_norm(b[ib]))
        num = float(torch.linalg.vector_norm(a[ia] - b[ib]))
        out.append(num / den if den > 0 else (0.0 if num == 0 else None))
    return out


def timing_text(seconds: float, first_call: bool, loading: float) -> str:
    """The panel's timing line for one expansion: its time, and what a first call paid on top (loading the tracer,
    once per session: ``loading`` seconds spent before the expansion, or inside it when ``first_call``)."""
    text = f"expanded in {seconds:.3g} s"
    if first_call:
        text += " (first call: loading the tracer, once per session)"
    elif loading >= 0.01:
        text += f" (first call: loading the tracer took {loading:.2g} s more, once per session)"
    return text


def latex_terms(tex: str) -> list[str]:
    """The terms of a polynomial's LaTeX as ``TaylorPolynomial.latex`` writes it: split at a top-level " + " or " - "
    (outside parentheses, braces and brackets), each term keeping its sign."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(tex):
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        elif ch in "+-" and depth == 0 and 0 < i < len(tex) - 1 and tex[i - 1] == " " and tex[i + 1] == " ":
            terms.append(tex[start:i].strip())
            start = i
    terms.append(tex[start:].strip())
    return [t for t in terms if t]


def wrap_latex(tex: str, per_line: int = 5) -> str:
    """A long polynomial's LaTeX broken into lines of ``per_line`` terms (an ``aligned`` block), for ``Math(...)``:
    MathJax and KaTeX do not wrap a formula, so a long one runs off the page (terms as ``latex_terms`` splits them)."""
    terms = latex_terms(tex)
    if len(terms) <= per_line:
        return tex
    lines = [" ".join(terms[i:i + per_line]) for i in range(0, len(terms), per_line)]
    return "\\begin{aligned}&" + " \\\\\n&".join(lines) + "\\end{aligned}"
