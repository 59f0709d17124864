"""Function discovery: read the learned function off a network as a short polynomial formula.

Local: the Taylor polynomial at one point, terms by magnitude. Global, two estimates over a box around a centre c:

- "taylor": expansions at many reference points x_j (one batched expansion), each Taylor-shifted to c
  (c'_b = sum_a c_a binom(a, b) (c - x_j)^(a - b)); a term the network really contains has the same shifted
  coefficient at every point, so per term the mean over points is the estimate and the spread says how much to trust
  it.
- "fit": least squares of the network's values on samples in the box onto the same monomials, the constant anchored
  to the exact value at the centre (``discovery_fit``); the spread is the coefficient's standard error.

Both are judged by the held-out R^2 against the network on fresh samples in the box (``Discovery.compare`` runs the
other one). The expansion is exact for the *network*; ``data=(x, y)`` also reports how far the network is from the
data it was trained on, which bounds how well any formula read off it can match the law behind the data.
"""

from __future__ import annotations

import concurrent.futures
import math
from dataclasses import dataclass

import sympy as sp
import torch

from hope_engine.algebra.polynomial import TaylorPolynomial
from hope_engine.analysis._points import as_row, model_scalar, rows_at, sample_offsets, scalar_polynomial, single
from hope_engine.analysis.discovery_fit import Comparison, DataDistance, fit_coefficients, network_samples, r_squared
from hope_engine.api.many import expand_many
from hope_engine.capture.arguments import variable_indices

METHODS = ("taylor", "fit")


def local_formula(p: TaylorPolynomial, threshold: float = 0.0, top: int | None = None, in_x: bool = True,
                  output=None, digits: int | None = None):
    """sympy expression sum_{|c_a| > threshold} c_a (x - x0)^a of the largest terms, expanded in x when ``in_x``.

    Terms are chosen around x0; after expanding in x, terms below the threshold (and rounding residue below 1e-12
    times the largest coefficient) are dropped again.
    """
    s = single(p, output)
    expr = s.to_sympy(threshold=threshold, top=top, in_x=in_x, digits=digits)
    if not in_x:
        return expr
    terms = sp.Add.make_args(expr)
    coeffs = [abs(float(t.as_coeff_Mul()[0])) for t in terms]
    return sp.Add(*[t for t, c in zip(terms, coeffs) if c > threshold])


@dataclass(frozen=True)
class TermStats:
    """One term's coefficient at the centre (local) and over the re-centred reference expansions."""

    alpha: tuple[int, ...]
    monomial: str
    local: float
    mean: float
    std: float
    q25: float
    q75: float


class TermTable(list):
    """A list of ``TermStats`` that prints as an aligned text table (after its ``header`` lines, if any)."""

    header: list[str] = []
    estimate: str = "mean"

    def __str__(self) -> str:
        width = max([len("term")] + [len(r.monomial) for r in self])
        lines = list(self.header)
        lines.append(f"{'term':<{width}}  {'local':>11}  {self.estimate:>11}  {'std':>10}  {'q25':>11}  {'q75':>11}")
        for r in self:
            lines.append(f"{r.monomial:<{width}}  {r.local:>+11.5f}  {r.mean:>+11.5f}  {r.std:>10.5f}  "
                         f"{r.q25:>+11.5f}  {r.q75:>+11.5f}")
        return "\n".join(lines)

    def to_dicts(self) -> list[dict]:
        return [dict(alpha=list(r.alpha), monomial=r.monomial, local=r.local, mean=r.mean, std=r.std, q25=r.q25,
                     q75=r.q75) for r in self]


