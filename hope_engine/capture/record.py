"""An aten graph recorded from one run of the model at the real point, under a ``TorchDispatchMode``.

This is the tracer's first choice: it runs the (functionalized) model once on real tensors and writes every aten call
it sees into an FX graph, with the same op set, decompositions, value shapes (``meta["val"]``, on the meta device) and
module paths (``meta["nn_module_stack"]``) as ``make_fx`` would give. It does not load ``torch._dynamo``, which
``make_fx`` and ``FakeTensorMode`` import (about 1 s of a fresh process's first expansion).

Values are real, so a branch on a value would silently be baked into the graph. The recording therefore notes every
point where the run *reads* a value that could change: an op on the input or a parameter that returns a Python number
or bool (``.item()``, ``if t > 0``, a tensor used as an index) or whose output shape depends on values (``nonzero``,
boolean masks). Tensor methods that hand values to Python without an aten call (``.tolist()``, ``.numpy()``) are
refused one level up, by ``escapes.watching``, which the caller runs the model under. A graph with any read is used
at this point only (``per_point``), as ``make_fx``'s real-mode trace is.

What the recorder deliberately does not handle raises ``Declined`` (a write into a tensor the run did not make, an alias
of the input created outside the dispatcher, an op returning tensors among other values, a tensor without strides);
the caller then traces with ``make_fx``, and only then. What the model raises (its own code, or an op it calls) passes
through unchanged; anything else raised by the recorder's own code is a bug and raises ``RecorderError``. Nothing is
ever written into the caller's tensors: a mutating op on them is refused before it runs.
"""

from __future__ import annotations

import contextlib
import operator
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functionalize
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

try:
    from torch.utils._python_dispatch import autograd_would_have_decomposed
except ImportError:  # older torch: every composite that reaches the mode is decomposed, as autograd would have
    def autograd_would_have_decomposed(func, flat_args) -> bool:
        return torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd")

_DATA_DEPENDENT = (torch.Tag.dynamic_output_shape, torch.Tag.data_dependent_output)


class Declined(Exception):
    """The recorder cannot capture this model faithfully; trace it with ``make_fx`` instead."""


class RecorderError(RuntimeError):
    """The recorder's own code failed (a bug in hope_engine, not in the model): never hidden by a fallback."""


def _model_error(e: BaseException) -> bool:
    return getattr(e, "_hope_model_error", False)


def _run_model_op(fn, *args, **kwargs):
    """Run an op of the model (or its decomposition): what it raises is the model's error, marked as such and passed
    through unchanged (a shape mismatch must read as the model's, not as a recorder failure)."""
    try:
        return fn(*args, **kwargs)
    except (Declined, RecorderError):
        raise
    except Exception as e:
        with contextlib.suppress(AttributeError):  # (an exception without attributes reads as a recorder failure)
            e._hope_model_error = True
        raise


@contextlib.contextmanager
def _own_code(what: str, op=None):
    """The recorder's bookkeeping: an unexpected exception there is a ``RecorderError``."""
    try:
        yield
    except (Declined, RecorderError):
        raise
    except Exception as e:
        if _model_error(e):
            raise
        where = f"{what} {op}" if op is not None else what
        raise RecorderError(f"the recorder failed {where} ({type(e).__name__}: {e}); this is a bug in hope_engine "
                            "(HOPE_TRACER=make_fx traces without the recorder)") from e


class Recording:
    """The recorded graph module, whether a value read ties it to this point, and whether that value depends on the
    input (then the graph is valid at this point only: not over a box around it)."""

    def __init__(self, graph_module: torch.fx.GraphModule, per_point: bool, input_read: bool = False,
                 state_written: bool = False):
        self.graph_module = graph_module
        self.per_point = per_point
        self.input_read = input_read
        self.state_written = state_written  # the run wrote into a parameter or buffer (the graph does not)


def _meta_like(t: torch.Tensor) -> torch.Tensor:
    """A value-free stand-in with t's shape, strides, storage offset and dtype (what ``meta["val"]`` is read for)."""
    if t.layout is not torch.strided or t.is_quantized or t.is_nested:
        raise Declined(f"a {t.layout} tensor (quantized: {t.is_quantized}, nested: {t.is_nested}) has no strides "
                       "to record")
    m = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
    return m.as_strided(t.shape, t.stride(), t.storage_offset()) if t.storage_offset() else m


