"""The public entry: ``expand(model, x0, order)`` -> ``TaylorPolynomial``.

Every input element (or a chosen subset) is a variable; the input becomes the jet x0 + t, is pushed through the
model's aten graph with the rule table, and the output jet's coefficients are the Taylor coefficients.
"""

from __future__ import annotations

import itertools
import math
import numbers
import operator
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from . import diagnose, guard, inputs, rules, trace
from .basis import KINDS, basis_size, make_basis, product_table_size
from .errors import (
    ExpansionError,
    GraphEscapeError,
    KinkWarning,
    MemoryBudgetError,
    TimeBudgetError,
    TrainingModeWarning,
)
from .polynomial import TaylorPolynomial
from .series import Jet

DEFAULT_MEMORY_BUDGET = 4 * 2**30
METHODS = ("exact", "hope")


def check_order(order) -> int:
    if isinstance(order, bool) or not isinstance(order, numbers.Integral):
        if isinstance(order, float) and order.is_integer():
            order = int(order)
        else:
            raise ExpansionError(f"order must be a non-negative integer, got {order!r}")
    if order < 0:
        raise ExpansionError(f"order must be a non-negative integer, got {order}")
    return int(order)


def _model_dtype_device(model) -> tuple[torch.dtype | None, torch.device | None]:
    """The dtype and device of the model's first floating parameter (of the modules a function reads, for one)."""
    for module in guard.referenced_modules(model):
        for p in itertools.chain(module.parameters(), module.buffers()):
            if p.is_floating_point():
                return p.dtype, p.device
    return None, None


def prepare_point(model, x0) -> torch.Tensor:
    """x0 as a floating tensor on the model's device and dtype; rejects NaN/inf."""
    if not isinstance(x0, torch.Tensor):
        try:
            x0 = torch.as_tensor(x0, dtype=torch.float64)  # lists of floats: no float32 rounding on the way
        except Exception as e:  # noqa: BLE001 - any conversion failure is the same user error
            raise ExpansionError(f"the reference point must be a tensor (or array-like of numbers): {e}") from None
    dtype, device = _model_dtype_device(model)
    if dtype is None:
        dtype = x0.dtype if x0.is_floating_point() else torch.get_default_dtype()
    x0 = x0.detach().to(dtype=dtype, device=device if device is not None else x0.device)
    if x0.numel() == 0:
        raise ExpansionError("the reference point is empty")
    if not _all_finite(x0):
        bad = (~torch.isfinite(x0)).sum().item()
        raise ExpansionError(f"the reference point has {bad} NaN/inf value(s); give a finite point")
    return x0


_SMALL_POINT = 64  # up to this many elements on the CPU, finiteness is checked in Python (no tensor op)


def _all_finite(x: torch.Tensor) -> bool:
    """Whether every element of x is finite (a small CPU point without a reduction and its dispatch)."""
    if x.device.type == "cpu" and x.numel() <= _SMALL_POINT:
        return all(map(math.isfinite, x.reshape(-1).tolist()))
    return bool(torch.isfinite(x).all())


def variable_indices(x0: torch.Tensor, batched: bool, variables) -> torch.Tensor:
    row_numel = x0[0].numel() if batched else x0.numel()
    if variables is None:
        return torch.arange(row_numel)
    v = torch.as_tensor(variables, dtype=torch.long).reshape(-1)
    if v.numel() == 0:
        raise ExpansionError("variables is empty: name at least one input element to expand in")
    if (v < 0).any() or (v >= row_numel).any():
        raise ExpansionError(f"variables must be flat indices in [0, {row_numel}) of one input row, got {v.tolist()}")
    if v.unique().numel() != v.numel():
        raise ExpansionError("variables has repeated indices")
    return v


