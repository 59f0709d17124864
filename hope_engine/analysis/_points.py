"""Shared helpers: reference rows around a centre, scalar model outputs, and the scalar view of a polynomial.

A *row* is one model input with a leading batch axis of 1 (shape (1, *row_shape)); the expansion variables are flat
indices into it. Points near the centre differ from it only in those variables.
"""

from __future__ import annotations

import math

import torch

from hope_engine.algebra.polynomial import TaylorPolynomial, output_index
from hope_engine.capture.arguments import prepare_point
from hope_engine.errors import ExpansionError


def as_row(model, center) -> torch.Tensor:
    """The centre as one model input (1, *row_shape) in the model's dtype; a flat (n,) vector becomes (1, n)."""
    if not isinstance(center, torch.Tensor):
        center = torch.as_tensor(center, dtype=torch.float64)
    c = prepare_point(model, center)
    return c.reshape(1, -1) if c.dim() <= 1 else c


def rows_at(row: torch.Tensor, variables: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Copies of ``row`` (1, *row_shape) with the variables set to ``values`` (N, n): (N, *row_shape)."""
    out = row.repeat(values.shape[0], *([1] * (row.dim() - 1)))
    flat = out.reshape(values.shape[0], -1)
    flat[:, variables.to(flat.device)] = values.to(flat.dtype)
    return out


def sample_offsets(n: int, count: int, radius: float, sampling: str, generator: torch.Generator,
                   dtype: torch.dtype) -> torch.Tensor:
    """``count`` displacements in R^n: uniform in the box [-r, r]^n ("box") or in the Euclidean ball ("ball")."""
    if sampling == "box":
        return (torch.rand(count, n, generator=generator, dtype=torch.float64) * 2 - 1).mul(radius).to(dtype)
    if sampling == "ball":
        d = unit_directions(n, count, generator)
        r = torch.rand(count, 1, generator=generator, dtype=torch.float64) ** (1.0 / n)
        return (d * r * radius).to(dtype)
    raise ValueError(f"sampling must be 'box' or 'ball', got {sampling!r}")


def unit_directions(n: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random unit vectors in R^n (float64); for n = 1 they alternate +1, -1."""
    if n == 1:
        return torch.tensor([[1.0], [-1.0]], dtype=torch.float64).repeat((count + 1) // 2, 1)[:count]
    d = torch.randn(count, n, generator=generator, dtype=torch.float64)
    return d / d.norm(dim=1, keepdim=True)


def flat_output_index(per_point_shape, output) -> int | None:
    """The flat index of ``output`` (int or index tuple) into one point's output; None when it is one scalar."""
    numel = math.prod(per_point_shape)
    if output is None:
        if numel != 1:
            raise ExpansionError(f"the model has {numel} outputs per point; pick one with output=i")
        return None
    try:
        return output_index(per_point_shape, output)
    except IndexError as e:
        raise ExpansionError(str(e)) from None


def model_scalar(model, rows: torch.Tensor, output=None, chunk: int = 65536) -> torch.Tensor:
    """The chosen scalar output of the model at each row: (N,), evaluated in chunks without gradients."""
    vals = []
    with torch.no_grad():
        for start in range(0, rows.shape[0], chunk):
            vals.append(pick_output(model(rows[start:start + chunk]), output))
    return torch.cat(vals)


def scalar_polynomial(p: TaylorPolynomial, output=None) -> TaylorPolynomial:
    """``p`` reduced to one output per point (selecting ``output`` if given); raises if that leaves several."""
    if output is not None:
        p = p.select(output)
    if p.outputs_per_point != 1:
        raise ExpansionError(f"the polynomial has {p.outputs_per_point} outputs per point; pick one with output=i")
    shape = (p.coefficients.shape[0], p.coefficients.shape[1]) if p.batched else (p.coefficients.shape[0],)
    return p.replace(coefficients=p.coefficients.reshape(shape))


def single(p: TaylorPolynomial, output=None) -> TaylorPolynomial:
    """A scalar, unbatched polynomial (coefficients (M,)): one output, the one reference point of a batch of 1."""
    p = scalar_polynomial(p, output)
    if p.batched:
        if p.coefficients.shape[1] != 1:
            raise ExpansionError(f"the polynomial holds {p.coefficients.shape[1]} reference points; pick one with "
                                 "p.point(i)")
        p = p.scalar(point=0)
    return p


def prepare_rows(model, x) -> torch.Tensor:
    """x as model input rows with a batch axis (a flat vector becomes one row), in the model's dtype."""
    x = prepare_point(model, x)
    return x[None] if x.dim() <= 1 else x


def displacement(x: torch.Tensor, dx=None, baseline=None) -> torch.Tensor:
    """dx shaped like x: given, or x - baseline, or x itself (baseline 0)."""
    if dx is not None and baseline is not None:
        raise ValueError("give dx or baseline, not both")
    if baseline is not None:
        return x - torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x)
    if dx is None:
        return x.clone()
    d = torch.as_tensor(dx, dtype=x.dtype, device=x.device)
    return d.expand_as(x).clone() if d.shape != x.shape else d


def pick_output(y: torch.Tensor, output) -> torch.Tensor:
    """The chosen output per row of a model's result y (B, ...): (B,)."""
    y = y.reshape(y.shape[0], -1)
    idx = flat_output_index(y.shape[1:], output)
    return y[:, 0] if idx is None else y[:, idx]


def scalar_outputs(model, x: torch.Tensor, output) -> torch.Tensor:
    """The chosen output of ``model`` per row, with gradients if enabled: (B,)."""
    return pick_output(model(x), output)


def truncation_values(p: TaylorPolynomial, t: torch.Tensor, orders: list[int]) -> torch.Tensor:
    """P_k(x0 + t) for each k in ``orders``: (len(orders), N), from one monomial table and a cumulative sum."""
    s = single(p)
    t = t.to(s.coefficients.dtype)
    return s.partial_sums(s.center_values.to(t.device) + t).detach()[list(orders)]
