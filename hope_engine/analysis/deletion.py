"""Deletion and insertion curves: does a ranking of input elements find what the output depends on?

Deletion: set the top-ranked elements to the baseline first and follow the output; a smaller area under the curve
(AUC) means a better ranking. Insertion: start from the baseline and put the top-ranked elements back first; a larger
area means a better ranking. Both curves run in one batched forward pass; areas are trapezoid integrals over the
fraction of elements moved in [0, 1], averaged over rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hope_engine.analysis._points import prepare_rows, scalar_outputs


@dataclass(frozen=True)
class DeletionCurve:
    """Output after moving the top fraction ``fractions[j]`` of elements; ``auc``: area under it (mean over rows).

    ``kind``: "deletion" (lower AUC = better ranking) or "insertion" (higher AUC = better ranking).
    """

    fractions: torch.Tensor
    values: torch.Tensor  # (B, steps + 1)
    auc: float
    label: str = ""
    kind: str = "deletion"


def _curve(model, x, scores, output, baseline, steps, label, kind) -> DeletionCurve:
    x = prepare_rows(model, x)
    b = x.shape[0]
    flat = x.reshape(b, -1)
    base = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x).reshape(b, -1)
    n = flat.shape[1]
    order = torch.argsort(scores.reshape(b, -1).to(torch.float64), dim=1, descending=True, stable=True)
    fractions = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    counts = (fractions * n).round().long()
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=order.device).expand(b, n))
    moved = rank[:, None, :] < counts[None, :, None].to(rank.device)  # (B, steps + 1, n)
    if kind == "deletion":
        batch = torch.where(moved, base[:, None, :], flat[:, None, :])
    else:
        batch = torch.where(moved, flat[:, None, :], base[:, None, :])
    with torch.no_grad():
        values = scalar_outputs(model, batch.reshape(-1, *x.shape[1:]), output).reshape(b, steps + 1).double()
    auc = float(torch.trapezoid(values, fractions, dim=1).mean())
    return DeletionCurve(fractions, values, auc, label, kind)


def deletion_curve(model, x, scores: torch.Tensor, output=None, baseline=0.0, steps: int = 20,
                   label: str = "") -> DeletionCurve:
    """Set the highest-scoring elements to ``baseline`` (scalar or tensor like x) in ``steps`` equal fractions."""
    return _curve(model, x, scores, output, baseline, steps, label, "deletion")


def insertion_curve(model, x, scores: torch.Tensor, output=None, baseline=0.0, steps: int = 20,
                    label: str = "") -> DeletionCurve:
    """Start from ``baseline`` and restore the highest-scoring elements of x first, ``steps`` equal fractions."""
    return _curve(model, x, scores, output, baseline, steps, label, "insertion")


def random_scores(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A random ranking (the reference a useful attribution must beat on the deletion metric)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(x.shape, generator=gen, dtype=torch.float64)