class Discovery:
    """A polynomial estimate of the network around a centre, per term: ``local`` (the exact expansion at the centre),
    ``mean`` (the estimate: the mean of the re-centred expansions, or the least-squares fit), ``std``, ``q25``/``q75``
    (their spread, or +-0.674 standard errors for the fit).

    ``coefficients`` (P, M): row 0 the expansion at the centre; for "taylor", rows 1.. the re-centred expansions at the
    reference points ``points`` (values of the variables). ``heldout_r2``/``heldout_r2_local``: R^2 of the estimate and
    of the local expansion against the network on fresh points in the box; ``data``: a ``DataDistance`` or None.
    """

    def __init__(self, polynomials: TaylorPolynomial, points: torch.Tensor, method: str = "taylor",
                 fit: tuple[torch.Tensor, torch.Tensor] | None = None, context: dict | None = None):
        self.polynomials = polynomials
        self.points = points
        self.method = method
        self.coefficients = polynomials.coefficients.T.detach()
        self.local = self.coefficients[0]
        if fit is None:
            others = self.coefficients[1:] if self.coefficients.shape[0] > 1 else self.coefficients
            self.mean = others.mean(0)
            self.std = others.std(0, correction=0)
            self.q25, self.q75 = torch.quantile(others.double(), torch.tensor([0.25, 0.75], dtype=torch.float64),
                                                dim=0).to(others.dtype)
        else:
            self.mean, self.std = (v.to(self.local.dtype) for v in fit)
            self.q25, self.q75 = self.mean - 0.6745 * self.std, self.mean + 0.6745 * self.std
        self.context = context or {}
        self.heldout_r2 = math.nan
        self.heldout_r2_local = math.nan
        self.data: DataDistance | None = None
        self._other: Discovery | None = None
        self.row: torch.Tensor | None = None

    @property
    def basis(self):
        return self.polynomials.basis

    @property
    def names(self) -> list[str]:
        return self.polynomials.names

    def polynomial(self, source: str = "mean") -> TaylorPolynomial:
        """The polynomial around the centre with the per-term ``source`` coefficients ("mean" or "local")."""
        if source not in ("mean", "local"):
            raise ValueError(f"source must be 'mean' or 'local', got {source!r}")
        at_center = single(self.polynomials.point(0))
        return at_center.replace(coefficients=self.mean if source == "mean" else self.local)

    def formula(self, top: int | None = None, threshold: float = 0.0, source: str = "mean", in_x: bool = True,
                digits: int | None = None):
        """sympy expression of the ``top`` largest terms with |coefficient| > threshold, in x (not x - c) by default."""
        return local_formula(self.polynomial(source), threshold=threshold, top=top, in_x=in_x, digits=digits)

    def order_terms(self, by: str = "mean") -> list[int]:
        """Basis positions sorted by |mean| (or |local|), largest first."""
        key = self.mean if by == "mean" else self.local
        return [int(i) for i in torch.argsort(key.abs(), descending=True, stable=True)]

    def table(self, top: int | None = None, threshold: float = 0.0, by: str = "mean") -> TermTable:
        """Per term: local value, estimate, spread, largest |estimate| first; the header gives the method, its
        held-out R^2 and (with training data) the network <-> data distance."""
        rows = TermTable()
        rows.estimate = "mean" if self.method == "taylor" else "fit"
        rows.header = [f"method {self.method}: held-out R^2 vs the network {self.heldout_r2:.6f} (local expansion "
                       f"alone {self.heldout_r2_local:.6f})"]
        if self.data is not None:
            rows.header.append(str(self.data))
        alphas = self.basis.multi_indices()
        center_p = self.polynomial()
        for m in self.order_terms(by):
            if top is not None and len(rows) >= top:
                break
            if max(abs(float(self.mean[m])), abs(float(self.local[m]))) <= threshold:
                continue
            rows.append(TermStats(alphas[m], center_p.monomial_text(alphas[m]), float(self.local[m]),
                                  float(self.mean[m]), float(self.std[m]), float(self.q25[m]), float(self.q75[m])))
        return rows

    def compare(self) -> Comparison:
        """Run the other method with the same settings and compare held-out R^2 (same fresh points) per method."""
        if not self.context:
            raise ValueError("compare() needs a Discovery made by discover()")
        if self._other is None:
            other = "fit" if self.method == "taylor" else "taylor"
            self._other = discover(**{**self.context, "method": other})
        t, f = (self, self._other) if self.method == "taylor" else (self._other, self)
        points = self.context.get("heldout", 0)
        return Comparison(t.heldout_r2, f.heldout_r2, self.heldout_r2_local, float((t.mean - f.mean).abs().max()),
                          points)

    def figure(self, top: int = 12, threshold: float = 0.0, include_constant: bool = True):
        """Per term: box plot of the re-centred coefficients ("taylor") or estimate +- standard error ("fit"), the local
        value marked."""
        from hope_engine.analysis.figures import discovery_figure

        return discovery_figure(self, top=top, threshold=threshold, include_constant=include_constant)

    def __repr__(self) -> str:
        return (f"Discovery(method={self.method!r}, n={self.basis.n}, order={self.basis.order}, "
                f"heldout_r2={self.heldout_r2:.6f}, formula={self.formula(top=6)})")


