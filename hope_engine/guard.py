"""Guards: is a graph traced earlier still the function the user would run now?

A value-free graph bakes in everything the model's Python code reads besides its parameters and buffers: the module
tree, hooks, plain and callable attributes, class attributes, the globals and closures the code reads, constant
tensors. ``stamp(model)`` walks all of it and returns a value that compares equal exactly when none of it changed
(objects by identity, tensors by identity and version counter, containers and plain values by content). When a model
holds something the walk cannot compare cheaply (a very large container), the stamp is ``None`` and the caller
re-traces: correctness before speed.

``state_token(model)`` adds the parameter and buffer values themselves (for caches of results, such as the panel's).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import operator
import types
import weakref
from collections import OrderedDict
from collections.abc import Callable
from itertools import chain
from typing import Any

import torch
from torch import nn

_PLAIN = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size)
_PLAIN_TYPES = frozenset(_PLAIN)
_EMPTY_CONTAINERS = frozenset({dict, OrderedDict, list, tuple, set, frozenset})
_MAX_ITEMS = 10_000  # a container or array larger than this is not compared: the graph is re-traced instead
# walked separately (parameters, buffers, children), or never part of what forward computes: backward and state-dict
# hooks (a backward hook wraps values in identity autograd functions; a graph traced without it stays the function)
_IGNORED_MODULE_KEYS = frozenset({
    "training", "_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", "_backward_pre_hooks",
    "_backward_hooks", "_is_full_backward_hook", "_state_dict_hooks", "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks"})
_IGNORED_CLASS_KEYS = frozenset({"__dict__", "__weakref__", "__doc__", "__module__", "__qualname__",
                                 "__annotations__", "__firstlineno__", "__static_attributes__"})


# stamps of classes whose whole MRO is library code (identity-only, so the same at every call)
_LIBRARY_CLASSES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


UNKNOWN = object()  # "no stamp taken yet" (None means "not comparable")


class Uncomparable(Exception):
    """The model holds something the guard cannot compare cheaply."""


class Ref:
    """An object compared by identity, held weakly where possible (a dead referent never equals a live one)."""

    __slots__ = ("oid", "_get")

    def __init__(self, obj: Any):
        self.oid = id(obj)
        try:
            self._get = weakref.ref(obj)
        except TypeError:  # builtins and other objects without weak references: small, held strongly
            self._get = lambda obj=obj: obj

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ref) or other.oid != self.oid:
            return False
        mine = self._get()
        return mine is not None and mine is other._get()

    def __hash__(self) -> int:
        return self.oid

    def __repr__(self) -> str:
        return f"Ref({self.oid:#x})"


def _library(obj: Any) -> bool:
    """Objects defined by torch (or the standard library's builtins): stable, compared by identity only."""
    mod = getattr(obj, "__module__", None) or ""
    return mod == "builtins" or mod.split(".")[0] in ("torch", "numpy", "math", "functools", "typing", "abc")


def _code_names(code: types.CodeType) -> set[str]:
    """Global and attribute names a code object reads, nested functions and comprehensions included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


class _Walker:
    def __init__(self) -> None:
        self.seen: dict[int, int] = {}

    def __call__(self, v: Any) -> Any:
        kind = type(v)
        if kind in _PLAIN_TYPES or isinstance(v, _PLAIN):
            return v
        if kind in _EMPTY_CONTAINERS and not v:  # most of a module's hook dicts: nothing to compare
            return kind
        key = id(v)
        if key in self.seen:
            return ("seen", self.seen[key])
        self.seen[key] = len(self.seen)
        if isinstance(v, torch.Tensor):
            return ("tensor", Ref(v), v._version, tuple(v.shape), v.dtype, v.device)
        if isinstance(v, (list, tuple)):
            self._check_size(len(v))
            return (type(v).__name__, tuple(self(e) for e in v))
        if isinstance(v, dict):
            self._check_size(len(v))
            return ("dict", Ref(type(v)), tuple((self(k), self(e)) for k, e in v.items()))
        if isinstance(v, (set, frozenset)):
            self._check_size(len(v))
            return ("set", frozenset(self(e) for e in v))
        if isinstance(v, nn.Module):
            return self._module(v)
        if isinstance(v, types.MethodType):
            return ("method", self(v.__func__), self(v.__self__))
        if isinstance(v, types.FunctionType):
            return self._function(v)
        if isinstance(v, functools.partial):
            return ("partial", self(v.func), self(v.args), self(v.keywords))
        if isinstance(v, type):
            return self._class(v)
        if isinstance(v, types.ModuleType):
            return ("pymodule", Ref(v))
        if type(v).__module__ == "numpy" and hasattr(v, "tobytes"):
            self._check_size(getattr(v, "size", 0))
            return ("array", v.dtype.str, v.shape, hashlib.blake2b(v.tobytes(), digest_size=16).digest())
        if _library(type(v)) or not hasattr(v, "__dict__"):
            return ("object", Ref(v))
        return ("instance", self._class(type(v)), self(vars(v)))

    @staticmethod
    def _check_size(n: int) -> None:
        if n > _MAX_ITEMS:
            raise Uncomparable(f"a container of {n} items")

    def _function(self, fn: types.FunctionType) -> Any:
        if _library(fn):
            return ("function", Ref(fn))
        code = fn.__code__
        glb = fn.__globals__
        names = sorted(_code_names(code))
        read = []
        for name in names:
            if name not in glb:
                continue
            value = glb[name]
            if isinstance(value, types.ModuleType):  # mod.attr: the attributes this code may read, by identity
                members = vars(value)
                attrs = tuple((a, Ref(members[a])) for a in names if a != name and a in members)
                read.append((name, Ref(value), attrs))
            else:
                read.append((name, self(value)))
        cells = []
        for cell in fn.__closure__ or ():
            try:
                cells.append(self(cell.cell_contents))
            except ValueError:  # an empty cell
                cells.append(("empty",))
        return ("function", code, self(fn.__defaults__), self(fn.__kwdefaults__), tuple(cells), tuple(read),
                self(vars(fn)) if vars(fn) else None)

    def _class(self, cls: type) -> Any:
        known = _LIBRARY_CLASSES.get(cls)
        if known is not None:
            return known
        parts = []
        for base in cls.__mro__:
            if base is object or _library(base):
                parts.append(Ref(base))
                continue
            parts.append((Ref(base), tuple((k, self(v)) for k, v in sorted(vars(base).items())
                                           if k not in _IGNORED_CLASS_KEYS)))
        stamp = ("class", tuple(parts))
        if all(isinstance(p, Ref) for p in parts):  # torch's own classes: compared by identity only, every time
            _LIBRARY_CLASSES[cls] = stamp
        return stamp

    def _module(self, m: nn.Module) -> Any:
        if isinstance(m, torch.jit.ScriptModule):
            return ("script", Ref(m), _tensor_layout(m))
        # parameters and buffers by identity and layout; their values are read at every call (a plain function's
        # graph holds them as constants by reference, so a new object must re-trace, an in-place update need not)
        state = tuple((name, t is None or (Ref(t), t.shape, t.dtype, t.device))
                      for d in (m._parameters, m._buffers) for name, t in d.items())
        children = tuple((name, self(c)) for name, c in m._modules.items())
        # the two commonest cases of ``__call__`` inline (the same values, no call): plain values, empty containers
        attrs = tuple((k, v if type(v) in _PLAIN_TYPES else type(v) if type(v) in _EMPTY_CONTAINERS and not v
                       else self(v)) for k, v in vars(m).items() if k not in _IGNORED_MODULE_KEYS)
        return ("module", self._class(type(m)), state, children, attrs)


def _tensor_layout(m: nn.Module) -> tuple:
    return tuple((name, tuple(t.shape), t.dtype, t.device)
                 for name, t in list(m.named_parameters()) + list(m.named_buffers()))


def _global_state() -> tuple:
    """Process-wide settings a traced graph depends on: global module hooks and the default dtype."""
    module = nn.modules.module
    hooks = tuple(getattr(module, name, None) for name in (
        "_global_forward_hooks", "_global_forward_pre_hooks", "_global_forward_hooks_with_kwargs",
        "_global_module_registration_hooks"))
    return torch.get_default_dtype(), hooks


def stamp(model: Any) -> Any:
    """A value equal between two calls exactly when the model's traced graph would be the same; ``None`` when that
    cannot be decided cheaply (then the caller re-traces).

    For a tree of torch's own module classes with plain attributes (``_Witness``), the walk's result is reused while
    a few bulk comparisons show that nothing it read has changed."""
    try:
        known = _WITNESSES.get(model)
    except TypeError:  # not weakly referable or not hashable
        known = None
    if known is not None and known[0].holds():
        return known[1]
    value = walked_stamp(model)
    if value is not None:
        witness = _Witness.of(model)
        if witness is not None:
            with contextlib.suppress(TypeError):
                _WITNESSES[model] = (witness, value)
    return value


def walked_stamp(model: Any) -> Any:
    """``stamp`` by a full walk of everything the model's code reads (no reuse)."""
    walk = _Walker()
    try:
        dtype, hooks = _global_state()
        return (dtype, walk(hooks), walk(model))
    except (Uncomparable, RecursionError):
        return None


_WITNESSES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (witness, its walked stamp)
_SPECIAL = ("_parameters", "_buffers", "_modules")
_NONE_ID = id(None)
_LAYOUT = operator.attrgetter("shape", "dtype", "device")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_forward_hooks_with_kwargs",
                 "_global_module_registration_hooks")


