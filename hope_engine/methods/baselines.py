"""Baselines the expansion methods are measured against.

- ``nested_autograd``: every derivative d^a y(x0) of a basis by repeated
  ``torch.autograd.grad(..., create_graph=True)``, one derivative per multi-index as the HOPE paper's comparison does.
  A derivative of order k is the gradient of one of order k - 1, so the calls form a tree over sorted variable
  sequences: each node of the tree (each distinct multi-index of order < K that some kept multi-index extends) costs
  one backward pass through a graph that grows with the order.
- ``floor``: one batched forward pass of the model over M inputs (M = the basis size). Any method that carries M
  Taylor coefficients through every linear layer does at least this work.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hope_engine.algebra.basis import Basis, make_basis

__all__ = ["nested_autograd", "floor_inputs", "floor", "autograd_tree_size"]


def _sequences(basis: Basis) -> list[tuple[int, ...]]:
    """The variable sequence of each multi-index (variable i repeated a_i times, in increasing order)."""
    return [tuple(i for i, e in enumerate(a) for _ in range(e)) for a in basis.multi_indices()]


def autograd_tree_size(basis: Basis) -> int:
    """Number of ``autograd.grad`` calls ``nested_autograd`` makes for this basis (distinct proper prefixes)."""
    return len({s[:-1] for s in _sequences(basis) if s})


def nested_autograd(model, x0: torch.Tensor, order: int, *, terms: str = "total", output: int = 0,
                    variables: Sequence[int] | None = None, batched: bool | None = None) -> tuple[Basis, torch.Tensor]:
    """(basis, derivatives): d^a y(x0) for every multi-index a of the basis, by nested autograd.

    ``y`` is output element ``output`` (flat index into one point's output). ``variables``: flat indices into one
    input row (default: all). With a batch of points (B, ...) the derivatives of sum_b y_b are taken, which are the
    per-point derivatives for a model that treats rows independently: the result is (M, B); else (M,).
    """
    if batched is None:
        batched = x0.dim() >= 2
    row_numel = x0[0].numel() if batched else x0.numel()
    var = list(range(row_numel)) if variables is None else [int(v) for v in variables]
    basis = make_basis(len(var), order, terms)
    x = x0.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = model(x)
        flat = y.reshape(y.shape[0], -1)[:, output] if batched else y.reshape(-1)[output]
        root = flat.sum()
        seqs = _sequences(basis)
        needed = {s[:-1] for s in seqs if s}
        children: dict[tuple[int, ...], set[int]] = {}
        for s in set(seqs) | needed:
            if s:
                children.setdefault(s[:-1], set()).add(s[-1])
        # scalar (summed over the batch) derivative for each tree node; per-point values for each kept sequence
        scalars: dict[tuple[int, ...], torch.Tensor | None] = {(): root}
        values: dict[tuple[int, ...], torch.Tensor] = {(): flat.detach()}
        for s in sorted(needed, key=len):
            parent = scalars.get(s)
            if parent is None or not parent.requires_grad:
                grads = None
            else:
                create = len(s) + 1 < order
                (grads,) = torch.autograd.grad(parent, x, create_graph=create, retain_graph=True, allow_unused=True)
            for i in sorted(children.get(s, ())):
                child = s + (i,)
                if child in scalars:
                    continue
                if grads is None:
                    g = torch.zeros_like(flat)
                else:
                    g = grads.reshape(grads.shape[0], -1)[:, var[i]] if batched else grads.reshape(-1)[var[i]]
                scalars[child] = g.sum() if grads is not None else None
                values[child] = g.detach()
        out = torch.stack([values[s] if s in values else torch.zeros_like(flat) for s in seqs])
    return basis, out


def floor_inputs(x0: torch.Tensor, basis_size: int, batched: bool | None = None) -> torch.Tensor:
    """The M inputs of the floor: x0 repeated M times along the batch axis ((M * B, ...) for a batch of B points)."""
    if batched is None:
        batched = x0.dim() >= 2
    if batched:
        return x0.repeat(basis_size, *([1] * (x0.dim() - 1))).contiguous()
    return x0.unsqueeze(0).expand(basis_size, *x0.shape).contiguous()


@torch.no_grad()
def floor(model, x0: torch.Tensor, basis_size: int, batched: bool | None = None) -> torch.Tensor:
    """One batched forward pass of ``model`` over ``basis_size`` copies of the point (the cost any M-coefficient
    method pays in its linear layers)."""
    return model(floor_inputs(x0, basis_size, batched))
