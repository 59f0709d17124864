"""Guards: is a graph traced earlier still the function the user would run now?

A value-free graph bakes in everything the model's Python code reads besides its parameters and buffers: the module
tree, hooks, plain and callable attributes, class attributes, the globals and closures the code reads, constant
tensors. ``stamp(model)`` walks all of it and returns a value that compares equal exactly when none of it changed
(objects by identity, tensors by identity and version counter, containers and plain values by content). When a model
holds something the walk cannot compare cheaply (a very large container), the stamp is ``None`` and the caller
re-traces: correctness before speed.

What the walk follows besides: descriptors (static and class methods, properties, ``cached_property``) and
``lru_cache``d functions into the code they hold; weak references (``weakref.ref``) into what they point at; a
helper module's members the code names (``helpers.act``, and so the globals ``act`` reads), a user's module held as
a value by every member's identity; ``globals()[...]`` (the names the code holds as strings by content, every other
global by identity); ``__slots__`` objects slot by slot; ``deque``, ``array`` and ``bytearray`` by content; a
TorchScript module's attributes; the classes of torch (or Python) by identity, plus everything in their dictionaries
and the globals and ``module.attr`` members their reachable methods name (``nn.SiLU.forward = ...``, ``F.gelu``
replaced under ``nn.GELU``; a value patched in by the user is walked like the user's code); and the process-wide
state: the default dtype, the global module hooks, the autocast state.

One encoding: the walk that makes the stamp also writes its check (``_Check``), Python source that re-reads every value
the walk read, from the same place and in the same order, and returns False at the first that differs (the objects
the walk met by identity, weakly held; plain values, emptiness and layouts by value). While the check holds, ``stamp``
returns the last walk's stamp itself (so comparisons downstream are identity checks); otherwise it walks again.

``state_token(model)`` adds the state of every tensor the walk met (for caches of results, such as the panel's: one
notion of "the model changed", reaching a global module or a module in a plain list too): their values while the model
is small, else their version counters and data pointers.
"""

from __future__ import annotations

import array
import contextlib
import functools
import hashlib
import operator
import sys
import types
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hope_engine.caches import WeakCache

_PLAIN = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size)
_PLAIN_TYPES = frozenset(_PLAIN)
_EMPTY_CONTAINERS = frozenset({dict, OrderedDict, list, tuple, set, frozenset})
_CONTAINERS = (list, tuple, dict, set, frozenset, deque)
_LRU_WRAPPER = type(functools.lru_cache(maxsize=None)(len))  # what ``functools.lru_cache`` / ``cache`` return
_MAX_ITEMS = 10_000  # a container or array larger than this is not compared: the graph is re-traced instead
# walked separately (parameters, buffers, children), or never part of what forward computes: backward and state-dict
# hooks (a backward hook wraps values in identity autograd functions; a graph traced without it stays the function)
_IGNORED_MODULE_KEYS = frozenset({
    "training", "_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", "_backward_pre_hooks",
    "_backward_hooks", "_is_full_backward_hook", "_state_dict_hooks", "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks"})
_IGNORED_CLASS_KEYS = frozenset({"__dict__", "__weakref__", "__doc__", "__module__", "__qualname__",
                                 "__annotations__", "__firstlineno__", "__static_attributes__"})


# classes whose whole MRO is library code: True / False
_LIBRARY_CLASSES = WeakCache("guard library classes", max_entries=4096)
# a library class -> what its code reads that a patch could change (``_library_reads``)
_LIBRARY_READS = WeakCache("guard library reads", max_entries=4096)
_SLOTS = WeakCache("guard slot names", max_entries=4096)  # a class -> the slots of its instances
_INSTALLED = WeakCache("guard installed modules", max_entries=4096)  # a Python module -> ``_installed``


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
        return mine is other._get() and (mine is not None or self.oid == id(None))

    def __hash__(self) -> int:
        return self.oid

    def __repr__(self) -> str:
        return f"Ref({self.oid:#x})"


_LIBRARY_ROOTS = frozenset({"builtins", "torch", "numpy", "math", "functools", "typing", "abc"})


def _library(obj: Any) -> bool:
    """Objects defined by torch (or the standard library's builtins): stable, compared by identity only."""
    mod = getattr(obj, "__module__", None) or ""
    return mod.split(".")[0] in _LIBRARY_ROOTS


def _stable(obj: Any) -> bool:
    """Functions and classes compared by identity only: the library's, and this engine's own. (A forward naming
    ``x.expand`` in a module holding ``from hope_engine import expand`` reads the engine's function through its
    globals: walking into it would follow the engine's caches, which every expansion changes.) Instances of the
    engine's classes (the wrappers of several inputs) are walked: they hold the user's model."""
    if _library(obj):
        return True
    mod = getattr(obj, "__module__", None) or ""
    return mod.split(".")[0] in ("hope_engine", "hope_widgets")


def _library_class(cls: type) -> bool:
    """Whether the whole MRO of ``cls`` is the library's (or this engine's): compared by identity, plus what
    ``_library_reads`` lists for the library's classes."""
    try:
        known = _LIBRARY_CLASSES.get(cls)
    except TypeError:
        return False
    if known is None:
        known = all(base is object or _stable(base) for base in cls.__mro__)
        with contextlib.suppress(TypeError):
            _LIBRARY_CLASSES.put(cls, known)
    return known


