"""Fast inference: the Taylor polynomial as a batched torch module, P(x) = sum_m c_m t^(a_m), t = x - x0.

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
        return (f"n={self.n}, order={self.order}, outputs={math.prod(self.output_shape)}, "
                f"radius~{self.radius:.3g}, {'horner' if self.horner else 'monomial table + matmul'}")


def surrogate(p: TaylorPolynomial, *, output=None, model=None, tol: float = 1e-3, radius: float | None = None,
              dtype: torch.dtype | None = None, compile: bool = False, **convergence_kwargs):
    """A fast batched callable of ``p`` (one reference point). ``radius``: given, or measured against ``model`` (the
    largest radius where the error stays below ``tol``), or estimated from the coefficient growth.

    compile=True wraps the module with ``torch.compile`` (needs a working C++ compiler on CPU); the result keeps
    ``.radius``.
    """
    from hope_engine.analysis.convergence import convergence, estimate_radius

    if output is not None:
        p = scalar_polynomial(p, output)
    if radius is None:
        if model is not None:
            radius = convergence(model, p, **convergence_kwargs).valid_radius(tol)
        else:
            outputs = math.prod(p.coefficients.shape[2 if p.batched else 1:])
            radius = min(estimate_radius(p, output=None if outputs == 1 else i).radius for i in range(outputs))
    module = Surrogate(p, radius, dtype).eval()
    if compile:
        compiled = torch.compile(module, dynamic=True)
        compiled.radius = module.radius
        return compiled
    return module

