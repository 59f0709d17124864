"""Surrogates over a box: the least-squares polynomial of the network, and the validity report every surrogate gets.

Fit: on N uniform samples x_s of the box [lo, hi] (centre c, half-widths h), the coefficients of the monomials of
u = (x - c) / h (each variable in [-1, 1], which keeps the columns well scaled) minimise sum_s |f(x_s) - P(u_s)|^2;
dividing by h^a gives the coefficients in t = x - c, so the fit is a ``TaylorPolynomial`` around c like an expansion
and runs in the same ``Surrogate`` module.

Validity: on points of the domain not used for fitting (fresh uniform samples, or the caller's own points, e.g. real
data), the error |s(x) - f(x)| relative to the network's output range over those points; the surrogate is *valid* at a
point when that is <= tol (max over outputs). The report gives the valid fraction, the largest error, the largest
centred sub-box (as a fraction of the half-widths) on which every point is valid, and the time of the network and of
the surrogate on the same points in the same run (median of interleaved repeats).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass

import torch

from hope_engine.algebra.basis import make_basis
from hope_engine.algebra.polynomial import TaylorPolynomial, monomial_parents, monomial_table


@dataclass(frozen=True)
class Box:
    """An axis-aligned box of the model's n inputs: lo, hi (n,) float64."""

    lo: torch.Tensor
    hi: torch.Tensor

    @property
    def center(self) -> torch.Tensor:
        return (self.lo + self.hi) / 2

    @property
    def half(self) -> torch.Tensor:
        return (self.hi - self.lo) / 2

    @property
    def n(self) -> int:
        return int(self.lo.numel())

    def sample(self, count: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        u = torch.rand(count, self.n, generator=gen, dtype=torch.float64) * 2 - 1
        return self.center + u * self.half

    def scaled_norm(self, x: torch.Tensor) -> torch.Tensor:
        """max_i |x_i - c_i| / h_i per point: 1 on the box's surface."""
        return ((x - self.center) / self.half.clamp_min(1e-300)).abs().amax(-1)


def as_box(domain=None, points: torch.Tensor | None = None, n: int | None = None) -> Box:
    """The box from ``domain`` = (lo, hi) (numbers, repeated over ``n`` inputs, or sequences of n numbers) or, without
    it, the bounding box of ``points`` (N, n)."""
    if domain is None:
        if points is None:
            raise ValueError("give domain=(lo, hi) (the box the surrogate must cover) or points= to validate on")
        p = torch.as_tensor(points, dtype=torch.float64)
        return Box(p.amin(0), p.amax(0))
    try:
        lo, hi = domain
    except (TypeError, ValueError):
        raise ValueError(f"domain must be a pair (lo, hi) of numbers or of one number per input, got {domain!r}"
                         ) from None
    lo = torch.as_tensor(lo, dtype=torch.float64).reshape(-1)
    hi = torch.as_tensor(hi, dtype=torch.float64).reshape(-1)
    if lo.numel() == 1 and hi.numel() > 1:
        lo = lo.expand_as(hi)
    if hi.numel() == 1 and lo.numel() > 1:
        hi = hi.expand_as(lo)
    if lo.numel() == 1 and hi.numel() == 1 and n is not None and n > 1:
        lo, hi = lo.expand(n), hi.expand(n)
    if lo.shape != hi.shape or not bool((hi > lo).all()):
        raise ValueError(f"domain (lo, hi) needs hi > lo in every input, got lo={lo.tolist()}, hi={hi.tolist()}")
    return Box(lo.clone(), hi.clone())


def network_values(model, x: torch.Tensor, dtype: torch.dtype, output=None, chunk: int = 65536) -> torch.Tensor:
    """The model at points x (N, n) without gradients, as (N, outputs) float64 (``output`` picks one flat index)."""
    out = []
    with torch.no_grad():
        for s in range(0, x.shape[0], chunk):
            y = model(x[s:s + chunk].to(dtype))
            y = y.reshape(y.shape[0], -1).double()
            out.append(y if output is None else y[:, output:output + 1])
    y = torch.cat(out)
    if y.shape[1] == 0:
        raise ValueError(f"the model gave no output for points of shape {tuple(x.shape)}: is the box's number of "
                         f"inputs ({x.shape[1]}) what the model takes? Give domain=(lo, hi) with one bound per input")
    return y


def fit_polynomial(box: Box, x: torch.Tensor, y: torch.Tensor, order: int, names=None) -> TaylorPolynomial:
    """Least-squares polynomial of total degree ``order`` through (x, y) ((N, n), (N, outputs)), written around the
    box centre."""
    basis = make_basis(box.n, order)
    if x.shape[0] < basis.size:
        raise ValueError(f"{x.shape[0]} samples for {basis.size} coefficients of order {order}; use more samples")
    parent, var = monomial_parents(basis)
    u = (x - box.center) / box.half
    a = monomial_table(u, parent, var, basis.offsets).T.contiguous()  # (N, M)
    # column-major right-hand side: an (N, 1) tensor with strides (1, 1) can reach LAPACK with a leading dimension 1
    rhs = torch.empty(y.shape[1], y.shape[0], dtype=torch.float64).copy_(y.T).T
    sol = torch.linalg.lstsq(a, rhs, driver="gelsd").solution  # (M, outputs)
    h_pow = monomial_table(box.half[None], parent, var, basis.offsets)[:, 0]  # h^a
    coefficients = sol / h_pow[:, None]  # (M, outputs): one column per flat output, like an expansion's
    return TaylorPolynomial(basis, coefficients, box.center.clone(), torch.arange(box.n), False, names, method="fit")


def median_time(fn, x: torch.Tensor, other, repeats: int = 5) -> tuple[float, float]:
    """Median seconds of fn(x) and other(x), interleaved (one warm-up each), under inference_mode."""
    a, b = [], []
    with torch.inference_mode():
        fn(x)
        other(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(x)
            a.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            other(x)
            b.append(time.perf_counter() - t0)
    return statistics.median(a), statistics.median(b)


@dataclass(frozen=True)
class Validity:
    """Where a surrogate holds, measured on ``points`` points (``where``), and its speed against the network there."""

    method: str
    order: int
    monomials: int
    tol: float  # relative to the output range
    valid_fraction: float
    max_error: float  # max |s - f| / range
    rms_error: float  # RMS of |s - f| / range
    valid_box: float  # largest centred sub-box (fraction of the half-widths) with every point in it valid
    points: int
    where: str
    network_ms: float = math.nan
    surrogate_ms: float = math.nan

    @property
    def speedup(self) -> float:
        return self.network_ms / self.surrogate_ms if self.surrogate_ms > 0 else math.nan

    def speed_text(self) -> str:
        if math.isnan(self.speedup):
            return "speed not measured"
        verdict = "faster" if self.speedup >= 1 else "SLOWER than the network"
        return (f"{self.surrogate_ms:.3g} ms vs the network's {self.network_ms:.3g} ms on the {self.points} points: "
                f"{self.speedup:.3g}x ({verdict})")

    def __str__(self) -> str:
        return (f"{self.method} order {self.order} ({self.monomials} monomials): valid (error <= {self.tol:.3g} of the "
                f"output range) on {self.valid_fraction:.1%} of {self.points} {self.where}, max error "
                f"{self.max_error:.3g} of the range, every point valid within {self.valid_box:.3g} of the half-widths; "
                f"{self.speed_text()}")


def measure(module, model, box: Box, x: torch.Tensor, f_x: torch.Tensor, method: str, order: int, monomials: int,
            tol: float, where: str, timing: bool, dtype: torch.dtype) -> Validity:
    """The validity of ``module`` (points (N, n) -> outputs) against the network values ``f_x`` (N, outputs) at x."""
    with torch.no_grad():
        s = module(x.to(dtype)).reshape(x.shape[0], -1).double()
    span = (f_x.amax(0) - f_x.amin(0)).clamp_min(1e-300)
    rel = ((s - f_x).abs() / span).amax(1)
    bad = rel > tol
    norms = box.scaled_norm(x)
    valid_box = float(norms[bad].min()) if bool(bad.any()) else float(norms.max())
    net_ms = sur_ms = math.nan
    if timing:
        xd = x.to(dtype)
        t_net, t_sur = median_time(lambda z: model(z), xd, module)
        net_ms, sur_ms = t_net * 1e3, t_sur * 1e3
    return Validity(method, order, monomials, tol, float((~bad).double().mean()), float(rel.max()),
                    float(rel.pow(2).mean().sqrt()), valid_box, int(x.shape[0]), where, net_ms, sur_ms)
