"""The nested float64 autograd reference every exactness test compares against.

``autograd_derivatives(f, x0, multi_indices)`` computes d^alpha f(x0) for each multi-index alpha by repeated
``torch.autograd.grad(..., create_graph=True)``; ``assert_matches_autograd`` expands a model and checks every kept
derivative against it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as tF
from torch.nn.attention import SDPBackend, sdpa_kernel

from hope_engine import expand
from support.models import assert_model_unchanged, model_snapshot


def _layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * weight + bias over the trailing ``normalized_shape`` dims."""
    dims = tuple(range(-len(normalized_shape), 0))
    mean = input.mean(dim=dims, keepdim=True)
    out = (input - mean) / torch.sqrt(((input - mean) ** 2).mean(dim=dims, keepdim=True) + eps)
    out = out * weight if weight is not None else out
    return out + bias if bias is not None else out


def _group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Layer norm over each group of channels, then a per-channel affine map."""
    n, c = input.shape[:2]
    out = _layer_norm(input.reshape(n, num_groups, -1), (input[0].numel() // num_groups,), eps=eps).reshape(input.shape)
    shape = (1, c) + (1,) * (input.dim() - 2)
    out = out * weight.reshape(shape) if weight is not None else out
    return out + bias.reshape(shape) if bias is not None else out


def _celu(input, alpha=1.0, inplace=False):
    """x for x > 0, alpha (exp(x / alpha) - 1) otherwise."""
    return torch.where(input > 0, input, alpha * torch.expm1(input / alpha))


def _hardsigmoid(input, inplace=False):
    """clamp(x / 6 + 1 / 2, 0, 1)."""
    return torch.clamp(input / 6 + 0.5, 0.0, 1.0)


# PyTorch kernels whose higher derivatives are wrong or missing, replaced by their defining formulas in the reference:
# layer_norm/group_norm's double backward is not itself differentiated correctly (order >= 3 is wrong, see
# test_engine_layers.test_pytorch_layernorm_autograd_is_wrong_beyond_order_two), celu's backward uses 1/alpha
# rounded to float32 (relative error ~1e-8 in float64), hardsigmoid's backward has no derivative.
FORMULAS = {"layer_norm": _layer_norm, "group_norm": _group_norm, "celu": _celu, "hardsigmoid": _hardsigmoid}


@contextlib.contextmanager
def defining_formulas():
    """nn.functional's layer_norm/group_norm/celu as formulas, attention as softmax(q k^T) v (no fused kernel)."""
    saved = {name: getattr(tF, name) for name in FORMULAS}
    try:
        for name, fn in FORMULAS.items():
            setattr(tF, name, fn)
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        for name, fn in saved.items():
            setattr(tF, name, fn)


def autograd_derivatives(f: Callable, x0: torch.Tensor, multi_indices: Sequence[Sequence[int]],
                         variables: Sequence[int] | None = None, formulas: bool = True) -> torch.Tensor:
    """d^alpha f(x0) by nested autograd: (len(multi_indices), *f(x0).shape).

    The variables are the flat elements ``variables`` (default: all) of ``x0``; alpha_i counts derivatives in the i-th
    variable. Derivatives that share a prefix (in the sorted order of their variables) share the autograd calls.
    ``formulas``: differentiate the defining formulas of the kernels whose PyTorch higher derivatives are wrong or
    missing (``FORMULAS``, fused attention) instead of the kernels.
    """
    x = x0.detach().clone().requires_grad_(True)
    with torch.enable_grad(), (defining_formulas() if formulas else contextlib.nullcontext()):
        y = f(x)
    var = list(range(x.numel())) if variables is None else [int(v) for v in variables]
    flat_y = y.reshape(-1)
    out = torch.zeros(len(multi_indices), flat_y.numel(), dtype=y.dtype)
    sequences = []
    for alpha in multi_indices:
        if len(alpha) != len(var):
            raise ValueError(f"multi-index {tuple(alpha)} does not have one entry per variable ({len(var)})")
        sequences.append(tuple(v for i, v in enumerate(var) for _ in range(int(alpha[i]))))
    for o in range(flat_y.numel()):
        cache: dict[tuple[int, ...], torch.Tensor | None] = {(): flat_y[o]}

        def derivative(seq: tuple[int, ...], cache=cache) -> torch.Tensor | None:
            if seq in cache:
                return cache[seq]
            parent = derivative(seq[:-1])
            grads = None
            if parent is not None and parent.requires_grad:
                with torch.enable_grad():
                    (grads,) = torch.autograd.grad(parent, x, create_graph=True, allow_unused=True)
            for v in var:
                cache[seq[:-1] + (v,)] = None if grads is None else grads.reshape(-1)[v]
            return cache[seq]

        for m, seq in enumerate(sequences):
            d = derivative(seq)
            out[m, o] = 0.0 if d is None else d.detach()
    return out.reshape(len(multi_indices), *y.shape)


