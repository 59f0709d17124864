"""A traced graph compiled into one Python function that pushes jets through it (the interpreter, without a loop).

Each node becomes one statement: a rule call when an argument holds a jet (checked at run time: a rule may return a
plain tensor, and nodes computed from parameters alone never see a jet), the aten op itself otherwise. Values live in
local variables and are deleted after their last use, so the peak is what an interpreter freeing its slots would hold.
The function is generated once per (graph, first node) and cached with the graph (``run``); per call there is no
argument lookup, no dispatch on node kinds and no dictionary of values.

A 1-d linear layer (``t``, ``unsqueeze``, ``mm``, ``squeeze``, ``add``: what ``nn.Linear`` on one point records)
runs as one matmul of the jet's coefficients with the bias added to its value in place (``vector_linear``): the same
numbers in one step instead of five.
"""

from __future__ import annotations

import keyword
import linecache
import math
import operator
import weakref
from collections.abc import Callable
from itertools import count

import torch

from hope_engine.algebra.jet import Jet, add_constant, fits
from hope_engine.capture import trace
from hope_engine.ops import rules

aten = torch.ops.aten


def holds_jet(v) -> bool:
    """Whether v is a jet or a container holding one (a split's outputs)."""
    if isinstance(v, Jet):
        return True
    if isinstance(v, (list, tuple)):
        return any(holds_jet(e) for e in v)
    if isinstance(v, dict):
        return any(holds_jet(e) for e in v.values())
    return False


def vector_linear(x: Jet, w: torch.Tensor, bias: torch.Tensor | None, bias_fits: bool = False) -> Jet:
    """squeeze(mm(unsqueeze(x, 0), w), 0) + bias for a jet x of one vector: the coefficients (M, in) times w, the bias
    added to the value row of that fresh product (as ``rules`` adds it after a matmul). ``bias_fits``: the graph's
    shapes and dtypes show that the bias has the output's shape and dtype."""
    out = Jet(torch.matmul(x.c, w), x.basis)
    if bias is None:
        return out
    if bias_fits or (bias.dtype == out.c.dtype and fits(bias.shape, out.c.shape[1:])):
        out.c[0].add_(bias)
        return out
    return add_constant(out, bias)


_counter = count()


class _Emitter:
    """Python source for a graph: node values as locals ``v<i>``, constants and callables as names in ``ns``."""

    def __init__(self, gm: torch.fx.GraphModule):
        self.index = {node: i for i, node in enumerate(gm.graph.nodes)}
        self.ns: dict = {"Jet": Jet, "_J": holds_jet, "_gm": gm, "_linear": vector_linear, "torch": torch}
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


def _linear_chains(gm: torch.fx.GraphModule) -> dict:
    """{last node: (nodes of the chain, x, (w node, whether it is transposed here), bias node or None, whether the bias,
    the product and the sum have one shape and dtype)} for each 1-d linear layer
    ``[t(W) ->] mm(unsqueeze(x, 0), w) -> squeeze(0) [-> add(bias)]`` whose intermediates have no other user."""
    chains = {}
    for mm in gm.graph.nodes:
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