# modules whose functions, classes and submodules a library class's code may read, compared by identity alone
_STANDARD = _LIBRARY_ROOTS | frozenset(getattr(sys, "stdlib_module_names", ()))
_C_LEVEL = (types.BuiltinFunctionType, types.GetSetDescriptorType, types.MemberDescriptorType,
            types.WrapperDescriptorType, types.MethodDescriptorType, types.ClassMethodDescriptorType,
            types.MethodWrapperType)


def _installed(mod: types.ModuleType) -> bool:
    """A module of torch's, Python's, or of a package installed under ``site-packages``: its members compared by
    identity. The user's own modules (a ``helpers.py`` beside the notebook, an editable install) are walked."""
    if mod.__name__.split(".")[0] in _STANDARD:
        return True
    try:
        known = _INSTALLED.get(mod)
    except TypeError:
        known = None
    if known is None:
        known = not {"site-packages", "dist-packages"}.isdisjoint(Path(getattr(mod, "__file__", None) or "").parts)
        with contextlib.suppress(TypeError):
            _INSTALLED.put(mod, known)
    return known


def _installed_code(obj: Any) -> bool:
    """A function or class defined in an ``_installed`` module."""
    name = getattr(obj, "__module__", None) or getattr(obj, "__globals__", {}).get("__name__") or ""
    if name.split(".")[0] in _STANDARD:
        return True
    mod = sys.modules.get(name)
    return isinstance(mod, types.ModuleType) and _installed(mod)


def _fixed(v: Any, depth: int = 0) -> bool:
    """A value of a library class's dictionary (or of a global its code reads) that is the library's (or Python's)
    own: compared by identity alone. Anything else (a function the user patched in) is walked like the user's code."""
    if type(v) in _PLAIN_TYPES or isinstance(v, _C_LEVEL):
        return True
    if isinstance(v, (staticmethod, classmethod)):
        return _fixed(v.__func__)
    if isinstance(v, property):
        return all(f is None or _fixed(f) for f in (v.fget, v.fset, v.fdel))
    if isinstance(v, (list, tuple, set, frozenset, dict)):
        items = [*v, *v.values()] if isinstance(v, dict) else v
        return depth < 2 and len(items) <= 128 and all(_fixed(e, depth + 1) for e in items)
    if isinstance(v, types.ModuleType):
        return _installed(v)
    if isinstance(v, (type, types.FunctionType)):
        return _installed_code(v)
    return _stable(v)


class _Reads:
    """What the code of one library class reads that a patch could change, and the values it held when listed.

    ``entries``: (mapping, keys, whole, values, walked positions, refs), ``whole`` for the class's own dictionary
    (every key, a new one included), the others a module's globals or a module's members, read by name."""

    __slots__ = ("entries", "token", "part")

    def __init__(self, entries: list[tuple]) -> None:
        self.entries = entries
        self.token = tuple(refs for *_, refs in entries)  # (equal between two listings of the same values)
        self.part: tuple | None = None  # the class's part of a stamp while nothing in it is walked: one object


# what a call of a module may run without naming it: where the walk of a library class's methods starts
_ENTRY_POINTS = ("forward", "__call__", "__getattr__", "__getattribute__", "__iter__", "__getitem__", "__len__",
                 "__contains__", "__bool__")


def _method_code(v: Any) -> types.FunctionType | None:
    """The Python function behind a class dictionary's entry (a method, static or class method, property)."""
    fn = v.__func__ if isinstance(v, (staticmethod, classmethod)) else v.fget if isinstance(v, property) else v
    return fn if isinstance(fn, types.FunctionType) else None


def _reachable(d: Any) -> dict[str, types.FunctionType]:
    """The methods of a class dictionary a call can run: the entry points, and what their code names, transitively."""
    found: dict[str, types.FunctionType] = {}
    pending = [name for name in _ENTRY_POINTS if name in d]
    while pending:
        name = pending.pop()
        fn = _method_code(d[name])
        if name in found or fn is None:
            continue
        found[name] = fn
        pending += [n for n in _code_names(fn.__code__) if n in d and n not in found]
    return found


def _library_reads(cls: type) -> _Reads:
    """What a library class's code reads that a user could patch, cached while it holds the same values: the class's
    dictionary, every entry (``nn.SiLU.forward = ...``, ``nn.Module.__call__ = ...``), and the globals and
    ``module.attr`` members that the methods a call can reach name, one level deep (``F.gelu`` under ``nn.GELU``; not
    what ``F.gelu``'s own code reads; not for ``nn.Module`` itself). Builtins are not read."""
    with contextlib.suppress(TypeError):
        known = _LIBRARY_READS.get(cls)
        if known is not None and all(_values(m, k, whole) == values for m, k, whole, values, *_ in known.entries):
            return known
    d = vars(cls)
    # (nn.Module's own methods read torch's internals and the global hooks, which ``_global_state`` covers: its
    # dictionary is read, the globals of its methods are not)
    reachable = _reachable(d) if cls is not nn.Module else {}
    wanted: dict[int, tuple[Any, set]] = {}
    for fn in reachable.values():
        if not _library(fn):
            continue  # (a patched-in function of the user's: walked itself, with what it reads)
        names = _code_names(fn.__code__)
        glb = fn.__globals__
        wanted.setdefault(id(glb), (glb, set()))[1].update(n for n in names if n in glb)
        for n in names:
            mod = glb.get(n)
            if isinstance(mod, types.ModuleType):
                members = vars(mod)
                wanted.setdefault(id(members), (members, set()))[1].update(a for a in names if a in members)
    reads = [(d, tuple(d), True)] + [(m, tuple(sorted(keys)), False) for m, keys in wanted.values() if keys]
    entries = []
    for m, keys, whole in reads:
        values = _values(m, keys, whole)
        walked = tuple(i for i, v in enumerate(values)  # (``__annotations__`` and the like: by identity)
                       if not (keys[i] in _IGNORED_CLASS_KEYS and m is d) and not _fixed(v))
        entries.append((m, keys, whole, values, walked, tuple(map(Ref, values))))
    known = _Reads(entries)
    with contextlib.suppress(TypeError):
        _LIBRARY_READS.put(cls, known)
    return known