# ------------------------------------------------------------------------------------------- memory and time budget
# Calibrated on 2 shared x86-64 cores, one torch thread, float64 (benchmarks/memory.py prints estimate vs measured):
RATE_NATIVE = 1.5e9     # triple x unit multiply-adds per second in the compiled kernels (float64; float32: 2x)
RATE_TORCH = 1.5e8      # triple x unit products per second in the torch formulation (gather, multiply, scatter)
RATE_GEMM = 1.5e10      # multiply-adds per second of a linear op (matmul, convolution) over the coefficients
RATE_TABLE = 2.5e7      # triples per second building the product table (per 10 variables)
RATE_BASIS = 1.0e6      # basis rows per second (Python)
OVERHEAD_BYTES = 16 * 2**20   # interpreter, dispatch and allocator slack of one expansion

_ALIAS = {"view", "_unsafe_view", "reshape", "permute", "transpose", "t", "expand", "unsqueeze", "squeeze", "alias",
          "detach", "slice", "select", "split", "split_with_sizes", "chunk", "unbind", "narrow", "diagonal",
          "as_strided", "_reshape_alias", "movedim", "unflatten", "flatten", "getitem", "lift_fresh_copy"}
_BILINEAR = {"mm", "bmm", "matmul", "convolution", "_trilinear"}
_PRODUCT = {"mul", "square", "prod"}                      # one product: sum over the table of a_i b_j
_RECURRENCE = {"exp": 1, "expm1": 1, "sin": 1.5, "cos": 1.5, "tanh": 1.5, "sigmoid": 1.5, "tan": 1.5, "sinh": 2,
               "cosh": 2, "log": 1, "log1p": 1, "log2": 1, "log10": 1, "exp2": 1, "div": 1, "reciprocal": 1, "pow": 2,
               "sqrt": 1, "rsqrt": 2, "erf": 3, "erfc": 3, "atan": 3, "asin": 4, "acos": 4, "asinh": 4,
               "acosh": 4, "atanh": 3, "_softmax": 2, "_safe_softmax": 2, "_log_softmax": 2, "var_mean": 1,
               "var": 1}                                   # products (passes over the table) per op
_EXTRA_COPIES = {"tanh": 1, "sigmoid": 1, "tan": 1, "sin": 1, "cos": 1, "sinh": 1, "cosh": 1, "div": 2,
                 "reciprocal": 2, "erf": 4, "erfc": 4, "atan": 4, "asin": 5, "acos": 5, "asinh": 5, "acosh": 5,
                 "atanh": 4, "_softmax": 3, "_safe_softmax": 4, "_log_softmax": 3, "var_mean": 2, "var": 2,
                 "addmm": 2, "baddbmm": 2, "convolution": 1, "pow": 2, "sqrt": 1, "rsqrt": 2, "prod": 2,
                 "elu": 3, "where": 2, "masked_fill": 2, "maximum": 2, "minimum": 2, "amax": 1, "amin": 1,
                 "max": 1, "min": 1, "add": 1, "sub": 1, "avg_pool2d": 1, "avg_pool1d": 1, "avg_pool3d": 1}
_WEIGHTED = {"div", "reciprocal", "log", "log1p", "log2", "log10", "pow", "sqrt", "rsqrt", "sinh", "cosh"}


@dataclass
class CostEstimate:
    """What an expansion needs: peak bytes (``memory``, split in ``parts``) and seconds (``seconds``)."""

    memory: int
    seconds: float
    parts: dict = field(default_factory=dict)


def _numel(val) -> int:
    vals = val if isinstance(val, (list, tuple)) else [val]
    return sum(v.numel() for v in vals if isinstance(v, torch.Tensor))


def _op_name(node) -> str:
    target = node.target
    if target is operator.getitem:
        return "getitem"
    packet = getattr(target, "overloadpacket", None)
    return getattr(packet, "__name__", getattr(target, "__name__", str(target)))


