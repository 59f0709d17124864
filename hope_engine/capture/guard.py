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
from itertools import chain, repeat
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


def _stable(obj: Any) -> bool:
    """Functions and classes compared by identity only: the library's, and this engine's own. (A forward naming
    ``x.expand`` in a module holding ``from hope_engine import expand`` reads the engine's function through its
    globals: walking into it would follow the engine's caches, which every expansion changes.) Instances of the
    engine's classes (the wrappers of several inputs) are walked: they hold the user's model."""
    if _library(obj):
        return True
    mod = getattr(obj, "__module__", None) or ""
    return mod.split(".")[0] in ("hope_engine", "hope_widgets")


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
        if _stable(fn):
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
            if base is object or _stable(base):
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


_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_forward_hooks_with_kwargs",
                 "_global_module_registration_hooks")


def _global_state() -> tuple:
    """Process-wide settings a traced graph depends on: the default dtype and the global module hooks."""
    module = nn.modules.module
    return torch.get_default_dtype(), tuple(getattr(module, name, None) for name in _GLOBAL_HOOKS)


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
    with contextlib.suppress(TypeError):  # not weakly referable or not hashable: no witness
        if known is not None:
            del _WITNESSES[model]  # stale: a failed check per call would only add cost
        wait = _DECLINED.get(model, 0)
        if wait:  # declined lately: retried every _RETRY calls, not on each
            _DECLINED[model] = wait - 1
        elif value is not None:
            witness = _Witness.of(model)
            if witness is not None:
                _WITNESSES[model] = (witness, value)
            else:
                _DECLINED[model] = _RETRY
    return value


def walked_stamp(model: Any) -> Any:
    """``stamp`` by a full walk of everything the model's code reads (no reuse)."""
    walk = _Walker()
    try:
        dtype, hooks = _global_state()
        return (dtype, walk(hooks), walk(model))
    except (Uncomparable, RecursionError):
        return None
    except RuntimeError:  # a container changed while walked (a weak dictionary losing an entry): not comparable
        return None


_WITNESSES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> (witness, its walked stamp)
_DECLINED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> calls until a witness is tried again
_RETRY = 63
_SPECIAL = ("_parameters", "_buffers", "_modules")
_NONE_ID = id(None)
_LAYOUT = operator.attrgetter("shape", "dtype", "device")

