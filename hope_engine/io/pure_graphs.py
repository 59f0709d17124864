"""What a saved graph may run: the allow-list of pure tensor math every loaded graph is checked against.

Registered operators include ``aten::from_file`` (which maps a file into a tensor, shared: writes go to the file),
``aten::save``, printing and random draws, so after loading and before anything from the file runs, every graph is
checked against an allow-list of pure tensor math, and the first op outside it is refused by name: the graph of an
exported program and of each of its subgraphs (call targets; ``refuse_impure_program``, and
``refuse_callable_arguments`` for Python callables passed as arguments), and for TorchScript every method and hook of
every submodule (the top ``forward`` with all it calls inlined; the rest each on its own; ``refuse_impure_script``).
TorchScript runs a module's ``__setstate__`` inside ``torch.jit.load``, before any check can look, so archives whose
code defines one are refused unread (``archive_checks``). The rule comes from each operator's schema and tags, not a
list of names (``op_refusal``):

- only ATen operators (``aten::``; no other namespace: quantized, distributed, profiler, custom libraries);
- no argument named ``filename`` (``from_file``, ``save``) and no ``Storage`` argument;
- nothing random: tagged ``nondeterministic_seeded`` or taking a ``Generator``, unless its randomness is switched off
  by values known before running: a ``train``/``training`` argument that is False (a literal, or a module's
  ``training`` flag, False after loading: a train-mode dropout is then the engine's TrainingModeWarning/refusal) or a
  dropout probability (``p``, ``dropout``, ``dropout_p``) of 0. So dropout, RNNs and attention load; ``randn`` does not;
- an op that returns nothing runs only for an effect and is refused, except checks (``_assert_*``,
  ``sym_constrain_range*``, ``_linalg_check_errors``) and ``warn``;
- in-place and ``out=`` ops (schema arguments marked written, ``Tensor(a!)``) only on memory the graph made itself: a
  may-alias analysis follows views (results annotated as aliasing an argument), control flow and containers from
  parameters, buffers, attributes, constants and the top forward's inputs, and refuses a write that may reach any;
  an exported program may not write state back through its signature either;
- explicitly, the few ops whose schema hides what they do to memory (``set_``, ``_copy_from``, ``_reshape_alias``
  with unchecked bounds) and sparse/nested tensor constructors that trust their index tensors.

Beyond operators an exported program may call only the higher-order operators ``cond``, ``while_loop`` and the
grad-mode/autocast wrappers (their subgraphs are checked too) and integer/shape builtins (``operator``, ``math``,
``torch.sym_*``); a TorchScript graph only structural nodes (constants, attribute reads, containers, ``if``/loops, type
queries, raise) and ``with torch.no_grad()`` blocks (its methods, compiled from the archive too, checked to do
nothing but read and set the grad mode), not ``print``, attribute assignment, other
``with`` blocks, objects, forks or calls that could not be inlined. These checks run with ``trust_pickle=True`` too
(it allows pickles in the file; it does not make a graph's file or random ops safe to run).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from hope_engine.errors import ModelLoadError


def refuse_callable_arguments(path: Path, program) -> None:
    """Raise ModelLoadError if a graph node gets a Python callable as an argument (only operators, graphs and values
    may appear there): the JSON names such arguments by attribute path (``as_operator``), so a crafted program could
    hand ``os.popen`` to a higher-order operator that calls its argument. The verifier checks node targets, not this."""
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            leaves: list = []
            torch.fx.node.map_aggregate((node.args, node.kwargs), leaves.append)
            for leaf in leaves:
                if callable(leaf) and not isinstance(
                        leaf, (torch.fx.Node, torch._ops.OperatorBase, torch._ops.OpOverloadPacket, nn.Module)):
                    name = f"{getattr(leaf, '__module__', '?')}.{getattr(leaf, '__qualname__', type(leaf).__name__)}"
                    raise ModelLoadError(
                        f"{path}: refused to load this exported program: node {node.name!r} passes the Python callable "
                        f"{name} to {node.target}, and running it can run code named in the file. Pass --trust-pickle "
                        "(trust_pickle=True) only if you trust its source")


UNKNOWN = object()  # an argument whose value is not known before the graph runs

# ATen ops that return nothing yet are pure: they only check (raise) or warn
_CHECKS = frozenset({"_assert_async", "_assert_scalar", "_assert_tensor_metadata", "_linalg_check_errors",
                     "sym_constrain_range", "sym_constrain_range_for_size", "warn"})
# ATen ops whose schema hides what they do to memory: they alias or write tensors without declaring it, or view
# memory without checking its bounds
_UNDECLARED = {"set": "points a tensor at other memory", "set_": "points a tensor at other memory",
               "_copy_from": "writes a tensor its schema does not declare",
               "_copy_from_and_resize": "writes a tensor its schema does not declare",
               "_reshape_alias": "views memory without checking its bounds",
               "_reshape_alias_copy": "reads memory without checking its bounds"}
_UNCHECKED_INDICES = re.compile(r"sparse_\w*tensor|^_nested_view_from_")
# the structural TorchScript nodes (constants, attribute reads, containers, control flow, type queries, raise)
_SCRIPT_STRUCTURE = frozenset(f"prim::{k}" for k in (
    "Constant", "GetAttr", "If", "Loop", "ListConstruct", "ListUnpack", "TupleConstruct", "TupleUnpack", "TupleIndex",
    "TupleSlice", "DictConstruct", "unchecked_cast", "unchecked_unwrap_optional", "Uninitialized", "RaiseException",
    "NumToTensor", "dtype", "device", "layout", "type", "requires_grad", "data", "shape", "min", "max", "abs",
    "isinstance", "EnumName", "EnumValue", "StringIndex", "tolist", "rangelist", "itemsize", "nbytes", "is_nested",
    "is_cpu", "is_cuda", "is_xpu", "is_mps", "is_meta", "is_sparse", "is_sparse_csr", "is_quantized", "is_mkldnn"))
_SCRIPT_EFFECTS = {
    "prim::Print": "prints",
    "prim::CallMethod": "calls a method through an interface, which cannot be inspected before it runs",
    "prim::CallFunction": "calls a function value, which cannot be inspected before it runs",
    "prim::PythonOp": "calls Python code", "prim::CreateObject": "creates an object (with methods of its own)",
    "prim::Enter": "enters a with-block (a method of its own)", "prim::Exit": "leaves a with-block",
    "prim::fork": "starts a task", "prim::TimePoint": "reads the clock"}
# TorchScript's grad-mode context manager (``with torch.no_grad():`` in a scripted forward; the others do not script):
# an object whose methods, compiled from the archive like everything else, are checked to do nothing but read and set
# the grad mode and its own attributes (``_grad_mode_object``)
_GRAD_MODE_CLASSES = frozenset({"__torch__.torch.autograd.grad_mode.no_grad"})
_GRAD_MODE_OPS = frozenset({"aten::is_grad_enabled", "aten::set_grad_enabled"})
_SCRIPT_SCALARS = frozenset({"IntType", "FloatType", "BoolType", "StringType", "NoneType", "DeviceObjType",
                             "NumberType", "ComplexType", "ScalarTypeType", "LayoutType", "MemoryFormatType",
                             "SymIntType", "SymFloatType", "SymBoolType", "QSchemeType"})
# higher-order operators of exported programs that only run their (inspected) subgraphs
_HIGHER_ORDER = frozenset({"cond", "while_loop", "wrap_with_set_grad_enabled", "wrap_with_autocast"})


def _pure_builtins() -> frozenset:
    """The Python builtins an exported program may call: integer/shape arithmetic (torch's verifier list)."""
    import math
    import operator as op

    return frozenset({op.getitem, op.add, op.mul, op.sub, op.truediv, op.ge, op.le, op.gt, op.lt, op.eq, op.ne,
                      op.floordiv, op.mod, op.and_, op.or_, op.not_, op.pow, op.neg, op.abs, op.lshift, op.rshift,
                      math.ceil, math.floor, math.trunc, round, torch.sym_int, torch.sym_float, torch.sym_ite,
                      torch.sym_max, torch.sym_min, torch.sym_not, torch.sym_sqrt, torch.sym_sum})


def op_refusal(schema, tags, value) -> str | None:
    """Why the operator with ``schema`` (and ``tags``) may not run in a loaded graph, or None when it may: the
    allow-list rule of the module docstring. ``value(name)`` is an argument's value where known before running."""
    namespace, _, name = schema.name.partition("::")
    if namespace != "aten":
        return "which is not one of torch's ATen operators"
    args = schema.arguments
    if any(a.name == "filename" for a in args):
        target = value("filename")
        return "which reads or writes a file" + (f" ({target!r})" if isinstance(target, str) else "")
    if any("Storage" in str(a.type) for a in args):
        return "which reads or writes raw storage"
    if name in _UNDECLARED:
        return f"which {_UNDECLARED[name]}"
    if _UNCHECKED_INDICES.search(name):
        return "which builds a sparse or nested tensor from indices it does not check"
    if (torch.Tag.nondeterministic_seeded in tags or any("Generator" in str(a.type) for a in args)) \
            and not _randomness_off({a.name for a in args}, value):
        return "which draws random numbers"
    writes = any(a.alias_info is not None and a.alias_info.is_write for a in args)
    if not schema.returns and not writes and name not in _CHECKS:
        return "which runs only for a side effect (it returns nothing)"
    return None


def _randomness_off(names: set[str], value) -> bool:
    """A seeded op (dropout, an RNN, attention) draws nothing when its training switch is False or its dropout
    probability is 0, where that value is known before running (a constant, or a module's ``training`` flag)."""
    if any(n in names and value(n) is False for n in ("train", "training")):
        return True
    probability = [value(n) for n in ("p", "dropout", "dropout_p") if n in names]
    return any(isinstance(p, (int, float)) and not isinstance(p, bool) and p == 0 for p in probability)


def _writes_and_stores(schema) -> tuple[list[int], list[int], list[int]]:
    """Indices of the arguments an op writes, those it stores into a written container (``t(c -> *)``), and those its
    results may alias (annotated in the schema)."""
    written = [i for i, a in enumerate(schema.arguments) if a.alias_info is not None and a.alias_info.is_write]
    stored = [i for i, a in enumerate(schema.arguments) if a.alias_info is not None and "*" in a.alias_info.after_set]
    aliased = [i for i, a in enumerate(schema.arguments) if a.alias_info is not None] \
        if any(r.alias_info is not None for r in schema.returns) else []
    return written, stored, aliased


class _Containers:
    """Union-find over TorchScript container and object values (lists, dicts, tuples, modules; keyed by
    ``Value.unique()``): each class records the state it is (``state``: stored into it would change the model) and
    the state its elements may alias (``contents``). Sets only grow; ``version`` counts growth."""

    def __init__(self):
        self._parent: dict[int, int] = {}
        self._state: dict[int, set[str]] = {}
        self._contents: dict[int, set[str]] = {}
        self.version = 0

    def _find(self, v: int) -> int:
        self._parent.setdefault(v, v)
        while self._parent[v] != v:
            self._parent[v] = self._parent[self._parent[v]]
            v = self._parent[v]
        return v

    def union(self, a: int, b: int) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra != rb:
            self._parent[rb] = ra
            for sets in (self._state, self._contents):
                sets.setdefault(ra, set()).update(sets.pop(rb, ()))
            self.version += 1

    def add(self, v: int, contents=(), state=()) -> None:
        r = self._find(v)
        for sets, new in ((self._contents, contents), (self._state, state)):
            have = sets.setdefault(r, set())
            if not have.issuperset(new):
                have.update(new)
                self.version += 1

    def state(self, v: int) -> set[str]:
        return self._state.get(self._find(v), set())

    def contents(self, v: int) -> set[str]:
        return self._contents.get(self._find(v), set())


def _grad_mode_object(node) -> bool:
    """Whether a ``prim::CreateObject`` makes a grad-mode context manager (``torch.no_grad``) whose methods only read
    and set the grad mode and the object's own attributes. The methods' graphs are read
    from an empty instance (nothing runs)."""
    t = node.output().type()
    name = t.qualified_name() if hasattr(t, "qualified_name") else ""
    if name not in _GRAD_MODE_CLASSES:
        return False
    try:
        obj = torch._C._create_object_with_type(t)
        methods = list(t.method_names())
        graphs = [obj._get_method(m).graph.copy() for m in methods]
    except (RuntimeError, AttributeError, TypeError):
        return False
    if not set(methods) <= {"__init__", "__enter__", "__exit__"}:
        return False
    for graph in graphs:
        torch._C._jit_pass_inline(graph)
        self_key = next(graph.inputs()).unique()
        for n in graph.nodes():
            kind = n.kind()
            if list(n.blocks()):
                return False
            if kind == "prim::Constant" or kind in _GRAD_MODE_OPS:
                continue
            if kind in ("prim::SetAttr", "prim::GetAttr") and next(n.inputs()).unique() == self_key:
                continue
            return False
    return True


class _ScriptMethodCheck:
    """One TorchScript method's inlined graph against the allow-list: ``refusal()`` names the first node that may
    not run. Branches of an ``if`` on a literal constant, which can never run, are skipped.

    Writes in place are checked with a may-alias analysis run to a fixed point: a tensor's ``origins`` are the
    state it may share memory with (parameters, buffers and other attributes, constants, the inputs of the top
    ``forward``), passed on by ops whose schema says their result aliases an argument (views), by control flow, and
    through containers (``_Containers``); a result without an alias annotation is new memory."""

    def __init__(self, owner, graph, inputs_are_state: bool):
        self.owner = owner  # the C++ module whose method this is (graph input 0)
        self.values: dict[int, object] = {}
        self.paths: dict[int, str] = {}
        self.origins: dict[int, set[str]] = {}
        self.categories: dict[int, str] = {}
        self.containers = _Containers()
        self.nodes: list[tuple] = []  # (node, kind, live blocks, inputs, outputs, (schema, *_writes_and_stores))
        inputs = list(graph.inputs())
        self.self_key = inputs[0].unique() if inputs else None
        for i, v in enumerate(inputs):
            if i == 0:
                self.paths[v.unique()] = "self"
                self._seed(v, "the module")
            elif inputs_are_state:
                self._seed(v, f"the input {v.debugName().split('.')[0]!r}")
        self._collect(graph.block())
        for node, kind, _, _, out, _ in self.nodes:
            if kind == "prim::GetAttr":
                parent = self.paths.get(node.input().unique(), "an object")
                path = self.paths[out[0].unique()] = f"{parent}.{node.s('name')}"
                self._seed(out[0], f"the attribute {path}")
            elif kind == "prim::Constant":
                self._seed(out[0], "a constant")
        flowing = [record for record in self.nodes if record[1] not in ("prim::GetAttr", "prim::Constant")]
        while True:
            before = (self.containers.version, sum(len(s) for s in self.origins.values()))
            for record in flowing:
                self._flow(*record)
            if (self.containers.version, sum(len(s) for s in self.origins.values())) == before:
                break

    def _collect(self, block) -> None:
        for node in block.nodes():
            kind = node.kind()
            blocks = list(node.blocks())
            if kind == "prim::If" and node.input().node().kind() == "prim::Constant":
                cond = node.input().toIValue()
                if isinstance(cond, bool):
                    blocks = [blocks[0 if cond else 1]]
            schema = None if kind.startswith("prim::") else self._schema(node)
            effects = None if schema is None else (schema, *_writes_and_stores(schema))
            self.nodes.append((node, kind, blocks, list(node.inputs()), list(node.outputs()), effects))
            for b in blocks:
                self._collect(b)

    def _category(self, v) -> str:
        """'tensor', 'container' (anything else that can hold a tensor: lists, tuples, objects) or 'scalar'."""
        key = v.unique()
        if key not in self.categories:
            t = v.type()
            while t.kind() == "OptionalType":
                t = t.getElementType()
            kind = t.kind()
            self.categories[key] = "tensor" if kind == "TensorType" else \
                "scalar" if kind in _SCRIPT_SCALARS else "container"
        return self.categories[key]

    def _seed(self, v, what: str) -> None:
        category = self._category(v)
        if category == "tensor":
            self.origins.setdefault(v.unique(), set()).add(what)
        elif category == "container":
            self.containers.add(v.unique(), contents={what}, state={what})

    def reach(self, v) -> set[str]:
        """The state ``v`` may alias (a tensor) or hold (a container)."""
        category = self._category(v)
        if category == "tensor":
            return self.origins.get(v.unique(), set())
        if category == "container":
            return self.containers.contents(v.unique()) | self.containers.state(v.unique())
        return set()

    def _flows(self, target, sources) -> None:
        """``target`` may be (a tensor: alias; a container: be the same object as) any of ``sources``."""
        category = self._category(target)
        if category == "tensor":
            self.origins.setdefault(target.unique(), set()).update(*(self.reach(s) for s in sources))
        elif category == "container":
            for s in sources:
                if self._category(s) == "container":
                    self.containers.union(target.unique(), s.unique())
                else:
                    self.containers.add(target.unique(), contents=self.reach(s))

    def _flow(self, node, kind, blocks, inputs, outputs, effects) -> None:
        if kind == "prim::If":
            for i, out in enumerate(outputs):
                self._flows(out, [list(b.outputs())[i] for b in blocks])
        elif kind == "prim::Loop":
            params = list(blocks[0].inputs())[1:] if blocks else []
            returns = list(blocks[0].outputs())[1:] if blocks else []
            for j, start in enumerate(inputs[2:]):
                group = [start] + returns[j:j + 1]
                for target in params[j:j + 1] + outputs[j:j + 1]:
                    self._flows(target, group)
        elif effects is None:  # structural nodes (construct, unpack, cast...): every output may hold every input
            references = [v for v in inputs if self._category(v) != "scalar"]
            if references:
                for out in outputs:
                    self._flows(out, references)
        else:
            schema, written, stored, aliased = effects
            for w in written:
                if w < len(inputs) and self._category(inputs[w]) == "container":
                    for s in stored:
                        if s < len(inputs) and s != w:
                            self.containers.add(inputs[w].unique(), contents=self.reach(inputs[s]))
            for i, out in enumerate(outputs):
                if i >= len(schema.returns) or schema.returns[i].alias_info is not None:
                    self._flows(out, [inputs[j] for j in (aliased or range(len(inputs))) if j < len(inputs)])
                elif self._category(out) == "container":  # a new container of the inputs' elements (aten::list)
                    self.containers.add(out.unique(), contents=set().union(*(self.reach(v) for v in inputs)))

    @staticmethod
    def _schema(node):
        text = node.schema()
        if text == "(no schema)":
            return None
        try:
            return torch._C.parse_schema(text)
        except RuntimeError:
            return None

    def value(self, v):
        """The value of ``v`` where it is known before running (constants, scalar module attributes), else
        ``UNKNOWN``."""
        key = v.unique()
        if key not in self.values:
            self.values[key] = UNKNOWN  # (a cycle through a loop stays unknown)
            self.values[key] = self._evaluate(v)
        return self.values[key]

    def _object(self, v):
        if v.unique() == self.self_key:
            return self.owner
        node = v.node()
        if node.kind() == "prim::GetAttr":
            parent = self._object(node.input())
            try:
                return parent.getattr(node.s("name")) if parent is not None else None
            except (AttributeError, RuntimeError):
                return None
        return None

    def _evaluate(self, v):
        node = v.node()
        kind = node.kind()
        if kind == "prim::Constant":
            try:
                out = v.toIValue()
            except RuntimeError:
                return UNKNOWN
            return out if out is None or isinstance(out, (bool, int, float, str)) else UNKNOWN
        if kind == "prim::GetAttr":
            out = self._object(v)
            return out if isinstance(out, (bool, int, float, str)) else UNKNOWN
        if kind == "aten::__not__":
            a = self.value(node.input())
            return (not a) if isinstance(a, bool) else UNKNOWN
        if kind == "prim::If":
            cond = self.value(node.input())
            if not isinstance(cond, bool):
                return UNKNOWN
            block = list(node.blocks())[0 if cond else 1]
            return self.value(list(block.outputs())[v.offset()])
        return UNKNOWN

    def refusal(self) -> str | None:
        grad_modes = {out[0].unique() for node, kind, _, _, out, _ in self.nodes
                      if kind == "prim::CreateObject" and _grad_mode_object(node)}
        for node, kind, _, inputs, _, effects in self.nodes:
            if kind in _SCRIPT_STRUCTURE:
                continue
            if grad_modes and (
                    (kind == "prim::CreateObject" and node.output().unique() in grad_modes)
                    or (kind in ("prim::SetAttr", "prim::Enter", "prim::Exit") and inputs
                        and inputs[0].unique() in grad_modes)):
                continue  # a with torch.no_grad() / torch.enable_grad() block
            if kind == "prim::SetAttr":
                target = f"{self.paths.get(inputs[0].unique(), 'an object')}.{node.s('name')}"
                return f"has a prim::SetAttr node, which assigns to {target}, changing the model between calls"
            if kind in _SCRIPT_EFFECTS:
                return f"has a {kind} node, which {_SCRIPT_EFFECTS[kind]}"
            if effects is None:
                return f"has a {kind} node, which is not pure tensor math"
            schema, written = effects[:2]
            index = {a.name: i for i, a in enumerate(schema.arguments)}

            def value(name, inputs=inputs, index=index):
                i = index.get(name)
                return self.value(inputs[i]) if i is not None and i < len(inputs) else UNKNOWN

            why = op_refusal(schema, _op_tags(schema), value)
            if why is not None:
                return f"calls {kind}, {why}"
            for i in written:
                if i >= len(inputs):
                    continue
                v = inputs[i]
                held = self.containers.state(v.unique()) if self._category(v) == "container" else self.reach(v)
                if held:
                    return f"calls {kind}, which writes in place to {sorted(held)[0]}"
        return None


def _op_tags(schema) -> tuple:
    """The dispatcher tags of a TorchScript node's operator (none for TorchScript-only builtins such as list ops)."""
    _, _, name = schema.name.partition("::")
    try:
        op = getattr(getattr(torch.ops.aten, name), schema.overload_name or "default")
    except (AttributeError, RuntimeError):
        return ()
    return tuple(op.tags) if isinstance(op, torch._ops.OpOverload) else ()


def refuse_impure_script(path: Path, module) -> None:
    """Raise ModelLoadError unless every method (and hook) of every submodule of the loaded TorchScript ``module``
    runs only allowed ops. The top ``forward`` is checked with everything it calls inlined and its inputs counted as
    state (hope's point must not be written); the methods it calls are covered by that, the others checked alone."""
    called = _methods_called_by_forward(module)
    for qualified, sub in module.named_modules():
        owner = sub._c
        functions = [(name, owner._get_method(name)) for name in owner._method_names()
                     if (id(sub), name) not in called or (sub is module and name == "forward")]
        functions += [(f"hook {hook.name}", hook) for hook in [*owner._get_forward_pre_hooks(),
                                                               *owner._get_forward_hooks()]]
        for name, function in functions:
            graph = function.graph.copy()
            torch._C._jit_pass_inline(graph)
            why = _ScriptMethodCheck(owner, graph, inputs_are_state=sub is module and name == "forward").refusal()
            if why is not None:
                where = f"{qualified}.{name}" if qualified else name
                raise ModelLoadError(_impure(path, "TorchScript archive", f"method {where} {why}"))


def _methods_called_by_forward(module) -> set[tuple[int, str]]:
    """(id of submodule, method name) of the methods the top ``forward`` calls, directly or through other methods:
    TorchScript inlines them into its graph."""
    called: set[tuple[int, str]] = set()
    todo = [(module, "forward")]
    while todo:
        owner, name = todo.pop()
        if (id(owner), name) in called or name not in owner._c._method_names():
            continue
        called.add((id(owner), name))
        graph = owner._c._get_method(name).graph
        self_key = next(graph.inputs()).unique()
        blocks = [graph.block()]
        while blocks:
            for node in blocks.pop().nodes():
                blocks.extend(node.blocks())
                if node.kind() == "prim::CallMethod":
                    callee = _submodule_at(owner, next(node.inputs()), self_key)
                    if callee is not None:
                        todo.append((callee, node.s("name")))
    return called


def _submodule_at(owner, value, self_key: int):
    """The submodule of ``owner`` that ``value`` reads through a chain of attribute reads from ``self`` (the graph
    input ``self_key``), or None."""
    names = []
    while value.node().kind() == "prim::GetAttr":
        names.append(value.node().s("name"))
        value = value.node().input()
    if value.unique() != self_key:
        return None
    try:
        for name in reversed(names):
            owner = getattr(owner, name)
    except AttributeError:
        return None
    return owner if isinstance(owner, torch.jit.ScriptModule) else None


def refuse_impure_program(path: Path, program) -> None:
    """Raise ModelLoadError unless every node of the exported program's graphs (its subgraphs included) calls an
    allowed op, writes no parameter, buffer, constant or input, and the program writes no state back."""
    from torch.export.graph_signature import OutputKind

    signature = program.graph_signature
    for spec in signature.output_specs:
        if spec.kind in (OutputKind.BUFFER_MUTATION, OutputKind.PARAMETER_MUTATION, OutputKind.USER_INPUT_MUTATION,
                         OutputKind.TOKEN):
            raise ModelLoadError(_impure(path, "exported program", f"its output {spec.arg.name!r} is a "
                                         f"{spec.kind.name.lower().replace('_', ' ')} of {spec.target!r}"))
    states = {spec.arg.name: f"{spec.kind.name.lower().replace('_', ' ')} {spec.target or spec.arg.name!r}"
              for spec in signature.input_specs if hasattr(spec.arg, "name")}
    builtins = _pure_builtins()
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        if isinstance(graph, torch.fx.Graph):
            why = _program_graph_refusal(graph, states if module is program.graph_module else {}, builtins)
            if why is not None:
                raise ModelLoadError(_impure(path, "exported program", why))


def _program_graph_refusal(graph, states: dict[str, str], builtins: frozenset) -> str | None:
    """The first node of one FX graph that may not run (see ``refuse_impure_program``), or None. A node's origins
    are the state it may share memory with, passed on (in graph order) by results that alias their arguments."""
    origins: dict = {}

    def bound(node, schema) -> list:
        return [node.args[i] if i < len(node.args) else node.kwargs.get(
            a.name, a.default_value if a.has_default_value() else None) for i, a in enumerate(schema.arguments)]

    def leaves(value) -> list:
        found: list = []
        torch.fx.node.map_aggregate(value, lambda x: found.append(x) if isinstance(x, torch.fx.Node) else None)
        return found

    def reach(values) -> set[str]:
        return set().union(*(origins.get(x, set()) for x in leaves(values)))

    for node in graph.nodes:
        target = node.target
        where = f"node {node.name!r} calls"
        if node.op == "placeholder":
            origins[node] = {states.get(node.name, f"the graph input {node.name!r}")}
        elif node.op == "get_attr":
            origins[node] = {f"the constant {target!r}"}
        elif node.op == "output":
            continue
        elif node.op != "call_function":
            return f"node {node.name!r} is a {node.op} node, which an exported program does not have"
        elif isinstance(target, torch._ops.OpOverload):
            schema = target._schema
            args = bound(node, schema)
            names = [a.name for a in schema.arguments]

            def value(name, args=args, names=names):
                v = args[names.index(name)] if name in names else UNKNOWN
                return v if v is None or isinstance(v, (bool, int, float, str)) else UNKNOWN

            why = op_refusal(schema, target.tags, value)
            if why is not None:
                return f"{where} {target}, {why}"
            written, _, aliased = _writes_and_stores(schema)
            for i in written:
                if held := reach(args[i]):
                    return f"{where} {target}, which writes in place to {sorted(held)[0]}"
            origins[node] = reach([args[i] for i in aliased])
        elif isinstance(target, torch._ops.HigherOrderOperator):
            if target.name() not in _HIGHER_ORDER:
                return f"{where} the higher-order operator {target.name()}, which is not on the allow-list"
            origins[node] = reach((node.args, node.kwargs))
        elif any(target is b for b in builtins):
            origins[node] = reach((node.args, node.kwargs))  # getitem of a multi-result op, or integer math
        else:
            name = target if isinstance(target, str) else \
                f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(target).__name__)}"
            return f"{where} the Python function {name}, which is not pure tensor math"
    return None


def _impure(path: Path, what: str, why: str) -> str:
    """The one-line refusal of a saved graph that would run ``why``."""
    return (f"{path}: refused to load this {what}: {why}; hope runs only pure tensor math from a saved graph (no file, "
            "I/O or random ops, no writes to the model's state), and nothing from it has run. Save the model without "
            "that op, or pass --trust-pickle (trust_pickle=True) only if you trust its source")