def _values(mapping: Any, keys: tuple, whole: bool) -> tuple:
    """The values a ``_Reads`` entry reads now (a whole dictionary with another set of keys reads as a new tuple)."""
    if whole:
        return tuple(mapping.values()) if tuple(mapping) == keys else (object(),)
    return tuple(map(mapping.get, keys))


def _code_names(code: types.CodeType) -> set[str]:
    """Global and attribute names a code object reads, nested functions and comprehensions included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _code_strings(code: types.CodeType) -> set[str]:
    """The identifier-like string constants of a code object and the code nested in it (``globals()["NAME"]``)."""
    found = {const for const in code.co_consts if type(const) is str and const.isidentifier()}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= _code_strings(const)
    return found


def _ids(refs: tuple) -> tuple:
    """The ids of the objects ``Ref``s hold (-1 for one that is gone)."""
    out = []
    for r in refs:
        obj = r._get()
        out.append(id(obj) if obj is not None or r.oid == id(None) else -1)
    return tuple(out)


def _picker(positions: list[int]) -> Callable[[tuple], tuple]:
    """A function taking the elements at ``positions`` of a sequence as a tuple (itemgetter, for any count)."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    if positions:
        p = positions[0]
        return lambda v: (v[p],)
    return lambda v: ()


class _EmptyCell:
    pass


_EMPTY_CELL = _EmptyCell()  # what ``_cell`` reads from a closure cell without contents
_DEAD = weakref.ref(_EmptyCell())  # a reference whose object is gone: it gives None, standing for a None entry
_LAYOUT = operator.attrgetter("shape", "dtype", "device")
_MAX_LINES = 20_000  # a walk that would write a longer check leaves the model without one (walked at every call)


def _cell(cell) -> Any:
    try:
        return cell.cell_contents
    except ValueError:
        return _EMPTY_CELL


def _array_digest(a: Any) -> tuple:
    return a.dtype.str, a.shape, hashlib.blake2b(a.tobytes(), digest_size=16).digest()


def _hooks() -> tuple:
    return _global_state()[1]


def _slot_names(cls: type) -> tuple[str, ...]:
    """The slots an instance of ``cls`` has (its MRO's ``__slots__``, private names mangled), cached per class."""
    try:
        known = _SLOTS.get(cls)
    except TypeError:
        known = None
    if known is None:
        names = []
        for base in cls.__mro__:
            declared = base.__dict__.get("__slots__", ())
            for name in (declared,) if isinstance(declared, str) else declared:
                if name in ("__dict__", "__weakref__"):
                    continue
                if name.startswith("__") and not name.endswith("__"):
                    name = f"_{base.__name__.lstrip('_')}{name}"
                names.append(name)
        known = tuple(dict.fromkeys(names))
        with contextlib.suppress(TypeError):
            _SLOTS.put(cls, known)
    return known


def _slot(obj: Any, name: str) -> Any:
    """The value in a slot, or ``_EMPTY_CELL`` when it is not set."""
    try:
        return getattr(obj, name)
    except AttributeError:
        return _EMPTY_CELL


# what a check's source names besides its own constants
_CHECK_GLOBALS = {"_cell": _cell, "_EMPTY_CELL": _EMPTY_CELL, "_deref": weakref.ref.__call__, "_layout": _LAYOUT,
                  "_not_none": functools.partial(operator.is_not, None), "_digest": _array_digest,
                  "_hooks": _hooks, "_dtype": torch.get_default_dtype, "_slot": _slot, "_ids": _ids,
                  "_get": dict.get}


