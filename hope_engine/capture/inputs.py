"""Models as torch users write them: several inputs (positional or keyword), structured outputs.

``normalize(model, inputs, wrt, output)`` turns a model called as ``model(*args, **kwargs)`` into a function of one
flat tensor (the expansion variables: the floating tensors named by ``wrt``, each row flattened and concatenated in
input order) plus that tensor's value at the reference point. Inputs not named by ``wrt`` and non-floating tensors
(token ids, masks) are held fixed. A structured output (tuple, dict, ModelOutput) is reduced to one tensor by
``output=`` (a key, an attribute name or a callable).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch

from hope_engine.caches import WeakCache
from hope_engine.errors import ExpansionError

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
