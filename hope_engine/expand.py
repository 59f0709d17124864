"""The public entry: ``expand(model, x0, order)`` -> ``TaylorPolynomial``.

Every input element (or a chosen subset) is a variable; the input becomes the jet x0 + t, is pushed through the
model's aten graph with the rule table, and the output jet's coefficients are the Taylor coefficients.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch
from torch import nn

from . import guard, rules, trace
from .basis import KINDS, basis_size, make_basis, product_table_size
from .errors import ExpansionError, GraphEscapeError, KinkWarning, MemoryBudgetError, TrainingModeWarning
from .polynomial import TaylorPolynomial
from .series import Jet

DEFAULT_MEMORY_BUDGET = 4 * 2**30
METHODS = ("exact", "hope")


def _check_order(order) -> int:
    if isinstance(order, bool) or not isinstance(order, numbers.Integral):
        if isinstance(order, float) and order.is_integer():
            order = int(order)
        else:
            raise ExpansionError(f"order must be a non-negative integer, got {order!r}")
    if order < 0:
        raise ExpansionError(f"order must be a non-negative integer, got {order}")
    return int(order)


def _model_dtype_device(model) -> tuple[torch.dtype | None, torch.device | None]:
    if isinstance(model, nn.Module):
        for p in list(model.parameters()) + list(model.buffers()):
            if p.is_floating_point():
                return p.dtype, p.device
    return None, None


def prepare_point(model, x0) -> torch.Tensor:
    """x0 as a floating tensor on the model's device and dtype; rejects NaN/inf."""
    if not isinstance(x0, torch.Tensor):
        try:
            x0 = torch.as_tensor(x0, dtype=torch.float64)  # lists of floats: no float32 rounding on the way
        except Exception as e:  # noqa: BLE001 - any conversion failure is the same user error
            raise ExpansionError(f"the reference point must be a tensor (or array-like of numbers): {e}") from None
    dtype, device = _model_dtype_device(model)
    if dtype is None:
        dtype = x0.dtype if x0.is_floating_point() else torch.get_default_dtype()
    x0 = x0.detach().to(dtype=dtype, device=device if device is not None else x0.device)
    if x0.numel() == 0:
        raise ExpansionError("the reference point is empty")
    if not torch.isfinite(x0).all():
        bad = (~torch.isfinite(x0)).sum().item()
        raise ExpansionError(f"the reference point has {bad} NaN/inf value(s); give a finite point")
    return x0


def _variables(x0: torch.Tensor, batched: bool, variables) -> torch.Tensor:
    row_numel = x0[0].numel() if batched else x0.numel()
    if variables is None:
        return torch.arange(row_numel)
    v = torch.as_tensor(variables, dtype=torch.long).reshape(-1)
    if v.numel() == 0:
        raise ExpansionError("variables is empty: name at least one input element to expand in")
    if (v < 0).any() or (v >= row_numel).any():
        raise ExpansionError(f"variables must be flat indices in [0, {row_numel}) of one input row, got {v.tolist()}")
    if v.unique().numel() != v.numel():
        raise ExpansionError("variables has repeated indices")
    return v


def estimate_memory(traced: trace.TracedModel, n: int, order: int, kind: str, itemsize: int) -> int:
    """Bytes for the jets: M coefficients of the largest live activations plus one product's temporaries."""
    sizes = trace.activation_numels(traced) or [1]
    m = basis_size(n, order, kind)
    largest = max(sizes)
    if kind == "total":
        per_degree_triples = product_table_size(n, order) / max(order, 1)
    else:
        per_degree_triples = 2 * basis_size(n, order, kind)
    return int(itemsize * (3 * m * largest + per_degree_triples * largest))


def _format_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if b < 1024 or unit == "TiB":
            return f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} TiB"