def _jet_steps(traced: trace.TracedModel):
    """(node, op name, output numel, input jet numels, inner size of a bilinear op) for every jet-carrying node."""
    jets = trace.jet_nodes(traced)
    for node in traced.graph_module.graph.nodes:
        if node not in jets or node.op != "call_function":
            continue
        ins = [a for a in node.all_input_nodes if a in jets]
        inner = 1
        name = _op_name(node)
        if name in _BILINEAR or name in ("addmm", "baddbmm"):
            vals = [a.meta.get("val") if isinstance(a, torch.fx.Node) else None for a in node.args[:3]]
            if name in ("addmm", "baddbmm"):
                vals = vals[1:]
            if name == "convolution" and isinstance(vals[1], torch.Tensor):
                inner = vals[1][0].numel()                 # Cin / groups x kernel
            elif isinstance(vals[0], torch.Tensor) and vals[0].dim():
                inner = vals[0].shape[-1]
        yield node, name, _numel(node.meta.get("val")), [_numel(a.meta.get("val")) for a in ins], len(ins), inner


def estimate_cost(traced: trace.TracedModel, n: int, order: int, kind: str, itemsize: int, *,
                  like: torch.Tensor | None = None, input_numel: int = 1) -> CostEstimate:
    """Peak bytes and seconds of an exact expansion, from the graph's shapes (nothing is run).

    memory = product table (32 B/triple, C(2n+K, K) triples, total basis) + flat kernel table (16 B/triple) + basis +
    the largest live set of jets along the graph (M coefficients per value; views share their base; values are freed
    after their last use) with the temporaries of the op running at that point + ``OVERHEAD_BYTES``. Caches already
    holding a table are not counted again. seconds = sum over ops of their multiply-adds at the calibrated rates:
    a product costs T x units (T triples; total basis) or about M K / 2 x units (pure basis). ``like``: a tensor of
    the expansion's dtype and device (whether the compiled kernels apply); ``input_numel``: size of the input."""
    from . import _native
    from .basis import cached_basis, tables_cached
    from .series import flat_cached

    native = _native.usable(like) if like is not None else _native.lib() is not None
    device = like.device if like is not None else "cpu"
    key = ("cost", n, order, kind, itemsize, native, input_numel, tables_cached(n, order, device),
           cached_basis(n, order, kind), flat_cached(n, order))
    return trace.derived(traced, key, lambda: _estimate_cost(traced, n, order, kind, itemsize, native, device,
                                                             input_numel))


