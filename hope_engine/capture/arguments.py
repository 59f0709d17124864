"""The arguments every entry point takes (``expand``, ``certify``, the paper's rule), validated and normalised once:
the order, the point on the model's dtype and device, the variable indices, several inputs and structured outputs
folded into a function of one tensor, and a failed trace explained in the user's terms.

Models as torch users write them: ``normalize(model, inputs, wrt, output)`` turns a model called as
``model(*args, **kwargs)`` into a function of one flat tensor (the expansion variables: the floating tensors named by
``wrt``, each row flattened and concatenated in input order) plus that tensor's value at the reference point. Inputs
not named by ``wrt`` and non-floating tensors (token ids, masks) are held fixed. A structured output (tuple, dict,
ModelOutput) is reduced to one tensor by ``output=`` (a key, an attribute name or a callable).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import math
import numbers
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hope_engine.caches import WeakCache
from hope_engine.capture import diagnose, guard, record, trace
from hope_engine.errors import ExpansionError, GraphEscapeError, RandomOperationError, TrainingModeWarning


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
    model, x0, names, output = normalize(diagnose.unwrap_compiled(model), x0, wrt=wrt, output=output,
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
    # (a recorder bug is not the model's, and a refused graph says why itself: neither is reworded)
    except (GraphEscapeError, RandomOperationError, record.RecorderError):
        raise
    except Exception as e:
        raise ExpansionError(diagnose.trace_failure(model, x0, e)) from e


_MODE_SENSITIVE_KINDS = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm,
                         nn.modules.instancenorm._InstanceNorm, nn.MultiheadAttention)


def _computes_in_training(m: nn.Module) -> bool:
    return not isinstance(m, nn.MultiheadAttention) or m.dropout > 0


# ------------------------------------------------------------------ several inputs, structured outputs
_WRAPPERS = WeakCache("input wrappers", max_entries=256)  # model -> {input layout: wrapper}


class MultiInputModel:
    """``model`` as a function of one tensor x: x's rows are split into the variable inputs (reshaped to their row
    shapes), the fixed inputs are passed as they were, and ``pick`` reduces the output to one tensor."""

    def __init__(self, model: Callable, slots: list, fixed: dict, sizes: list[int], shapes: list[tuple],
                 batched: bool, pick: Any = None):
        self.model = model
        self.slots = slots      # where each variable input goes: ("arg", position) or ("kw", key)
        self.fixed = fixed      # the other inputs, by slot
        self.sizes = sizes
        self.shapes = shapes
        self.batched = batched
        self.pick = pick

    def __call__(self, x: torch.Tensor) -> Any:
        pieces = torch.split(x, self.sizes, dim=-1)
        values = {}
        for slot, piece, shape in zip(self.slots, pieces, self.shapes):
            values[slot] = piece.reshape(x.shape[0], *shape) if self.batched else piece.reshape(shape)
        values.update(self.fixed)
        positions = sorted(k[1] for k in values if k[0] == "arg")
        if positions != list(range(len(positions))):
            raise ExpansionError("positional inputs must be consecutive")
        args = [values[("arg", i)] for i in positions]
        kwargs = {k[1]: v for k, v in values.items() if k[0] == "kw"}
        return pick_output(self.model(*args, **kwargs), self.pick)


def pick_output(out: Any, pick: Any) -> Any:
    """The tensor ``pick`` names in a structured output: a callable applied to it, a key of a dict-like output, or an
    attribute name (ModelOutput); ``None`` keeps the output as it is."""
    if pick is None:
        return out
    if callable(pick):
        return pick(out)
    if isinstance(pick, str):
        if isinstance(out, dict) and pick in out:
            return out[pick]
        if hasattr(out, pick):
            return getattr(out, pick)
        keys = list(out.keys()) if isinstance(out, dict) else [k for k in dir(out) if not k.startswith("_")][:12]
        raise ExpansionError(f"output={pick!r}: the model's output has no such key or attribute; it has {keys}")
    raise ExpansionError(f"output must be an int, an index tuple, a key/attribute name or a callable, got {pick!r}")


def _parameter_names(model: Callable) -> list[str]:
    fn = model.forward if isinstance(model, torch.nn.Module) else model
    try:
        return [p.name for p in inspect.signature(fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return []


def _is_structured(inputs: Any) -> bool:
    return isinstance(inputs, dict) or (isinstance(inputs, tuple) and any(isinstance(v, torch.Tensor)
                                                                          for v in inputs))


def normalize(model: Callable, inputs: Any, *, wrt: Any = None, output: Any = None, names: Any = None,
              batched: bool | None = None) -> tuple[Callable, Any, list[str] | None, Any]:
    """(function of one tensor, its point, variable names, element output) for a model of several inputs; a model of
    one tensor comes back unchanged (with a key/callable ``output`` folded into the function)."""
    structured = _is_structured(inputs)
    pick = output if (isinstance(output, str) or callable(output)) else None
    element_output = None if pick is not None else output
    if not structured:
        if wrt is not None:
            raise ExpansionError("wrt= names inputs of a model called with several (a tuple or a dict of tensors); "
                                 "this model is called with one tensor")
        if pick is None:
            return model, inputs, names, element_output
        wrapper = _remember(model, ("picked", _pick_key(pick)), lambda: PickedModel(model, pick))
        return wrapper, inputs, names, element_output

    items = list(inputs.items()) if isinstance(inputs, dict) else list(enumerate(inputs))
    slots = [("kw", k) if isinstance(inputs, dict) else ("arg", k) for k, _ in items]
    labels = [str(k) for k, _ in items] if isinstance(inputs, dict) else _position_labels(model, len(items))
    floating = [isinstance(v, torch.Tensor) and v.is_floating_point() for _, v in items]
    chosen = _chosen(wrt, [k for k, _ in items], floating, labels)
    tensors = [torch.as_tensor(items[i][1]).detach() for i in chosen]
    if batched is None:
        batched = all(t.dim() >= 2 for t in tensors)
    if batched:
        rows = {t.shape[0] for t in tensors}
        if len(rows) != 1 or any(t.dim() < 1 for t in tensors):
            raise ExpansionError(f"the inputs in wrt have different batch sizes {sorted(rows)}: give them the same "
                                 "first axis (one row per reference point), or pass batched=False")
    dtype = functools.reduce(torch.promote_types, [t.dtype for t in tensors])
    shapes = [tuple(t.shape[1:]) if batched else tuple(t.shape) for t in tensors]
    sizes = [math.prod(s) for s in shapes]
    flat = [t.to(dtype).reshape(t.shape[0], -1) if batched else t.to(dtype).reshape(-1) for t in tensors]
    point = torch.cat(flat, dim=-1)
    fixed = {slots[i]: v for i, (_, v) in enumerate(items) if i not in chosen}
    wrapper = _multi_wrapper(model, [slots[i] for i in chosen], fixed, sizes, shapes, batched, pick)
    if names is None:
        names = []
        for i, size in zip(chosen, sizes):
            names += [labels[i]] if size == 1 else [f"{labels[i]}_{j}" for j in range(size)]
    return wrapper, point, names, element_output


def _position_labels(model: Callable, count: int) -> list[str]:
    params = _parameter_names(model)
    return [params[i] if i < len(params) else f"input{i}" for i in range(count)]


def _chosen(wrt: Any, keys: list, floating: list[bool], labels: list[str]) -> list[int]:
    """Indices of the inputs to expand in: those ``wrt`` names (positions or keys), default every floating tensor."""
    if wrt is None:
        chosen = [i for i, f in enumerate(floating) if f]
        if not chosen:
            raise ExpansionError("none of the inputs is a floating-point tensor: nothing to expand in (integer inputs "
                                 "such as token ids are held fixed; expand w.r.t. their embeddings instead)")
        return chosen
    wanted = wrt if isinstance(wrt, (list, tuple)) else [wrt]
    chosen = []
    for w in wanted:
        if w in keys:
            i = keys.index(w)
        elif isinstance(w, str) and w in labels:
            i = labels.index(w)
        else:
            raise ExpansionError(f"wrt={w!r} is not one of the inputs {labels}")
        if not floating[i]:
            raise ExpansionError(f"wrt={w!r} is not a floating-point tensor (integer inputs such as token ids cannot "
                                 "be expanded in; expand w.r.t. their embeddings, e.g. inputs_embeds)")
        chosen.append(i)
    return sorted(set(chosen))


_PER_MODEL = 16


def _remember(model: Callable, key: tuple, make: Callable[[], Callable]) -> Callable:
    """One wrapper per model and input layout (at most ``_PER_MODEL``), so the tracer's graph cache serves repeated
    calls."""
    try:
        per_model = _WRAPPERS.get(model)
        if per_model is None:
            per_model = _WRAPPERS.put(model, {})
    except TypeError:  # not weakly referable: a fresh wrapper (traced anew) each call
        return make()
    if key not in per_model:
        if len(per_model) >= _PER_MODEL:
            per_model.pop(next(iter(per_model)))
        per_model[key] = make()
    return per_model[key]


def _multi_wrapper(model, slots, fixed, sizes, shapes, batched, pick) -> MultiInputModel:
    """The wrapper for this layout, holding this call's fixed inputs (new tensors there re-trace, as any changed
    constant does)."""
    key = ("multi", tuple(slots), tuple(shapes), batched, tuple(sorted(map(str, fixed))), _pick_key(pick))
    wrapper = _remember(model, key, lambda: MultiInputModel(model, slots, dict(fixed), sizes, shapes, batched, pick))
    wrapper.fixed = dict(fixed)
    return wrapper


def _pick_key(pick: Any) -> Any:
    return pick if pick is None or isinstance(pick, str) else ("callable", id(pick))


class PickedModel:
    """A one-tensor model whose structured output is reduced to one tensor by ``pick``."""

    def __init__(self, model: Callable, pick: Any):
        self.model = model
        self.pick = pick

    def __call__(self, x: torch.Tensor) -> Any:
        return pick_output(self.model(x), self.pick)
