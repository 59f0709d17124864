"""The one graph runner: a traced graph compiled into one Python function that pushes values through it, for any rule
table (``RuleTable``: exact jets, certified Taylor models, or plain values).

Each node becomes one statement: a rule call when an argument carries the expansion (checked at run time: a rule may
return a plain tensor, and nodes computed from parameters alone never see one), the aten op itself otherwise. Values
live in local variables and are deleted after their last use, so the peak is what an interpreter freeing its slots
would hold. The function is generated once per (graph, table, first node) and cached with the graph (``run``); per
call there is no argument lookup, no dispatch on node kinds and no dictionary of values.

Before code generation an FX rewrite pass (``fuse_linear_layers``) replaces each 1-d linear layer (``t``,
``unsqueeze``, ``mm``, ``squeeze``, ``add``: what ``nn.Linear`` on one point records) by one ``linear_1d`` node, a
declared op whose exact rule is one matmul of the jet's coefficients with the bias added to its value in place.
"""

from __future__ import annotations

import keyword
import linecache
import math
import operator
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count

import torch

from hope_engine.algebra.jet import Jet, holds
from hope_engine.capture import trace
from hope_engine.errors import ExpansionError
from hope_engine.ops import rules
from hope_engine.ops.fused import linear_1d

aten = torch.ops.aten


@dataclass(frozen=True)
class RuleTable:
    """What a generated program calls at a node whose arguments carry the expansion: ``lookup(target)`` is the rule,
    called as ``rule(ctx, target, *args, **kwargs)``; ``carries(value)`` says whether a value carries the expansion;
    ``fuse``: run the linear-layer rewrite first (its fused op needs a rule in the table)."""

    name: str
    lookup: Callable
    carries: Callable
    fuse: bool = True


EXACT = RuleTable("exact", rules.lookup, holds)
PLAIN = RuleTable("plain", lambda target: None, lambda value: False, fuse=False)  # the model's own values


_counter = count()


class _Emitter:
    """Python source for a graph: node values as locals ``v<i>``, constants and callables as names in ``ns``."""

    def __init__(self, graph: torch.fx.Graph, gm, table: RuleTable):
        self.index = {node: i for i, node in enumerate(graph.nodes)}
        self.ns: dict = {"_J": table.carries, "_gm": gm}
        self.table = table
        self._names: dict = {}

    def name(self, obj, prefix: str = "_k") -> str:
        """A namespace name bound to obj (one per object identity)."""
        key = id(obj)
        if key not in self._names:
            self._names[key] = f"{prefix}{len(self._names)}"
            self.ns[self._names[key]] = obj
        return self._names[key]

    def var(self, node) -> str:
        return f"v{self.index[node]}"

    def expr(self, a) -> str:
        """Source of an argument: nodes by their local, containers element-wise, anything else a bound constant."""
        if isinstance(a, torch.fx.Node):
            return self.var(a)
        if type(a) in (int, bool, str, type(None)) or (type(a) is float and math.isfinite(a)):
            return repr(a)
        if isinstance(a, tuple):
            items = "(" + "".join(self.expr(e) + ", " for e in a) + ")"
            return f"{self.name(type(a))}(*{items})" if hasattr(a, "_fields") else items
        if isinstance(a, list):  # immutable_list too: a plain list, as the fx interpreter passes it
            return "[" + ", ".join(self.expr(e) for e in a) + "]"
        if isinstance(a, dict):
            return "{" + ", ".join(f"{self.name(k)}: {self.expr(v)}" for k, v in a.items()) + "}"
        if isinstance(a, slice):
            return f"slice({self.expr(a.start)}, {self.expr(a.stop)}, {self.expr(a.step)})"
        return self.name(a)

    def arguments(self, node) -> list[str]:
        """A node's positional and keyword arguments, as source."""
        return [self.expr(a) for a in node.args] + [
            f"{k}={self.expr(v)}" if k.isidentifier() and not keyword.iskeyword(k) else f"**{{{k!r}: {self.expr(v)}}}"
            for k, v in node.kwargs.items()]