def compile_graph(gm: torch.fx.GraphModule, input_index: int, start=None) -> Callable:
    """``fn(input_jet, state, ctx, values)`` running the graph from node ``start`` (default: the first) to its output.

    Placeholder i is ``input_jet`` for i == input_index, ``state[i]`` otherwise; with ``start``, a node before it that
    a later node reads is taken from ``values`` ({node: value}, computed by the caller)."""
    em = _Emitter(gm)
    nodes = list(gm.graph.nodes)
    first = nodes.index(start) if start is not None else 0
    later = nodes[first:]
    placeholders = [n for n in nodes if n.op == "placeholder"]
    # values that never hold a jet: the parameters and buffers, graph constants
    plain = {n for i, n in enumerate(placeholders) if i != input_index} | {n for n in nodes if n.op == "get_attr"}
    for n in nodes:  # an op of plain values runs as itself, giving a plain value
        if n.op == "call_function" and n.all_input_nodes and all(a in plain for a in n.all_input_nodes):
            plain.add(n)
    # emission units: a whole 1-d linear chain at its last node (none cut by ``start``), every other node alone
    position = {n: i for i, n in enumerate(nodes)}
    chains = {last: c for last, c in _linear_chains(gm).items() if min(position[n] for n in c[0]) >= first}
    inner = {n for c in chains.values() for n in c[0][:-1]}
    units = [chains[n][0] if n in chains else [n] for n in later if n not in inner and n.op != "placeholder"]
    read = {a for unit in units for n in unit for a in n.all_input_nodes}
    last_use = {}
    for k, unit in enumerate(units):
        for n in unit:
            for a in n.all_input_nodes:
                last_use[a] = k
    lines = ["def _run(_x, _state, _ctx, _values):"]
    for i, node in enumerate(placeholders):
        if node in read:
            lines.append(f"    {em.var(node)} = " + ("_x" if i == input_index else f"_state[{i}]"))
    for node in nodes[:first]:
        if node.op != "placeholder" and node in read:
            lines.append(f"    {em.var(node)} = _values[{em.name(node, '_n')}]")
    for k, unit in enumerate(units):
        node = unit[-1]
        if node.op == "output":
            lines.append(f"    return {em.expr(node.args[0])}")
            break
        if node.op == "get_attr":
            lines.append(f"    {em.var(node)} = getattr(_gm, {node.target!r})")
        elif node.op != "call_function":
            raise RuntimeError(f"unsupported graph node {node.op} ({node.target})")
        elif len(unit) > 1:
            lines += _emit_chain(em, chains[node], plain)
        else:
            lines += _emit_node(em, node, plain, "    ")
        dead = [a for n in unit for a in n.all_input_nodes
                if last_use.get(a) == k and a.op != "placeholder" and a not in unit]
        if dead:
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
    if not may_hold:
        return [f"{indent}{em.var(node)} = {call}"]
    rule = f"{em.name(rules.lookup(target), '_r')}({', '.join(['_ctx', em.name(target, '_t'), *args])})"
    test = " or ".join(f"_J({em.var(a)})" for a in may_hold)
    return [f"{indent}{em.var(node)} = {rule} if {test} else {call}"]


def _emit_chain(em: _Emitter, chain: tuple, plain: set) -> list[str]:
    """A 1-d linear layer: one ``vector_linear`` when x is a jet and the weight and bias are tensors; otherwise the
    chain's nodes one by one (their intermediates deleted after)."""
    nodes, x, (w, transposed), bias, fitting = chain
    weight = f"{em.var(w)}.t()" if transposed else em.var(w)
    b = (em.var(bias) + (", True" if fitting else "")) if bias is not None else "None"
    test = f"type({em.var(x)}) is Jet" + "".join(f" and isinstance({em.var(n)}, torch.Tensor)"
                                                 for n in (w, bias) if n is not None)
    out = [f"    if {test}:", f"        {em.var(nodes[-1])} = _linear({em.var(x)}, {weight}, {b})", "    else:"]
    for n in nodes:
        out += _emit_node(em, n, plain, "        ")
    out.append(f"        del {', '.join(em.var(n) for n in nodes[:-1])}")
    return out


def run(traced: trace.TracedModel, input_jet: Jet | None, ctx: rules.Context, resume_at=None,
        values: dict | None = None):
    """Push the input jet through the graph; returns the output structure with jets in place of tensors.

    ``resume_at`` (a node) with ``values`` ({node: value} for every earlier node a later one reads): start there, the
    nodes before it computed by the caller (the receptive-field windows of ``sparse_pure``).

    The graph runs as one generated function (``compile_graph``), made once per (graph, first node) and
    cached with the graph."""
    fn = trace.derived(traced, ("program", resume_at),
                 lambda: compile_graph(traced.graph_module, traced.input_index, resume_at))
    return fn(input_jet, traced.state_values(), ctx, values)