def _picker(positions: list[int]) -> Callable[[list], tuple]:
    """A function taking the elements at ``positions`` of a list as a tuple (itemgetter, for any count)."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    if positions:
        p = positions[0]
        return lambda v: (v[p],)
    return lambda v: ()


class _Witness:
    """What a walk read of a tree of torch's own module classes whose attributes are plain values, tuples of them and
    empty containers (``_Witness.of`` declines any other tree): each module's class, attribute names and plain values,
    which containers are empty, and its parameters, buffers and children by identity and layout, plus the default
    dtype and the global module hooks (none). ``holds()`` re-reads all of it in bulk (C-level ``map`` and list
    comparisons: no walk), so it is true exactly when a walk would give the stamp it was made with. Modules and tensors
    are held weakly (a dead one never matches; ids are compared only while both objects are alive)."""

    @classmethod
    def of(cls, model: Any) -> _Witness | None:
        if not isinstance(model, nn.Module) or any(getattr(nn.modules.module, h, None) for h in _GLOBAL_HOOKS):
            return None
        modules = list(model.modules())
        kinds, keys, plain, empty, special = [], [], [], [], []
        position = 0
        for m in modules:
            if isinstance(m, torch.jit.ScriptModule) or _LIBRARY_CLASSES.get(type(m)) is None:
                return None
            for k, v in vars(m).items():
                keys.append(k)
                if k in _SPECIAL:
                    special.append(position)
                elif k in _IGNORED_MODULE_KEYS:
                    pass
                elif type(v) in _PLAIN_TYPES or (type(v) is tuple and all(type(e) in _PLAIN_TYPES for e in v)):
                    plain.append(position)
                elif type(v) in _EMPTY_CONTAINERS and not v:
                    empty.append(position)
                else:
                    return None
                position += 1
            kinds.append(type(m))
        self = cls()
        values = [v for m in modules for v in vars(m).values()]
        self.refs = [weakref.ref(m) for m in modules]
        self.kinds, self.keys = kinds, keys
        self.lens = [len(vars(m)) for m in modules]
        self.plain, self.empty, self.special = _picker(plain), _picker(empty), _picker(special)
        self.plain_values = self.plain(values)
        self.plain_types = tuple(map(type, self.plain_values))
        self.empty_types = tuple(map(type, self.empty(values)))
        containers = self.special(values)
        self.special_keys = [k for d in containers for k in d]
        entries = [v for d in containers for v in d.values()]
        if any(v is not None and not isinstance(v, (torch.Tensor, nn.Module)) for v in entries):
            return None
        self.entry_refs = [weakref.ref(v) if v is not None else _DEAD for v in entries]
        self.nones = sum(v is None for v in entries)
        tensors = [i for i, v in enumerate(entries) if isinstance(v, torch.Tensor)]
        self.tensors = _picker(tensors)
        self.layouts = list(map(_LAYOUT, self.tensors(entries)))
        self.dtype = torch.get_default_dtype()
        return self

    def holds(self) -> bool:
        try:
            if torch.get_default_dtype() is not self.dtype or any(
                    getattr(nn.modules.module, h, None) for h in _GLOBAL_HOOKS):
                return False
            modules = list(map(_deref, self.refs))
            if list(map(type, modules)) != self.kinds:  # a dead module is None, whose type is never a module's
                return False
            dicts = list(map(vars, modules))
            if list(map(len, dicts)) != self.lens or list(chain.from_iterable(dicts)) != self.keys:
                return False
            values = list(chain.from_iterable(map(dict.values, dicts)))
            plain, empty = self.plain(values), self.empty(values)
            if (tuple(map(type, plain)) != self.plain_types or plain != self.plain_values
                    or tuple(map(type, empty)) != self.empty_types or any(map(len, empty))):
                return False
            containers = self.special(values)
            if list(chain.from_iterable(containers)) != self.special_keys:
                return False
            entries = list(chain.from_iterable(map(dict.values, containers)))
            ids = list(map(id, entries))
            return (ids.count(_NONE_ID) == self.nones and ids == list(map(id, map(_deref, self.entry_refs)))
                    and list(map(_LAYOUT, self.tensors(entries))) == self.layouts)
        except Exception:  # noqa: BLE001 - anything unexpected (a module without __dict__...): walk instead
            return False


class _Gone:
    pass


_DEAD = weakref.ref(_Gone())  # a reference whose object is gone: it gives None, standing for a None entry
_deref = weakref.ref.__call__  # a reference's object (None when gone), called from C by ``map``


def state_token(model: Any) -> Any:
    """``stamp`` plus the current values of every parameter and buffer the model reads: equal exactly when the model
    computes the same function (used to key caches of results)."""
    graph_stamp = stamp(model)
    if graph_stamp is None:
        return None
    digest = hashlib.blake2b(digest_size=16)
    for m in referenced_modules(model):
        for t in list(m.parameters()) + list(m.buffers()):
            data = t.detach()
            digest.update(str((tuple(data.shape), data.dtype)).encode())
            with contextlib.suppress(TypeError, RuntimeError):  # meta tensors have no values
                digest.update(data.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return graph_stamp, digest.digest()


def referenced_values(fn: Any) -> list:
    """Values a plain function reads besides its argument: defaults, closure cells and the globals it names (and the
    object of a bound method, the attributes of a callable object)."""
    if isinstance(fn, nn.Module):
        return []
    if isinstance(fn, functools.partial):
        return [fn.func, *fn.args, *fn.keywords.values(), *referenced_values(fn.func)]
    if not hasattr(fn, "__code__"):
        return list(vars(fn).values()) if hasattr(fn, "__dict__") else []
    values = [fn.__self__] if hasattr(fn, "__self__") else []
    values += list(fn.__defaults__ or ()) + list((fn.__kwdefaults__ or {}).values())
    for cell in fn.__closure__ or ():
        with contextlib.suppress(ValueError):  # an empty cell
            values.append(cell.cell_contents)
    glb = getattr(fn, "__globals__", {})
    values += [glb[name] for name in _code_names(fn.__code__) if name in glb]
    return values


def referenced_modules(model: Any) -> list[nn.Module]:
    """The model itself, or the modules a plain function reads (through its closure, defaults or globals), found
    through containers (a list of layers) too."""
    if isinstance(model, nn.Module):
        return [model]
    found: list[nn.Module] = []
    pending = list(referenced_values(model))
    seen: set[int] = set()
    while pending:
        v = pending.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if isinstance(v, nn.Module):
            found.append(v)
        elif isinstance(v, (list, tuple)) and len(v) <= _MAX_ITEMS:
            pending.extend(v)
        elif isinstance(v, dict) and len(v) <= _MAX_ITEMS:
            pending.extend(v.values())
    return found
