"""Inference by a polynomial: the Taylor polynomial (or a least-squares fit, ``surrogate_fit``) as a batched torch
module, P(x) = sum_m c_m t^(a_m), t = x - x0.

Powers are shared: with one variable, Horner's rule (K multiply-adds); with several, the monomials are built degree by
degree, t^(a) = t^(a - e_v) * t_v (one multiply per monomial), and all outputs come from one matmul with the
coefficient matrix (M, outputs).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hope_engine.algebra.polynomial import TaylorPolynomial, monomial_parents, monomial_table
from hope_engine.analysis._points import scalar_polynomial


class Surrogate(nn.Module):
    """P(x) for points shaped like model input rows (..., *row_shape) or (..., n); ``radius``: where to trust it."""

    def __init__(self, p: TaylorPolynomial, radius: float, dtype: torch.dtype | None = None):
        super().__init__()
        if p.batched:
            if p.coefficients.shape[1] != 1:
                raise ValueError(f"the polynomial holds {p.coefficients.shape[1]} reference points; pick one with "
                                 "p.point(i)")
            coefficients = p.coefficients[:, 0]
            center = p.center[0]
        else:
            coefficients, center = p.coefficients, p.center
        dtype = dtype or coefficients.dtype
        self.output_shape = tuple(coefficients.shape[1:])
        self.row_shape = tuple(center.shape)
        self.n, self.order, self.radius = p.n, p.order, float(radius)
        self.polynomial = p
        self.register_buffer("coefficients", coefficients.detach().reshape(coefficients.shape[0], -1).to(dtype))
        self.register_buffer("center", center.detach().reshape(-1)[p.variables].to(dtype))
        self.register_buffer("variables", p.variables.clone())
        parent, var = monomial_parents(p.basis)
        self.register_buffer("parent", parent.clone())
        self.register_buffer("var", var.clone())
        self.offsets = p.basis.offsets
        self.horner = p.n == 1
        self.all_variables = bool(torch.equal(p.variables.cpu(), torch.arange(math.prod(self.row_shape))))
        self.validity = None  # a surrogate_fit.Validity when measured: where it holds and its speed
        self.candidates: list = []

    def displacement(self, x: torch.Tensor) -> torch.Tensor:
        """t = x - x0 over the variables: (..., n)."""
        x = x.to(self.coefficients.dtype)
        r = len(self.row_shape)
        if r and tuple(x.shape[x.dim() - r:]) == self.row_shape:
            x = x.reshape(*x.shape[:x.dim() - r], -1)
            if not self.all_variables:
                x = x.index_select(-1, self.variables)
        elif self.n == 1 and (x.dim() == 0 or x.shape[-1] != 1):
            x = x[..., None]
        elif x.shape[-1] != self.n:
            raise ValueError(f"points of shape {tuple(x.shape)} do not fit: expected (..., {self.row_shape}) or "
                             f"(..., {self.n})")
        return x - self.center

    def monomials(self, t: torch.Tensor) -> torch.Tensor:
        """(M, N) table of t^(a_m) for N points t (N, n)."""
        return monomial_table(t, self.parent, self.var, self.offsets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.displacement(x)
        lead = t.shape[:-1]
        if self.horner:
            s = t.reshape(-1, 1)
            c = self.coefficients
            out = c[-1].expand(s.shape[0], -1).clone()
            for k in range(c.shape[0] - 2, -1, -1):
                out = torch.addcmul(c[k], out, s)
        else:
            out = (self.coefficients.transpose(0, 1) @ self.monomials(t.reshape(-1, self.n))).transpose(0, 1)
        return out.reshape(*lead, *self.output_shape)

    def extra_repr(self) -> str:
        text = (f"n={self.n}, order={self.order}, outputs={math.prod(self.output_shape)}, "
                f"radius~{self.radius:.3g}, {'horner' if self.horner else 'monomial table + matmul'}")
        return text if self.validity is None else f"{text},\n{self.validity}"


SURROGATE_METHODS = ("auto", "taylor", "fit")
AUTO_ORDERS = (2, 4, 6, 8, 12, 16)


def surrogate(source, *, domain=None, method: str | None = None, order: int | None = None, center=None,
              points=None, rtol: float = 0.01, samples: int | None = None, validation: int = 4096, seed: int = 0,
              timing: bool = True, output=None, model=None, tol: float = 1e-3, radius: float | None = None,
              dtype: torch.dtype | None = None, compile: bool = False, max_monomials: int = 5000,
              **convergence_kwargs):
    """A batched torch callable standing in for a network, with a measured report of where it holds and how fast it is.

    ``surrogate(model, domain=(lo, hi), method=..., order=...)``: model maps points (N, n) to outputs; the box is
    ``domain`` (or the bounding box of ``points``). method "taylor": the expansion at ``center`` (default the box
    centre) to ``order``; "fit": the least-squares polynomial of degree ``order`` on ``samples`` (default max(4 M,
    1024)) network values in the box (``surrogate_fit``); "auto" (default): both at ``order`` (or each of 2, 4, 6,
    8, 12, 16 with at most ``max_monomials`` monomials), scored on ``validation`` fresh points of the box: the
    cheapest that is valid everywhere there, else the one valid on the largest fraction. The result's ``.validity``
    is measured on other points (``points`` if given, e.g. real data, else fresh uniform samples): the fraction
    within ``rtol`` of the output range, the largest error, and the network's and the surrogate's time on those
    points in this run (``timing``); ``.candidates`` lists every candidate's scores (auto). ``radius``: the valid
    centred sub-box, in input units.

    ``surrogate(p)`` with a ``TaylorPolynomial`` (one reference point) keeps its old meaning: ``radius`` given, or
    measured against ``model`` (largest radius with error below the absolute ``tol``, via ``convergence``), or
    estimated from the coefficient growth; with ``model`` and ``domain``/``points`` it also gets ``.validity``.
    compile=True wraps the module with ``torch.compile`` (needs a working C++ compiler on CPU); the result keeps
    ``.radius`` and ``.validity``.
    """
    if method is not None and method not in SURROGATE_METHODS:
        raise ValueError(f"method must be one of {SURROGATE_METHODS}, got {method!r}")
    if isinstance(source, TaylorPolynomial):
        if method not in (None, "taylor"):
            raise ValueError(f"a TaylorPolynomial is a Taylor surrogate; for method={method!r} pass the model: "
                             "surrogate(model, domain=(lo, hi), method=...)")
        module = _polynomial_surrogate(source, output, model, tol, radius, dtype, convergence_kwargs)
        if model is not None and (domain is not None or points is not None):
            from hope_engine.analysis.surrogate_fit import as_box

            box = as_box(domain, None if points is None else torch.as_tensor(points, dtype=torch.float64))
            x, where = _report_points(box, points, validation, seed)
            module.validity = _measure(module, model, box, x, "taylor", rtol, where, timing, output)
    else:
        module = _model_surrogate(source, domain, method or "auto", order, center, points, rtol, samples,
                                  validation, seed, timing, output, dtype, max_monomials)
    if compile:
        compiled = torch.compile(module, dynamic=True)
        compiled.radius = module.radius
        compiled.validity = module.validity
        compiled.candidates = module.candidates
        return compiled
    return module


def _polynomial_surrogate(p, output, model, tol, radius, dtype, convergence_kwargs) -> Surrogate:
    from hope_engine.analysis.convergence import convergence, estimate_radius

    if output is not None:
        p = scalar_polynomial(p, output)
    if radius is None:
        if model is not None:
            radius = convergence(model, p, **convergence_kwargs).valid_radius(tol)
        else:
            outputs = math.prod(p.coefficients.shape[2 if p.batched else 1:])
            radius = min(estimate_radius(p, output=None if outputs == 1 else i).radius for i in range(outputs))
    return Surrogate(p, radius, dtype).eval()


def _model_dtype(model) -> torch.dtype:
    params = list(model.parameters()) if isinstance(model, nn.Module) else []
    floats = [q.dtype for q in params if q.is_floating_point()]
    return floats[0] if floats else torch.float64


def _report_points(box, points, validation: int, seed: int) -> tuple[torch.Tensor, str]:
    if points is None:
        return box.sample(validation, seed + 2), "fresh uniform points of the box"
    x = torch.as_tensor(points, dtype=torch.float64).reshape(-1, box.n)
    return x, "given points"


def _measure(module, model, box, x, method, rtol, where, timing, output):
    from hope_engine.analysis.surrogate_fit import measure, network_values

    dtype = module.coefficients.dtype
    f_x = network_values(model, x, _model_dtype(model), _flat_output(output))
    return measure(module, model, box, x, f_x, method, module.order, module.coefficients.shape[0], rtol, where,
                   timing, dtype)


def _input_count(model, center, points) -> int | None:
    """n for a box given by scalar bounds: from center, points, or the model's first nn.Linear."""
    if center is not None:
        return int(torch.as_tensor(center).numel())
    if points is not None:
        return int(points.shape[-1]) if points.dim() > 1 else 1
    if isinstance(model, nn.Module):
        first = next((m for m in model.modules() if isinstance(m, nn.Linear)), None)
        if first is not None:
            return first.in_features
    return None


