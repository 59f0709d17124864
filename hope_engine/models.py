"""Small reference networks used by the demo, the analyses, their tests and benchmarks.

``Sine`` is the paper's activation sin(w0 x); ``sine_mlp`` builds the paper's Sine MLPs with its initialisation
W ~ U(-w0/m, w0/m) (m = fan-in); ``fit`` trains a regression network full-batch (the short, seeded runs the tests use).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Sine(nn.Module):
    """sin(w0 * x), the activation of the paper's function-discovery networks."""

    def __init__(self, w0: float = 1.0):
        super().__init__()
        self.w0 = w0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * x)

    def extra_repr(self) -> str:
        return f"w0={self.w0}"


def sine_mlp(widths: Sequence[int], w0: float | None = None, *, bias: bool = True, seed: int | None = 0,
             dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """Linear(widths[0], widths[1]) -> Sine -> ... -> Linear(widths[-2], widths[-1]), in eval mode.

    w0=None keeps torch's default initialisation; a number draws every weight from U(-w0/m, w0/m), m = fan-in (the
    paper's Table 2 setting). Biases keep nn.Linear's default U(-1/sqrt(m), 1/sqrt(m)).
    """
    if len(widths) < 2:
        raise ValueError("widths needs at least an input and an output size")
    if seed is not None:
        torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        lin = nn.Linear(a, b, bias=bias)
        if w0 is not None:
            with torch.no_grad():
                lin.weight.uniform_(-w0 / a, w0 / a)
        layers.append(lin)
        if i < len(widths) - 2:
            layers.append(Sine())
    return nn.Sequential(*layers).to(dtype).eval()


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 200, lr: float = 1.0,
        optimizer: str = "lbfgs") -> float:
    """Minimise the mean squared error of model(x) against y full-batch; returns the final loss. Leaves eval mode on.

    optimizer: "lbfgs" (strong-Wolfe line search, ``steps`` outer iterations of up to 20 evaluations) or "adam".
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    y = y.reshape(len(x), -1)

    def loss_fn() -> torch.Tensor:
        return torch.mean((model(x).reshape(len(x), -1) - y) ** 2)

    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS(params, lr=lr, max_iter=20, history_size=50, line_search_fn="strong_wolfe",
                                tolerance_grad=1e-12, tolerance_change=1e-15)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        for _ in range(steps):
            opt.step(closure)
    elif optimizer == "adam":
        opt = torch.optim.Adam(params, lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            opt.step()
    else:
        raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {optimizer!r}")
    model.eval()
    with torch.no_grad():
        return float(loss_fn())
