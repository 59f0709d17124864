"""Function discovery: read the learned function off a network as a short polynomial formula.

``discover(..., method="auto")`` (the default) computes every estimate below, scores each on held-out points and
keeps the best (``discovery_candidates``: the candidates, the score, the choice rule); ``d.candidates`` is the table of
all of them and ``d.closed_form()`` a rational reading of the chosen coefficients (``discovery_closed_form``).

Local: the Taylor polynomial at one point, terms by magnitude ("local"). Estimates over a box around a centre c:

- "taylor": expansions at many reference points x_j (one batched expansion), each Taylor-shifted to c
  (c'_b = sum_a c_a binom(a, b) (c - x_j)^(a - b)); a term the network really contains has the same shifted
  coefficient at every point, so per term the mean over points is the estimate and the spread says how much to trust
  it.
- "fit": least squares of the network's values on samples in the box onto the same monomials, the constant anchored
  to the exact value at the centre (``discovery_fit``); the spread is the coefficient's standard error.

- "data": least squares of the caller's data in the box (``data=(x, y)``); "constrained": least squares with the
  coefficients of degree <= m held at the network's exact ones (its derivatives at c), m = order - 1 by default.

Each also gets the held-out R^2 against the network on fresh samples in the box (``Discovery.compare`` sets taylor
against fit). The expansion is exact for the *network*; ``data=(x, y)`` also reports how far the network is from the
data it was trained on, which bounds how well any formula read off it can match the law behind the data.
"""

from __future__ import annotations

import concurrent.futures
import math
from dataclasses import dataclass

import sympy as sp
import torch

from hope_engine.algebra.basis import make_basis
from hope_engine.algebra.polynomial import TaylorPolynomial
from hope_engine.analysis._points import as_row, model_scalar, rows_at, sample_offsets, scalar_polynomial, single
from hope_engine.analysis.discovery_candidates import (
    Candidate,
    CandidateTable,
    Completion,
    choose,
    completion_order,
    constrained_lstsq,
    lstsq_with_se,
    monomials,
)
from hope_engine.analysis.discovery_closed_form import ClosedForm, closed_form
from hope_engine.analysis.discovery_fit import Comparison, DataDistance, fit_coefficients, network_samples, r_squared
from hope_engine.api.many import expand_many
from hope_engine.capture.arguments import variable_indices

