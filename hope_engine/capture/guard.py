"""Guards: is a graph traced earlier still the function the user would run now?

A value-free graph bakes in everything the model's Python code reads besides its parameters and buffers: the module
tree, hooks, plain and callable attributes, class attributes, the globals and closures the code reads, constant
tensors. ``stamp(model)`` walks all of it and returns a value that compares equal exactly when none of it changed
(objects by identity, tensors by identity and version counter, containers and plain values by content). When a model
holds something the walk cannot compare cheaply (a very large container), the stamp is ``None`` and the caller
re-traces: correctness before speed.

One encoding: the walk that makes the stamp also writes its check (``_Check``), Python source that re-reads every value
the walk read, from the same place and in the same order, and returns False at the first that differs (the objects
the walk met by identity, weakly held; plain values, emptiness and layouts by value). While the check holds, ``stamp``
returns the last walk's stamp itself (so comparisons downstream are identity checks); otherwise it walks again.

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
from typing import Any

import torch
from torch import nn

from hope_engine.caches import WeakCache

_PLAIN = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, torch.Size)
_PLAIN_TYPES = frozenset(_PLAIN)
_EMPTY_CONTAINERS = frozenset({dict, OrderedDict, list, tuple, set, frozenset})
_CONTAINERS = (list, tuple, dict, set, frozenset)
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
_LIBRARY_CLASSES = WeakCache("guard library classes", max_entries=4096)


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


def _library_class(cls: type) -> tuple | None:
    """The stamp of a class whose whole MRO is the library's (identity only, the same at every call), or None."""
    try:
        known = _LIBRARY_CLASSES.get(cls)
    except TypeError:
        return None
    if known is None and all(base is object or _stable(base) for base in cls.__mro__):
        known = ("class", tuple(Ref(base) for base in cls.__mro__))
        with contextlib.suppress(TypeError):
            _LIBRARY_CLASSES.put(cls, known)
    return known