def expand(model, x0, order: int = 6, *, terms: str = "total", output=None, variables=None, names=None,
           method: str = "exact", batched: bool | None = None,
           memory_budget: int = DEFAULT_MEMORY_BUDGET) -> TaylorPolynomial:
    """Taylor polynomial of ``model`` at ``x0`` up to ``order``.

    model: an ``nn.Module`` or a function of one tensor. x0: a point shaped as the model takes it; when it has two or
    more dimensions, axis 0 is a batch of reference points (one polynomial each) unless ``batched=False``.
    terms: "total" (every mixed partial, C(n+K, K) coefficients) or "pure" (unmixed only, 1 + nK).
    output: select one output element per point (int into the flattened output, or index tuple).
    variables: flat indices of the input-row elements to expand in (default: all); names: their names.
    method: "exact" (default) or "hope" (the paper's unmixed rule, exact for one hidden layer only).
    memory_budget: bytes; an expansion estimated above it is refused (raise the budget to run it anyway).
    """
    order = _check_order(order)
    if terms not in KINDS:
        raise ExpansionError(f"terms must be one of {KINDS}, got {terms!r}")
    if method not in METHODS:
        raise ExpansionError(f"method must be one of {METHODS}, got {method!r}")
    if not (isinstance(model, nn.Module) or callable(model)):
        raise ExpansionError(f"model must be a torch.nn.Module or a function of one tensor, got {type(model).__name__}")
    x0 = prepare_point(model, x0)
    if batched is None:
        batched = x0.dim() >= 2
    if batched and x0.dim() < 1:
        raise ExpansionError("batched=True needs a point with a leading batch axis")
    var_index = _variables(x0, batched, variables)
    n = var_index.numel()
    if names is not None:
        names = [str(s) for s in names]
        if len(names) != n:
            raise ExpansionError(f"names has {len(names)} entries for {n} variables")
    if _mode_sensitive_in_training(model):
        warnings.warn("the model is in training mode; it is expanded in eval mode (dropout off, batch norm on its "
                      "running statistics). Call model.eval() to silence this.", TrainingModeWarning, stacklevel=2)

    if method == "hope":
        from .hope_rule import expand_hope

        return expand_hope(model, x0, order, terms=terms, output=output, variables=var_index, names=names,
                           batched=batched)

    try:
        traced = trace.trace(model, x0)
    except GraphEscapeError:
        raise
    except Exception as e:
        raise ExpansionError(_shape_message(model, x0, e)) from e
    trace.check_supported(traced)
    returned = trace.output_count(traced)
    if returned != 1:
        raise ExpansionError(f"the model returns {returned} tensors; expand a function that returns one, "
                             "e.g. lambda x: model(x)[0]")

    estimate = estimate_memory(traced, n, order, terms, x0.element_size())
    if estimate > memory_budget:
        raise MemoryBudgetError(
            f"expansion to order {order} in {n} variables ({terms!r} basis, {basis_size(n, order, terms)} "
            f"coefficients per value) needs about {_format_bytes(estimate)}, over the memory budget of "
            f"{_format_bytes(memory_budget)}. Lower the order, use terms='pure', expand in fewer variables, or pass "
            f"memory_budget={2 ** math.ceil(math.log2(estimate))} to run it anyway.",
            estimate, memory_budget)

    basis = make_basis(n, order, terms)
    c = x0.new_zeros((basis.size, *x0.shape))
    c[0] = x0
    flat = c.reshape(basis.size, x0.shape[0], -1) if batched else c.reshape(basis.size, -1)
    if order >= 1:
        flat[1 + torch.arange(n, device=x0.device), ..., var_index.to(x0.device)] = 1
    ctx = rules.Context(basis)
    with torch.no_grad(), trace.eval_mode(model):
        out = trace.run(traced, Jet(c, basis), ctx)
    if ctx.kinks:
        where = ", ".join(f"{k} ({v} value{'s' if v > 1 else ''})" for k, v in ctx.kinks.items())
        warnings.warn(f"the reference point lies exactly on a kink of {where}: the expansion there is one-sided "
                      "(it uses the branch the implementation takes at the kink). Move the point slightly for a "
                      "two-sided view.", KinkWarning, stacklevel=2)
    coefficients = _output_coefficients(out, basis, x0)
    poly = TaylorPolynomial(basis, coefficients, x0, var_index, batched, names=names, method="exact")
    if output is None:
        return poly
    try:
        return poly.select(output)
    except IndexError as e:
        raise ExpansionError(str(e)) from None


_MODE_SENSITIVE = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm,
                   nn.modules.instancenorm._InstanceNorm)


def _mode_sensitive_in_training(model) -> bool:
    """True when the model (or a module a plain function reads) holds a layer in training mode that computes
    differently in eval mode."""
    return any(m.training and (isinstance(m, _MODE_SENSITIVE)
                               or (isinstance(m, nn.MultiheadAttention) and m.dropout > 0))
               for root in guard.referenced_modules(model) for m in root.modules())


def _output_coefficients(out, basis, x0) -> torch.Tensor:
    leaves = [o for o in (out if isinstance(out, (list, tuple)) else [out])]
    tensors = [o for o in leaves if isinstance(o, (Jet, torch.Tensor))]
    if len(tensors) != 1:
        raise ExpansionError(f"the model returns {len(tensors)} tensors; expand a function that returns one, "
                             "e.g. lambda x: model(x)[0]")
    o = tensors[0]
    if isinstance(o, Jet):
        return o.c
    # the output does not depend on the input: a constant polynomial
    c = o.new_zeros((basis.size, *o.shape)) if o.is_floating_point() else torch.zeros(
        (basis.size, *o.shape), dtype=x0.dtype, device=x0.device)
    c[0] = o
    return c


def _shape_message(model, x0: torch.Tensor, error: Exception) -> str:
    expected = ""
    if isinstance(model, nn.Module):
        first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))), None)
        if isinstance(first, nn.Linear):
            k = first.in_features
            expected = f" Its first layer is Linear({k}, ...): try a point of shape (1, {k})."
        elif first is not None:
            expected = f" Its first layer is {type(first).__name__} with {first.in_channels} input channel(s)."
    msg = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (f"the model cannot be run on a point of shape {tuple(x0.shape)} ({msg}).{expected} "
            "The point must have the shape the model takes, e.g. (1, n) for n inputs.")
