"""Every cache of the engine is a registered, bounded one (``hope_engine.caches``): ``clear_all()`` empties them all,
and a scan of hope_engine/ finds no other module-level cache (a new one cannot be added without registering it, or
naming it below as a table that is not a cache)."""

from __future__ import annotations

import ast
import collections
import importlib
import pkgutil
import weakref
from pathlib import Path

import pytest
import torch
from torch import nn

import hope_engine
from hope_engine import caches, certify, expand

PACKAGE = Path(hope_engine.__file__).parent

# Module-level mutable containers the code writes into after import that are not caches: registries filled once as
# modules load (rules, declarations), and process state. Each with the reason it may stay a plain container.
NOT_CACHES = {
    ("hope_engine.caches", "_REGISTRY"): "the registry of caches itself (weak references, one per cache name)",
    ("hope_engine.caches", "_AVAILABLE"): "(time, bytes) of the last memory reading: one value, not a cache",
    ("hope_engine.ops.rules", "RULES"): "the rule table: one entry per declared op, filled at import",
    ("hope_engine.ops.rules", "VALUE_ONLY"): "the value-only ops: filled at import",
    ("hope_engine.ops.spec", "SPECS"): "the op declarations: filled at import",
    ("hope_engine.certified.rules", "TM_RULES"): "the certified rule table: filled at import",
    ("hope_engine.methods.paper_rule", "BACKWARD"): "the paper rule's backward table: filled at import",
    ("hope_engine.algebra.kernels", "_choice"): "the backend setting (set_backend): one value",
    ("hope_engine.algebra.kernels.native", "_state"): "the loaded kernel library and its load error: one value",
    ("hope_engine.capture.sessions", "_EVAL"): "modules inside a run now, counted (the first in saves their "
                                               "training flags, the last out restores): process state",
    ("hope_engine.capture.sessions", "_ATTRIBUTES"): "the same for their swapped attributes: process state",
    ("hope_engine.capture.sessions", "_MODULE_LOCKS"): "one lock per live module, weakly keyed: process state",
    ("hope_engine.algebra.kernels.native", "_ENTRIES"): "symbols of the loaded library, one per kernel name and "
                                                         "dtype: bounded by the library's fixed set of kernels",
}

_CONTAINERS = (dict, list, set, collections.deque)
_WEAK = (weakref.WeakKeyDictionary, weakref.WeakValueDictionary, weakref.WeakSet)
_WRITES = {"setdefault", "update", "pop", "popitem", "clear", "append", "extend", "insert", "add", "discard",
           "remove", "move_to_end", "appendleft", "__setitem__", "__delitem__"}


def _modules() -> dict[str, Path]:
    found = {"hope_engine": PACKAGE / "__init__.py"}
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="hope_engine."):
        spec = importlib.util.find_spec(info.name)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            found[info.name] = Path(spec.origin)
    return found


MODULES = _modules()
TREES = {name: ast.parse(path.read_text()) for name, path in MODULES.items()}


