"""Values that leave the traced graph: an input-dependent floating value turned into a Python number or a NumPy array.

The graph cannot see through such a step: what comes back is a constant to the tracer, so every derivative through it
would be wrong (zero). The tracer runs the model's code under ``watching(x)``, a ``TorchFunctionMode`` that follows
which tensors depend on ``x`` and raises ``GraphEscapeError`` naming the source line of the first such conversion
(fake tensors would otherwise hand NumPy made-up values, baked into the graph as constants). Branches on values
(``if x.sum() > 0``) are not escapes: they make the graph piecewise, which the tracer handles.
"""

from __future__ import annotations

import os
import traceback
import weakref

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from hope_engine.errors import GraphEscapeError

# Tensor methods that turn a floating value into something the graph cannot follow.
# (Printing and formatting are not escapes: they do not feed a value back into the computation.)
_ESCAPES = {"numpy", "item", "tolist", "__float__", "__int__", "__index__", "__complex__", "__array__"}
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_TORCH = os.path.dirname(os.path.abspath(torch.__file__))


# Bulk reads the tracer cannot serve: under functionalization they see no values (an error, or garbage for .numpy()).
_UNREADABLE = {"numpy", "tolist", "__array__"}
_DATA = torch._C.TensorBase.__dict__["data"]  # the ``.data`` descriptor: its __get__ reaches __torch_function__


class _Tracker(TorchFunctionMode):
    """Marks every tensor computed from a marked tensor; raises on an escape of a floating tensor computed from the
    input, and on a bulk read (``.tolist()``, ``.numpy()``) of any tensor computed from the input or the state."""

    def __init__(self, source: torch.Tensor, state=()):
        super().__init__()
        self._marked: dict[int, weakref.ref] = {}  # computed from the input
        self._varying: dict[int, weakref.ref] = {}  # computed from the input or the state (parameters, buffers)
        self._mark(source)
        for t in state:
            self._varying[id(t)] = weakref.ref(t)

    def _mark(self, t: torch.Tensor, table: dict | None = None) -> None:
        (self._marked if table is None else table)[id(t)] = weakref.ref(t)
        self._varying[id(t)] = weakref.ref(t)

    def marked(self, t: object, table: dict | None = None) -> bool:
        if not isinstance(t, torch.Tensor):
            return False
        ref = (self._marked if table is None else table).get(id(t))
        return ref is not None and ref() is t

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        inputs = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        tainted = any(self.marked(t) for t in inputs)
        varying = tainted or any(self.marked(t, self._varying) for t in inputs)
        if tainted and name in _ESCAPES and args and self.marked(args[0]) and args[0].is_floating_point():
            raise GraphEscapeError(_message(name))
        if varying and name in _UNREADABLE and args and self.marked(args[0], self._varying):
            raise GraphEscapeError(_unreadable(name))
        if getattr(func, "__self__", None) is _DATA and func.__name__ == "__get__" and varying:  # .data read: a detach
            out = args[0].detach()
        else:
            out = func(*args, **kwargs)
        if varying:
            table = None if tainted else self._varying
            for t in pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self._mark(t, table)
            if name.endswith("_") or name == "__setitem__" or "out" in kwargs:  # written in place
                for t in inputs:
                    self._mark(t, table)
        return out


def _message(method: str) -> str:
    where = _user_frame()
    call = {"__float__": "float(...)", "__int__": "int(...)", "__index__": "an index", "__complex__": "complex(...)",
            "__array__": "numpy.asarray(...)"}.get(method, f".{method}()")
    return (f"the model turns a value that depends on the input into a Python or NumPy value ({call}{where}). "
            "The expansion cannot see through that step: every derivative through it would be wrong. Write that "
            "step with torch operations on tensors instead.")


def _unreadable(method: str) -> str:
    call = "numpy.asarray(...)" if method == "__array__" else f".{method}()"
    return (f"the model reads the values of a tensor computed from its input or its parameters with {call}"
            f"{_user_frame()}. The tracer cannot hand those values to Python. Use .item() or int(...) for one value, "
            "or index with the tensor itself.")


def _user_frame() -> str:
    for frame in reversed(traceback.extract_stack()[:-3]):
        path = os.path.abspath(frame.filename)
        if not path.startswith((_PACKAGE, _TORCH)):
            return f" at {frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
    return ""


def watching(x: torch.Tensor, state=()) -> TorchFunctionMode:
    """A mode to run the model's code under: raises ``GraphEscapeError`` when a floating value computed from ``x``
    is turned into a Python or NumPy value, or when values computed from ``x`` or ``state`` are read in bulk
    (``.tolist()``, ``.numpy()``: under functionalization they are not there). Single values (``.item()``, ``if t``)
    go through an aten call, which the recorder sees (``record.py``)."""
    return _Tracker(x, state)