def _taylor_estimate(model, row, var, values, order, terms, output, names, expand_kwargs, chunk_size=None,
                     executor=None, progress=False) -> TaylorPolynomial:
    """Expansions at the rows with the variables set to ``values`` (through ``expand_many``: chunked, optionally on
    an executor), each Taylor-shifted to ``row``."""
    batch = rows_at(row, var, values)
    if chunk_size is None and batch.shape[0] == 1:
        chunk_size = 1  # the centre alone: no chunk-size estimate needed
    p = expand_many(model, batch, order, chunk_size=chunk_size, executor=executor, progress=progress, terms=terms,
                    output=output, variables=var, names=names, **expand_kwargs)
    return scalar_polynomial(p).recenter(row.expand_as(batch))


def _data_distance(model, d: Discovery, data, output, radius: float, sampling: str) -> DataDistance:
    x, y = data
    x = torch.as_tensor(x, dtype=d.local.dtype)
    y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    rows = x.reshape(len(y), *d.row.shape[1:])
    f = model_scalar(model, rows, output).double()
    err = f - y
    p = d.polynomial()
    t = rows.reshape(len(y), -1)[:, p.variables] - p.center_values
    inside = (t.abs().amax(1) <= radius) if sampling == "box" else (t.norm(dim=1) <= radius)
    formula_r2 = r_squared(p(rows[inside]).reshape(-1), y[inside]) if int(inside.sum()) > 1 else math.nan
    return DataDistance(float(err.pow(2).mean().sqrt()), float(err.abs().max()), r_squared(f, y), formula_r2,
                        int(inside.sum()))


def discover(model, center, order: int = 4, *, radius: float = 0.5, points: int = 64, output=None,
             variables=None, names=None, terms: str = "total", sampling: str = "box", seed: int = 0,
             method: str = "taylor", samples: int | None = None, heldout: int = 512, data=None,
             chunk_size: int | None = None, executor: concurrent.futures.Executor | None = None,
             progress: bool = False, **expand_kwargs) -> Discovery:
    """Estimate the network as a polynomial of degree ``order`` around ``center`` over the box (or ball) of
    ``radius``.

    method "taylor": expand at the centre and at ``points`` reference points in the box (one batched call) and
    Taylor-shift every expansion to the centre. method "fit": anchored least squares on ``samples`` network values
    (default max(4 M, 256), M monomials). Both report the held-out R^2 on ``heldout`` fresh points; ``data=(x, y)``
    (the training data) adds the network <-> data distance. center: one model input ((n,) or (1, *row_shape));
    sampling: "box" ([c - r, c + r]^n) or "ball" (|x - c| <= r); output: which model output to explain.
    chunk_size, executor, progress: how ``expand_many`` runs the expansions at the reference points (points per
    chunk, default by its memory estimate; a ``concurrent.futures.Executor``, for which the model must pickle; a tqdm
    bar); the coefficients do not depend on them.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    context = dict(model=model, center=center, order=order, radius=radius, points=points, output=output,
                   variables=variables, names=names, terms=terms, sampling=sampling, seed=seed, samples=samples,
                   heldout=heldout, data=data, chunk_size=chunk_size, executor=executor, progress=progress,
                   **expand_kwargs)
    row = as_row(model, center)
    var = variable_indices(row, True, variables)
    c = row.reshape(-1)[var]
    if method == "taylor":
        gen = torch.Generator().manual_seed(seed)
        offsets = sample_offsets(var.numel(), points, radius, sampling, gen, row.dtype)
        values = torch.cat([c[None], c[None] + offsets])
        estimate = _taylor_estimate(model, row, var, values, order, terms, output, names, expand_kwargs, chunk_size,
                                    executor, progress)
        d = Discovery(estimate, values, "taylor", context=context)
    else:
        local = _taylor_estimate(model, row, var, c[None], order, terms, output, names, expand_kwargs)
        count = samples or max(4 * local.basis.size, 256)
        s = network_samples(model, row, var, c, count, radius, sampling, seed, output)
        mono = single(local).monomials((s.values - c[None]).to(local.coefficients.dtype))
        coef, std, _ = fit_coefficients(mono, s.outputs, float(local.coefficients.reshape(-1)[0]))
        d = Discovery(local, s.values, "fit", fit=(coef, std), context=context)
    d.row = row
    if heldout:
        h = network_samples(model, row, var, c, heldout, radius, sampling, seed + 7919, output)
        d.heldout_r2 = r_squared(d.polynomial()(h.values).reshape(-1), h.outputs)
        d.heldout_r2_local = r_squared(d.polynomial("local")(h.values).reshape(-1), h.outputs)
    if data is not None:
        d.data = _data_distance(model, d, data, output, radius, sampling)
    return d