class _Check:
    """The source of a guard check, written by a walk as it reads: each value read is read again into a local
    (``read``), and compared (``fail_if``, ``same``). ``build`` compiles it into ``check() -> bool``, True exactly when
    every comparison holds (an exception, such as a dead weak reference's object read, is False)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {}
        self._named: dict[int, str] = {}

    def const(self, obj: Any) -> str:
        """The name under which the check holds ``obj`` (strongly: plain values, classes, code, dictionaries)."""
        name = self._named.get(id(obj))
        if name is None:
            name = self._named[id(obj)] = f"c{len(self.names)}"
            self.names[name] = obj
        return name

    def read(self, expr: str) -> str:
        name = f"v{len(self.lines)}"
        self.lines.append(f"{name} = {expr}")
        return name

    def fail_if(self, condition: str) -> None:
        self.lines.append(f"if {condition}: return False")

    def same(self, src: str, obj: Any) -> None:
        """``src`` is ``obj`` and of its type (held weakly where Python allows: a check keeps no model alive)."""
        try:
            ref = f"{self.const(weakref.ref(obj))}()"
        except TypeError:
            ref = self.const(obj)
        self.fail_if(f"{src} is not {ref} or type({src}) is not {self.const(type(obj))}")

    def build(self) -> Callable[[], bool] | None:
        if len(self.lines) > _MAX_LINES:
            return None
        body = "\n".join("        " + line for line in self.lines) or "        pass"
        source = f"def check():\n    try:\n{body}\n    except Exception:\n        return False\n    return True\n"
        namespace = {**_CHECK_GLOBALS, **self.names}
        exec(compile(source, "<hope_engine guard check>", "exec"), namespace)  # noqa: S102 - our own source
        check = namespace["check"]
        check.source = source
        return check


class _Walker:
    """One walk of what the model's code reads: ``walker(value)`` is the value's stamp. With ``emit``, the walk also
    writes ``check`` (``_Check``): at each read, ``src`` names the local of the check holding the same value; a value
    the check cannot re-read sets ``check`` to None (no check: the model is walked at every call)."""

    def __init__(self, emit: bool = False) -> None:
        self.seen: dict[int, int] = {}
        self.where: dict[int, str] = {}  # id -> the check's local holding the object's first occurrence
        self.active: set[int] = set()  # containers being walked (one that holds itself is not comparable)
        self.modules: set[tuple] = set()  # (Python module, names read) walked already
        self.library: dict[int, Any] = {}  # library class -> its part of the stamp, from this walk
        self.named: dict[tuple, tuple] = {}  # (dictionary, key) -> the value library code reads there, by identity
        self.tensors: list[Ref] = []  # every tensor met, weakly (whose state ``state_token`` reads)
        self.check: _Check | None = _Check() if emit else None

    def __call__(self, v: Any, src: str | None = None) -> Any:
        c = self.check if src is not None else None
        kind = type(v)
        if kind in _PLAIN_TYPES or isinstance(v, _PLAIN):
            if c is not None:  # (NaN equals nothing but itself: compared by identity, as stamps compare it)
                c.fail_if(f"{src} is not {c.const(v)}" if v != v else
                          f"type({src}) is not {c.const(kind)} or {src} != {c.const(v)}")
            return v
        if kind in _EMPTY_CONTAINERS and not v:  # most of a module's hook dicts: nothing to compare
            if c is not None:
                c.fail_if(f"type({src}) is not {c.const(kind)} or {src}")
            return kind
        if isinstance(v, _CONTAINERS):  # by content, wherever they are met (not by identity)
            return self._container(v, src)
        key = id(v)
        if key in self.seen:
            if c is not None:
                c.fail_if(f"{src} is not {self.where[key]}")
            return ("seen", self.seen[key])
        self.seen[key] = len(self.seen)
        if c is not None:  # every other object: the same one, of the same class, before anything read from it
            self.where[key] = src
            c.same(src, v)
        if isinstance(v, torch.Tensor):
            if c is not None:
                c.fail_if(f"{src}._version != {v._version} or _layout({src}) != {c.const(_LAYOUT(v))}")
            ref = Ref(v)
            self.tensors.append(ref)
            return ("tensor", ref, v._version, tuple(v.shape), v.dtype, v.device)
        if isinstance(v, nn.Module):
            return self._module(v, src)
        if isinstance(v, types.MethodType):
            return ("method", self(v.__func__, self._read(src, ".__func__")),
                    self(v.__self__, self._read(src, ".__self__")))
        if isinstance(v, types.FunctionType):
            return self._function(v, src)
        if isinstance(v, functools.partial):
            return ("partial", self(v.func, self._read(src, ".func")), self(v.args, self._read(src, ".args")),
                    self(v.keywords, self._read(src, ".keywords")))
        if isinstance(v, type):
            return self._class(v, src)
        if isinstance(v, types.ModuleType):
            if _installed(v):
                return ("pymodule", Ref(v))
            # a user's module held as a value (``self.helpers = helpers``): the names it reads are not known here, so
            # every member by identity (a rebound global of the module is seen, also through its functions)
            members = vars(v)
            keys, refs = tuple(members), tuple(map(Ref, members.values()))
            if c is not None:
                m = c.const(members)
                c.fail_if(f"tuple({m}) != {c.const(keys)} or tuple(map(id, {m}.values())) != _ids({c.const(refs)})")
            return ("pymodule", Ref(v), keys, refs)
        if type(v).__module__ == "numpy" and hasattr(v, "tobytes"):
            self._check_size(getattr(v, "size", 0))
            digest = _array_digest(v)
            if c is not None:
                c.fail_if(f"_digest({src}) != {c.const(digest)}")
            return ("array", *digest)
        if isinstance(v, (array.array, bytearray)):  # mutable buffers: by content
            self._check_size(len(v))
            content = (getattr(v, "typecode", None), bytes(v))
            if c is not None:
                c.fail_if(f"(getattr({src}, 'typecode', None), bytes({src})) != {c.const(content)}")
            return ("buffer", *content)
        # descriptors and wrappers of the library: what they hold is the user's code (a static method, a property)
        if isinstance(v, (staticmethod, classmethod)):
            return (kind.__name__, self(v.__func__, self._read(src, ".__func__")))
        if isinstance(v, property):
            return ("property", *(self(getattr(v, a), self._read(src, f".{a}")) for a in ("fget", "fset", "fdel")))
        if isinstance(v, functools.cached_property):
            return ("cached_property", self(v.func, self._read(src, ".func")))
        if isinstance(v, functools.partialmethod):
            return ("partialmethod", self(v.func, self._read(src, ".func")), self(v.args, self._read(src, ".args")),
                    self(v.keywords, self._read(src, ".keywords")))
        if isinstance(v, _LRU_WRAPPER):  # (its cache is the function's business: a cleared one reads afresh)
            return ("lru_cache", self(v.__wrapped__, self._read(src, ".__wrapped__")))
        if isinstance(v, weakref.ReferenceType):  # a weak reference the code dereferences: what it points at
            return ("weakref", self(v(), self._read(src, "()")))
        if _library(kind):
            return ("object", Ref(v))
        slots = _slot_names(kind)
        if slots:  # ``__slots__`` (a ``@dataclass(slots=True)`` config): each slot, and the ``__dict__`` if any
            return ("slots", self._class(kind, self._read(src, "", "type({})")),
                    tuple((name, self(_slot(v, name), self._read(src, "", f"_slot({{}}, {name!r})")))
                          for name in slots),
                    self(vars(v), self._read(src, ".__dict__")) if hasattr(v, "__dict__") else None)
        if not hasattr(v, "__dict__"):
            return ("object", Ref(v))
        return ("instance", self._class(kind, self._read(src, "", "type({})")),
                self(vars(v), self._read(src, ".__dict__")))

    def _read(self, src: str | None, suffix: str, template: str = "{}") -> str | None:
        """The check's local holding ``template.format(src) + suffix`` (None when not emitting)."""
        c = self.check if src is not None else None
        return c.read(template.format(src) + suffix) if c is not None else None

    @staticmethod
    def _check_size(n: int) -> None:
        if n > _MAX_ITEMS:
            raise Uncomparable(f"a container of {n} items")

    def _container(self, v: Any, src: str | None) -> Any:
        key = id(v)
        if key in self.active:
            raise Uncomparable("a container that holds itself")
        self._check_size(len(v))
        self.active.add(key)
        try:
            c = self.check if src is not None else None
            if c is not None:
                c.fail_if(f"type({src}) is not {c.const(type(v))} or len({src}) != {len(v)}")
            if isinstance(v, (list, tuple, deque)):
                return (type(v).__name__, tuple(self(e, self._read(src, f"[{i}]")) for i, e in enumerate(v)))
            if isinstance(v, dict):
                values = None
                if c is not None:
                    if all(type(k) in _PLAIN_TYPES for k in v):
                        c.fail_if(f"tuple({src}) != {c.const(tuple(v))}")
                        values = c.read(f"tuple({src}.values())")
                    else:  # keys compared by more than their value: no check for this model
                        self.check = None
                return ("dict", Ref(type(v)), tuple((self(k), self(e, self._read(values, f"[{i}]")))
                                                    for i, (k, e) in enumerate(v.items())))
            if c is not None:
                if all(type(e) in _PLAIN_TYPES for e in v):
                    c.fail_if(f"frozenset({src}) != {c.const(frozenset(v))}")
                else:
                    self.check = None
            return ("set", frozenset(self(e) for e in v))
        finally:
            self.active.discard(key)

    def _function(self, fn: types.FunctionType, src: str | None) -> Any:
        c = self.check if src is not None else None
        if c is not None:  # (the module name decides whether the function is the library's)
            c.fail_if(f"getattr({src}, '__module__', None) != {c.const(getattr(fn, '__module__', None))}")
        if _stable(fn):
            return ("function", Ref(fn))
        code = fn.__code__
        glb = fn.__globals__
        names = _code_names(code)
        dynamic = "globals" in names and "globals" not in glb  # globals()[...]: also the names it holds as strings
        names = sorted(names | {s for s in _code_strings(code) if s in glb} if dynamic else names)
        g = None
        if c is not None:
            c.fail_if(f"{src}.__code__ is not {c.const(code)}")
            g = c.const(glb)  # a function's globals are always the same dictionary
        read = []
        if dynamic:  # (a name built at run time: every global, by identity)
            keys, refs = tuple(glb), tuple(map(Ref, glb.values()))
            read.append(("globals()", keys, refs))
            if c is not None:
                c.fail_if(f"tuple({g}) != {c.const(keys)} or tuple(map(id, {g}.values())) != _ids({c.const(refs)})")
        for name in names:
            if name not in glb:
                if c is not None:
                    c.fail_if(f"{name!r} in {g}")
                continue
            value = glb[name]
            if isinstance(value, types.ModuleType):  # mod.attr, mod.sub.attr: the members this code may name
                if c is not None:
                    c.same(c.read(f"{g}[{name!r}]"), value)
                read.append((name, Ref(value), self._pymodule(value, names, name)))
            else:
                read.append((name, self(value, self._read(f"{g}", f"[{name!r}]") if c is not None else None)))
        cells = []
        closure = fn.__closure__ or ()
        where = self._read(src, ".__closure__ or ()") if closure else None
        for i, cell in enumerate(closure):
            contents = _cell(cell)
            if contents is _EMPTY_CELL:
                cells.append(("empty",))
                if c is not None:
                    c.fail_if(f"_cell({where}[{i}]) is not _EMPTY_CELL")
            else:
                cells.append(self(contents, self._read(where, "", f"_cell({{}}[{i}])")))
        if c is not None and not vars(fn):
            c.fail_if(f"{src}.__dict__")
        return ("function", code, self(fn.__defaults__, self._read(src, ".__defaults__")),
                self(fn.__kwdefaults__, self._read(src, ".__kwdefaults__")), tuple(cells), tuple(read),
                self(vars(fn), self._read(src, ".__dict__")) if vars(fn) else None)

    def _pymodule(self, mod: types.ModuleType, names: list[str], own: str) -> tuple:
        """The members of a Python module that code naming ``names`` may read (``mod.attr``, ``mod.sub.attr``): the
        library's own by identity; anything else walked (a helper module's function and the globals it reads, a
        config dict, a function the user patched into ``torch``)."""
        key = (id(mod), tuple(names))
        if key in self.modules:  # walked already in this walk (or being walked: a cycle of imports)
            return ("pymodule", Ref(mod))
        self.modules.add(key)
        c = self.check
        members = vars(mod)
        m = c.read(c.const(members)) if c is not None else None  # (a module's dictionary is always the same one)
        library = _installed(mod)
        attrs = []
        for a in names:
            if a == own:
                continue
            if a not in members:
                if c is not None:
                    c.fail_if(f"{a!r} in {m}")
                continue
            value = members[a]
            where = c.read(f"{m}.get({a!r})") if c is not None else None
            if isinstance(value, types.ModuleType):
                if c is not None:
                    c.same(where, value)
                attrs.append((a, Ref(value), self._pymodule(value, names, a)))
            elif library and type(value) not in _PLAIN_TYPES and _fixed(value):
                if c is not None:
                    c.same(where, value)
                attrs.append((a, Ref(value)))
            else:
                attrs.append((a, self(value, where)))
        return ("pymodule", Ref(mod), tuple(attrs))

    def _class(self, cls: type, src: str | None = None) -> Any:
        c = self.check if src is not None else None
        if _library_class(cls):  # torch's own classes: by identity, and what their code reads (``_library_part``)
            if c is not None:
                c.fail_if(f"{src} is not {c.const(cls)}")
            return ("class", tuple(self._library_part(base) for base in cls.__mro__))
        if c is not None:  # (the class itself, its bases in order)
            c.fail_if(f"{src}.__mro__ != {c.const(cls.__mro__)}")
        parts = []
        for base in cls.__mro__:
            if base is not object and c is not None:  # (the module name decides what is the library's)
                c.fail_if(f"getattr({c.const(base)}, '__module__', None) != "
                          f"{c.const(getattr(base, '__module__', None))}")
            if base is object or _stable(base):
                parts.append(self._library_part(base))
                continue
            d = None
            if c is not None:
                d = c.read(f"{c.const(base)}.__dict__")
                c.fail_if(f"{d}.keys() != {c.const(frozenset(vars(base)))}")
            parts.append((Ref(base), tuple((k, self(v, self._read(d, f"[{k!r}]") if d is not None else None))
                                           for k, v in sorted(vars(base).items()) if k not in _IGNORED_CLASS_KEYS)))
        return ("class", tuple(parts))

    def _library_part(self, cls: type) -> Any:
        """A class of the library (or of this engine) by identity; for the library's, also the values its code reads
        that a patch could change (``_library_reads``), the user's code patched in among them walked. The check
        re-reads them once per walk, whatever the place the class was met at."""
        if cls is object or not _library(cls):
            return Ref(cls)
        part = self.library.get(id(cls))
        if part is not None:
            return part
        reads = _library_reads(cls)
        c = self.check
        walked = []
        for mapping, keys, whole, values, positions, _ in reads.entries:
            m = c.const(mapping) if c is not None else None
            if c is not None and whole:  # (by its values: a key added or removed moves them)
                if positions:  # (the values walked below are compared there, held weakly; the keys here)
                    pick = _picker([i for i in range(len(values)) if i not in positions])
                    c.fail_if(f"tuple({m}) != {c.const(keys)} or "
                              f"{c.const(pick)}(tuple({m}.values())) != {c.const(pick(values))}")
                else:
                    c.fail_if(f"tuple({m}.values()) != {c.const(values)}")
            elif c is not None:  # globals and module members: all of the walk's in one line, at its end
                self.named.update({(id(mapping), keys[i]): (mapping, keys[i], values[i])
                                   for i in range(len(values)) if i not in positions})
            for i in positions:
                walked.append((keys[i], self(values[i], c.read(f"{m}.get({keys[i]!r})") if c is not None else None)))
        if walked:
            part = ("library", Ref(cls), reads.token, tuple(walked))
        else:  # (the same object at every walk: two stamps of an unchanged model compare by identity here)
            part = reads.part = reads.part or ("library", Ref(cls), reads.token, ())
        self.library[id(cls)] = part
        return part

    def _module(self, m: nn.Module, src: str | None) -> Any:
        c = self.check if src is not None else None
        if isinstance(m, torch.jit.ScriptModule):  # (its code is compiled: what it reads is its attributes)
            state = _script_state(m)
            if c is not None:
                c.fail_if(f"_script_state({src}) != {c.const(state)}")
            self.tensors += map(Ref, [*m.parameters(), *m.buffers()])
            return ("script", Ref(m), state)
        kind = type(m)  # (a class of torch's own needs no more than the type check made before this)
        klass = self._class(kind, None if _library_class(kind) else self._read(src, "", "type({})"))
        d = vars(m)
        values = None
        if c is not None:  # every name, and the class of every value, in bulk
            dv = c.read(f"{src}.__dict__")
            c.fail_if(f"tuple({dv}) != {c.const(tuple(d))}")
            values = c.read(f"tuple({dv}.values())")
            c.fail_if(f"tuple(map(type, {values})) != {c.const(tuple(map(type, d.values())))}")
        # parameters and buffers by identity and layout; their values are read at every call (a plain function's
        # graph holds them as constants by reference, so a new object must re-trace, an in-place update need not)
        state = []
        for name in ("_parameters", "_buffers"):
            tensors = d[name]
            if c is not None:
                held = c.read(f"{dv}[{name!r}]")
                c.fail_if(f"tuple({held}) != {c.const(tuple(tensors))}" if tensors else held)
                if tensors:
                    refs = tuple(_DEAD if t is None else weakref.ref(t) for t in tensors.values())
                    c.fail_if(f"tuple(map(id, {held}.values())) != tuple(map(id, map(_deref, {c.const(refs)})))")
                    layouts = tuple(_LAYOUT(t) for t in tensors.values() if t is not None)
                    c.fail_if(f"tuple(map(_layout, filter(_not_none, {held}.values()))) != {c.const(layouts)}")
            refs = {k: Ref(t) for k, t in tensors.items() if t is not None}
            state += [(k, t is None or (refs[k], t.shape, t.dtype, t.device)) for k, t in tensors.items()]
            self.tensors += refs.values()
        children = d["_modules"]
        inside = None
        if c is not None:
            held = c.read(f"{dv}['_modules']")
            c.fail_if(f"tuple({held}) != {c.const(tuple(children))}" if children else held)
            inside = c.read(f"tuple({held}.values())") if children else None
        kids = tuple((k, self(child, self._read(inside, f"[{i}]"))) for i, (k, child) in enumerate(children.items()))
        # attributes: plain values and empty containers in bulk, the rest walked
        attrs, plain, empty = [], [], []
        for i, (k, v) in enumerate(d.items()):
            if k in _IGNORED_MODULE_KEYS:
                continue
            if type(v) in _PLAIN_TYPES:
                attrs.append((k, v))
                plain.append(i)
            elif type(v) in _EMPTY_CONTAINERS and not v:
                attrs.append((k, type(v)))
                empty.append(i)
            else:
                attrs.append((k, self(v, self._read(values, f"[{i}]"))))
        c = self.check if src is not None else None
        if c is not None:  # (their classes were compared above)
            if plain:
                pick = _picker(plain)
                c.fail_if(f"{c.const(pick)}({values}) != {c.const(pick(tuple(d.values())))}")
            if empty:
                c.fail_if(f"any({c.const(_picker(empty))}({values}))")
        return ("module", klass, tuple(state), kids, tuple(attrs))


