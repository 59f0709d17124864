"""The "fit" discovery estimate and the checks that compare estimates: held-out R^2 and network <-> data distance.

Fit: least squares of the network's values f(x_s) on samples x_s in the box onto the monomials (x - c)^a of the
same basis, anchored at the centre: the constant is the exact value f(c) of the local expansion, and the other
coefficients solve min || A b - (f(x_s) - f(c)) ||_2 (A: the non-constant monomials at the samples). Standard errors:
s^2 = ||residual||^2 / (N - M + 1), se_a = s sqrt((A^T A)^-1_aa).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hope_engine.analysis._points import model_scalar, rows_at, sample_offsets


@dataclass(frozen=True)
class Samples:
    """Points in the box (values of the variables, (N, n)) and the network's output there (N,)."""

    values: torch.Tensor
    outputs: torch.Tensor


def network_samples(model, row, var, center, count, radius, sampling, seed, output) -> Samples:
    """``count`` points around ``center`` (uniform in the box or ball of ``radius``) and the network there."""
    gen = torch.Generator().manual_seed(seed)
    values = center[None] + sample_offsets(var.numel(), count, radius, sampling, gen, row.dtype)
    return Samples(values, model_scalar(model, rows_at(row, var, values), output).double())


def fit_coefficients(monomials: torch.Tensor, outputs: torch.Tensor, value_at_center: float):
    """Anchored least squares: (coefficients (M,), standard errors (M,), residual RMS) from monomials (N, M)."""
    a = monomials[:, 1:].double()
    rhs = outputs.double() - value_at_center
    n, m = a.shape
    if n < m:
        raise ValueError(f"{n} samples for {m} unknown coefficients; use samples >= {m}")
    scale = a.abs().amax(0).clamp_min(1e-300)  # column scaling: high powers of small offsets are tiny
    sol = torch.linalg.lstsq(a / scale, rhs[None].contiguous().T, driver="gelsd").solution[:, 0]  # column-major rhs
    coef = sol / scale
    resid = rhs - a @ coef
    dof = max(n - m, 1)
    s2 = float(resid.pow(2).sum()) / dof
    gram_inv = torch.linalg.pinv((a / scale).T @ (a / scale))
    se = (s2 * gram_inv.diagonal().clamp_min(0)).sqrt() / scale
    coefficients = torch.cat([torch.tensor([value_at_center], dtype=torch.float64), coef])
    std = torch.cat([torch.zeros(1, dtype=torch.float64), se])
    return coefficients, std, math.sqrt(float(resid.pow(2).mean()))


def r_squared(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - sum (target - predicted)^2 / sum (target - mean)^2."""
    target = target.double().reshape(-1)
    ss_tot = float((target - target.mean()).pow(2).sum())
    ss_res = float((target - predicted.double().reshape(-1)).pow(2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan


@dataclass(frozen=True)
class DataDistance:
    """How far the network is from its training data (and the discovered polynomial from both)."""

    rms: float  # sqrt(mean (f(x_i) - y_i)^2)
    max: float  # max |f(x_i) - y_i|
    r2: float  # R^2 of the network on the data
    formula_r2: float  # R^2 of the discovered polynomial on the data points inside the box
    inside: int  # how many data points lie in the box

    def __str__(self) -> str:
        return (f"network vs data: RMS {self.rms:.3g}, max {self.max:.3g}, R^2 {self.r2:.6f}; formula vs data in the "
                f"box ({self.inside} points): R^2 {self.formula_r2:.6f}")


@dataclass(frozen=True)
class Comparison:
    """Held-out R^2 (against the network, on fresh samples in the box) of the two estimates, and the verdict."""

    r2_taylor: float
    r2_fit: float
    r2_local: float
    max_coefficient_gap: float  # max_a |taylor_a - fit_a|
    points: int

    @property
    def better(self) -> str:
        return "fit" if self.r2_fit > self.r2_taylor else "taylor"

    def __str__(self) -> str:
        err_t, err_f = 1 - self.r2_taylor, 1 - self.r2_fit
        ratio = max(err_t, err_f) / max(min(err_t, err_f), 1e-300)
        return (f"held-out R^2 vs the network ({self.points} fresh points in the box): taylor mean "
                f"{self.r2_taylor:.6f}, fit {self.r2_fit:.6f}, local expansion alone {self.r2_local:.6f}. "
                f"Better on this network: {self.better} (1 - R^2 {ratio:.3g}x smaller); the estimates differ by "
                f"up to {self.max_coefficient_gap:.3g} per coefficient")
