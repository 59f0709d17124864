"""Input groups (single elements or image patches) and the model as a function of one scale per group.

With groups G_1..G_P (disjoint sets of input elements), a baseline b and an input x, the path model is
g(z) = f(b + sum_p z_p 1_{G_p} * (x - b)), z in R^P: g(0) = f(b), g(1) = f(x), and setting z_p = 0 at z = 1 removes
group p (moves it to the baseline). Its Taylor coefficients in z are the network's, summed over the groups with the
step x - b as weights: d^2 g / dz_p dz_q = sum_{i in G_p, j in G_q} (x_i - b_i)(x_j - b_j) d^2 f / dx_i dx_j.
"""

from __future__ import annotations

import torch
from torch import nn


def patch_groups(row_shape: tuple[int, ...], patch: int | tuple[int, int] | None = None) -> torch.Tensor:
    """(P, n) 0/1 masks over a row's n elements: one per element (patch None), or one per patch x patch square over
    the last two axes (all leading axes, e.g. channels, inside the same patch; edge patches may be smaller)."""
    n = 1
    for s in row_shape:
        n *= s
    if patch is None:
        return torch.eye(n, dtype=torch.float64)
    if len(row_shape) < 2:
        raise ValueError(f"patches need an image row (..., H, W), got row shape {tuple(row_shape)}")
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    h, w = row_shape[-2], row_shape[-1]
    rows = torch.arange(h) // ph
    cols = torch.arange(w) // pw
    label = (rows[:, None] * ((w + pw - 1) // pw) + cols[None, :]).expand(*row_shape).reshape(-1)
    count = int(label.max()) + 1
    return (label[None, :] == torch.arange(count)[:, None]).to(torch.float64)


def group_names(row_shape: tuple[int, ...], patch=None) -> list[str]:
    """Readable group labels: "p(i)" for flat element i, or "patch(r,c)" for the patch in row r, column c."""
    masks = patch_groups(row_shape, patch)
    if patch is None:
        return [f"p{i}" for i in range(masks.shape[0])]
    w = row_shape[-1]
    pw = patch if isinstance(patch, int) else patch[1]
    per_row = (w + pw - 1) // pw
    return [f"patch({g // per_row},{g % per_row})" for g in range(masks.shape[0])]


class PathModel(nn.Module):
    """g(z) = pick(f(b + (z @ D).reshape(row))), D = masks * (x - b): rows z (N, P) -> the chosen output (N, 1)."""

    def __init__(self, model, x: torch.Tensor, baseline: torch.Tensor, masks: torch.Tensor, output_index=None):
        super().__init__()
        self.model = model
        self.row_shape = tuple(x.shape[1:])
        self.output_index = output_index
        self.register_buffer("base", baseline.detach().reshape(1, -1).clone())
        self.register_buffer("steps", (masks.to(x.dtype) * (x - baseline).detach().reshape(1, -1)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        rows = (self.base + z @ self.steps).reshape(z.shape[0], *self.row_shape)
        y = self.model(rows).reshape(z.shape[0], -1)
        return y[:, :1] if self.output_index is None else y[:, self.output_index:self.output_index + 1]
