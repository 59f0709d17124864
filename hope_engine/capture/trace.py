"""Graph capture (an aten graph), the graph cache, the support check, and the interpreter that pushes jets through it.

A graph is recorded from one run at the real point (``record.py``); it is reused at other points unless the run read
a value that could change (a branch on a value, a data-dependent shape), in which case it is used at this point only.
Where the recorder declines, ``make_fx`` traces with fake tensors (no values; a branch on a value raises), falling
back to a real-mode trace at this point, which is not reused either.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn
from torch._decomp import get_decompositions
from torch.func import functional_call, functionalize

from hope_engine.caches import WeakCache
from hope_engine.capture import escapes, guard, record, sessions, writes
from hope_engine.capture.guard import referenced_modules
from hope_engine.errors import ExpansionError, GraphEscapeError, RandomOperationError, UnsupportedOperationError
from hope_engine.ops import rules

aten = torch.ops.aten

# Composite ops rewritten into ops the rule table knows (softmax, elu and the piecewise ones keep their own rules, as do
# the smooth functions whose decompositions branch on the value: softplus, log_sigmoid, mish, sinc, xlogy, celu...).
# No op here has a rule of its own (tests/test_rule_registry.py): ops linear in the input with an exact rule (baddbmm,
# rsub, channel_shuffle, pixel_unshuffle, im2col, col2im, upsample_bilinear2d) keep the rule, which the "paper" variant
# (traced without this table) reaches too.
DECOMPOSITIONS = get_decompositions([
    aten.native_layer_norm, aten.native_batch_norm, aten._native_batch_norm_legit_no_training,
    aten._native_batch_norm_legit, aten.silu, aten.gelu,
    aten.native_dropout, aten.linear, aten.addcmul, aten.addcdiv, aten.lerp, aten.logsumexp, aten.hardsigmoid,
    aten.hardswish, aten.tanh_backward, aten.native_group_norm,
    aten.std, aten.std_mean, aten.frac, aten.glu,
    aten.prelu, aten.rrelu_with_noise, aten.nan_to_num, aten.cosine_similarity, aten.norm,
    aten.linalg_vector_norm, aten.binary_cross_entropy, aten.mse_loss,
    aten._upsample_bilinear2d_aa, aten.deg2rad, aten.rad2deg, aten.addmv, aten.addr, aten.dot,
    aten.vdot, aten.mv, aten.outer, aten.einsum, aten.tensordot, aten.kron, aten.diag_embed,
    aten.sigmoid_backward, aten.elu_backward, aten._scaled_dot_product_flash_attention_for_cpu,
    aten.grid_sampler_2d,  # weights from the grid (floor: constant) times gathered pixels: exact in input and grid
])


def _sdpa_math(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None, enable_gqa=False):
    """Attention as its reference formula softmax(q k^T scale + mask) v, not a fused kernel (on any device)."""
    return aten._scaled_dot_product_attention_math.default(
        query, key, value, attn_mask, dropout_p, is_causal, None, scale=scale, enable_gqa=enable_gqa)[0]


def _rrelu_eval(x, noise, lower=1 / 8, upper=1 / 3, training=False, generator=None):
    """rrelu in eval mode: leaky_relu with the mean slope (lower + upper) / 2 (training mode is random: left alone)."""
    return NotImplemented if training else aten.leaky_relu.default(x, (lower + upper) / 2)


def _rrelu_eval_functional(x, noise, lower=1 / 8, upper=1 / 3, training=False, generator=None):
    out = _rrelu_eval(x, noise, lower, upper, training, generator)
    return NotImplemented if out is NotImplemented else (out, noise)


# recurrent layers as their cell equations (matmuls, sigmoid, tanh), not the fused (mkldnn) kernels
DECOMPOSITIONS.update(get_decompositions([aten.lstm.input, aten.lstm.data, aten.gru.input, aten.gru.data,
                                          aten.rnn_tanh.input, aten.rnn_tanh.data, aten.rnn_relu.input,
                                          aten.rnn_relu.data]))
DECOMPOSITIONS[aten.scaled_dot_product_attention.default] = _sdpa_math
DECOMPOSITIONS[aten.rrelu_with_noise.default] = _rrelu_eval
DECOMPOSITIONS[aten.rrelu_with_noise_functional.default] = _rrelu_eval_functional


# the "paper" variant keeps composites whole, except the elementwise ones without a rule of their own: written out,
# they are a group of pointwise ops of one value, which the paper rule takes as one activation
PAPER_DECOMPOSITIONS = get_decompositions([aten.hardsigmoid, aten.hardswish])


# "record" (default): record the graph at the real point (record.py), falling back to make_fx where the recorder
# declines; "make_fx": always make_fx (HOPE_TRACER=make_fx; the tests compare the two).
TRACER = os.environ.get("HOPE_TRACER", "record")
VARIANTS = ("exact", "paper")  # exact: composites decomposed for the rule table; paper: activations kept whole


@dataclass
class TracedModel:
    """An aten graph of the model, its parameter/buffer inputs, whether it can be reused at other points, and whether
    it holds at this point only because the model read a value computed from its input into Python (a branch on the
    input: then no neighbourhood of the point is covered either)."""

    graph_module: torch.fx.GraphModule
    state: dict
    reusable: bool
    input_index: int
    branches_on_input: bool = False
    gradient_checked: bool = False  # an expansion through it passed the self-check of its first derivatives
    writes_state: bool = False  # the model's forward writes into a parameter, buffer or tensor attribute
    # the model's forward assigned module attributes (or submodules, hooks...) while traced (None: could not tell)
    assigns_attributes: bool | None = None

    def state_values(self) -> list:
        return list(self.state.values())


class GraphCache:
    """Traced graphs per model (held weakly, at most ``max_models``) and per (variant, input shape, dtype, device), each
    with the guard stamp it was traced under; at most ``per_model`` graphs a model, least recently used dropped first.
    Held in the registered ``WeakCache`` "traced graphs" (``caches.clear_all`` empties it), each model's entry sized
    by the constant tensors its graphs own."""

    def __init__(self, per_model: int = 8, max_models: int = 256):
        self.per_model = per_model
        self._graphs = WeakCache("traced graphs", max_entries=max_models)  # model -> OrderedDict key -> entry

    def get(self, model, key: tuple, stamp) -> TracedModel | None:
        entries = self._entries(model)
        hit = entries.get(key) if entries is not None else None
        if hit is None or stamp is None or hit[1] != stamp:
            return None
        entries.move_to_end(key)
        return hit[0]

    def put(self, model, key: tuple, stamp, traced: TracedModel) -> None:
        if stamp is None:
            return
        entries = OrderedDict(self._entries(model) or ())
        entries[key] = (traced, stamp, _constant_bytes(traced.graph_module))
        entries.move_to_end(key)
        while len(entries) > self.per_model:
            entries.popitem(last=False)
        with contextlib.suppress(TypeError):  # not weakly referable or not hashable: never cached
            self._graphs.put(model, entries, nbytes=sum(size for _, _, size in entries.values()))

    def discard(self, model, key: tuple) -> None:
        entries = self._entries(model)
        if entries is not None:
            entries.pop(key, None)

    def forget(self, model) -> None:
        """Drop every graph cached for ``model``."""
        entries = self._entries(model)
        if entries is not None:
            entries.clear()

    def graphs(self, model) -> list[TracedModel]:
        """The graphs cached for ``model`` (for inspection and tests)."""
        entries = self._entries(model)
        return [entry[0] for entry in entries.values()] if entries else []

    def clear(self) -> None:
        """Drop every cached graph (they are re-traced on the next call)."""
        self._graphs.clear()

    def _entries(self, model) -> OrderedDict | None:
        try:
            return self._graphs.get(model)
        except TypeError:  # not weakly referable or not hashable: never cached
            return None


def _constant_bytes(gm: torch.fx.GraphModule) -> int:
    """Bytes of the tensors a graph holds as constants (its parameters and buffers are the model's, not counted)."""
    seen: dict[int, int] = {}
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            value = getattr(gm, node.target, None)
            if isinstance(value, torch.Tensor):
                seen[id(value)] = value.numel() * value.element_size()
    return sum(seen.values())


GRAPHS = GraphCache()


# Engine-internal sections that swap process-wide state without running the model (collecting kink warnings around
# a run of the graph): one thread at a time. Never held while the model runs (``sessions``: a forward that waits on
# another thread which expands a model must not deadlock).
_MODEL_LOCK = threading.RLock()


def modules_of(model) -> list:
    """Every module ``model`` runs: its own tree, or for a function the trees of the modules it reads."""
    return list({id(m): m for root in referenced_modules(model) for m in root.modules()}.values())


def model_lock() -> threading.RLock:
    """A lock for short engine-internal sections that swap process-wide state (warnings filters) while the graph
    runs; the model's own code never runs under it."""
    return _MODEL_LOCK


_MHA_FASTPATH = sessions.Setting(torch.backends.mha.get_fastpath_enabled, torch.backends.mha.set_fastpath_enabled,
                                 False)  # the fused attention kernel hides the ops we expand through
_MKLDNN = sessions.Setting(torch._C._get_mkldnn_enabled, torch._C._set_mkldnn_enabled, False)
# TorchScript's optimizing executor would run autodiff subgraphs, whose outputs come back detached
JIT_UNOPTIMIZED = sessions.Setting(torch._C._get_graph_executor_optimize, torch._C._set_graph_executor_optimize,
                                   False)
#: the settings a run of the model for the self-check holds (``sessions.Run``)
CHECK_SETTINGS = (_MHA_FASTPATH, JIT_UNOPTIMIZED)


@contextlib.contextmanager
def eval_mode(model, modules: list | None = None):
    """Run in eval mode (dropout off, batch norm on running statistics), restoring every module's mode after.

    For a plain function, the modules it reads are switched too (``modules``: ``modules_of(model)`` if taken
    already). Concurrent calls share the switch (``sessions``): the last one out restores the modes; no lock is held
    while the model runs."""
    with _MHA_FASTPATH.held(), sessions.eval_modes(modules_of(model) if modules is None else modules):
        yield


def untouched(model, modules: list | None = None):
    """Whatever running the model does to its modules (a hook assigning ``module.weight``, a counter in forward),
    every module's attributes, parameters, buffers, submodules and hooks are the same objects afterwards (restored
    by the last of concurrent calls to leave: ``sessions``)."""
    return sessions.attributes_kept(modules_of(model) if modules is None else modules)


@contextlib.contextmanager
def running(model, modules: list | None = None, locks: list | None = None, keep_attributes: bool = True):
    """How the engine runs the model (tracing, the self-check): its modules run by this thread alone
    (``sessions.running``; ``locks``: ``sessions.locks_of(modules)`` if taken already), in eval mode, their
    attributes restored afterwards (``untouched``; ``keep_attributes`` False: a run known to assign none, see
    ``TracedModel.assigns_attributes``). Yields ``untouched``'s report (whether the run changed attributes)."""
    modules = modules_of(model) if modules is None else modules
    with sessions.Run(modules, locks, keep_attributes, (_MHA_FASTPATH,)) as report:
        yield report


_TORCH_LOGGERS = ("torch._subclasses.fake_tensor", "torch.fx.experimental.symbolic_shapes",
                  "torch.fx.experimental.recording", "torch._functorch", "torch.__trace")
_QUIET = [sessions.Setting(lambda lg=lg: lg.level, lambda level, lg=lg: lg.setLevel(level), logging.CRITICAL + 1)
          for lg in map(logging.getLogger, _TORCH_LOGGERS)]


@contextlib.contextmanager
def quiet_torch_logs():
    """Torch logs a failed shape check of a fake tensor as a long traceback before raising; the error itself is what
    the user needs (reworded by the caller), so its loggers are silenced while tracing."""
    with contextlib.ExitStack() as stack:
        for setting in _QUIET:
            stack.enter_context(setting.held())
        yield


def _mkldnn_off():
    return _MKLDNN.held()


def _functional(model, autograd_semantics: bool = False) -> tuple:
    """(function, state): the model as ``function(state, x)`` of its parameters and buffers (an ``nn.Module``), or
    as ``function(x)`` with state None (any other callable: TorchScript, a bound method, a function of modules).
    Functionalized: in-place ops (ReLU(inplace=True), h[:, 0] = v, x.mul_(2)) become out-of-place ops and scatters.
    autograd_semantics: the run follows the model's own grad modes (the recorder): a write autograd does not see
    keeps the written tensor's derivatives (``writes.keeping_history``)."""
    keeping = writes.keeping_history if autograd_semantics else (lambda x: contextlib.nullcontext())
    if isinstance(model, nn.Module) and not isinstance(model, torch.jit.ScriptModule):
        state = {**dict(model.named_parameters()), **dict(model.named_buffers())}

        def call(state, x):
            x = x.clone()  # the model may write into its input (x /= 255): into a copy, never the caller's point
            with escapes.watching(x, state.values()), keeping(x):
                return functional_call(model, state, (x,))

        fn = functionalize(call, remove="mutations")
        fn._orig_mod = model  # make_fx records node.meta["nn_module_stack"] below this root
        return fn, state

    def apply(x):  # a one-argument function, whatever callable the model is (TorchScript, bound method...)
        x = x.clone()
        with escapes.watching(x), keeping(x):
            return model(x)

    return functionalize(apply, remove="mutations"), None


def _record(model, x: torch.Tensor, variant: str) -> TracedModel | None:
    """The graph recorded at this point (``record.record``: no dynamo import), or None where the recorder declines
    (``record.Declined``: the caller then traces with ``make_fx``). What the model raises propagates (make_fx would
    raise it too), and so does a failure of the recorder's own code (``record.RecorderError``: a bug, never hidden)."""
    fn, state = _functional(model, autograd_semantics=True)
    names = {id(m): name for root in referenced_modules(model) for name, m in root.named_modules()}
    # recorded with autograd on (so the model's own no_grad / inference_mode blocks show) on tensors that do not
    # require grad (so autograd saves nothing)
    plain_state = {k: v.detach() for k, v in state.items()} if state is not None else None
    try:
        # (TorchScript's optimizing executor would run autodiff subgraphs, whose outputs come back detached)
        with torch.enable_grad(), torch.jit.optimized_execution(False):
            recording = record.record(fn, plain_state, x, DECOMPOSITIONS if variant == "exact"
                                      else PAPER_DECOMPOSITIONS, names)
    except record.Declined:
        return None
    gm = recording.graph_module
    _read_input_directly(gm, len(state or {}))
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return TracedModel(gm, state or {}, not recording.per_point, input_index=len(state or {}),
                       branches_on_input=recording.input_read, writes_state=recording.state_written)


def _make(model, x: torch.Tensor, mode: str, variant: str) -> TracedModel:
    """Trace with ``make_fx`` to a functional aten graph; dead nodes are dropped.

    mode "fake": no values, so a branch on a value raises; "real": values at this point, branches taken baked in.
    variant "exact" decomposes composites into the rule table's ops; "paper" keeps them (the paper's rule treats an
    activation such as gelu as one elementwise function)."""
    from torch.fx.experimental.proxy_tensor import make_fx  # imports torch._dynamo (~1 s): only when needed

    table = DECOMPOSITIONS if variant == "exact" else PAPER_DECOMPOSITIONS
    options = dict(tracing_mode=mode, decomposition_table=table,
                   _allow_non_fake_inputs=True, _error_on_data_dependent_ops=mode == "fake",
                   record_module_stack=True)
    fn, state = _functional(model)
    inputs: tuple = (x,) if state is None else (state, x)
    with _tensors_kept(model):  # (a real-mode trace runs a write into a tensor attribute for real)
        gm = make_fx(fn, **options)(*inputs)
    # (a real-mode trace is the fallback of a branch on a value: which value, make_fx does not say)
    traced = TracedModel(gm, state or {}, mode == "fake", input_index=len(state or {}),
                         branches_on_input=mode == "real")
    traced.writes_state = _private_constants(gm) or any(
        _mutates(n) and n.args and isinstance(n.args[0], torch.fx.Node) and n.args[0].op == "placeholder"
        for n in gm.graph.nodes)
    if any(_mutates(node) for node in gm.graph.nodes):
        # C++ composites (circular padding...) write into fresh tensors below functionalisation: functionalise the
        # aten graph itself once more (module paths are not kept on this rare path)
        options.pop("record_module_stack")
        gm = traced.graph_module = make_fx(functionalize(gm, remove="mutations"), **options)(*inputs)
    _drop_input_writes(gm)
    _read_input_directly(gm, traced.input_index)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return traced


def _private_constants(gm: torch.fx.GraphModule) -> bool:
    """A constant the graph writes into (a tensor attribute the model updates in forward) becomes a copy made at the
    start of each run, so that running the graph never changes the user's tensor; whether there was one."""
    written = {n.args[0].target for n in gm.graph.nodes
               if _mutates(n) and n.args and isinstance(n.args[0], torch.fx.Node) and n.args[0].op == "get_attr"}
    for target in written:
        reads = [n for n in gm.graph.nodes if n.op == "get_attr" and n.target == target]
        with gm.graph.inserting_after(reads[0]):
            copy = gm.graph.call_function(aten.clone.default, (reads[0],))
        copy.meta.update(reads[0].meta)
        for read in reads:
            read.replace_all_uses_with(copy, delete_user_cb=lambda user, copy=copy: user is not copy)
    if written:
        gm.recompile()
    return bool(written)


@contextlib.contextmanager
def _tensors_kept(model):
    """Tensor attributes of the model's modules that are not parameters or buffers (and, for a function, the
    modules' parameters and buffers, which it reads as constants) get their values back afterwards."""
    modules = modules_of(model)
    tensors = [v for m in modules for v in vars(m).values() if isinstance(v, torch.Tensor)]
    if not isinstance(model, nn.Module):
        tensors += [t for m in modules for t in (*m._parameters.values(), *m._buffers.values()) if t is not None]
    saved = [(t, t._version, t.detach().clone()) for t in {id(t): t for t in tensors}.values()
             if t.layout is torch.strided and t.device.type != "meta"]
    try:
        yield
    finally:
        with torch.no_grad():
            for t, version, value in saved:
                if t._version != version or not torch.equal(t, value):
                    t.copy_(value)


def _drop_input_writes(gm: torch.fx.GraphModule) -> None:
    """Remove functionalization's write-back into the graph's inputs (a buffer the model updates in forward): the
    outputs already use the updated value, and running the graph must not change the user's model."""
    for node in list(gm.graph.nodes):
        if (_mutates(node) and not node.users and node.args and isinstance(node.args[0], torch.fx.Node)
                and node.args[0].op == "placeholder"):
            gm.graph.erase_node(node)


def _read_input_directly(gm: torch.fx.GraphModule, input_index: int) -> None:
    """The traced function copies its input first (a model writing into its input must not touch the caller's
    point); in a graph without writes that copy is the input itself, so its users read the input (one copy of the
    input series less per expansion)."""
    if any(_mutates(n) for n in gm.graph.nodes):
        return
    x = [n for n in gm.graph.nodes if n.op == "placeholder"][input_index]
    for node in list(x.users):
        if node.target is aten.clone.default and node.args == (x,) and not node.kwargs:
            node.replace_all_uses_with(x)
            gm.graph.erase_node(node)


def _mutates(node) -> bool:
    schema = getattr(node.target, "_schema", None)
    return node.op == "call_function" and schema is not None and schema.is_mutable


def trace(model, x: torch.Tensor, variant: str = "exact", stamp=guard.UNKNOWN) -> TracedModel:
    """The cached value-free graph for (model, variant, input shape, dtype, device), or a fresh per-point graph.

    A cached graph is used only while ``guard.stamp(model)`` is unchanged (the module tree, hooks, attributes of every
    kind, class attributes, the globals and closures the code reads); parameters and buffers are read afresh at every
    call. The model is left exactly as it was, whatever happens while tracing. ``stamp``: ``guard.stamp(model)`` taken
    by the caller with nothing run since (default: taken here)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    key = (variant, tuple(x.shape), x.dtype, x.device)
    if stamp is guard.UNKNOWN:
        stamp = guard.stamp(model)
    traced = GRAPHS.get(model, key, stamp)
    if traced is not None:  # an equal stamp holds the same parameter and buffer objects: traced.state is current
        return traced
    GRAPHS.discard(model, key)
    # mkldnn off: the lstm decomposition would otherwise pick the fused mkldnn_rnn_layer for float32 on CPU
    with running(model) as report, torch.no_grad(), quiet_torch_logs(), _mkldnn_off():
        traced = None if TRACER == "make_fx" else _record(model, x, variant)
        try:
            traced = traced or _make(model, x, "fake", variant)
        except GraphEscapeError:
            raise
        except Exception as fake_error:  # data-dependent control flow: trace at this point, do not reuse
            try:
                traced = _make(model, x, "real", variant)
            except GraphEscapeError:
                raise
            except Exception:
                raise fake_error from None
    # (functional_call swaps the parameters back itself: what is left changed is the model's own doing)
    traced.assigns_attributes = report.changed
    refuse_random(traced)
    if traced.reusable:
        GRAPHS.put(model, key, stamp, traced)
    return traced


def refuse_random(traced: TracedModel) -> None:
    """Raise ``RandomOperationError`` naming every random op in the graph (tagged ``nondeterministic_seeded``: a
    dropout in training mode, randn...): each call of such a model is a different function."""
    found: dict[str, set] = {}
    for node in traced.graph_module.graph.nodes:
        tags = getattr(node.target, "tags", ()) if node.op == "call_function" else ()
        if torch.Tag.nondeterministic_seeded in tags:
            found.setdefault(str(node.target), set()).add(_module_path(node))
    if found:
        lines = [f"  {op}  in {', '.join(sorted(paths))}" for op, paths in sorted(found.items())]
        raise RandomOperationError(
            "cannot expand this model: it draws random numbers in forward, so each call is a different function "
            "and no expansion of it is exact:\n" + "\n".join(lines)
            + "\nRemove the random op, pass the noise in as a constant, or call dropout with training=False "
            "(modules are expanded in eval mode).", ops=sorted(found))


def _module_path(node) -> str:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return "<top level>"
    path, cls = list(stack.values())[-1]
    cls_name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
    path = path.replace("L['self'].", "").replace("L__self___", "")
    return f"{path or '<top level>'} ({cls_name.split('.')[-1]})"


def derived(traced: TracedModel, name, compute):
    """A value derived from the graph alone (``name`` any hashable key), computed once per traced graph (the graph is
    never changed after tracing)."""
    cache = traced.__dict__.setdefault("_derived", {})
    if name not in cache:
        cache[name] = compute()
    return cache[name]


def jet_nodes(traced: TracedModel) -> set:
    """Nodes whose value depends on the expansion variables (the others are constants)."""
    return input_dependents(traced)


def input_dependents(traced: TracedModel, through_values: bool = False) -> set:
    """The input placeholder and the nodes that depend on it: the one walk every path uses. A value-only op's result
    (a comparison, an argmax) is a constant of the expansion and ends the walk, unless ``through_values`` (certify:
    a branch on the input is not a constant over a box)."""
    return derived(traced, ("dependents", through_values), lambda: _dependents(traced, through_values))


def _dependents(traced: TracedModel, through_values: bool) -> set:
    placeholders = [n for n in traced.graph_module.graph.nodes if n.op == "placeholder"]
    depends = {placeholders[traced.input_index]}
    for node in traced.graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        if not through_values and rules.is_value_only(node.target):
            continue
        if any(a in depends for a in node.all_input_nodes):
            depends.add(node)
    return depends


def check_supported(traced: TracedModel) -> None:
    """Raise one error listing every op that acts on the expansion variables and has no rule, with its module."""
    if traced.__dict__.get("_derived", {}).get("supported"):
        return
    depends = jet_nodes(traced)
    missing: dict[str, set] = {}
    for node in traced.graph_module.graph.nodes:
        if node.op == "call_function" and node in depends and (
                rules.lookup(node.target) is None or not _strided_view_ok(node)):
            missing.setdefault(str(node.target), set()).add(_module_path(node))
    if missing:
        lines = [f"  {op}  in {', '.join(sorted(paths))}" for op, paths in sorted(missing.items())]
        raise UnsupportedOperationError(
            "cannot expand this model: these operations act on the input and have no Taylor rule yet:\n"
            + "\n".join(lines)
            + "\nReplace them, or wrap the model so that they act only on constants.",
            ops=sorted(missing),
        )
    derived(traced, "supported", lambda: True)


def _strided_view_ok(node) -> bool:
    """as_strided has a rule only for a contiguous input that starts its storage (the layout its strides assume)."""
    if node.target is not aten.as_strided.default:
        return True
    val = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
    return isinstance(val, torch.Tensor) and val.is_contiguous() and val.storage_offset() == 0


def output_node(traced: TracedModel):
    """The graph's output node."""
    return next(n for n in traced.graph_module.graph.nodes if n.op == "output")


def require_one_output(traced: TracedModel, verb: str = "expand") -> None:
    """Refuse a model that returns other than one tensor (checked from the graph, before anything is computed)."""
    returned = output_count(traced)
    if returned != 1:
        raise ExpansionError(f"the model returns {returned} tensors; {verb} a function that returns one, "
                             "e.g. lambda x: model(x)[0]")


def output_count(traced: TracedModel) -> int:
    """How many tensors the model returns (from the graph's output node, before anything is computed)."""
    return derived(traced, "output_count", lambda: _output_count(traced))


def _output_count(traced: TracedModel) -> int:
    out = output_node(traced)
    leaves: list = []
    torch.fx.node.map_aggregate(out.args[0], leaves.append)
    return sum(1 for v in leaves if isinstance(v, torch.Tensor) or (
        isinstance(v, torch.fx.Node) and isinstance(v.meta.get("val"), torch.Tensor)))


def activation_numels(traced: TracedModel) -> list[int]:
    """Element counts of the jet-carrying intermediate values (from the fake values recorded at trace time)."""
    return derived(traced, "activation_numels", lambda: _activation_numels(traced))


def _activation_numels(traced: TracedModel) -> list[int]:
    depends = jet_nodes(traced)
    sizes = []
    for node in traced.graph_module.graph.nodes:
        if node in depends:
            val = node.meta.get("val")
            vals = val if isinstance(val, (list, tuple)) else [val]
            sizes.append(sum(v.numel() for v in vals if isinstance(v, torch.Tensor)))
    return sizes

