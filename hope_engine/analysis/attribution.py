"""Feature attribution (heat maps): how much of an output each input element carries.

All methods estimate the same quantity, A_i = f(x) - f(x - dx_i e_i): the output lost when element i moves by -dx_i
(dx = x by default: the element set to the baseline 0). Positive = the element pushes the output up.

- "hope": from the pure (unmixed) derivatives of an exact expansion, A_i = -sum_{k=1}^K d^k f/dx_i^k (-dx_i)^k / k!
  (the paper's sum_k d^k y/dx_i^k h^k/k! at step h = -dx, sign flipped); order=1 is the first-order term dx_i df/dx_i.
- "occlusion": A_i exactly, all n perturbed inputs in one batched forward pass.
- "grad_input": x_i df/dx_i (the first-order term at dx = x).

Deletion metric: remove the top-ranked elements first (set them to the baseline), track the output; a smaller area
under that curve means the ranking found what the output depends on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..expand import expand, prepare_point
from ._points import flat_output_index

METHODS = ("hope", "occlusion", "grad_input")


def _prepare(model, x) -> torch.Tensor:
    x = prepare_point(model, x)
    return x[None] if x.dim() <= 1 else x


def _dx(x: torch.Tensor, dx) -> torch.Tensor:
    if dx is None:
        return x.clone()
    d = torch.as_tensor(dx, dtype=x.dtype, device=x.device)
    return d.expand_as(x).clone() if d.shape != x.shape else d


def _outputs(model, x: torch.Tensor, output) -> torch.Tensor:
    y = model(x)
    y = y.reshape(y.shape[0], -1)
    idx = flat_output_index(y.shape[1:], output)
    return y[:, 0] if idx is None else y[:, idx]


def hope_attribution(model, x: torch.Tensor, output=None, order: int = 4, dx=None, **expand_kwargs) -> torch.Tensor:
    """A_i = -sum_{k=1}^K d^k f/dx_i^k (-dx_i)^k / k! from one terms="pure" exact expansion per input row."""
    x = _prepare(model, x)
    d = _dx(x, dx).reshape(x.shape[0], -1)
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
    x = _prepare(model, x)
    d = _dx(x, dx).reshape(x.shape[0], -1)
    b, n = d.shape
    out = torch.empty(b, n, dtype=x.dtype, device=x.device)
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        base = _outputs(model, x, output)
        for j in range(b):
            rows = x[j].reshape(1, -1) - eye * d[j][None]
            vals = torch.cat([_outputs(model, rows[s:s + chunk].reshape(-1, *x.shape[1:]), output)
                              for s in range(0, n, chunk)])
            out[j] = base[j] - vals
    return out.reshape(x.shape)


def grad_input_attribution(model, x: torch.Tensor, output=None) -> torch.Tensor:
    """A_i = x_i df/dx_i by autograd."""
    x = _prepare(model, x).detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(_outputs(model, x, output).sum(), x)
    return (g * x).detach()


def attribution(model, x, output=None, method: str = "hope", order: int = 4, dx=None, **kwargs) -> torch.Tensor:
    """Per-element attribution A_i = f(x) - f(x - dx_i e_i) (estimated per ``method``), shaped like x.

    x: a model input with a batch axis (B, ...) (a flat vector is taken as one row); output: which output to explain;
    dx: scalar or tensor like x, default x (baseline 0); order: the "hope" truncation order (1: first-order term).
    """
    if method == "hope":
        return hope_attribution(model, x, output=output, order=order, dx=dx, **kwargs)
    if method == "occlusion":
        return occlusion_attribution(model, x, output=output, dx=dx, **kwargs)
    if method == "grad_input":
        return grad_input_attribution(model, x, output=output)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


@dataclass(frozen=True)
class DeletionCurve:
    """Output after removing the top fraction ``fractions[j]`` of elements; ``auc``: area under it (mean over rows)."""

    fractions: torch.Tensor
    values: torch.Tensor  # (B, steps + 1)
    auc: float
    label: str = ""


def deletion_curve(model, x, scores: torch.Tensor, output=None, baseline: float = 0.0, steps: int = 20,
                   label: str = "") -> DeletionCurve:
    """Set the highest-scoring elements to ``baseline`` in order, ``steps`` equal fractions, all in one forward pass;
    area = trapezoid integral of the output over the removed fraction in [0, 1], averaged over rows."""
    x = _prepare(model, x)
    b = x.shape[0]
    flat = x.reshape(b, -1)
    n = flat.shape[1]
    order = torch.argsort(scores.reshape(b, -1).to(torch.float64), dim=1, descending=True, stable=True)
    fractions = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    counts = (fractions * n).round().long()
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n).expand(b, n))
    removed = rank[:, None, :] < counts[None, :, None].to(rank.device)  # (B, steps + 1, n)
    batch = torch.where(removed, torch.as_tensor(baseline, dtype=x.dtype), flat[:, None, :])
    with torch.no_grad():
        values = _outputs(model, batch.reshape(-1, *x.shape[1:]), output).reshape(b, steps + 1).double()
    auc = float(torch.trapezoid(values, fractions, dim=1).mean())
    return DeletionCurve(fractions, values, auc, label)


def random_scores(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A random ranking (the reference a useful attribution must beat on the deletion metric)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(x.shape, generator=gen, dtype=torch.float64)