_SCRIPT_FLAGS = frozenset({"training", "_is_full_backward_hook"})


def _script_state(m: torch.jit.ScriptModule) -> tuple:
    """A TorchScript module's attributes, its submodules' included: tensors by identity and layout (a plain tensor
    attribute, which its code holds as a constant, also by version), every other value by content."""
    iterators = getattr(torch._C, "_jit_debug_module_iterators", None)
    if iterators is None:  # (a torch that does not list them: re-traced at every call)
        raise Uncomparable("a TorchScript module whose attributes this torch does not list")
    found = iterators(m._c)
    held = {name for name, _ in found["named_parameters_r"]} | {name for name, _ in found["named_buffers_r"]}
    return tuple((name, _script_value(v, name in held)) for name, v in found["named_attributes_r"]
                 if not isinstance(v, torch.ScriptObject) and name.rpartition(".")[2] not in _SCRIPT_FLAGS)


def _script_value(v: Any, held: bool = False) -> Any:
    """One TorchScript attribute's value, comparable (``held``: a parameter or buffer, read at every call)."""
    if isinstance(v, torch.Tensor):
        return (Ref(v), tuple(v.shape), v.dtype, v.device) + (() if held else (v._version,))
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, tuple(map(_script_value, v)))
    if isinstance(v, dict):
        return ("dict", tuple((_script_value(k), _script_value(e)) for k, e in v.items()))
    return v if type(v) in _PLAIN_TYPES else Ref(v)