def _storage_key(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage().data_ptr() if t.device.type != "meta" else None
    except (RuntimeError, NotImplementedError):  # tensor subclasses without a storage
        return None


def _reads_values(func, args) -> bool:
    """Whether a data-dependent-shape op's output shape depends on values here: indexing does so only with a mask
    (an integer index tensor gives a fixed shape)."""
    if func is torch.ops.aten.index.Tensor:
        return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1])
    return True


def _out_of_place(func):
    """``aten.add_.Tensor`` -> ``aten.add.Tensor`` (None where there is no such overload)."""
    name = func._schema.name.split("::")[-1]
    if not name.endswith("_"):
        return None
    packet = getattr(torch.ops.aten, name[:-1], None)
    return getattr(packet, func._overloadname, None) if packet is not None else None


class _Recorder(TorchDispatchMode):
    """Writes each aten call of the run into ``graph``; tensors are matched to nodes by identity."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's __torch_dispatch__ in torch._dynamo.disable unless told not to, importing dynamo
        return False

    def __init__(self, decompositions: dict, module_stack: list):
        super().__init__()
        self.graph = torch.fx.Graph()
        self.root = nn.Module()
        self.decompositions = decompositions
        self.module_stack = module_stack
        self.per_point = False
        self.input_read = False  # a value computed from the input was read into Python
        self._nodes: dict[int, tuple[weakref.ref, torch.fx.Node]] = {}
        self._varying: set[int] = set()  # ids of tensors whose values differ between calls (input, state, derived)
        self._protected: dict[int, torch.Tensor] = {}  # storage -> a caller's tensor (input or parameter)
        self._constants: dict[int, torch.fx.Node] = {}
        self._constant_storages: set[int] = set()
        self.mutated = False  # the graph holds in-place ops (on tensors the run made): functionalized afterwards
        self.state_written = False  # the model wrote into a parameter or buffer (functionalization's write-back)

    # -- graph inputs and values
    def placeholder(self, name: str, t: torch.Tensor) -> None:
        node = self.graph.placeholder(name)
        node.meta["val"] = _meta_like(t)
        self._track(t, node, varying=True)
        key = _storage_key(t)
        if key is not None:
            self._protected[key] = t

    def _track(self, t: torch.Tensor, node: torch.fx.Node, varying: bool) -> None:
        self._nodes[id(t)] = (weakref.ref(t), node)
        if varying:
            self._varying.add(id(t))
        else:
            self._varying.discard(id(t))

    def _node_of(self, t: torch.Tensor) -> torch.fx.Node | None:
        hit = self._nodes.get(id(t))
        return hit[1] if hit is not None and hit[0]() is t else None

    def varies(self, t: object) -> bool:
        return isinstance(t, torch.Tensor) and id(t) in self._varying and self._node_of(t) is not None

    def _arg(self, a):
        if isinstance(a, torch.Tensor):
            node = self._node_of(a)
            return node if node is not None else self._constant(a)
        if isinstance(a, (list, tuple)):
            return type(a)(self._arg(e) for e in a)
        if isinstance(a, dict):
            return {k: self._arg(v) for k, v in a.items()}
        return a

    def _constant(self, t: torch.Tensor) -> torch.fx.Node:
        """A tensor the run did not compute (a module attribute, a literal): read from the graph module by reference."""
        key = _storage_key(t)
        if key is not None and key in self._protected:
            raise Declined("a tensor aliases the input or a parameter outside the dispatcher (.data?)")
        node = self._constants.get(id(t))
        if node is None:
            if key is not None:
                self._constant_storages.add(key)
            name = f"_tensor_constant{len(self._constants)}"
            setattr(self.root, name, t)
            node = self.graph.get_attr(name)
            node.meta["val"] = _meta_like(t)
            self._constants[id(t)] = node
            self._nodes[id(t)] = (weakref.ref(t), node)
        return node

    # -- the mode
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        with _own_code("on", func):
            return self._dispatch(func, args, kwargs or {})

    def _dispatch(self, func, args, kwargs):
        leaves = [a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        varying = any(self.varies(a) for a in leaves)
        decomposition = self.decompositions.get(func)
        if decomposition is not None:  # before the in-place check: rrelu_with_noise (eval) writes nothing
            with self:
                out = _run_model_op(decomposition, *args, **kwargs)
            if out is not NotImplemented:
                return out
        if func._schema.is_mutable:
            return self._in_place(func, args, kwargs, varying)
        if varying and any(tag in func.tags for tag in _DATA_DEPENDENT) and _reads_values(func, args):
            self._read(leaves)
        if autograd_would_have_decomposed(func, leaves):  # a composite called below autograd (from a decomposition)
            with self:
                out = _run_model_op(func.decompose, *args, **kwargs)
            if out is not NotImplemented:
                return out
        out = _run_model_op(func, *args, **kwargs)
        constant = varying and not torch.is_grad_enabled()  # under no_grad / inference_mode: autograd's constant
        if isinstance(out, torch.Tensor):
            node = self._call(func, args, kwargs)
            node.meta["val"] = _meta_like(out)
            self._track(out, self._stopped(node) if constant else node, varying)
        elif isinstance(out, (tuple, list)) and out and all(isinstance(o, torch.Tensor) or o is None for o in out):
            node = self._call(func, args, kwargs)
            node.meta["val"] = [None if o is None else _meta_like(o) for o in out]
            for i, o in enumerate(out):
                if o is not None:
                    item = self.graph.call_function(operator.getitem, (node, i))
                    item.meta["val"] = node.meta["val"][i]
                    item.meta.update({k: v for k, v in node.meta.items() if k == "nn_module_stack"})
                    self._track(o, self._stopped(item) if constant else item, varying)
        elif any(isinstance(o, torch.Tensor) for o in pytree.tree_leaves(out)):
            # tensors among numbers or in nested lists: they could not be followed (they would become constants)
            raise Declined(f"{func} returns tensors among other values")
        elif varying:  # a Python number or bool read from a value that changes: this graph holds at this point only
            self._read(leaves)
        return out

    def _read(self, tensors: list) -> None:
        """A value read into Python (or a shape taken from values): the graph holds at this point only; and if the
        value depends on the input, not over any neighbourhood of it either (``input_read``)."""
        self.per_point = True
        if self.input_read:
            return
        seen, todo = set(), [n for n in (self._node_of(t) for t in tensors) if n is not None]
        while todo:
            node = todo.pop()
            if node in seen:
                continue
            seen.add(node)
            if node.op == "placeholder" and node.name == "x":
                self.input_read = True
                return
            todo.extend(node.all_input_nodes)

    def _in_place(self, func, args, kwargs, varying: bool):
        """An in-place op that functionalization left (C++ composites and decompositions write into tensors they just
        made: linear's ``squeeze_`` on a 1-d input, the LSTM cell's ``sigmoid_`` on chunks of its gate buffer).
        Recorded as its out-of-place form where nothing else sees the write; otherwise as the out-of-place value and a
        ``copy_`` into the buffer (or the op itself, for a layout change), and ``record`` functionalizes the graph.
        A write into a tensor the run did not make (the input, a parameter, a constant) is refused."""
        written = [a.name for a in func._schema.arguments if a.alias_info is not None and a.alias_info.is_write]
        target = args[0] if args else None
        if func is torch.ops.aten.copy_.default and self._is_protected(target):
            # functionalization's write-back of a buffer the model updated (a counter, running statistics): the
            # expansion needs the value, which the graph already has; the user's model is not changed
            self.state_written = True
            return target
        node = self._node_of(target) if isinstance(target, torch.Tensor) else None
        key = _storage_key(target) if node is not None else None
        if (written != [func._schema.arguments[0].name] or node is None or node.op == "get_attr" or key is None
                or key in self._protected or key in self._constant_storages):
            raise Declined(f"{func} writes into a tensor the run did not make")
        functional = _out_of_place(func)
        if functional is not None and not self._shares_storage(target):
            out = _run_model_op(func, *args, **kwargs)
            new = self._call(functional, args, kwargs)
            new.meta["val"] = _meta_like(target)
            self._track(target, new, varying)
            return out
        # a write into a tensor the run made, seen through other views of it (a decomposition's in-place steps on
        # chunks of one buffer): run and record it as it is; ``record`` then functionalizes the recorded graph
        layout = (target.shape, target.stride(), target.storage_offset())
        out = _run_model_op(func, *args, **kwargs)
        moved = layout != (target.shape, target.stride(), target.storage_offset())  # squeeze_, transpose_...
        if functional is not None and not moved:  # the value and a copy_ into the buffer (functionalized natively)
            value = self._call(functional, args, kwargs)
            value.meta["val"] = _meta_like(target)
            write = self.graph.call_function(torch.ops.aten.copy_.default, (node, value))
        else:
            write = self._call(func, args, kwargs)
        write.meta["val"] = _meta_like(target)
        self.mutated = True
        if varying:
            self._varying.add(id(target))
        return out

    def _stopped(self, node: torch.fx.Node) -> torch.fx.Node:
        """``detach(node)`` for a floating value computed where autograd records nothing (its value still follows
        the point; its derivatives are 0, as autograd's)."""
        val = node.meta["val"]
        if not (isinstance(val, torch.Tensor) and (val.is_floating_point() or val.is_complex())):
            return node
        stop = self.graph.call_function(torch.ops.aten.detach.default, (node,))
        stop.meta.update(node.meta)
        return stop

    def _is_protected(self, t) -> bool:
        return isinstance(t, torch.Tensor) and self._protected.get(_storage_key(t)) is t

    def _shares_storage(self, t: torch.Tensor) -> bool:
        """Whether another live tensor the recording knows (or a caller's tensor) uses t's storage."""
        key = _storage_key(t)
        if key is None or key in self._protected:
            return True
        for ref, _ in self._nodes.values():
            other = ref()
            if other is not None and other is not t and _storage_key(other) == key:
                return True
        return False

    def _call(self, func, args, kwargs) -> torch.fx.Node:
        node = self.graph.call_function(func, self._arg(tuple(args)), self._arg(dict(kwargs)))
        if self.module_stack:
            node.meta["nn_module_stack"] = OrderedDict((path, (path, cls)) for path, cls in self.module_stack)
        return node

    def output(self, out) -> None:
        self.graph.output(self._arg(out))


class _ModuleStack:
    """Keeps (path, class) of the modules being run, for error messages naming where an op sits. The hooks are
    process-wide: only this thread's module calls count (another thread may run the same model meanwhile)."""

    def __init__(self, names: dict[int, str]):
        self.names = names
        self.stack: list[tuple[str, type]] = []
        self._handles: list = []
        self._thread = threading.get_ident()

    def __enter__(self):
        self._handles = [nn.modules.module.register_module_forward_pre_hook(self._enter),
                         nn.modules.module.register_module_forward_hook(self._exit)]
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self.stack.clear()

    def _enter(self, module, args):
        name = self.names.get(id(module))
        if name is not None and threading.get_ident() == self._thread:
            self.stack.append((name, type(module)))

    def _exit(self, module, args, out):
        if self.names.get(id(module)) is not None and self.stack and threading.get_ident() == self._thread:
            self.stack.pop()


def record(fn: Callable, state: dict | None, x: torch.Tensor, decompositions: dict,
           module_names: dict[int, str]) -> Recording:
    """Run ``fn(state, x)`` (``fn(x)`` when ``state`` is None) once, recording its aten graph.

    Placeholders: the state tensors in order, then ``x``. ``module_names`` maps id(module) to its path. Value reads
    the dispatcher does not see (``.tolist()``, ``.numpy()``) are the caller's to refuse (``escapes.watching``)."""
    with _own_code("setting up"):
        stack = _ModuleStack(module_names)
        recorder = _Recorder(decompositions, stack.stack)
        for name, t in (state or {}).items():
            recorder.placeholder("p_" + re.sub(r"\W", "_", name), t)
        recorder.placeholder("x", x)
    with stack, recorder:  # the model's run: what its code raises passes through
        out = fn(x) if state is None else fn(state, x)
    with _own_code("building the graph"):
        recorder.output(out)
        gm = torch.fx.GraphModule(recorder.root, recorder.graph)
    if not recorder.mutated:
        return Recording(gm, recorder.per_point, recorder.input_read, recorder.state_written)
    # in-place ops below functionalization (inside a decomposition): functionalize the recorded graph and record it
    # once more (as make_fx does; module paths are not kept on this path). No dead-code pass before: the in-place
    # nodes have no users, and the replay must run them.

    def replay(*inputs):
        return gm(*(inputs[0].values() if state is not None else ()), inputs[-1])

    with _own_code("replaying the recorded graph"):  # (the recorded graph failing to run is the recorder's fault)
        try:
            again = record(functionalize(replay, remove="mutations"), state, x, {}, {})
        except (Declined, RecorderError):
            raise
        except Exception as e:
            raise RecorderError(f"the recorded graph failed to replay ({type(e).__name__}: {e}); this is a bug in "
                                "hope_engine (HOPE_TRACER=make_fx traces without the recorder)") from e
    if any(n.op == "call_function" and getattr(n.target, "_schema", None) is not None and n.target._schema.is_mutable
           for n in again.graph_module.graph.nodes):
        raise Declined("in-place ops remain after functionalizing the recorded graph")
    return Recording(again.graph_module, recorder.per_point or again.per_point,
                     recorder.input_read or again.input_read, recorder.state_written)
