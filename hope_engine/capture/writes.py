"""In-place writes that autograd does not see, recorded with autograd's semantics.

A write under ``torch.no_grad()`` / ``torch.inference_mode()``, or through an alias autograd does not follow (``.data``,
``.detach()``, a view of one), changes a tensor's value but not its grad history: torch's derivatives of the tensor
stay those of its old value. Functionalization turns such a write into an out-of-place op whose result replaces the
tensor, and the recorder makes whatever runs under no_grad a constant, so the tensor would lose its derivatives.

``keeping_history(x)`` is a ``TorchFunctionMode`` the model's code runs under (inside functionalization, next to
``escapes.watching``). At a hidden write into a tensor whose storage holds a value computed from ``x`` it records,
on the whole storage (the tensor the write's target is a view of, ``base``):

    base <- detach(base_new) + (base_old - detach(base_old))

(the new value exactly, the old value's derivatives: autograd's ``base_old + detach(base_new - base_old)`` without its
rounding), with grad enabled, so every alias read afterwards is a view of that value.
"""

from __future__ import annotations

import inspect
import weakref

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from hope_engine.caches import memoize

_DATA = torch._C.TensorBase.__dict__["data"]  # the ``.data`` descriptor: its __get__ reaches __torch_function__
# in-place methods that change no values (layout, flags) or that autograd does see as a cut (detach_)
_NOT_WRITES = {"requires_grad_", "share_memory_", "detach_", "set_", "resize_", "resize_as_", "squeeze_",
               "unsqueeze_", "transpose_", "t_", "as_strided_", "swapdims_", "swapaxes_", "retain_grad_"}
_IN_PLACE_OPERATORS = {"__setitem__", "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__",
                       "__imod__", "__ipow__", "__imatmul__", "__iand__", "__ior__", "__ixor__", "__ilshift__",
                       "__irshift__"}


def _storage(t: torch.Tensor) -> int | None:
    """An id of t's storage, shared by every alias (functional tensors included)."""
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError, AttributeError):
        return None


@memoize("inplace argument positions", max_entries=256)
def _inplace_position(func) -> int | None:
    """Position of a function's ``inplace`` parameter (None: it has none)."""
    try:
        names = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        names = []
    return names.index("inplace") if "inplace" in names else None


def _inplace_flag(func, args, kwargs) -> bool:
    """``F.relu(h, inplace=True)`` and its kin: the function's ``inplace`` argument."""
    if "inplace" in kwargs:
        return bool(kwargs["inplace"])
    position = _inplace_position(func)
    return position is not None and len(args) > position and bool(args[position])


def written(func, args, kwargs) -> torch.Tensor | None:
    """The tensor a torch call writes into (None: it writes into none)."""
    out = kwargs.get("out")
    if isinstance(out, torch.Tensor):
        return out
    if not args or not isinstance(args[0], torch.Tensor):
        return None
    name = getattr(func, "__name__", "")
    if name in _IN_PLACE_OPERATORS:
        return args[0]
    if name.endswith("_") and not name.endswith("__") and name not in _NOT_WRITES:
        return args[0]
    if name and not name.startswith("_") and callable(func) and _inplace_flag(func, args, kwargs):
        return args[0]
    return None


class _KeepHistory(TorchFunctionMode):
    """Follows which tensors are computed from ``source``, which are detached aliases (``.data``, ``.detach()`` and
    their views), and the base of every view (held while the view lives); rewrites hidden writes (module text)."""

    def __init__(self, source: torch.Tensor):
        super().__init__()
        self._from_source: dict[int, weakref.ref] = {id(source): weakref.ref(source)}
        self._detached: dict[int, weakref.ref] = {}
        self._bases: dict[int, tuple[weakref.ref, torch.Tensor]] = {}  # id(view) -> (view, its base)

    @staticmethod
    def _has(table: dict, t) -> bool:
        hit = table.get(id(t))
        return hit is not None and (hit[0] if isinstance(hit, tuple) else hit)() is t

    def _base(self, t: torch.Tensor) -> torch.Tensor:
        return self._bases[id(t)][1] if self._has(self._bases, t) else t

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = written(func, args, kwargs)
        if target is not None and self._hidden(target):
            return self._write(func, args, kwargs, target)
        out = func(*args, **kwargs)
        self._follow(func, args, kwargs, out)
        return out

    def _hidden(self, target: torch.Tensor) -> bool:
        """A write autograd does not record, into a storage holding a value computed from the source."""
        if not (target.is_floating_point() or target.is_complex()):
            return False
        if torch.is_grad_enabled() and not self._has(self._detached, target):
            return False
        return self._has(self._from_source, self._base(target))

    def _write(self, func, args, kwargs, target: torch.Tensor):
        base = self._base(target)
        with torch.enable_grad():  # (recorded as autograd would differentiate it, inside a no_grad block too)
            old = base.clone()
        out = func(*args, **kwargs)
        with torch.enable_grad():
            base.copy_(base.detach() + (old - old.detach()))
        self._follow(func, args, kwargs, out)
        return out

    def _follow(self, func, args, kwargs, out) -> None:
        outputs = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not outputs:
            return
        inputs = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if any(self._has(self._from_source, t) for t in inputs):
            for t in outputs:
                self._from_source[id(t)] = weakref.ref(t)
            if written(func, args, kwargs) is not None:
                for t in inputs:
                    self._from_source[id(t)] = weakref.ref(t)
        detaching = func is torch.Tensor.detach or func is torch.detach or (
            getattr(func, "__self__", None) is _DATA and getattr(func, "__name__", "") == "__get__")
        storages = None
        for t in outputs:
            if any(t is i for i in inputs):
                continue
            if storages is None:
                storages = [(_storage(i), i) for i in inputs]
            mine = _storage(t)
            source = next((i for key, i in storages if key is not None and key == mine), None)
            if source is None:
                continue  # a fresh tensor: its own base
            self._bases[id(t)] = (weakref.ref(t, self._forget(id(t))), self._base(source))
            if detaching or self._has(self._detached, source):
                self._detached[id(t)] = weakref.ref(t)

    def _forget(self, key: int):
        def drop(_ref, bases=self._bases):
            bases.pop(key, None)
        return drop


def keeping_history(source: torch.Tensor) -> TorchFunctionMode:
    """A mode to run the model's code under (inside functionalization): writes autograd does not see keep the written
    tensor's derivatives (module text). ``source``: the model's input, as the model's code receives it."""
    return _KeepHistory(source)