_CHECK_GLOBALS["_script_state"] = _script_state

_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_forward_hooks_with_kwargs",
                 "_global_module_registration_hooks")


def _global_state() -> tuple:
    """Process-wide settings a traced graph depends on: the default dtype and the global module hooks."""
    module = nn.modules.module
    return torch.get_default_dtype(), tuple(getattr(module, name, None) for name in _GLOBAL_HOOKS)


_AUTOCAST_DEVICES = tuple(getattr(torch._C, "_autocast_supported_devices", lambda: ["cpu", "cuda"])())
_any_autocast = getattr(torch._C, "_is_any_autocast_enabled", lambda: True)


def _autocast() -> tuple:
    """The autocast regions the call runs in: ``(device type, dtype)`` of each enabled one (``()`` for none). A graph
    recorded under autocast holds its casts (torch's semantics: the model's output in the autocast dtype), so it is
    served only to calls under the same autocast state, and one recorded outside never to a call inside."""
    if not _any_autocast():
        return ()
    return tuple((d, torch.get_autocast_dtype(d)) for d in _AUTOCAST_DEVICES if torch.is_autocast_enabled(d))


_CHECK_GLOBALS["_autocast"] = _autocast

# model -> [check or None, stamp, calls to wait, misses, the tensors the walk met (``Ref``s)]
_GUARDS = WeakCache("guard checks", max_entries=256)
_RETRY = 63  # a model whose walk wrote no check is walked at every call; writing one is tried again after this many
_MISSES = 3  # checks that failed while the stamp stayed the same: after this many in a row, none is written for a while


