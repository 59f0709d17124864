"""The package's layers: its import graph, built from the AST, has no cycles and no import upward."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "hope_engine"
ROOT_DOC = PACKAGE.parent / "docs" / "ARCHITECTURE.md"

# Bottom to top: a module may import modules of its own layer or of a layer below, never above.
LAYERS = ["base", "algebra", "ops", "capture", "run", "certified", "methods", "api", "analysis", "io", "package"]
BASE = {"errors", "caches", "models", "options"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    return "base" if parts[1] in BASE else parts[1]


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        here = module.split(".") if is_package else module.split(".")[:-1]
        here = here[: len(here) - (node.level - 1)]
        base = ".".join(here + ([node.module] if node.module else []))
    return [base] + [f"{base}.{a.name}" for a in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (at any depth: deferred imports count)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = _resolve(module, path.name == "__init__.py", node)
            else:
                continue
            targets |= {n for n in names if n in files and n != module}
        graph[module] = targets
    return graph


def test_every_module_sits_in_a_named_layer():
    assert {_layer(m) for m in import_graph()} <= set(LAYERS)


def test_no_import_upward():
    upward = [f"{m} ({_layer(m)}) imports {t} ({_layer(t)})" for m, ts in import_graph().items() for t in ts
              if LAYERS.index(_layer(t)) > LAYERS.index(_layer(m))]
    assert not upward, "\n".join(sorted(upward))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            # a package's __init__ re-exporting its own modules is not a cycle of the modules
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _without_package_parents(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first: an edge from a package's own module to the
    package (its ``__init__`` re-exports) is that machinery, not a dependency of the module."""
    return {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}


def test_no_import_cycles():
    cycles = _cycles(_without_package_parents(import_graph()))
    assert not cycles, cycles


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_architecture_names_only_existing_modules():
    """Every `hope_engine/...` path and `hope_engine.x.y` module docs/ARCHITECTURE.md names exists."""
    text = ROOT_DOC.read_text()
    paths = set(re.findall(r"hope_engine/[\w/]+(?:\.py)?", text))
    missing = [p for p in paths if not (PACKAGE.parent / p).exists() and not (PACKAGE.parent / (p + ".py")).exists()]
    modules = set(re.findall(r"`(hope_engine(?:\.\w+)+)", text))
    files = set(import_graph())
    unknown = [m for m in modules if m not in files and m.rsplit(".", 1)[0] not in files]
    assert not missing and not unknown, (missing, unknown)
    assert paths, "the architecture page names the modules by path"


@pytest.mark.parametrize("layer", LAYERS[1:-1])
def test_each_layer_is_a_folder(layer):
    assert (PACKAGE / layer / "__init__.py").exists()
