"""How far a Taylor polynomial can be trusted: truncation error against the network, and the radius of convergence
estimated from how fast the coefficients grow.

Per degree k, a_k = sum_{|a| = k} |c_a| bounds the degree-k part on the unit sphere (|P_k(u)| <= a_k for |u|_2 <= 1),
so the Cauchy-Hadamard radius R = 1 / limsup a_k^(1/k) is estimated by fitting log a_k ~ alpha - k log R over the
upper half of the available degrees (the root test with a prefactor). It is an estimate from finitely many terms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hope_engine.algebra.polynomial import TaylorPolynomial
from hope_engine.analysis._points import as_row, model_scalar, rows_at, single, truncation_values, unit_directions


def degree_norms(p: TaylorPolynomial, output=None) -> torch.Tensor:
    """a_k = sum_{|a| = k} |c_a| for k = 0..K (float64)."""
    c = single(p, output).coefficients.detach().double().abs()
    return torch.stack([c[p.basis.block(k)].sum() for k in range(p.order + 1)])


@dataclass(frozen=True)
class RadiusEstimate:
    """Root/ratio-test view of the coefficient growth; ``radius`` is the fitted estimate (inf: no growth seen)."""

    radius: float
    root: torch.Tensor  # a_k^(-1/k), k = 1..K (nan where a_k = 0)
    ratio: torch.Tensor  # a_k / a_(k+1), k = 1..K-1 (nan where undefined)
    norms: torch.Tensor  # a_k, k = 0..K


def estimate_radius(p: TaylorPolynomial, output=None, tiny: float = 1e-300) -> RadiusEstimate:
    """Radius of convergence estimated from the per-degree coefficient norms (least-squares root test)."""
    a = degree_norms(p, output)
    k = torch.arange(len(a), dtype=torch.float64)
    with torch.no_grad():
        root = torch.where(a[1:] > tiny, a[1:].clamp_min(tiny) ** (-1.0 / k[1:]), torch.full_like(a[1:], math.nan))
        ratio = torch.where((a[1:-1] > tiny) & (a[2:] > tiny), a[1:-1] / a[2:].clamp_min(tiny),
                            torch.full_like(a[1:-1], math.nan))
    K = len(a) - 1
    use = [j for j in range(max(1, K // 2), K + 1) if a[j] > tiny]
    if not use:  # a polynomial of low degree (or a constant): it converges everywhere
        radius = math.inf
    elif len(use) == 1:
        radius = float(root[use[0] - 1])
    else:
        x = k[use]
        y = torch.log(a[use])
        slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
        radius = math.exp(min(-slope, 700.0))
    return RadiusEstimate(radius, root, ratio, a)


def derivative_ratios(p: TaylorPolynomial, orders=(2, 5, 10), variable: int = 0, output=None) -> dict[int, float]:
    """|d^n f / dx_i^n| / |d f / dx_i| at the expansion point, for each n in ``orders``."""
    s = single(p, output)
    e = [0] * s.n
    e[variable] = 1
    first = abs(float(s.derivative(tuple(e))))
    out = {}
    for n in orders:
        e[variable] = n
        out[int(n)] = abs(float(s.derivative(tuple(e)))) / first
    return out


class Convergence:
    """Errors of the order-k truncations against the network over balls |x - x0| <= r.

    ``max_error``/``rms_error``/``r2``: (len(orders), len(radii)); entry [i, j] is over the sampled points within
    radius ``radii[j]`` (all shells up to it) for the truncation to ``orders[i]``.
    """

    def __init__(self, model, p: TaylorPolynomial, orders: list[int], radii: torch.Tensor, offsets: torch.Tensor,
                 shell: torch.Tensor, network: torch.Tensor, truncations: torch.Tensor, output=None,
                 direction: torch.Tensor | None = None):
        self.model, self.polynomial, self.output = model, p, output
        self.orders, self.radii, self.direction = orders, radii, direction
        self.offsets, self.network, self.truncations = offsets, network, truncations
        self.estimate = estimate_radius(p)
        err = (truncations - network[None]).abs()
        n_r = len(radii)
        self.max_error = torch.empty(len(orders), n_r, dtype=torch.float64)
        self.rms_error = torch.empty_like(self.max_error)
        self.r2 = torch.empty_like(self.max_error)
        for j in range(n_r):
            inside = shell <= j
            f = network[inside]
            e = err[:, inside]
            self.max_error[:, j] = e.amax(1)
            self.rms_error[:, j] = e.pow(2).mean(1).sqrt()
            ss_tot = (f - f.mean()).pow(2).sum()
            self.r2[:, j] = 1 - e.pow(2).sum(1) / ss_tot if ss_tot > 0 else torch.nan

    @property
    def radius_estimate(self) -> float:
        """Radius of convergence estimated from the coefficient growth (an estimate: see ``estimate_radius``)."""
        return self.estimate.radius

    def valid_radius(self, tol: float = 1e-3, order: int | None = None) -> float:
        """Largest sampled radius within which the order-``order`` truncation stays within ``tol`` of the network."""
        i = self.orders.index(self.orders[-1] if order is None else order)
        ok = self.max_error[i] < tol
        if not bool(ok[0]):
            return 0.0
        bad = (~ok).nonzero()
        last = int(bad[0]) - 1 if len(bad) else len(self.radii) - 1
        return float(self.radii[last])

    def best_order(self, tol: float = 1e-3, radius: float | None = None) -> int | None:
        """Lowest order whose max error within ``radius`` (default: the largest sampled) is below ``tol``."""
        j = len(self.radii) - 1 if radius is None else int((self.radii <= radius + 1e-12).nonzero().max())
        for i, k in enumerate(self.orders):
            if float(self.max_error[i, j]) < tol:
                return k
        return None

    def figure(self, orders=None, kind: str | None = None):
        """Error vs order (log) beside network-vs-truncations along a line (1-D) or contour panels (2-D)."""
        from hope_engine.analysis.figures import convergence_figure

        return convergence_figure(self, orders=orders, kind=kind)

    def __repr__(self) -> str:
        return (f"Convergence(orders={self.orders[0]}..{self.orders[-1]}, radii={float(self.radii[0]):.3g}.."
                f"{float(self.radii[-1]):.3g}, radius_estimate~{self.radius_estimate:.3g})")


def convergence(model, p: TaylorPolynomial, *, radius: float | None = None, radii=None, direction=None,
                samples: int = 64, orders=None, output=None, seed: int = 0) -> Convergence:
    """Compare the truncations of ``p`` (one point, one output) with ``model`` on shells of radius r around x0.

    radii: the shell radii (default: 10 up to ``radius``, itself defaulting to the coefficient estimate, capped at 1);
    direction: compare along the line x0 + s d (s = +-r) instead of ``samples`` random directions per shell;
    output: the model output the polynomial stands for (when the model has several).
    """
    s = single(p, output if _has_outputs(p) else None)
    orders = list(range(s.order + 1)) if orders is None else sorted(int(k) for k in orders)
    if orders[-1] > s.order:
        raise ValueError(f"orders go up to {orders[-1]} but the polynomial has order {s.order}")
    if radii is None:
        if radius is None:
            est = estimate_radius(s).radius
            radius = min(est, 1.0) if math.isfinite(est) else 1.0
        radii = torch.linspace(radius / 10, radius, 10, dtype=torch.float64)
    radii = torch.as_tensor(radii, dtype=torch.float64).reshape(-1)
    gen = torch.Generator().manual_seed(seed)
    if direction is not None:
        d = torch.as_tensor(direction, dtype=torch.float64).reshape(1, -1)
        d = torch.cat([d, -d]) / d.norm()
    else:
        d = unit_directions(s.n, samples, gen)
    offsets = (radii[:, None, None] * d[None]).reshape(-1, s.n)
    shell = torch.arange(len(radii)).repeat_interleave(d.shape[0])
    row = as_row(model, p.center[0:1] if p.batched else p.center[None])
    c = s.center_values.double()
    x = rows_at(row, s.variables, (c[None] + offsets).to(row.dtype))
    network = model_scalar(model, x, output).double()
    trunc = truncation_values(s, offsets, orders).double()
    return Convergence(model, s, orders, radii, offsets, shell, network, trunc, output,
                       None if direction is None else d[0])


def _has_outputs(p: TaylorPolynomial) -> bool:
    lead = 2 if p.batched else 1
    return math.prod(p.coefficients.shape[lead:]) > 1