def _estimate_cost(traced: trace.TracedModel, n: int, order: int, kind: str, itemsize: int, native: bool, device,
                   input_numel: int) -> CostEstimate:
    from .basis import basis_nbytes, cached_basis, largest_degree_triples, product_table_bytes, tables_cached
    from .series import flat_cached, flat_table_bytes

    m = basis_size(n, order, kind)
    uses_tables = kind == "total" and n > 1 and order >= 1
    triples = product_table_size(n, order) if uses_tables or (order >= 1 and n == 1) else 0
    if kind == "pure" and n > 1:
        triples = m * (order + 2) // 2                    # pure products: same-variable pairs of each degree
    dmax = largest_degree_triples(n, order) if kind == "total" else max(1, n * (order + 1))
    parts = {"tables": 0, "flat": 0, "basis": 0}
    seconds = 0.0
    if uses_tables and not tables_cached(n, order, device):
        parts["tables"] = product_table_bytes(n, order)
        seconds += product_table_size(n, order) * max(n, 1) / 10 / RATE_TABLE
    if not cached_basis(n, order, kind):
        parts["basis"] = 2 * basis_nbytes(n, order, kind)  # the Python rows list while it is built, then the basis
        seconds += m / RATE_BASIS

    steps = list(_jet_steps(traced))
    nodes = list(traced.graph_module.graph.nodes)
    index = {nd: i for i, nd in enumerate(nodes)}
    last = {}
    for nd in nodes:
        for a in nd.all_input_nodes:
            last[a] = index[nd]
    root: dict = {}
    for node, name, *_ in steps:
        if name in _ALIAS:
            base = next((a for a in node.all_input_nodes if a in root), None)
            root[node] = root.get(base, node)
        else:
            root[node] = node
    end: dict = {}                                        # a storage is freed after the last use of any alias
    for nd, r in root.items():
        end[r] = max(end.get(r, -1), last.get(nd, len(nodes)))
    free_at: dict = {}
    for r, i in end.items():
        free_at.setdefault(i, []).append(r)
    live = input_numel * m * itemsize                     # the input jet lives throughout
    jets_peak = live
    size: dict = {}
    product_ops = False
    for node, name, numel, in_numels, n_jets, inner in steps:
        out = numel * m * itemsize if root[node] is node else 0
        largest_in = max(in_numels, default=0)
        units = max(numel, largest_in)
        temp, work = 0, 0.0
        if name in _BILINEAR and n_jets == 2:
            product_ops = True
            t_units = sum(in_numels) + numel
            temp = (dmax * t_units + m * numel) * itemsize if kind == "total" else 2 * m * numel * itemsize
            work = triples * (numel * inner / RATE_GEMM + t_units / RATE_TORCH)
        elif (name in _PRODUCT and n_jets == 2) or name in _RECURRENCE:
            product_ops = True
            passes = _RECURRENCE.get(name, 1)
            copies = _EXTRA_COPIES.get(name, 1 if any(u < units for u in in_numels) else 0)
            temp = copies * m * units * itemsize
            if not native and (kind == "total" or n == 1):
                temp += 3 * dmax * units * itemsize
            if name in _WEIGHTED and kind == "total":
                temp += 8 * dmax
            if native:  # about 4 units' worth of work per triple, slower once the jets leave the cache
                slow = 1 + min(1.0, m * units * itemsize / 2**26)
                work = passes * triples * (units + 4) * slow / (RATE_NATIVE * (2 if itemsize <= 4 else 1))
            else:
                work = passes * triples * units / RATE_TORCH
        elif out:
            temp = _EXTRA_COPIES.get(name, 0) * m * units * itemsize
            gemm = name in ("addmm", "mm", "bmm", "matmul", "convolution", "baddbmm")
            work = m * numel * inner / RATE_GEMM if gemm else m * units / RATE_TORCH
        seconds += work
        jets_peak = max(jets_peak, live + out + temp)
        if out:
            size[node] = out
            live += out
        for r in free_at.get(index[node], ()):
            live -= size.pop(r, 0)
    if native and uses_tables and product_ops and not flat_cached(n, order):
        parts["flat"] = flat_table_bytes(n, order) // 2   # its left/right are views of the product table
    parts["jets"] = jets_peak
    parts["overhead"] = OVERHEAD_BYTES
    return CostEstimate(memory=int(sum(parts.values())), seconds=seconds, parts=parts)


def estimate_memory(traced: trace.TracedModel, n: int, order: int, kind: str, itemsize: int) -> int:
    """Peak bytes of an exact expansion (see ``estimate_cost``)."""
    return estimate_cost(traced, n, order, kind, itemsize).memory