def _code_names(code: types.CodeType) -> set[str]:
    """Global and attribute names a code object reads, nested functions and comprehensions included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


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


# what a check's source names besides its own constants
_CHECK_GLOBALS = {"_cell": _cell, "_EMPTY_CELL": _EMPTY_CELL, "_deref": weakref.ref.__call__, "_layout": _LAYOUT,
                  "_not_none": functools.partial(operator.is_not, None), "_digest": _array_digest,
                  "_hooks": _hooks, "_dtype": torch.get_default_dtype}


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
            return ("tensor", Ref(v), v._version, tuple(v.shape), v.dtype, v.device)
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
            return ("pymodule", Ref(v))
        if type(v).__module__ == "numpy" and hasattr(v, "tobytes"):
            self._check_size(getattr(v, "size", 0))
            digest = _array_digest(v)
            if c is not None:
                c.fail_if(f"_digest({src}) != {c.const(digest)}")
            return ("array", *digest)
        if _library(type(v)) or not hasattr(v, "__dict__"):
            return ("object", Ref(v))
        return ("instance", self._class(type(v), self._read(src, "", "type({})")),
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
            if isinstance(v, (list, tuple)):
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
        names = sorted(_code_names(code))
        g = None
        if c is not None:
            c.fail_if(f"{src}.__code__ is not {c.const(code)}")
            g = c.const(glb)  # a function's globals are always the same dictionary
        read = []
        for name in names:
            if name not in glb:
                if c is not None:
                    c.fail_if(f"{name!r} in {g}")
                continue
            value = glb[name]
            if isinstance(value, types.ModuleType):  # mod.attr: the attributes this code may read, by identity
                members = vars(value)
                attrs = tuple((a, Ref(members[a])) for a in names if a != name and a in members)
                if c is not None:
                    c.same(c.read(f"{g}[{name!r}]"), value)
                    m = c.read(f"{c.const(members)}")
                    for a in names:
                        if a == name:
                            continue
                        if a in members:
                            c.same(c.read(f"{m}.get({a!r})"), members[a])
                        else:
                            c.fail_if(f"{a!r} in {m}")
                read.append((name, Ref(value), attrs))
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

    def _class(self, cls: type, src: str | None = None) -> Any:
        c = self.check if src is not None else None
        known = _library_class(cls)
        if known is not None:  # torch's own classes: compared by identity only, every time
            if c is not None:
                c.fail_if(f"{src} is not {c.const(cls)}")
            return known
        if c is not None:  # (the class itself, its bases in order)
            c.fail_if(f"{src}.__mro__ != {c.const(cls.__mro__)}")
        parts = []
        for base in cls.__mro__:
            if base is not object and c is not None:  # (the module name decides what is the library's)
                c.fail_if(f"getattr({c.const(base)}, '__module__', None) != "
                          f"{c.const(getattr(base, '__module__', None))}")
            if base is object or _stable(base):
                parts.append(Ref(base))
                continue
            d = None
            if c is not None:
                d = c.read(f"{c.const(base)}.__dict__")
                c.fail_if(f"{d}.keys() != {c.const(frozenset(vars(base)))}")
            parts.append((Ref(base), tuple((k, self(v, self._read(d, f"[{k!r}]") if d is not None else None))
                                           for k, v in sorted(vars(base).items()) if k not in _IGNORED_CLASS_KEYS)))
        return ("class", tuple(parts))

    def _module(self, m: nn.Module, src: str | None) -> Any:
        c = self.check if src is not None else None
        if isinstance(m, torch.jit.ScriptModule):
            layout = _tensor_layout(m)
            if c is not None:
                c.fail_if(f"_tensor_layout({src}) != {c.const(layout)}")
            return ("script", Ref(m), layout)
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
            state += [(k, t is None or (Ref(t), t.shape, t.dtype, t.device)) for k, t in tensors.items()]
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


def _tensor_layout(m: nn.Module) -> tuple:
    return tuple((name, tuple(t.shape), t.dtype, t.device)
                 for name, t in list(m.named_parameters()) + list(m.named_buffers()))


_CHECK_GLOBALS["_tensor_layout"] = _tensor_layout

_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_forward_hooks_with_kwargs",
                 "_global_module_registration_hooks")


def _global_state() -> tuple:
    """Process-wide settings a traced graph depends on: the default dtype and the global module hooks."""
    module = nn.modules.module
    return torch.get_default_dtype(), tuple(getattr(module, name, None) for name in _GLOBAL_HOOKS)


_GUARDS = WeakCache("guard checks", max_entries=256)  # model -> [check or None, stamp, calls to wait, misses]
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
        value = walked_stamp(model)
        if value is not None:
            with contextlib.suppress(TypeError):
                _GUARDS.put(model, [None, value, 0, 0])
        return value
    check, last, wait, misses = known
    emit = wait <= 0
    value, written = _walk(model, emit)
    if value is None:
        _GUARDS.pop(model)
        return None
    if value != last:  # changed: a check is written when a walk finds this stamp again
        known[:] = [None, value, max(wait - 1, 0), 0]
        return value
    misses += check is not None  # the check failed, yet nothing the stamp holds changed
    new = written.build() if written is not None and misses < _MISSES else None
    if new is not None and not new():  # failing at once: it re-reads something that changes by itself
        new = None
    if emit:
        known[:] = [new, last, 0 if new is not None else _RETRY, misses if new is not None else 0]
    else:
        known[2] = wait - 1
    return last


def walked_stamp(model: Any) -> Any:
    """``stamp`` by a full walk of everything the model's code reads (no check reused or written)."""
    return _walk(model, False)[0]


def _walk(model: Any, emit: bool) -> tuple[Any, _Check | None]:
    """(the stamp, the check the walk wrote, not compiled yet: None when it could not or was not asked to)."""
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
        where = None
        if c is not None:
            c.fail_if(f"_dtype() is not {c.const(dtype)}")
            if all(type(h) in _EMPTY_CONTAINERS and not h for h in hooks):  # (the usual case, in one line)
                c.fail_if(f"tuple(map(type, _hooks())) != {c.const(tuple(map(type, hooks)))} or any(_hooks())")
            else:
                where = c.read("_hooks()")
        value = (dtype, walk(hooks, where), walk(model, root))
    except (Uncomparable, RecursionError):
        return None, None
    except RuntimeError:  # a container changed while walked (a weak dictionary losing an entry): not comparable
        return None, None
    return value, walk.check


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
