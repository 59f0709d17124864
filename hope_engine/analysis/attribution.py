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

import concurrent.futures
import warnings
from collections.abc import Iterable

import torch

from hope_engine.analysis._points import displacement, pick_output, prepare_rows, scalar_outputs
from hope_engine.analysis.deletion import DeletionCurve, deletion_curve, insertion_curve, random_scores
from hope_engine.analysis.path_methods import deeplift_attribution, integrated_gradients
from hope_engine.api.many import expand_many

METHODS = ("taylor", "occlusion", "grad_input", "integrated_gradients", "deeplift")

__all__ = ["METHODS", "DeletionCurve", "attribution", "deletion_curve", "insertion_curve", "random_scores"]


def taylor_attribution(model, x: torch.Tensor, output=None, order: int = 4, dx=None, *, chunk_size: int | None = None,
                       executor: concurrent.futures.Executor | None = None, progress: bool = False,
                       batches: list[torch.Tensor] | None = None, **expand_kwargs) -> torch.Tensor:
    """A_i = -sum_{k=1}^K d^k f/dx_i^k (-dx_i)^k / k! from one terms="pure" exact expansion per input row.

    The rows are expanded by ``expand_many`` (chunk_size, executor, progress as there; one row: one chunk);
    ``batches``: the rows of x as they came from an iterable (used as its chunks when chunk_size is None).
    """
    x = prepare_rows(model, x)
    d = displacement(x, dx).reshape(x.shape[0], -1)
    if chunk_size is None and x.shape[0] == 1:
        chunk_size = 1  # one image: no chunk-size estimate needed
    points = x if batches is None else batches
    p = expand_many(model, points, order, chunk_size=chunk_size, executor=executor, progress=progress, terms="pure",
                    output=output, method="exact", **expand_kwargs)
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


def _rows_of(model, x) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """x as model rows, and for an iterable of batches (a DataLoader, a list of tensors) its batches: tensors, or the
    first element of (x, y, ...) tuples. A tensor, an array or a nested list of numbers is one set of rows."""
    if isinstance(x, torch.Tensor) or not isinstance(x, Iterable) or hasattr(x, "__array__"):
        return prepare_rows(model, x), None
    items = list(x)
    tensors = [b[0] if isinstance(b, (tuple, list)) and b and isinstance(b[0], torch.Tensor) else b for b in items]
    if not all(isinstance(b, torch.Tensor) for b in tensors):
        return prepare_rows(model, items), None  # numbers: one set of rows
    if not tensors:
        raise ValueError("attribution: the iterable of images is empty")
    batches = [prepare_rows(model, b) for b in tensors]
    return torch.cat(batches), batches


def _chunked(fn, x: torch.Tensor, d: torch.Tensor, sizes: list[int], progress: bool) -> torch.Tensor:
    """fn(x_chunk, d_chunk) over consecutive chunks of ``sizes`` rows, concatenated (a tqdm bar if asked)."""
    bar = None
    if progress and len(sizes) > 1:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(sizes), desc="attribution", unit="chunk")
        except ImportError:
            bar = None
    out = []
    try:
        for xc, dc in zip(x.split(sizes), d.split(sizes)):
            out.append(fn(xc, dc))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return torch.cat(out)


def attribution(model, x, output=None, method: str = "taylor", order: int = 4, dx=None, *, baseline=None,
                chunk_size: int | None = None, executor: concurrent.futures.Executor | None = None,
                progress: bool = False, **kwargs) -> torch.Tensor:
    """Per-element attribution of one output, shaped like x (see the module docstring for each ``method``).

    x: model inputs with a batch axis (B, ...) (a flat vector is taken as one row), e.g. a batch of images
    (N, C, H, W), or an iterable of such batches (a DataLoader: tensors or (x, y) tuples, x taken); the result is then
    the maps of all its images concatenated (N, ...). output: which output to explain; dx (or baseline = x - dx):
    scalar or tensor like x (or like one image), default x (baseline 0); order: the "taylor" truncation order.
    chunk_size, executor, progress: for "taylor", passed to ``expand_many`` (rows per expansion, default as many as
    fit its memory estimate, or an iterable's batches as they come; an Executor for the chunks; a tqdm bar); the other
    methods run chunk_size rows (default: each batch, or everything) at a time in-process, executor unused.
    The maps equal those of a loop over single images. kwargs go to the method: ``steps``/``quadrature`` for
    integrated gradients, ``chunk`` for occlusion, expand's options for "taylor".
    """
    if method == "hope":
        warnings.warn('attribution(method="hope") is now method="taylor"', DeprecationWarning, stacklevel=2)
        method = "taylor"
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    x, batches = _rows_of(model, x)
    d = displacement(x, dx, baseline)
    if method == "taylor":
        return taylor_attribution(model, x, output=output, order=order, dx=d, chunk_size=chunk_size,
                                  executor=executor, progress=progress, batches=batches, **kwargs)
    if chunk_size is not None:
        sizes = [len(r) for r in torch.arange(x.shape[0]).split(chunk_size)]
    else:
        sizes = [b.shape[0] for b in batches] if batches is not None else [x.shape[0]]
    return _chunked(lambda xc, dc: _one_method(model, xc, dc, output, method, kwargs), x, d, sizes, progress)


def _one_method(model, x: torch.Tensor, d: torch.Tensor, output, method: str, kwargs: dict) -> torch.Tensor:
    """The maps of the rows x with displacement d by one of the methods other than "taylor"."""
    if method == "occlusion":
        return occlusion_attribution(model, x, output=output, dx=d, **kwargs)
    if method == "grad_input":
        return grad_input_attribution(model, x, output=output, dx=d)
    if method == "integrated_gradients":
        return integrated_gradients(lambda z: scalar_outputs(model, z, output), x, x - d, **kwargs)
    return deeplift_attribution(model, lambda y: pick_output(y, output), x, x - d)