def _picker(positions: list[int]) -> Callable[[list], tuple]:
    """A function taking the elements at ``positions`` of a list as a tuple (itemgetter, for any count)."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    if positions:
        p = positions[0]
        return lambda v: (v[p],)
    return lambda v: ()


class _Witness:
    """What a walk read of a module tree whose attributes are plain values, tuples of them and empty containers
    (``_Witness.of`` declines any other tree): each module's class (a user-defined one through ``_CodeFacts``),
    attribute names and plain values, which containers are empty, and its parameters, buffers and children by identity
    and layout, plus the default dtype and the global module hooks (none). ``holds()`` re-reads all of it in bulk
    (C-level ``map`` and list comparisons: no walk), so it is true exactly when a walk would give the stamp it was made
    with. Modules, tensors and classes are held weakly (a dead one never matches; ids are compared only while both
    objects are alive)."""

    @classmethod
    def of(cls, model: Any) -> _Witness | None:
        if not isinstance(model, nn.Module) or any(_global_state()[1]):
            return None
        modules = list(model.modules())
        kinds, keys, plain, empty, special = [], [], [], [], []
        code = _CodeFacts()
        position = 0
        for m in modules:
            if isinstance(m, torch.jit.ScriptModule) or not code.klass(type(m)):
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
        self.code = code.freeze()
        if self.code is None:
            return None
        self.refs = [weakref.ref(m) for m in modules]
        self.kinds, self.keys = [weakref.ref(k) for k in kinds], keys
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
            dtype, hooks = _global_state()
            if dtype is not self.dtype or any(hooks):
                return False
            modules = list(map(_deref, self.refs))
            if list(map(id, map(type, modules))) != list(map(id, map(_deref, self.kinds))) or not self.code.holds():
                return False  # (a dead module is None, whose type is no module class; a dead class is None)
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


_ABSENT = _Gone()  # what a lookup of a name that is not there gives


def _plain(v: Any) -> bool:
    return type(v) in _PLAIN_TYPES or (type(v) is tuple and all(type(e) in _PLAIN_TYPES for e in v))


class _CodeFacts:
    """What a walk read of user-defined classes: their MROs, the names and values in their own dictionaries, and for
    each of their functions (and the user functions and classes these read through globals) the code, defaults and
    every global name the code reads (absent ones too; a Python module's members by identity). Declines (``klass``
    gives False, ``freeze`` None) what it would have to follow further: closures, keyword defaults, function
    attributes, tensors, containers, module instances or other objects among those values. Re-read in bulk by
    ``holds``; classes, functions and other objects held weakly where Python allows, strongly only when plain or
    torch's / the standard library's own."""

    def __init__(self) -> None:
        self.ok = True
        self.classes: list = []       # weak refs of user classes whose MRO is read
        self.mro: list = []           # their MRO entries, weakly
        self.bases: list = []         # weak refs of user bases whose dictionary is read
        self.base_keys: list = []
        self.base_expect: list = []   # (kind, expected) per value of those dictionaries
        self.fns: list = []           # weak refs of user functions
        self.codes: list = []         # their (code, defaults: None or a plain tuple, __module__), held
        self.look_dicts: list = []    # (dictionary, name) of every global (and module member) the code reads
        self.look_keys: list = []
        self.look_expect: list = []
        self.cell_expect: list = []   # per closure cell of those functions, in order
        self._seen: set[int] = set()

    def klass(self, cls: type) -> bool:
        """Facts for a class a walk stamps with ``_class`` (torch's own: identity only, checked by the caller)."""
        if id(cls) in self._seen or all(base is object or _stable(base) for base in cls.__mro__):
            return self.ok
        self._seen.add(id(cls))
        self.classes.append(weakref.ref(cls))
        self.mro += [weakref.ref(base) for base in cls.__mro__]
        for base in cls.__mro__:
            if base is object or _stable(base):
                continue
            self.bases.append(weakref.ref(base))
            for k, v in vars(base).items():
                self.base_keys.append(k)
                if k in _IGNORED_CLASS_KEYS and k != "__module__":  # (__module__ decides what counts as library)
                    self.base_expect.append(("skip", None))
                else:
                    self.value(v, self.base_expect)
        return self.ok

    def function(self, fn: types.FunctionType) -> None:
        if id(fn) in self._seen:
            return
        self._seen.add(id(fn))
        if fn.__kwdefaults__ is not None or vars(fn) or not (fn.__defaults__ is None or _plain(fn.__defaults__)):
            self.ok = False
            return
        self.fns.append(weakref.ref(fn))
        self.codes.append((fn.__code__, fn.__defaults__, fn.__module__))
        for cell in fn.__closure__ or ():  # (super() gives methods a __class__ cell)
            try:
                self.value(cell.cell_contents, self.cell_expect)
            except ValueError:  # an empty cell
                self.ok = False
                return
        names = sorted(_code_names(fn.__code__))
        glb = fn.__globals__
        for name in names:
            value = glb.get(name, _ABSENT)
            self.look_dicts.append(glb)
            self.look_keys.append(name)
            if value is _ABSENT:
                self.look_expect.append(("strong", value))
            elif isinstance(value, types.ModuleType):  # mod.attr: the members named in this code, by identity
                self.identity(value, self.look_expect)
                members = vars(value)
                for a in names:
                    if a != name:
                        self.look_dicts.append(members)
                        self.look_keys.append(a)
                        member = members.get(a, _ABSENT)
                        if member is _ABSENT:
                            self.look_expect.append(("strong", member))
                        else:
                            self.identity(member, self.look_expect)
            else:
                self.value(value, self.look_expect)

    def identity(self, v: Any, into: list) -> None:
        try:
            into.append(("weak", weakref.ref(v)))
        except TypeError:
            if _plain(v) or _library(v) or _library(type(v)):
                into.append(("strong", v))
            else:
                self.ok = False
                into.append(("skip", None))

    def value(self, v: Any, into: list) -> None:
        """Expect ``v`` where a walk reads it with ``_Walker.__call__``."""
        if _plain(v):
            into.append(("plain", v))
        elif type(v) in _EMPTY_CONTAINERS and not v:
            into.append(("empty", type(v)))
        elif isinstance(v, types.FunctionType):
            self.identity(v, into)
            if not _stable(v):
                self.function(v)
        elif isinstance(v, type):
            self.identity(v, into)
            self.klass(v)
        elif isinstance(v, types.ModuleType) or (
                not isinstance(v, (torch.Tensor, nn.Module, list, tuple, dict, set, frozenset, types.MethodType,
                                   functools.partial)) and type(v).__module__ != "numpy"
                and (_library(type(v)) or not hasattr(v, "__dict__"))):
            self.identity(v, into)  # what the walk stamps by reference
        else:
            self.ok = False
            into.append(("skip", None))

    def freeze(self) -> _CodeFacts | None:
        if not self.ok:
            return None
        expect = self.base_expect + self.look_expect + self.cell_expect  # the order ``holds`` re-reads them in
        kinds = [k for k, _ in expect]
        self.pick = {k: _picker([i for i, x in enumerate(kinds) if x == k])
                     for k in ("plain", "empty", "weak", "strong")}
        self.plain_values = tuple(v for k, v in expect if k == "plain")
        self.plain_types = tuple(map(type, self.plain_values))
        self.empty_types = tuple(v for k, v in expect if k == "empty")
        self.weak = [v for k, v in expect if k == "weak"]
        self.strong = [v for k, v in expect if k == "strong"]  # held, so their ids stay theirs
        self.strong_ids = list(map(id, self.strong))
        self.code_ids = [id(c) for c, _, _ in self.codes]
        self.default_ids = [id(d) for _, d, _ in self.codes]
        self.fn_modules = [m for _, _, m in self.codes]
        return self

    def holds(self) -> bool:
        """(Exceptions, such as an emptied closure cell, reach ``_Witness.holds``, which answers False.)"""
        if not self.classes and not self.fns:
            return True
        classes = map(_deref, self.classes)
        if list(map(id, chain.from_iterable(map(_MRO, classes)))) != list(map(id, map(_deref, self.mro))):
            return False
        proxies = list(map(vars, map(_deref, self.bases)))
        if list(chain.from_iterable(proxies)) != self.base_keys:
            return False
        fns = list(map(_deref, self.fns))
        if (list(map(id, map(_CODE, fns))) != self.code_ids or list(map(id, map(_DEFAULTS, fns))) != self.default_ids
                or list(map(_KWDEFAULTS, fns)).count(None) != len(fns) or any(map(len, map(vars, fns)))
                or list(map(_MODULE, fns)) != self.fn_modules):
            return False
        values = list(chain.from_iterable(map(_VALUES, proxies)))
        values += map(dict.get, self.look_dicts, self.look_keys, repeat(_ABSENT))
        values += map(_CONTENTS, chain.from_iterable(map(_CELLS, fns)))  # (an emptied cell raises: not held)
        plain, empty = self.pick["plain"](values), self.pick["empty"](values)
        weak = list(map(id, self.pick["weak"](values)))
        return (tuple(map(type, plain)) == self.plain_types and plain == self.plain_values
                and tuple(map(type, empty)) == self.empty_types and not any(map(len, empty))
                and _NONE_ID not in weak and weak == list(map(id, map(_deref, self.weak)))
                and list(map(id, self.pick["strong"](values))) == self.strong_ids)


_MRO = operator.attrgetter("__mro__")
_CODE = operator.attrgetter("__code__")
_DEFAULTS = operator.attrgetter("__defaults__")
_CONTENTS = operator.attrgetter("cell_contents")


def _CELLS(fn: types.FunctionType) -> tuple:  # noqa: N802 - one of the getters above
    return fn.__closure__ or ()


_KWDEFAULTS = operator.attrgetter("__kwdefaults__")
_MODULE = operator.attrgetter("__module__")
_VALUES = operator.methodcaller("values")


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