def _linear_chains(graph: torch.fx.Graph) -> dict:
    """{last node: (nodes of the chain, x, (w node, whether it is transposed here), bias node or None, whether the bias,
    the product and the sum have one shape and dtype)} for each 1-d linear layer
    ``[t(W) ->] mm(unsqueeze(x, 0), w) -> squeeze(0) [-> add(bias)]`` whose intermediates have no other user."""
    chains = {}
    for mm in graph.nodes:
        if mm.target is not aten.mm.default or len(mm.users) != 1 or mm.kwargs:
            continue
        un, w = mm.args
        sq = next(iter(mm.users))
        if not (isinstance(un, torch.fx.Node) and un.target is aten.unsqueeze.default and un.args[1:] == (0,)
                and len(un.users) == 1 and not un.kwargs and isinstance(w, torch.fx.Node)
                and sq.target is aten.squeeze.dim and sq.args[1:] == (0,) and not sq.kwargs):
            continue
        x = un.args[0]
        val = x.meta.get("val") if isinstance(x, torch.fx.Node) else None
        if not isinstance(val, torch.Tensor) or val.dim() != 1:
            continue
        nodes = [un, mm, sq]
        weight = (w, False)
        if w.target is aten.t.default and len(w.users) == 1 and isinstance(w.args[0], torch.fx.Node):
            nodes.insert(0, w)
            weight = (w.args[0], True)
        bias, last = None, sq
        add = next(iter(sq.users)) if len(sq.users) == 1 else None
        if add is not None and add.target is aten.add.Tensor and not add.kwargs and len(add.args) == 2:
            other = add.args[1] if add.args[0] is sq else add.args[0]
            if isinstance(other, torch.fx.Node) and other is not sq:
                bias, last = other, add
                nodes.append(add)
        layouts = {_layout(n) for n in (bias, sq, last)} if bias is not None else {None}
        chains[last] = (nodes, x, weight, bias, len(layouts) == 1 and None not in layouts)
    return chains


def _layout(node) -> tuple | None:
    val = node.meta.get("val")
    return (tuple(val.shape), val.dtype) if isinstance(val, torch.Tensor) else None