def _flat_output(output) -> int | None:
    if output is None:
        return None
    if not isinstance(output, int):
        raise ValueError(f"output must be a flat output index (int) here, got {output!r}")
    return output


def _model_surrogate(model, domain, method, order, center, points, rtol, samples, validation, seed, timing, output,
                     dtype, max_monomials) -> Surrogate:
    from hope_engine.algebra.basis import total_size
    from hope_engine.analysis.surrogate_fit import as_box, fit_polynomial, measure, network_values
    from hope_engine.api.expand import expand

    pts = None if points is None else torch.as_tensor(points, dtype=torch.float64)
    box = as_box(domain, pts, _input_count(model, center, pts))
    if pts is not None and pts.reshape(-1).numel() % box.n:
        raise ValueError(f"points must be (N, {box.n}) for a box of {box.n} inputs, got {tuple(pts.shape)}")
    mdtype = _model_dtype(model)
    idx = _flat_output(output)
    c = box.center if center is None else torch.as_tensor(center, dtype=torch.float64).reshape(-1)
    if c.numel() != box.n:
        raise ValueError(f"center has {c.numel()} values for a box of {box.n} inputs")
    if order is not None:
        orders = [int(order)]
    elif method == "auto":
        orders = [k for k in AUTO_ORDERS if total_size(box.n, k) <= max_monomials] or [1]
    else:
        orders = [4]
    methods = ("taylor", "fit") if method == "auto" else (method,)
    taylor_cache: dict = {}
    fit_cache: dict = {}

    def build(kind: str, k: int) -> Surrogate:
        if kind == "taylor":
            if not taylor_cache:
                top = max(orders)
                taylor_cache["p"] = expand(model, c.to(mdtype)[None], top)
            p = taylor_cache["p"].truncate(k)
            p = scalar_polynomial(p, output) if output is not None else p
        else:
            m = total_size(box.n, k)
            count = samples or max(4 * m, 1024)
            if count not in fit_cache:
                xs = box.sample(count, seed)
                fit_cache[count] = (xs, network_values(model, xs, mdtype, idx))
            xs, ys = fit_cache[count]
            p = fit_polynomial(box, xs, ys, k)
        return Surrogate(p, 0.0, dtype or mdtype).eval()

    def score(module, kind, k, x, f_x, where, timed):
        return measure(module, model, box, x, f_x, kind, k, module.coefficients.shape[0], rtol, where, timed,
                       module.coefficients.dtype)

    built = [(kind, k, build(kind, k)) for kind in methods for k in orders]
    x_report, where = _report_points(box, points, validation, seed)
    f_report = network_values(model, x_report, mdtype, idx)
    candidates = []
    if len(built) > 1:
        x_sel = box.sample(validation, seed + 1)
        f_sel = network_values(model, x_sel, mdtype, idx)
        scored = [(score(mod, kind, k, x_sel, f_sel, "fresh uniform points of the box (selection)", False), mod)
                  for kind, k, mod in built]
        full = [s for s in scored if s[0].valid_fraction == 1.0]
        if full:
            chosen = min(full, key=lambda s: (s[0].monomials, s[0].max_error))[1]
        else:
            chosen = max(scored, key=lambda s: (s[0].valid_fraction, -s[0].rms_error))[1]
        candidates = [score(mod, kind, k, x_report, f_report, where, timing) for kind, k, mod in built]
        module = chosen
        module.validity = next(v for v, (_, _, mod) in zip(candidates, built) if mod is chosen)
    else:
        kind, k, module = built[0]
        module.validity = score(module, kind, k, x_report, f_report, where, timing)
        candidates = [module.validity]
    module.candidates = candidates
    module.radius = module.validity.valid_box * float(box.half.min())
    return module