METHODS = ("auto", "local", "taylor", "fit", "data", "constrained")


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

    ``coefficients`` (P, M): row 0 the expansion at the centre; with "taylor" among the candidates, rows 1.. the
    re-centred expansions at the reference points ``points`` (values of the variables). ``heldout_r2``/
    ``heldout_r2_local``: R^2 of the estimate and of the local expansion against the network on fresh points in the box;
    ``data``: a ``DataDistance`` or None. ``candidates``: every estimate computed (all of them for "auto") with its
    held-out score; ``chosen``: the method whose coefficients are ``mean``.
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
        self.chosen = method
        self.candidates = CandidateTable()
        self._scoring: tuple[torch.Tensor, torch.Tensor, str] | None = None  # held-out (t, target, what) for hypotheses

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
        rows.estimate = "mean" if self.chosen == "taylor" else self.chosen
        method = self.method if self.method == self.chosen else f"{self.method} -> {self.chosen}"
        rows.header = [f"method {method}: held-out R^2 vs the network {self.heldout_r2:.6f} (local expansion "
                       f"alone {self.heldout_r2_local:.6f})"]
        if self.data is not None:
            rows.header.append(str(self.data))
        if len(self.candidates) > 1:
            rows.header.append(str(self.candidates))
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
        names = [c.method for c in self.candidates]
        if "taylor" in names and "fit" in names:
            t, f = self.candidates.by_name("taylor"), self.candidates.by_name("fit")
            return Comparison(t.r2, f.r2, self.heldout_r2_local, float((t.coefficients - f.coefficients).abs().max()),
                              self.context.get("heldout", 0))
        if self.method not in ("taylor", "fit"):
            raise ValueError(f"compare() sets taylor against fit; this is method {self.method!r}: use method='auto', "
                             "whose candidates table compares every estimate")
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

    def closed_form(self, tolerance: float = 0.02, max_denominator: int = 12, constants=(), threshold: float = 0.0
                    ) -> ClosedForm:
        """A hypothesis: each coefficient of the estimate, written in x, replaced by the simplest rational within
        ``tolerance`` (0 when |c| <= tolerance; ``constants`` such as sympy.pi also tried, via nsimplify), with the
        largest change it made and its held-out MSE beside the estimate's (the formulas alone, on the points the
        candidates were scored on). Terms with |c| <= threshold are left out first."""
        expr = self.formula(threshold=threshold)
        symbols = sp.symbols(self.names, real=True) if len(self.names) > 1 else (sp.Symbol(self.names[0], real=True),)
        terms = sp.Poly(expr, *symbols).terms() if expr != 0 else []
        monos = [sp.Mul(*[v ** e for v, e in zip(symbols, alpha)]) for alpha, _ in terms]
        hyp, _ = closed_form([float(c) for _, c in terms], monos, [str(m) for m in monos], tolerance,
                             max_denominator, constants)
        if self._scoring is not None:
            t, target, what = self._scoring
            x = t + self.polynomial().center_values.to(t.dtype)
            f = sp.lambdify(symbols, hyp.formula, "math")
            g = sp.lambdify(symbols, expr, "math")
            rows = x.tolist()
            hyp_vals = torch.tensor([float(f(*r)) for r in rows], dtype=torch.float64)
            est_vals = torch.tensor([float(g(*r)) for r in rows], dtype=torch.float64)
            hyp.heldout = float((target - hyp_vals).pow(2).mean())
            hyp.heldout_estimate = float((target - est_vals).pow(2).mean())
            hyp.metric = f"MSE of the formula alone on {len(rows)} {what}"
        return hyp

    def __repr__(self) -> str:
        text = (f"Discovery(method={self.method!r}, chosen={self.chosen!r}, n={self.basis.n}, "
                f"order={self.basis.order}, heldout_r2={self.heldout_r2:.6f}, formula={self.formula(top=6)})")
        return text if len(self.candidates) <= 1 else f"{text}\n{self.candidates}"


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
             method: str = "auto", samples: int | None = None, heldout: int = 512, data=None, folds: int = 5,
             constrained_order: int | None = None, constrained_on: str = "network", chunk_size: int | None = None,
             executor: concurrent.futures.Executor | None = None, progress: bool = False,
             **expand_kwargs) -> Discovery:
    """Estimate the network as a polynomial of degree ``order`` around ``center`` over the box (or ball) of
    ``radius``.

    method "auto" (default): every candidate of ``discovery_candidates`` ("local", "taylor", "fit", "constrained",
    and "data" when data is given), scored on held-out points, the best kept (``d.chosen``, ``d.candidates``). Or one
    of them: "local" (the expansion at the centre), "taylor" (expand at the centre and at ``points`` reference points
    in the box, one batched call, and Taylor-shift every expansion to the centre), "fit" (anchored least squares on
    ``samples`` network values, default max(4 M, 256), M monomials), "data" (least squares on the data in the box),
    "constrained" (least squares on the network samples, or on the data with ``constrained_on="data"``, with the
    coefficients of degree <= ``constrained_order`` (default order - 1) held at the network's exact ones).
    Held-out scores use the data in the box (``folds``-fold cross-validation for the estimates fitted to it) when
    ``data=(x, y)`` is given, else ``heldout`` fresh network samples; ``heldout_r2`` is always against the network on
    ``heldout`` fresh points, and data adds the network <-> data distance. center: one model input ((n,) or
    (1, *row_shape)); sampling: "box" ([c - r, c + r]^n) or "ball" (|x - c| <= r); output: which model output to
    explain. chunk_size, executor, progress: how ``expand_many`` runs the expansions at the reference points (points
    per chunk, default by its memory estimate; a ``concurrent.futures.Executor``, for which the model must pickle; a
    tqdm bar); the coefficients do not depend on them.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if constrained_on not in ("network", "data"):
        raise ValueError(f"constrained_on must be 'network' or 'data', got {constrained_on!r}")
    if data is None and (method == "data" or (constrained_on == "data" and method in ("auto", "constrained"))):
        raise ValueError(f"method={method!r} with constrained_on={constrained_on!r} needs data=(x, y): the points "
                         "and the values the network was trained on")
    if method == "auto" and data is None and not heldout:
        raise ValueError("method='auto' scores the candidates on held-out points: give heldout > 0 or data=(x, y)")
    context = dict(model=model, center=center, order=order, radius=radius, points=points, output=output,
                   variables=variables, names=names, terms=terms, sampling=sampling, seed=seed, samples=samples,
                   heldout=heldout, data=data, folds=folds, constrained_order=constrained_order,
                   constrained_on=constrained_on, chunk_size=chunk_size, executor=executor, progress=progress,
                   **expand_kwargs)
    row = as_row(model, center)
    var = variable_indices(row, True, variables)
    c = row.reshape(-1)[var]
    wanted = ["local", "taylor", "fit", "constrained"] + (["data"] if data is not None else []) \
        if method == "auto" else [method]
    if "taylor" in wanted:
        gen = torch.Generator().manual_seed(seed)
        offsets = sample_offsets(var.numel(), points, radius, sampling, gen, row.dtype)
        values = torch.cat([c[None], c[None] + offsets])
        polys = _taylor_estimate(model, row, var, values, order, terms, output, names, expand_kwargs, chunk_size,
                                 executor, progress)
    else:
        values = c[None]
        polys = _taylor_estimate(model, row, var, values, order, terms, output, names, expand_kwargs)
    d = Discovery(polys, values, "taylor", context=context)
    d.row = row
    setup = _Setup(model, d, row, var, c, radius, sampling, seed, output, samples, heldout, data, folds,
                   constrained_order, constrained_on,
                   optional_data=method != "data" and not (method == "constrained" and constrained_on == "data"))
    if setup.data_t is None and "data" in wanted:
        wanted.remove("data")
    cands = setup.candidates(wanted)
    if method == "auto":
        chosen = choose(cands, setup.errors)
        if setup.note:
            cands.reason = f"{cands.reason}; {setup.note}"
    else:
        chosen = cands[0]
        chosen.chosen = True
        choose_single(cands, setup.errors)
    d.method, d.chosen, d.candidates = method, chosen.method, cands
    if chosen.method != "taylor":
        d.mean, d.std = chosen.coefficients.to(d.local.dtype), chosen.std.to(d.local.dtype)
        d.q25, d.q75 = d.mean - 0.6745 * d.std, d.mean + 0.6745 * d.std
    if method in ("fit", "constrained") and not chosen.uses_data:
        d.points = setup.net.values  # the samples it was fitted to (with "auto": the reference points, as "taylor")
    elif method != "auto" and chosen.uses_data:
        d.points = setup.data_t.to(c.dtype) + c[None]
    d._scoring = setup.scoring()
    if heldout:
        h = setup.fresh
        d.heldout_r2 = r_squared(d.polynomial()(h.values).reshape(-1), h.outputs)
        d.heldout_r2_local = r_squared(d.polynomial("local")(h.values).reshape(-1), h.outputs)
    if data is not None:
        d.data = _data_distance(model, d, data, output, radius, sampling)
    return d


def choose_single(cands: CandidateTable, errors: dict) -> None:
    """The held-out score of a lone candidate (no choice to make)."""
    for cand in cands:
        cand.heldout = float(errors[cand.method].mean())
        cand.heldout_se = 0.0
    cands.reason = f"{cands[0].method}: asked for"


class _Setup:
    """The samples, held-out points and completion shared by the candidates of one ``discover`` call."""

    def __init__(self, model, d: Discovery, row, var, c, radius, sampling, seed, output, samples, heldout, data,
                 folds, constrained_order, constrained_on, optional_data: bool = False):
        self.model, self.d, self.row, self.var, self.c = model, d, row, var, c
        self.radius, self.sampling, self.seed, self.output = radius, sampling, seed, output
        self.basis = d.basis
        self.m = self.basis.size
        order = self.basis.order
        self.constrained_order = order - 1 if constrained_order is None else int(constrained_order)
        if not 0 <= self.constrained_order < order and not (order == 0):
            raise ValueError(f"constrained_order must be in 0..{order - 1} (the degrees held at the network's "
                             f"derivatives), got {constrained_order}")
        self.constrained_on = constrained_on
        self.local = d.local.double()
        self.samples = samples or max(4 * self.m, 256)
        self._net = None
        self.fresh = network_samples(model, row, var, c, heldout, radius, sampling, seed + 7919, output) \
            if heldout else None
        big = make_basis(self.basis.n, completion_order(self.basis.n, order, self.basis.kind), self.basis.kind)
        count = max(3 * big.size, 1024)
        comp = network_samples(model, row, var, c, count, radius, sampling, seed + 104729, output)
        self.completion = Completion(big, self.m, (comp.values - c[None]).double(), comp.outputs.double())
        self.data_t = self.data_y = None
        self.note = ""
        if data is not None:
            try:
                self.data_t, self.data_y = self._data_inside(data)
            except ValueError as e:
                if not optional_data or self.fresh is None:
                    raise
                self.note = f"data not used: {e}"  # go on with the network-based candidates and scores
                self.constrained_on = "network"
                data = None
        if data is not None:
            gen = torch.Generator().manual_seed(seed + 31)
            perm = torch.randperm(self.data_y.numel(), generator=gen)
            self.folds = [f for f in perm.chunk(max(2, min(folds, self.data_y.numel()))) if f.numel()]
            self.eval_t, self.eval_y, self.what = self.data_t, self.data_y, "data points in the box"
        else:
            self.eval_t = (self.fresh.values - c[None]).double()
            self.eval_y, self.what = self.fresh.outputs.double(), "fresh network samples in the box"
        table = monomials(big, self.eval_t)
        self.eval_low, self.eval_high = table[:, :self.m], table[:, self.m:]
        self.errors: dict[str, torch.Tensor] = {}

    @property
    def net(self):
        if self._net is None:
            self._net = network_samples(self.model, self.row, self.var, self.c, self.samples, self.radius,
                                        self.sampling, self.seed, self.output)
        return self._net

    def _data_inside(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = data
        x = torch.as_tensor(x, dtype=self.row.dtype)
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        t = x.reshape(len(y), -1)[:, self.var].double() - self.c[None].double()
        inside = (t.abs().amax(1) <= self.radius) if self.sampling == "box" else (t.norm(dim=1) <= self.radius)
        if int(inside.sum()) <= self.m:
            raise ValueError(f"{int(inside.sum())} data points lie in the {self.sampling} of radius {self.radius} "
                             f"around the centre, too few for {self.m} coefficients; widen the radius or lower the "
                             "order")
        return t[inside], y[inside]

    def _monomials_t(self, t: torch.Tensor) -> torch.Tensor:
        return monomials(self.basis, t)

    def candidates(self, wanted: list[str]) -> CandidateTable:
        table = CandidateTable()
        table.metric = (f"MSE on {self.eval_y.numel()} {self.what}"
                        + (f", {len(self.folds)}-fold cross-validated for the data fits" if self.data_t is not None
                           else "") + f", completed to degree {self.completion.basis.order} on the network")
        zero = torch.zeros(self.m, dtype=torch.float64)
        for name in wanted:
            if name == "local":
                cand = Candidate("local", self.local.clone(), zero.clone(), "the expansion at the centre")
            elif name == "taylor":
                cand = Candidate("taylor", self.d.mean.double().clone(), self.d.std.double().clone(),
                                 f"mean over {self.d.coefficients.shape[0] - 1} re-centred expansions")
            elif name == "fit":
                coef, std = self._network_fit()
                cand = Candidate("fit", coef, std, f"{self.samples} network samples")
            elif name == "constrained":
                cand = self._constrained()
            else:
                coef, std = lstsq_with_se(self._monomials_t(self.data_t), self.data_y)
                cand = Candidate("data", coef, std, f"{self.data_y.numel()} data points", uses_data=True)
            table.append(cand)
        self._score(table)
        return table

    def _network_fit(self) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.net
        mono = self._monomials_t((s.values - self.c[None]).double())
        coef, std, _ = fit_coefficients(mono, s.outputs, float(self.local[0]))
        return coef, std

    def _fixed(self) -> torch.Tensor:
        return self.basis.degrees <= self.constrained_order

    def _constrained(self) -> Candidate:
        detail = f"degrees <= {self.constrained_order} from the network's derivatives"
        if self.constrained_on == "data":
            coef, std = constrained_lstsq(self._monomials_t(self.data_t), self.data_y, self._fixed(), self.local)
            return Candidate("constrained", coef, std, detail + ", the rest fitted to the data", uses_data=True)
        s = self.net
        coef, std = constrained_lstsq(self._monomials_t((s.values - self.c[None]).double()), s.outputs,
                                      self._fixed(), self.local)
        return Candidate("constrained", coef, std, detail + ", the rest to network samples")

    def _refit(self, cand: Candidate, idx: torch.Tensor) -> torch.Tensor:
        a = self._monomials_t(self.data_t[idx])
        if cand.method == "data":
            return lstsq_with_se(a, self.data_y[idx])[0]
        return constrained_lstsq(a, self.data_y[idx], self._fixed(), self.local)[0]

    def _completed_errors(self, b: torch.Tensor, idx=None) -> torch.Tensor:
        q = self.completion.correction(b)
        low, high, y = self.eval_low, self.eval_high, self.eval_y
        if idx is not None:
            low, high, y = low[idx], high[idx], y[idx]
        pred = low @ b + (high @ q if q.numel() else 0.0)
        return (y - pred) ** 2

    def _score(self, table: CandidateTable) -> None:
        fresh_t = None if self.fresh is None else (self.fresh.values - self.c[None]).double()
        fresh_mono = None if fresh_t is None else self._monomials_t(fresh_t)
        half_gap = None
        names = [c.method for c in table]
        if "fit" in names and "local" in names:
            half_gap = float((table.by_name("fit").coefficients - self.local).abs().max()) / 2
        for cand in table:
            if cand.uses_data:
                err = torch.empty(self.eval_y.numel(), dtype=torch.float64)
                for k, va in enumerate(self.folds):
                    tr = torch.cat([f for j, f in enumerate(self.folds) if j != k])
                    err[va] = self._completed_errors(self._refit(cand, tr), va)
                cand.uncertainty = 2 * float(cand.std.max())
            else:
                err = self._completed_errors(cand.coefficients)
                cand.uncertainty = half_gap if half_gap is not None else 0.0
            self.errors[cand.method] = err
            if fresh_mono is not None:
                cand.r2 = r_squared(fresh_mono @ cand.coefficients, self.fresh.outputs)
            p = self.d.polynomial("local").replace(coefficients=cand.coefficients.to(self.d.local.dtype))
            cand.formula = str(local_formula(p, top=4, digits=4))

    def scoring(self) -> tuple[torch.Tensor, torch.Tensor, str]:
        return self.eval_t, self.eval_y, self.what