def fuse_linear_layers(graph: torch.fx.Graph, after: int = 0) -> tuple[torch.fx.Graph, dict]:
    """An FX rewrite pass: a copy of ``graph`` in which every 1-d linear chain (``_linear_chains``) whose nodes all sit
    at or after position ``after`` is one ``linear_1d`` node. Returns (the copy, {node of the copy: its original})."""
    nodes = list(graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    chains = {last: c for last, c in _linear_chains(graph).items() if min(position[n] for n in c[0]) >= after}
    inner = {n for c in chains.values() for n in c[0][:-1]}
    out = torch.fx.Graph()
    env: dict = {}
    for n in nodes:
        if n in inner:
            continue
        if n in chains:
            _, x, (w, transposed), bias, fitting = chains[n]
            args = (env[x], env[w], env[bias] if bias is not None else None)
            env[n] = out.call_function(linear_1d, args, {"transposed": transposed, "fits": fitting})
            env[n].meta = dict(n.meta)
        else:
            env[n] = out.node_copy(n, env.__getitem__)
    return out, {new: old for old, new in env.items()}


def compile_graph(gm: torch.fx.GraphModule, input_index: int, start=None, table: RuleTable = EXACT,
                  keep: bool = False) -> Callable:
    """``fn(input, state, ctx, values)`` running the graph from node ``start`` (default: the first) to its output,
    each node carrying the expansion by its rule in ``table``.

    Placeholder i is ``input`` for i == input_index, ``state[i]`` otherwise; with ``start``, a node before it that
    a later node reads is taken from ``values`` ({node: value}, computed by the caller). ``keep``: return
    (output, {node: value} for every node) instead of the output (nothing deleted, no fusion)."""
    original = list(gm.graph.nodes)
    first = original.index(start) if start is not None else 0
    if table.fuse and not keep:
        graph, origin = fuse_linear_layers(gm.graph, first)
    else:
        graph, origin = gm.graph, {n: n for n in original}
    em = _Emitter(graph, gm, table)
    nodes = list(graph.nodes)
    first = next((i for i, n in enumerate(nodes) if origin[n] is start), 0) if start is not None else 0
    later = nodes[first:]
    placeholders = [n for n in nodes if n.op == "placeholder"]
    # values that never carry the expansion: the parameters and buffers, graph constants
    plain = {n for i, n in enumerate(placeholders) if i != input_index} | {n for n in nodes if n.op == "get_attr"}
    for n in nodes:  # an op of plain values runs as itself, giving a plain value
        if n.op == "call_function" and n.all_input_nodes and all(a in plain for a in n.all_input_nodes):
            plain.add(n)
    units = [n for n in later if n.op != "placeholder"]
    read = {a for n in units for a in n.all_input_nodes}
    last_use = {}
    for k, n in enumerate(units):
        for a in n.all_input_nodes:
            last_use[a] = k
    lines = ["def _run(_x, _state, _ctx, _values):"]
    for i, node in enumerate(placeholders):
        if node in read or keep:
            lines.append(f"    {em.var(node)} = " + ("_x" if i == input_index else f"_state[{i}]"))
    for node in nodes[:first]:
        if node.op != "placeholder" and node in read:
            lines.append(f"    {em.var(node)} = _values[{em.name(origin[node], '_n')}]")
    for k, node in enumerate(units):
        if node.op == "output":
            result = em.expr(node.args[0])
            if keep:
                kept = ", ".join(f"{em.name(origin[n], '_n')}: {em.var(n)}" for n in nodes if n.op != "output")
                result = f"{result}, {{{kept}}}"
            lines.append(f"    return {result}")
            break
        if node.op == "get_attr":
            lines.append(f"    {em.var(node)} = getattr(_gm, {node.target!r})")
        elif node.op != "call_function":
            raise RuntimeError(f"unsupported graph node {node.op} ({node.target})")
        else:
            lines += _emit_node(em, node, plain, "    ")
        dead = [a for a in node.all_input_nodes if last_use.get(a) == k and a.op != "placeholder"]
        if dead and not keep:
            lines.append(f"    del {', '.join(em.var(a) for a in dict.fromkeys(dead))}")
    else:
        raise RuntimeError("graph has no output node")
    source = "\n".join(lines) + "\n"
    filename = f"<hope graph {next(_counter)}>"
    exec(compile(source, filename, "exec"), em.ns)
    fn = em.ns["_run"]
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # readable tracebacks
    weakref.finalize(fn, linecache.cache.pop, filename, None)  # while the function lives (a per-point graph's: briefly)
    return fn


def _emit_node(em: _Emitter, node, plain: set, indent: str) -> list[str]:
    target = node.target
    if target is operator.getitem:
        return [f"{indent}{em.var(node)} = {em.expr(node.args[0])}[{em.expr(node.args[1])}]"]
    may_hold = [a for a in dict.fromkeys(node.all_input_nodes) if a not in plain]
    args = em.arguments(node)
    call = f"{em.name(target, '_t')}({', '.join(args)})"
    rule = em.table.lookup(target)
    if not may_hold or rule is None:
        return [f"{indent}{em.var(node)} = {call}"]
    rule = f"{em.name(rule, '_r')}({', '.join(['_ctx', em.name(target, '_t'), *args])})"
    test = " or ".join(f"_J({em.var(a)})" for a in may_hold)
    return [f"{indent}{em.var(node)} = {rule} if {test} else {call}"]


def single_output(out):
    """The one tensor, jet or Taylor model in a run's output structure (``trace.require_one_output`` checked the graph
    returns one; a structure holding another number of them is refused here too)."""
    leaves = [o for o in (out if isinstance(out, (list, tuple)) else [out]) if isinstance(o, (Jet, torch.Tensor))]
    if len(leaves) != 1:
        raise ExpansionError(f"the model returns {len(leaves)} tensors; expand a function that returns one, "
                             "e.g. lambda x: model(x)[0]")
    return leaves[0]


def run(traced: trace.TracedModel, input_value, ctx, resume_at=None, values: dict | None = None,
        table: RuleTable = EXACT, keep: bool = False):
    """Push the input (a jet, a Taylor model, a tensor: what ``table`` runs) through the graph; returns the output
    structure with the table's values in place of tensors (with ``keep``: and every node's value).

    ``resume_at`` (a node) with ``values`` ({node: value} for every earlier node a later one reads): start there, the
    nodes before it computed by the caller (the receptive-field windows of ``methods.windows``).

    The graph runs as one generated function (``compile_graph``), made once per (graph, table, first node) and
    cached with the graph."""
    fn = trace.derived(traced, ("program", table.name, resume_at, keep),
                       lambda: compile_graph(traced.graph_module, traced.input_index, resume_at, table, keep))
    return fn(input_value, traced.state_values(), ctx, values)