def stamp(model: Any) -> Any:
    """A value equal between two calls exactly when the model's traced graph would be the same; ``None`` when that
    cannot be decided cheaply (then the caller re-traces).

    The last walk's stamp is returned while the check that walk wrote holds; otherwise the model is walked again.
    A check is compiled once a walk finds the stamp unchanged (a model met once, or changed at every call, is only
    walked), and then the same stamp object is returned (comparisons downstream stay identity checks)."""
    try:
        known = _GUARDS.get(model)
    except TypeError:  # not weakly referable or not hashable: no check kept
        return walked_stamp(model)
    if known is not None and known[0] is not None and known[0]():
        return known[1]
    if known is None:
        value, _, tensors = _walk(model, False)
        if value is not None:
            with contextlib.suppress(TypeError):
                _GUARDS.put(model, [None, value, 0, 0, tensors])
        return value
    check, last, wait, misses, _ = known
    emit = wait <= 0
    value, written, tensors = _walk(model, emit)
    if value is None:
        _GUARDS.pop(model)
        return None
    if value != last:  # changed: a check is written when a walk finds this stamp again
        known[:] = [None, value, max(wait - 1, 0), 0, tensors]
        return value
    known[4] = tensors
    misses += check is not None  # the check failed, yet nothing the stamp holds changed
    new = written.build() if written is not None and misses < _MISSES else None
    if new is not None and not new():  # failing at once: it re-reads something that changes by itself
        new = None
    if emit:
        known[:4] = [new, last, 0 if new is not None else _RETRY, misses if new is not None else 0]
    else:
        known[2] = wait - 1
    return last