def _name(node: ast.AST) -> str | None:
    """``X`` of ``X`` or ``anything.X`` (a module-level name, read in its module or through it)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _written_in_functions() -> set[str]:
    """Names that some function of hope_engine writes into: ``X[k] = v``, ``del X[k]``, ``X.append(...)`` and the
    like (``X`` bare or as ``module.X``); module-level statements (building a table at import) do not count."""
    written: set[str] = set()
    for tree in TREES.values():
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            for node in ast.walk(fn):
                targets = []
                if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                elif isinstance(node, ast.Delete):
                    targets = node.targets
                for t in targets:
                    if isinstance(t, ast.Subscript) and _name(t.value):
                        written.add(_name(t.value))
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in _WRITES and _name(node.func.value)):
                    written.add(_name(node.func.value))
    return written


def _top_level_names(tree: ast.Module) -> list[str]:
    names = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def _registered(value) -> bool:
    return any(value is c for c in caches.caches().values())


def test_no_module_level_cache_escapes_the_registry():
    """A module-level dict, list, set or weak mapping that the engine's functions write into is a cache unless it is
    named in NOT_CACHES; so are the containers such an object holds (a class wrapping a dict), and any
    ``functools.lru_cache`` / ``functools.cache`` (use ``caches.memoize``). Registered caches pass."""
    written = _written_in_functions()
    found = []
    for name, tree in TREES.items():
        module = importlib.import_module(name)
        for node in ast.walk(tree):
            for deco in getattr(node, "decorator_list", []):
                target = deco.func if isinstance(deco, ast.Call) else deco
                if _name(target) in ("lru_cache", "cache"):
                    found.append(f"{name}.{node.name}: @{_name(target)} (use caches.memoize)")
        for attr in _top_level_names(tree):
            value = getattr(module, attr, None)
            if (name, attr) in NOT_CACHES or _registered(value):
                continue
            if isinstance(value, _WEAK) or (isinstance(value, _CONTAINERS) and attr in written):
                found.append(f"{name}.{attr}: a {type(value).__name__} written after import")
            elif type(value).__module__.startswith("hope_engine") and hasattr(value, "__dict__"):
                for key, inner in vars(value).items():  # an engine object holding a cache of its own
                    if isinstance(inner, _WEAK + _CONTAINERS) and not _registered(inner):
                        found.append(f"{name}.{attr}.{key}: a {type(inner).__name__} inside a module-level object")
    assert not found, "unregistered caches:\n" + "\n".join(found)


def test_the_scan_finds_what_it_looks_for(tmp_path, monkeypatch):
    """The scan itself: a module-level dict a function fills, and an lru_cache, are reported."""
    source = ("import functools\n_SEEN = {}\n\ndef remember(k, v):\n    _SEEN[k] = v\n\n"
              "@functools.lru_cache(maxsize=8)\ndef square(n):\n    return n * n\n")
    tree = ast.parse(source)
    monkeypatch.setitem(TREES, "hope_engine.caches", tree)  # (the scan reads its trees from TREES)
    assert "_SEEN" in _written_in_functions()
    decorated = [n.name for n in ast.walk(tree) for d in getattr(n, "decorator_list", [])
                 if _name(d.func if isinstance(d, ast.Call) else d) == "lru_cache"]
    assert decorated == ["square"]


def test_not_caches_lists_only_names_that_exist():
    for module, attr in NOT_CACHES:
        assert hasattr(importlib.import_module(module), attr), f"{module}.{attr} is gone: drop it from NOT_CACHES"


def _fill_every_cache():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x0 = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    expand(net, x0, 4)
    expand(lambda x: net(x), x0, 3)
    expand(lambda a, b: net(torch.cat([a, b], -1)), (x0[:, :1], x0[:, 1:]), 3)  # the input wrappers
    expand(net, x0, 3, output=lambda out: out[..., 0])
    certify(nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double(), x0, 3, radius=0.05)
    return net


def test_clear_all_empties_every_registered_cache():
    net = _fill_every_cache()
    live = caches.caches()
    for name in ("traced graphs", "guard checks", "guard library classes", "model facts", "input wrappers",
                 "input templates", "derivative polynomials", "bases", "product tables"):
        assert name in live, f"{name} is not registered"
        assert len(live[name]) > 0, f"{name} was not filled: the test no longer exercises it"
    assert caches.cache_bytes() > 0
    caches.clear_all()
    assert {name: len(c) for name, c in caches.caches().items() if len(c)} == {}
    assert caches.cache_bytes() == 0
    x0 = torch.tensor([[0.1, 0.4]], dtype=torch.float64)
    with torch.no_grad():  # and everything is rebuilt on the next call
        torch.testing.assert_close(expand(net, x0, 2).coefficients[0].reshape(-1), net(x0).reshape(-1))


def test_weak_caches_are_bounded_and_hold_no_key():
    cache = caches.WeakCache("test weak", max_entries=3)
    keys = [nn.Linear(1, 1) for _ in range(5)]
    for i, k in enumerate(keys):
        cache.put(k, i)
    assert len(cache) == 3 and cache.get(keys[0]) is None and cache.get(keys[4]) == 4
    ref = weakref.ref(keys[4])
    del keys[4], k
    import gc
    gc.collect()
    assert ref() is None and len(cache) == 2
    with pytest.raises(TypeError):
        cache.get([])  # not weakly referable: the caller goes without the cache
    cache.put(keys[3], "big", nbytes=cache.max_bytes + 1)  # larger than the bound: not kept
    assert keys[3] not in cache
    assert "test weak" in caches.caches()
    cache.clear()
    assert len(cache) == 0