def estimate_hope_cost(graph_module: torch.fx.GraphModule, n: int, order: int, kind: str, itemsize: int,
                       input_shape: tuple = (), outputs: int | None = None) -> CostEstimate:
    """Peak bytes and seconds of ``method="hope"`` from its traced graph's shapes (nothing is run).

    With I the largest value's size: basis (and its build) + Jacobians (1 + n) I + two consecutive degree blocks of
    the Kronecker powers (w_{k-1} + w_k) I + the coefficients of every output (M per output, twice while stacked);
    seconds: about 6 M I element operations per output (powers, products, sums)."""
    from .basis import basis_nbytes, cached_basis

    m = basis_size(n, order, kind)
    nodes = list(graph_module.graph.nodes)
    placeholders = [nd for nd in nodes if nd.op == "placeholder"]
    like = [nd for nd in placeholders if getattr(nd.meta.get("val"), "shape", None) == tuple(input_shape)]
    depends = set(like or placeholders)                   # the input: the placeholder(s) shaped as x0
    for nd in nodes:                                      # values that depend on the input (not the parameters)
        if nd.op == "call_function" and any(a in depends for a in nd.all_input_nodes):
            depends.add(nd)
    # the frontier (first hidden values) is computed, not a view of the input: its width I sizes the powers
    units = max((_numel(nd.meta.get("val")) for nd in depends if nd.op == "call_function"
                 and _op_name(nd) not in _ALIAS), default=1) or 1
    inputs = max((_numel(nd.meta.get("val")) for nd in depends), default=1) or 1
    out = next((nd for nd in graph_module.graph.nodes if nd.op == "output"), None)
    out_numel = max(1, _numel([a.meta.get("val") for a in out.all_input_nodes])) if out is not None else 1
    outputs = min(out_numel, 4096) if outputs is None else outputs
    widest = basis_size(n, order, kind) - basis_size(n, order - 1, kind) if order else 1
    parts = {"basis": 0 if cached_basis(n, order, kind) else 2 * basis_nbytes(n, order, kind),
             "jacobians": 3 * (1 + n) * max(units, inputs) * itemsize,
             "powers": 4 * widest * units * itemsize + 40 * m,
             "coefficients": 3 * outputs * m * itemsize,
             "overhead": OVERHEAD_BYTES}
    seconds = m / RATE_BASIS + outputs * 6 * m * units / RATE_TORCH
    return CostEstimate(memory=int(sum(parts.values())), seconds=seconds, parts=parts)


def check_hope_budget(graph_module: torch.fx.GraphModule, x0: torch.Tensor, n: int, order: int, kind: str,
                      memory_budget: int | None, time_budget: float | None) -> None:
    """``check_budget`` for ``method="hope"`` (called by ``expand_hope`` once its graph is traced)."""
    cost = estimate_hope_cost(graph_module, n, order, kind, x0.element_size(), tuple(x0.shape))
    check_budget(cost, n, order, kind, memory_budget, time_budget, method="hope")


def check_budget(cost: CostEstimate, n: int, order: int, kind: str, memory_budget: int | None,
                 time_budget: float | None, method: str = "exact") -> None:
    """Refuse (one message with the numbers and the override) an expansion estimated over either budget.

    memory_budget None: ``default_memory_budget()`` (half the available memory); time_budget None: no limit."""
    from .caches import default_memory_budget

    budget = default_memory_budget() if memory_budget is None else memory_budget
    what = (f"expansion ({method}) to order {order} in {n} variables ({kind!r} basis, {basis_size(n, order, kind)} "
            "coefficients per value)")
    if cost.memory > budget:
        big = {k: _format_bytes(v) for k, v in cost.parts.items() if v >= cost.memory / 10}
        detail = ", ".join(f"{k} {v}" for k, v in big.items())
        raise MemoryBudgetError(
            f"{what} needs about {_format_bytes(cost.memory)} ({detail}), over the memory budget of "
            f"{_format_bytes(budget)}. Lower the order, use terms='pure', expand in fewer variables, or pass "
            f"memory_budget={2 ** math.ceil(math.log2(cost.memory))} to run it anyway.",
            cost.memory, budget)
    if time_budget is not None and cost.seconds > time_budget:
        raise TimeBudgetError(
            f"{what} would take about {cost.seconds:.0f} s, over the time budget of {time_budget:.0f} s. Lower the "
            "order (--max-order in %hope, max_order in HopePanel), use terms='pure', expand in fewer variables, or "
            "pass time_budget=None to run it anyway.", cost.seconds, time_budget)