def assert_close_derivatives(actual: torch.Tensor, expected: torch.Tensor, degrees: Sequence[int],
                             rtol: float = 1e-10, what: str = "") -> None:
    """|actual - expected| <= rtol (|expected| + s_d) for each derivative, s_d = max(1, max |expected| of degree d).

    The per-degree scale s_d makes the check absolute where the true value is ~0 (a derivative that vanishes is
    computed from terms of the size of its degree's other derivatives, so rounding leaves residue of that size).
    """
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    actual = actual.detach().to(torch.float64).cpu()
    expected = expected.detach().to(torch.float64).cpu()
    degrees_t = torch.as_tensor(list(degrees))
    scale = torch.ones(len(degrees_t), dtype=torch.float64)
    for d in degrees_t.unique():
        rows = degrees_t == d
        scale[rows] = max(1.0, float(expected[rows].abs().max()) if expected[rows].numel() else 1.0)
    scale = scale.reshape(-1, *([1] * (expected.dim() - 1)))
    err = (actual - expected).abs()
    bound = rtol * (expected.abs() + scale)
    if not bool((err <= bound).all()):
        rows = len(degrees_t)
        worst = int((err / bound).reshape(rows, -1).amax(dim=1).argmax())
        e, b = float(err.reshape(rows, -1)[worst].max()), float(bound.reshape(rows, -1)[worst].min())
        got, want = actual.reshape(rows, -1)[worst][:4].tolist(), expected.reshape(rows, -1)[worst][:4].tolist()
        raise AssertionError(f"{what}: derivative #{worst} (degree {int(degrees_t[worst])}) off by {e:.3e} "
                             f"(tolerance {b:.3e}); got {got}, expected {want}")


def assert_matches_autograd(model: Callable, x0: torch.Tensor, order: int, *, terms: str = "total",
                            variables: Sequence[int] | None = None, rtol: float = 1e-10,
                            reference: Callable | None = None, formulas: bool = True, **expand_kwargs):
    """Expand ``model`` at ``x0`` and check every kept derivative against nested autograd; returns the polynomial.

    A batch x0 (B, ...) is checked point by point: polynomial i against autograd of the model at x0[i:i+1].
    ``reference`` (default: the model) is the function autograd differentiates; ``formulas`` see autograd_derivatives.
    """
    before = model_snapshot(model)
    p = expand(model, x0, order, terms=terms, variables=variables, **expand_kwargs)
    assert_model_unchanged(before, model)
    f = reference if reference is not None else model
    alphas = p.basis.multi_indices()
    degrees = [sum(a) for a in alphas]
    got = p.derivatives()
    if p.batched:
        for i in range(x0.shape[0]):
            want = autograd_derivatives(f, x0[i:i + 1], alphas, variables, formulas)
            assert_close_derivatives(got[:, i:i + 1], want, degrees, rtol, what=f"point {i}")
    else:
        want = autograd_derivatives(f, x0, alphas, variables, formulas)
        assert_close_derivatives(got, want, degrees, rtol)
    return p
