"""The arguments every entry point takes (``expand``, ``certify``, the paper's rule), validated and normalised once:
the order, the point on the model's dtype and device, the variable indices, several inputs and structured outputs
folded into a function of one tensor, and a failed trace explained in the user's terms.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import numbers
import warnings
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from hope_engine.caches import WeakCache
from hope_engine.capture import diagnose, guard, inputs, record, trace
from hope_engine.errors import ExpansionError, GraphEscapeError, TrainingModeWarning


def check_order(order) -> int:
    if isinstance(order, bool) or not isinstance(order, numbers.Integral):
        if isinstance(order, float) and order.is_integer():
            order = int(order)
        else:
            raise ExpansionError(f"order must be a non-negative integer, got {order!r}")
    if order < 0:
        raise ExpansionError(f"order must be a non-negative integer, got {order}")
    return int(order)


def _model_dtype_device(model) -> tuple[torch.dtype | None, torch.device | None]:
    """The dtype and device of the model's first floating parameter (of the modules a function reads, for one)."""
    for module in guard.referenced_modules(model):
        for p in itertools.chain(module.parameters(), module.buffers()):
            if p.is_floating_point():
                return p.dtype, p.device
    return None, None


@dataclass(frozen=True)
class ModelFacts:
    """What every entry point reads off a model before tracing: its first floating parameter's dtype and device, the
    meta-weights message (None: weights have values), and weak references to the modules that compute differently in
    training mode (their flags, which no stamp covers, are read at every call)."""

    dtype: torch.dtype | None
    device: torch.device | None
    meta: str | None
    mode_sensitive: tuple

    def training(self) -> bool:
        modules = (r() for r in self.mode_sensitive)
        return any(m is not None and m.training and _computes_in_training(m) for m in modules)


_FACTS = WeakCache("model facts", max_entries=256)  # model -> (guard stamp, facts)


def model_facts(model, stamp) -> ModelFacts:
    """``ModelFacts`` of ``model``, reused while its guard ``stamp`` is unchanged (the stamp covers every module,
    parameter identity, dtype and device; None: computed afresh)."""
    if stamp is not None:
        try:
            hit = _FACTS.get(model)
        except TypeError:  # not weakly referable or not hashable
            hit = None
        if hit is not None and hit[0] == stamp:
            return hit[1]
    modules = [m for root in guard.referenced_modules(model) for m in root.modules()]
    facts = ModelFacts(*_model_dtype_device(model), diagnose.meta_parameters(model),
                       tuple(weakref.ref(m) for m in modules if isinstance(m, _MODE_SENSITIVE_KINDS)))
    if stamp is not None:
        with contextlib.suppress(TypeError):
            _FACTS.put(model, (stamp, facts))
    return facts


def prepare_point(model, x0, facts: ModelFacts | None = None) -> torch.Tensor:
    """x0 as a floating tensor on the model's device and dtype; rejects NaN/inf."""
    if not isinstance(x0, torch.Tensor):
        try:
            x0 = torch.as_tensor(x0, dtype=torch.float64)  # lists of floats: no float32 rounding on the way
        except Exception as e:  # noqa: BLE001 - any conversion failure is the same user error
            raise ExpansionError(f"the reference point must be a tensor (or array-like of numbers): {e}") from None
    dtype, device = (facts.dtype, facts.device) if facts is not None else _model_dtype_device(model)
    if dtype is None:
        dtype = x0.dtype if x0.is_floating_point() else torch.get_default_dtype()
    x0 = x0.detach().to(dtype=dtype, device=device if device is not None else x0.device)
    if x0.numel() == 0:
        raise ExpansionError("the reference point is empty")
    if not _all_finite(x0):
        bad = (~torch.isfinite(x0)).sum().item()
        raise ExpansionError(f"the reference point has {bad} NaN/inf value(s); give a finite point")
    return x0


_SMALL_POINT = 64  # up to this many elements on the CPU, finiteness is checked in Python (no tensor op)


def _all_finite(x: torch.Tensor) -> bool:
    """Whether every element of x is finite (a small CPU point without a reduction and its dispatch)."""
    if x.device.type == "cpu" and x.numel() <= _SMALL_POINT:
        return all(map(math.isfinite, x.reshape(-1).tolist()))
    return bool(torch.isfinite(x).all())


def variable_indices(x0: torch.Tensor, batched: bool, variables) -> torch.Tensor:
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


@dataclass
class PreparedCall:
    """An entry point's arguments after validation: the model as a function of one tensor, the point, whether it is
    a batch, the variable indices, their names, and the element output to select (None: all)."""

    model: object
    x0: torch.Tensor
    batched: bool
    variables: torch.Tensor
    names: list[str] | None
    output: object
    stamp: object = guard.UNKNOWN  # the model's guard stamp when prepared (None: not comparable)

    @property
    def n(self) -> int:
        return self.variables.numel()


def prepare_call(model, x0, *, output=None, variables=None, names=None, batched: bool | None = None, wrt=None,
                 verb: str = "expanded") -> PreparedCall:
    """Validate and normalise what ``expand``, ``certify`` and the paper's rule take: several inputs (``wrt``) and
    structured outputs (``output`` key or callable) folded into a function of one tensor, a compiled model
    unwrapped, the point on the model's dtype and device, the variable indices and names; warns about training
    mode (the model is ``verb`` in eval mode)."""
    if not (isinstance(model, nn.Module) or callable(model)):
        raise ExpansionError(f"model must be a torch.nn.Module or a function of one tensor, got {type(model).__name__}")
    model, x0, names, output = inputs.normalize(diagnose.unwrap_compiled(model), x0, wrt=wrt, output=output,
                                                names=names, batched=batched)
    stamp = guard.stamp(model)
    facts = model_facts(model, stamp)
    if facts.meta:
        raise ExpansionError(facts.meta)
    x0 = prepare_point(model, x0, facts)
    if batched is None:
        batched = x0.dim() >= 2
    if batched and x0.dim() < 1:
        raise ExpansionError("batched=True needs a point with a leading batch axis")
    var_index = variable_indices(x0, batched, variables)
    if names is not None:
        names = [str(s) for s in names]
        if len(names) != var_index.numel():
            raise ExpansionError(f"names has {len(names)} entries for {var_index.numel()} variables")
    if facts.training():
        warnings.warn(f"the model is in training mode; it is {verb} in eval mode (dropout off, batch norm on its "
                      "running statistics). Call model.eval() to silence this.", TrainingModeWarning, stacklevel=3)
    return PreparedCall(model, x0, batched, var_index, names, output, stamp)


def trace_model(model, x0: torch.Tensor, stamp=guard.UNKNOWN) -> trace.TracedModel:
    """``trace.trace`` with a failure explained in the user's terms (``diagnose.trace_failure``); ``stamp``: the
    model's guard stamp taken by ``prepare_call`` (default: taken here)."""
    try:
        return trace.trace(model, x0, stamp=stamp)
    except (GraphEscapeError, record.RecorderError):  # (a recorder bug is not the model's: not reworded as such)
        raise
    except Exception as e:
        raise ExpansionError(diagnose.trace_failure(model, x0, e)) from e


_MODE_SENSITIVE_KINDS = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm,
                         nn.modules.instancenorm._InstanceNorm, nn.MultiheadAttention)


def _computes_in_training(m: nn.Module) -> bool:
    return not isinstance(m, nn.MultiheadAttention) or m.dropout > 0