def _format_bytes(b: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if b < 1024 or unit == "TiB":
            return f"{b:.1f} {unit}"
        b /= 1024
    return f"{b:.1f} TiB"


@dataclass
class PreparedCall:
    """An entry point's arguments after validation: the model as a function of one tensor, the point, whether it is
    a batch, the variable indices, their names, and the element output to select (None: all)."""

    model: object
    x0: torch.Tensor
    batched: bool
    variables: torch.Tensor
    names: list[str] | None
    output: object

    @property
    def n(self) -> int:
        return self.variables.numel()


def prepare_call(model, x0, *, output=None, variables=None, names=None, batched: bool | None = None, wrt=None,
                 verb: str = "expanded") -> PreparedCall:
    """Validate and normalise what ``expand``, ``certify`` and the paper's rule take: several inputs (``wrt``) and
    structured outputs (``output`` key or callable) folded into a function of one tensor, a compiled model
    unwrapped, the point on the model's dtype and device, the variable indices and names; warns about training
    mode (the model is ``verb`` in eval mode)."""
    if not (isinstance(model, nn.Module) or callable(model)):
        raise ExpansionError(f"model must be a torch.nn.Module or a function of one tensor, got {type(model).__name__}")
    model, x0, names, output = inputs.normalize(diagnose.unwrap_compiled(model), x0, wrt=wrt, output=output,
                                                names=names, batched=batched)
    no_values = diagnose.meta_parameters(model)
    if no_values:
        raise ExpansionError(no_values)
    x0 = prepare_point(model, x0)
    if batched is None:
        batched = x0.dim() >= 2
    if batched and x0.dim() < 1:
        raise ExpansionError("batched=True needs a point with a leading batch axis")
    var_index = variable_indices(x0, batched, variables)
    if names is not None:
        names = [str(s) for s in names]
        if len(names) != var_index.numel():
            raise ExpansionError(f"names has {len(names)} entries for {var_index.numel()} variables")
    if mode_sensitive_in_training(model):
        warnings.warn(f"the model is in training mode; it is {verb} in eval mode (dropout off, batch norm on its "
                      "running statistics). Call model.eval() to silence this.", TrainingModeWarning, stacklevel=3)
    return PreparedCall(model, x0, batched, var_index, names, output)


def trace_model(model, x0: torch.Tensor) -> trace.TracedModel:
    """``trace.trace`` with a failure explained in the user's terms (``diagnose.trace_failure``)."""
    try:
        return trace.trace(model, x0)
    except GraphEscapeError:
        raise
    except Exception as e:
        raise ExpansionError(diagnose.trace_failure(model, x0, e)) from e


def expand(model, x0, order: int = 6, *, terms: str = "total", output=None, variables=None, names=None,
           method: str = "exact", batched: bool | None = None, memory_budget: int | None = None,
           time_budget: float | None = None, wrt=None) -> TaylorPolynomial:
    """Taylor polynomial of ``model`` at ``x0`` up to ``order``.

    model: an ``nn.Module`` or a function. x0: a point shaped as the model takes it; when it has two or more
    dimensions, axis 0 is a batch of reference points (one polynomial each) unless ``batched=False``. For a model of
    several inputs, x0 is a tuple (positional) or a dict (keyword arguments) of them: the variables are the floating
    tensors ``wrt`` names (positions or keys; default all), rows flattened and concatenated in input order, named
    after the keys or the forward's parameters; other inputs (token ids, masks) are held fixed.
    terms: "total" (every mixed partial, C(n+K, K) coefficients) or "pure" (unmixed only, 1 + nK).
    output: select one output element per point (int into the flattened output, or index tuple); or, for a model
    returning a tuple, dict or ModelOutput, the key/attribute name of the tensor to expand, or a callable of it.
    variables: flat indices of the input-row elements to expand in (default: all); names: their names.
    method: "exact" (default) or "hope" (the paper's unmixed rule, exact for one hidden layer only).
    memory_budget: bytes; an expansion whose estimated peak (``estimate_cost``: product tables, basis, the largest
    live set of jets with the running op's temporaries) is above it is refused before anything is allocated. Default
    (None): half the memory available when the call starts (MemAvailable of /proc/meminfo, or psutil), 4 GiB if that
    cannot be read (``hope_engine.caches.default_memory_budget``).
    time_budget: seconds; an expansion estimated to run longer (multiply-adds of its products at rates calibrated by
    benchmarks/memory.py) is refused. Default None: no time limit (the notebook panel passes 60 s).
    """
    order = check_order(order)
    if terms not in KINDS:
        raise ExpansionError(f"terms must be one of {KINDS}, got {terms!r}")
    if method not in METHODS:
        raise ExpansionError(f"method must be one of {METHODS}, got {method!r}")
    call = prepare_call(model, x0, output=output, variables=variables, names=names, batched=batched, wrt=wrt,
                        verb="expanded")
    model, x0, batched, var_index, n, names, output = (call.model, call.x0, call.batched, call.variables, call.n,
                                                       call.names, call.output)

    if method == "hope":
        from .hope_rule import expand_hope

        return expand_hope(model, x0, order, terms=terms, output=output, variables=var_index, names=names,
                           batched=batched, memory_budget=memory_budget, time_budget=time_budget)

    traced = trace_model(model, x0)
    trace.check_supported(traced)
    returned = trace.output_count(traced)
    if returned != 1:
        raise ExpansionError(f"the model returns {returned} tensors; expand a function that returns one, "
                             "e.g. lambda x: model(x)[0]")

    cost = estimate_cost(traced, n, order, terms, x0.element_size(), like=x0, input_numel=x0.numel())
    check_budget(cost, n, order, terms, memory_budget, time_budget)

    basis = make_basis(n, order, terms)
    c = x0.new_zeros((basis.size, *x0.shape))
    c[0] = x0
    flat = c.reshape(basis.size, x0.shape[0], -1) if batched else c.reshape(basis.size, -1)
    if order >= 1:  # coefficient 1 + i of variable i is 1: one scatter into rows 1..n
        index = var_index.to(x0.device).reshape(n, *([1] * (flat.dim() - 1)))
        flat[1:1 + n].scatter_(-1, index.expand(n, *flat.shape[1:-1], 1), 1)
    ctx = rules.Context(basis)
    # the graph is run, not the model: the modules' training flags (set to eval while tracing) play no part here
    with torch.no_grad():
        out = trace.run(traced, Jet(c, basis), ctx)
    if ctx.kinks:
        where = ", ".join(f"{k} ({v} value{'s' if v > 1 else ''})" for k, v in ctx.kinks.items())
        warnings.warn(f"the reference point lies exactly on a kink of {where}: the expansion there is one-sided "
                      "(it uses the branch the implementation takes at the kink). Move the point slightly for a "
                      "two-sided view.", KinkWarning, stacklevel=2)
    coefficients = _output_coefficients(out, basis, x0)
    poly = TaylorPolynomial(basis, coefficients, x0, var_index, batched, names=names, method="exact")
    if output is None:
        return poly
    try:
        return poly.select(output)
    except IndexError as e:
        raise ExpansionError(str(e)) from None


_MODE_SENSITIVE = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm,
                   nn.modules.instancenorm._InstanceNorm)


def mode_sensitive_in_training(model) -> bool:
    """True when the model (or a module a plain function reads) holds a layer in training mode that computes
    differently in eval mode."""
    return any(m.training and (isinstance(m, _MODE_SENSITIVE)
                               or (isinstance(m, nn.MultiheadAttention) and m.dropout > 0))
               for root in guard.referenced_modules(model) for m in root.modules())


def _output_coefficients(out, basis, x0) -> torch.Tensor:
    leaves = [o for o in (out if isinstance(out, (list, tuple)) else [out])]
    tensors = [o for o in leaves if isinstance(o, (Jet, torch.Tensor))]
    if len(tensors) != 1:
        raise ExpansionError(f"the model returns {len(tensors)} tensors; expand a function that returns one, "
                             "e.g. lambda x: model(x)[0]")
    o = tensors[0]
    if isinstance(o, Jet):
        return o.c
    # the output does not depend on the input: a constant polynomial
    c = o.new_zeros((basis.size, *o.shape)) if o.is_floating_point() else torch.zeros(
        (basis.size, *o.shape), dtype=x0.dtype, device=x0.device)
    c[0] = o
    return c
