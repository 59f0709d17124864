"""Feature attribution (heat maps): how much of an output each input element carries, relative to a baseline.

The baseline is b = x - dx (dx = x by default: the baseline is the black image 0). Methods:

- "taylor": the single-element effect A_i = f(x) - f(x - dx_i e_i) from the pure (unmixed) derivatives of one exact
  expansion at x, A_i = -sum_{k=1}^K d^k f/dx_i^k (-dx_i)^k / k!; order=1 is dx_i df/dx_i ("hope": deprecated alias).
- "occlusion": that single-element effect exactly, all n perturbed inputs in batched forward passes.
- "grad_input": dx_i df/dx_i at x (the first-order term).
- "integrated_gradients": dx_i * int_0^1 df/dx_i(b + s dx) ds by quadrature; sum_i A_i = f(x) - f(b) (completeness).
- "deeplift": DeepLift's rescale rule, dx_i times the chain of multipliers (activation out - out_ref) / (in - in_ref);
  also complete for networks of linear maps and element-wise activations.

Single-element effects ("taylor", "occlusion") answer "what does this pixel do alone"; the path methods split the
whole difference f(x) - f(b) among the pixels. Neither sees interactions: see ``interactions``.
"""

from __future__ import annotations

import warnings

import torch

from ..expand import expand
from ._points import displacement, pick_output, prepare_rows, scalar_outputs
from .deletion import DeletionCurve, deletion_curve, insertion_curve, random_scores
from .path_methods import deeplift_attribution, integrated_gradients

METHODS = ("taylor", "occlusion", "grad_input", "integrated_gradients", "deeplift")

__all__ = ["METHODS", "DeletionCurve", "attribution", "deletion_curve", "insertion_curve", "random_scores"]


def taylor_attribution(model, x: torch.Tensor, output=None, order: int = 4, dx=None, **expand_kwargs) -> torch.Tensor:
    """A_i = -sum_{k=1}^K d^k f/dx_i^k (-dx_i)^k / k! from one terms="pure" exact expansion per input row."""
    x = prepare_rows(model, x)
    d = displacement(x, dx).reshape(x.shape[0], -1)
    p = expand(model, x, order, terms="pure", output=output, batched=True, method="exact", **expand_kwargs)
    c = p.coefficients.reshape(p.coefficients.shape[0], x.shape[0], -1)
    if c.shape[-1] != 1:
        raise ValueError(f"the model has {c.shape[-1]} outputs per point; pick one with output=i")
    n = d.shape[1]
    coef = c[1:, :, 0].reshape(order, n, x.shape[0]).permute(2, 1, 0)  # (B, n, K): c_{k e_i} = f^(k)_i / k!
    powers = torch.stack([(-d) ** k for k in range(1, order + 1)], dim=-1)  # (B, n, K)
    return -(coef * powers).sum(-1).reshape(x.shape)


def occlusion_attribution(model, x: torch.Tensor, output=None, dx=None, chunk: int = 4096) -> torch.Tensor:
    """A_i = f(x) - f(x - dx_i e_i), every perturbed copy in batched forward passes of ``chunk`` rows."""
    x = prepare_rows(model, x)
    d = displacement(x, dx).reshape(x.shape[0], -1)
    b, n = d.shape
    out = torch.empty(b, n, dtype=x.dtype, device=x.device)
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        base = scalar_outputs(model, x, output)
        for j in range(b):
            rows = x[j].reshape(1, -1) - eye * d[j][None]
            vals = torch.cat([scalar_outputs(model, rows[s:s + chunk].reshape(-1, *x.shape[1:]), output)
                              for s in range(0, n, chunk)])
            out[j] = base[j] - vals
    return out.reshape(x.shape)


def grad_input_attribution(model, x: torch.Tensor, output=None, dx=None) -> torch.Tensor:
    """A_i = dx_i df/dx_i by autograd (x_i df/dx_i for the baseline 0)."""
    x = prepare_rows(model, x)
    d = displacement(x, dx)
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(scalar_outputs(model, x, output).sum(), x)
    return (g * d).detach()


def attribution(model, x, output=None, method: str = "taylor", order: int = 4, dx=None, *, baseline=None,
                **kwargs) -> torch.Tensor:
    """Per-element attribution of one output, shaped like x (see the module docstring for each ``method``).

    x: a model input with a batch axis (B, ...) (a flat vector is taken as one row); output: which output to explain;
    dx (or baseline = x - dx): scalar or tensor like x, default x (baseline 0); order: the "taylor" truncation order.
    kwargs go to the method: ``steps``/``quadrature`` for integrated gradients, ``chunk`` for occlusion, expand's
    options for "taylor".
    """
    if method == "hope":
        warnings.warn('attribution(method="hope") is now method="taylor"', DeprecationWarning, stacklevel=2)
        method = "taylor"
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x = prepare_rows(model, x)
    d = displacement(x, dx, baseline)
    if method == "taylor":
        return taylor_attribution(model, x, output=output, order=order, dx=d, **kwargs)
    if method == "occlusion":
        return occlusion_attribution(model, x, output=output, dx=d, **kwargs)
    if method == "grad_input":
        return grad_input_attribution(model, x, output=output, dx=d)
    if method == "integrated_gradients":
        return integrated_gradients(lambda z: scalar_outputs(model, z, output), x, x - d, **kwargs)
    return deeplift_attribution(model, lambda y: pick_output(y, output), x, x - d)

