"""Path attributions: integrated gradients and DeepLift's rescale rule, both split f(x) - f(b) among the inputs.

Integrated gradients: A_i = (x_i - b_i) int_0^1 df/dx_i(b + s (x - b)) ds, the integral by Gauss-Legendre (exact for
polynomial paths of degree < 2 * steps) or by the trapezoid rule; sum_i A_i = f(x) - f(b) up to the quadrature error.

DeepLift (rescale): every element-wise activation y = g(u) gets the multiplier m = (g(u) - g(u_ref)) / (u - u_ref)
(g'(u) where u = u_ref) in place of g'(u), linear layers keep their weights, and A_i = (x_i - b_i) * (the chained
multipliers); sum_i A_i = f(x) - f(b) exactly for networks of linear maps and element-wise activations. It is
implemented with forward hooks: the activation's output is rewritten as g(u_ref) + (u - u_ref) * m with m detached,
which has the same value and gradient m.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from hope_engine.models import Sine

ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.Tanh, nn.Sigmoid, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Softplus, nn.GELU,
                                            nn.SiLU, nn.Hardtanh, Sine)


def quadrature(steps: int, rule: str = "gausslegendre", dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes s_j in [0, 1] and weights w_j with sum_j w_j h(s_j) ~ int_0^1 h(s) ds."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return torch.tensor((nodes + 1) / 2, dtype=dtype), torch.tensor(weights / 2, dtype=dtype)
    if rule == "trapezoid":
        if steps < 2:
            raise ValueError("the trapezoid rule needs steps >= 2")
        w = torch.full((steps,), 1.0 / (steps - 1), dtype=dtype)
        w[[0, -1]] /= 2
        return torch.linspace(0, 1, steps, dtype=dtype), w
    raise ValueError(f"rule must be 'gausslegendre' or 'trapezoid', got {rule!r}")


def integrated_gradients(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, baseline: torch.Tensor,
                         steps: int = 50, rule: str = "gausslegendre", chunk: int = 512) -> torch.Tensor:
    """A = (x - b) * sum_j w_j grad f(b + s_j (x - b)); f maps rows (N, ...) to one output per row (N,)."""
    s, w = quadrature(steps, rule, x.dtype)
    dx = (x - baseline).detach()
    b = x.shape[0]
    path = (baseline[:, None] + s.reshape(1, -1, *([1] * (x.dim() - 1))) * dx[:, None]).reshape(-1, *x.shape[1:])
    grads = torch.empty_like(path)
    with torch.enable_grad():
        for start in range(0, path.shape[0], chunk):
            z = path[start:start + chunk].detach().requires_grad_(True)
            (g,) = torch.autograd.grad(f(z).sum(), z)
            grads[start:start + chunk] = g
    avg = (grads.reshape(b, steps, *x.shape[1:]) * w.reshape(1, -1, *([1] * (x.dim() - 1)))).sum(1)
    return (avg * dx).detach()


class _Rescale:
    """Forward hooks on the activation modules: record their reference inputs/outputs, then rescale the gradients."""

    def __init__(self, model: nn.Module, eps: float = 1e-10):
        self.modules = [m for m in model.modules() if isinstance(m, ACTIVATIONS)]
        self.eps = eps
        self.reference: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.recording = True

    def hook(self, module: nn.Module, inputs, out):
        key = id(module)
        u = inputs[0]
        if self.recording:
            if key in self.reference:
                raise ValueError("deeplift needs each activation module called once per forward pass; "
                                 f"{type(module).__name__} was called twice")
            self.reference[key] = (u.detach(), out.detach())
            return None
        u_ref, y_ref = self.reference[key]
        du = u - u_ref
        with torch.enable_grad():
            v = u.detach().requires_grad_(True)
            (slope,) = torch.autograd.grad(module.forward(v).sum(), v)  # g'(u), the limit at u = u_ref; no hooks
        dy = out.detach() - y_ref
        small = du.detach().abs() < self.eps
        m = torch.where(small, slope, dy / torch.where(small, torch.ones_like(du), du.detach()))
        return y_ref + du * m.detach()

    def __enter__(self):
        self.handles = [m.register_forward_hook(self.hook) for m in self.modules]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def deeplift_attribution(model: nn.Module, pick: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                         baseline: torch.Tensor) -> torch.Tensor:
    """A = (x - b) * d pick(model(x)) / dx with every activation's derivative replaced by its rescale multiplier."""
    model = model.module if isinstance(getattr(model, "module", None), nn.Module) else model  # a LoadedModel
    if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
        raise ValueError("deeplift needs an eager nn.Module whose activations are modules (nn.Tanh, nn.ReLU, ...); "
                         "TorchScript and exported models cannot be hooked (load a pickled module instead)")
    was_training = model.training
    model.eval()
    try:
        with _Rescale(model) as r, torch.enable_grad():
            model(baseline.detach())
            r.recording = False
            z = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(pick(model(z)).sum(), z)
    finally:
        model.train(was_training)
    return (g * (x - baseline)).detach()
