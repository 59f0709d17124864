"""Function discovery: read the learned function off a network as a short polynomial formula.

Local: the Taylor polynomial at one point, terms by magnitude. Global: expansions at many reference points x_j around a
centre c (one batched expansion), each Taylor-shifted to c (c'_b = sum_a c_a binom(a, b) (c - x_j)^(a - b)); a term
that the network really contains has the same shifted coefficient at every point, so per term the mean over points is
the estimate and the spread says how much to trust it.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp
import torch

from ..expand import _variables, expand
from ..polynomial import TaylorPolynomial
from ._points import as_row, rows_at, sample_offsets, scalar_polynomial, single


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
    """A list of ``TermStats`` that prints as an aligned text table."""

    def __str__(self) -> str:
        width = max([len("term")] + [len(r.monomial) for r in self])
        lines = [f"{'term':<{width}}  {'local':>11}  {'mean':>11}  {'std':>10}  {'q25':>11}  {'q75':>11}"]
        for r in self:
            lines.append(f"{r.monomial:<{width}}  {r.local:>+11.5f}  {r.mean:>+11.5f}  {r.std:>10.5f}  "
                         f"{r.q25:>+11.5f}  {r.q75:>+11.5f}")
        return "\n".join(lines)

    def to_dicts(self) -> list[dict]:
        return [dict(alpha=list(r.alpha), monomial=r.monomial, local=r.local, mean=r.mean, std=r.std, q25=r.q25,
                     q75=r.q75) for r in self]


class Discovery:
    """Expansions at reference points around a centre, all written around the centre.

    ``coefficients`` (P, M): row 0 is the expansion at the centre itself, rows 1.. the re-centred expansions at the
    reference points ``points`` (P, n, values of the variables). ``local``/``mean``/``std``: (M,) per term.
    """

    def __init__(self, polynomials: TaylorPolynomial, points: torch.Tensor):
        self.polynomials = polynomials
        self.points = points
        self.coefficients = polynomials.coefficients.T.detach()
        self.local = self.coefficients[0]
        others = self.coefficients[1:] if self.coefficients.shape[0] > 1 else self.coefficients
        self.mean = others.mean(0)
        self.std = others.std(0, correction=0)
        self.q25, self.q75 = torch.quantile(others.double(), torch.tensor([0.25, 0.75], dtype=torch.float64),
                                            dim=0).to(others.dtype)

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
        return at_center._replace(coefficients=self.mean if source == "mean" else self.local)

    def formula(self, top: int | None = None, threshold: float = 0.0, source: str = "mean", in_x: bool = True,
                digits: int | None = None):
        """sympy expression of the ``top`` largest terms with |coefficient| > threshold, in x (not x - c) by default."""
        return local_formula(self.polynomial(source), threshold=threshold, top=top, in_x=in_x, digits=digits)

    def order_terms(self, by: str = "mean") -> list[int]:
        """Basis positions sorted by |mean| (or |local|), largest first."""
        key = self.mean if by == "mean" else self.local
        return [int(i) for i in torch.argsort(key.abs(), descending=True, stable=True)]

    def table(self, top: int | None = None, threshold: float = 0.0, by: str = "mean") -> TermTable:
        """Per term: local value, mean, standard deviation and quartiles over the points, largest |mean| first."""
        rows = TermTable()
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

    def figure(self, top: int = 12, threshold: float = 0.0, include_constant: bool = True):
        """Box plot per term of its re-centred coefficient over the reference points, local value marked."""
        from .figures import discovery_figure

        return discovery_figure(self, top=top, threshold=threshold, include_constant=include_constant)

    def __repr__(self) -> str:
        return (f"Discovery(n={self.basis.n}, order={self.basis.order}, points={self.coefficients.shape[0] - 1}, "
                f"formula={self.formula(top=6)})")


def discover(model, center, order: int = 4, *, radius: float = 0.5, points: int = 64, output=None,
             variables=None, names=None, terms: str = "total", sampling: str = "box", seed: int = 0,
             **expand_kwargs) -> Discovery:
    """Expand ``model`` at the centre and at ``points`` reference points within ``radius`` of it (one batched call),
    and Taylor-shift every expansion to the centre.

    center: one model input ((n,) or (1, *row_shape)); sampling: "box" ([c - r, c + r]^n) or "ball" (|x - c| <= r);
    output: which model output to explain (needed when it has several).
    """
    row = as_row(model, center)
    var = _variables(row, True, variables)
    c = row.reshape(-1)[var]
    gen = torch.Generator().manual_seed(seed)
    offsets = sample_offsets(var.numel(), points, radius, sampling, gen, row.dtype)
    values = torch.cat([c[None], c[None] + offsets])
    batch = rows_at(row, var, values)
    p = expand(model, batch, order, terms=terms, output=output, variables=var, names=names, batched=True,
               **expand_kwargs)
    p = scalar_polynomial(p)
    shifted = p.recenter(row.expand_as(batch))
    return Discovery(shifted, values)