def walked_stamp(model: Any) -> Any:
    """``stamp`` by a full walk of everything the model's code reads (no check reused or written)."""
    return _walk(model, False)[0]


def _walk(model: Any, emit: bool) -> tuple[Any, _Check | None, list[Ref]]:
    """(the stamp, the check the walk wrote, not compiled yet: None when it could not or was not asked to, the
    tensors the walk met)."""
    walk = _Walker(emit)
    c = walk.check
    root = None
    if c is not None:
        try:
            root = c.read(f"{c.const(weakref.ref(model))}()")
        except TypeError:  # not weakly referable: the check would keep the model alive
            walk.check = c = None
    try:
        dtype, hooks = _global_state()
        autocast = _autocast()
        where = None
        if c is not None:
            c.fail_if(f"_dtype() is not {c.const(dtype)} or _autocast() != {c.const(autocast)}")
            if all(type(h) in _EMPTY_CONTAINERS and not h for h in hooks):  # (the usual case, in one line)
                c.fail_if(f"tuple(map(type, _hooks())) != {c.const(tuple(map(type, hooks)))} or any(_hooks())")
            else:
                where = c.read("_hooks()")
        value = (dtype, autocast, walk(hooks, where), walk(model, root))
        if c is not None and walk.named:
            dicts, keys, values = zip(*walk.named.values())
            c.fail_if(f"tuple(map(_get, {c.const(dicts)}, {c.const(keys)})) != {c.const(values)}")
    except (Uncomparable, RecursionError):
        return None, None, []
    except RuntimeError:  # a container changed while walked (a weak dictionary losing an entry): not comparable
        return None, None, []
    return value, walk.check, walk.tensors


#: a model whose tensors hold at most this many elements in all is read by value in ``state_token`` (about 20 us for
#: the panel's usual networks); a larger one by version counters and data pointers (a few us, whatever its size)
VALUE_LIMIT = 1 << 14


def state_token(model: Any) -> Any:
    """``stamp`` plus the state of every tensor the stamp's walk met: equal when the model computes the same function
    (used to key caches of results, such as the panel's, and by the panel to see that a model changed).

    One notion of "the model changed" for graphs and results: the tensors are those of everything the model's code
    reads (a global module, a module in a plain list, a tensor attribute, a TorchScript module's). Their state is
    read cheaply (``tensor_state``): by value while the model is small, else by version counter and data pointer."""
    graph_stamp = stamp(model)
    if graph_stamp is None:
        return None
    known = None
    with contextlib.suppress(TypeError):
        known = _GUARDS.get(model)
    tensors = [r._get() for r in known[4]] if known is not None and known[1] is graph_stamp else [None]
    if any(t is None for t in tensors):  # (not kept for this model, or a tensor gone: walked again)
        graph_stamp, _, refs = _walk(model, False)
        if graph_stamp is None:
            return None
        tensors = [r._get() for r in refs]
    return graph_stamp, tensor_state([t for t in tensors if t is not None])


def tensor_state(tensors: list[torch.Tensor]) -> tuple:
    """A value that changes when any of ``tensors`` is written.

    Tensors of ``VALUE_LIMIT`` elements or fewer in all: by value (a write through ``.data``, which moves no version
    counter, is seen too). More: each by its version counter and data pointer, so the cost does not grow with the
    model (an in-place write, an optimizer step, ``load_state_dict`` and ``p.data = ...`` are seen; a write through
    ``.data`` is not: ``HopePanel.recompute()`` expands again whatever the token says); a tensor without a version
    counter (made under ``torch.inference_mode``) by value."""
    by_value = sum(t.numel() for t in tensors) <= VALUE_LIMIT
    versions = []
    digest = hashlib.blake2b(digest_size=16)
    for t in tensors:
        if not by_value:
            try:
                versions.append((t._version, t.data_ptr()))
                continue
            except RuntimeError:  # an inference tensor (no version counter), a sparse one (no data pointer)
                pass
        data = t.detach()
        digest.update(str((tuple(data.shape), data.dtype)).encode())
        try:  # (a contiguous CPU tensor numpy knows: its memory as it is)
            digest.update(data.numpy())
        except (TypeError, RuntimeError, ValueError, BufferError):
            with contextlib.suppress(TypeError, RuntimeError):  # meta tensors have no values
                digest.update(data.cpu().contiguous().view(torch.uint8).numpy())
    return tuple(versions), digest.digest()


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
