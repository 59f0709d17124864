"""Small reference networks used by the demo, the analyses, their tests and benchmarks.

``Sine`` is the paper's activation sin(w0 x); ``sine_mlp`` builds the paper's Sine MLPs with its initialisation
W ~ U(-w0/m, w0/m) (m = fan-in); ``reference_sine_mlp`` draws the reference repository's Sine MLP as it does (seed
42); ``fit`` trains a regression network full-batch (the short, seeded runs the tests use).
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


def reference_sine_mlp(inputs: int = 1, hidden: int = 1024, outputs: int = 1, layers: int = 5, *,
                       output_act: bool = True, seed: int | None = 42, dtype: torch.dtype = torch.float64
                       ) -> nn.Sequential:
    """The HOPE reference repository's ``MLP(act='Sine')`` (``utils/Network.py``), drawn as it draws it.

    ``layers`` Linear layers (inputs -> hidden, layers - 2 of hidden -> hidden, hidden -> outputs), sin after each but
    the last (and after the last too when ``output_act``, as its accuracy demo's 1-D net has it). After
    ``torch.manual_seed(seed)`` (its ``reproduc()``: 42) every layer is built with nn.Linear's default draws, then every
    weight is redrawn from U(-sqrt(6/m)/30, sqrt(6/m)/30) (m = fan-in) in layer order, then the first layer's from
    U(-1/m, 1/m). The draws are made in float32, as there, and the module is converted to ``dtype`` afterwards.
    """
    if layers < 2:
        raise ValueError(f"layers counts the Linear layers and must be at least 2, got {layers}")
    if seed is not None:
        torch.manual_seed(seed)
    sizes = [inputs] + [hidden] * (layers - 1) + [outputs]
    linears = [nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    with torch.no_grad():
        for lin in linears:
            bound = (6.0 / lin.in_features) ** 0.5 / 30
            lin.weight.uniform_(-bound, bound)
        linears[0].weight.uniform_(-1.0 / inputs, 1.0 / inputs)
    modules: list[nn.Module] = []
    for i, lin in enumerate(linears):
        modules.append(lin)
        if i < len(linears) - 1 or output_act:
            modules.append(Sine())
    return nn.Sequential(*modules).to(dtype).eval()
