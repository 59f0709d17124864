"""What an expansion will cost before it runs: peak memory and seconds from the traced graph's shapes, and the
refusal when either is over its budget (``MemoryBudgetError``, ``TimeBudgetError``: the numbers and how to override).

memory = product table + flat kernel table + basis + the largest live set of jets along the graph (M coefficients per
value) with the running op's temporaries; seconds = multiply-adds of every op at rates calibrated by
benchmarks/memory.py.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch

from hope_engine.algebra.basis import basis_size, product_table_size
from hope_engine.capture import trace
from hope_engine.errors import MemoryBudgetError, TimeBudgetError
from hope_engine.ops.spec import cost_of

# Calibrated on 2 shared x86-64 cores, one torch thread, float64 (benchmarks/memory.py prints estimate vs measured):
RATE_NATIVE = 1.5e9     # triple x unit multiply-adds per second in the compiled kernels (float64; float32: 2x)
RATE_TORCH = 1.5e8      # triple x unit products per second in the torch formulation (gather, multiply, scatter)
RATE_GEMM = 1.5e10      # multiply-adds per second of a linear op (matmul, convolution) over the coefficients
RATE_TABLE = 2.5e7      # triples per second building the product table (per 10 variables)
RATE_BASIS = 1.0e6      # basis rows per second (Python)
OVERHEAD_BYTES = 16 * 2**20   # interpreter, dispatch and allocator slack of one expansion

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
    """(node, declared cost, output numel, input jet numels, inner size of a bilinear op) for every jet-carrying
    node."""
    jets = trace.jet_nodes(traced)
    for node in traced.graph_module.graph.nodes:
        if node not in jets or node.op != "call_function":
            continue
        ins = [a for a in node.all_input_nodes if a in jets]
        inner = 1
        name = _op_name(node)
        if cost_of(node.target).gemm or cost_of(node.target).bilinear:
            vals = [a.meta.get("val") if isinstance(a, torch.fx.Node) else None for a in node.args[:3]]
            if name in ("addmm", "baddbmm"):
                vals = vals[1:]
            if name == "convolution" and isinstance(vals[1], torch.Tensor):
                inner = vals[1][0].numel()                 # Cin / groups x kernel
            elif isinstance(vals[0], torch.Tensor) and vals[0].dim():
                inner = vals[0].shape[-1]
        yield node, cost_of(node.target), _numel(node.meta.get("val")), [_numel(a.meta.get("val")) for a in ins], \
            len(ins), inner


def estimate_cost(traced: trace.TracedModel, n: int, order: int, kind: str, itemsize: int, *,
                  like: torch.Tensor | None = None, input_numel: int = 1) -> CostEstimate:
    """Peak bytes and seconds of an exact expansion, from the graph's shapes (nothing is run).

    memory = product table (32 B/triple, C(2n+K, K) triples, total basis) + flat kernel table (16 B/triple) + basis +
    the largest live set of jets along the graph (M coefficients per value; views share their base; values are freed
    after their last use) with the temporaries of the op running at that point + ``OVERHEAD_BYTES``. Caches already
    holding a table are not counted again. seconds = sum over ops of their multiply-adds at the calibrated rates:
    a product costs T x units (T triples; total basis) or about M K / 2 x units (pure basis). ``like``: a tensor of
    the expansion's dtype and device (whether the compiled kernels apply); ``input_numel``: size of the input."""
    from hope_engine.algebra import kernels
    from hope_engine.algebra.basis import cached_basis, flat_cached, tables_cached

    native = kernels.runs_natively(like) if like is not None else kernels.backend_name() == "native"
    device = like.device if like is not None else "cpu"
    key = ("cost", n, order, kind, itemsize, native, input_numel, tables_cached(n, order, device),
           cached_basis(n, order, kind), flat_cached(n, order))
    return trace.derived(traced, key, lambda: _estimate_cost(traced, n, order, kind, itemsize, native, device,
                                                             input_numel))


def _estimate_cost(traced: trace.TracedModel, n: int, order: int, kind: str, itemsize: int, native: bool, device,
                   input_numel: int) -> CostEstimate:
    from hope_engine.algebra.basis import (
        basis_nbytes,
        cached_basis,
        flat_cached,
        flat_table_bytes,
        largest_degree_triples,
        product_table_bytes,
        tables_cached,
    )

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
    for node, c, *_ in steps:
        if c.alias:
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
    for node, c, numel, in_numels, n_jets, inner in steps:
        out = numel * m * itemsize if root[node] is node else 0
        largest_in = max(in_numels, default=0)
        units = max(numel, largest_in)
        temp, work = 0, 0.0
        if c.bilinear and n_jets == 2:
            product_ops = True
            t_units = sum(in_numels) + numel
            temp = (dmax * t_units + m * numel) * itemsize if kind == "total" else 2 * m * numel * itemsize
            work = triples * (numel * inner / RATE_GEMM + t_units / RATE_TORCH)
        elif (c.product and n_jets == 2) or c.products or c.products_per_order:
            product_ops = True
            passes = (c.products or 1) + c.products_per_order * order
            copies = c.copies if c.copies is not None else (1 if any(u < units for u in in_numels) else 0)
            temp = copies * m * units * itemsize
            if not native and (kind == "total" or n == 1):
                temp += 3 * dmax * units * itemsize
            if c.weighted and kind == "total":
                temp += 8 * dmax
            if native:  # about 4 units' worth of work per triple, slower once the jets leave the cache
                slow = 1 + min(1.0, m * units * itemsize / 2**26)
                work = passes * triples * (units + 4) * slow / (RATE_NATIVE * (2 if itemsize <= 4 else 1))
            else:
                work = passes * triples * units / RATE_TORCH
        elif out:
            temp = (c.copies or 0) * m * units * itemsize
            work = m * numel * inner / RATE_GEMM if c.gemm else m * units / RATE_TORCH
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


def estimate_hope_cost(traced: trace.TracedModel, n: int, order: int, kind: str, itemsize: int,
                       outputs: int | None = None) -> CostEstimate:
    """Peak bytes and seconds of ``method="hope"`` from its traced graph's shapes (nothing is run).

    With I the largest value's size: basis (and its build) + Jacobians (1 + n) I + two consecutive degree blocks of
    the Kronecker powers (w_{k-1} + w_k) I + the coefficients of every output (M per output, twice while stacked);
    seconds: about 6 M I element operations per output (powers, products, sums). The values are the input's
    dependents (``trace.input_dependents``), their sizes and declared costs those ``estimate_cost`` reads."""
    from hope_engine.algebra.basis import basis_nbytes, cached_basis

    m = basis_size(n, order, kind)
    units, inputs, out_numel = trace.derived(traced, "hope widths", lambda: _hope_widths(traced))
    outputs = min(out_numel, 4096) if outputs is None else outputs
    widest = basis_size(n, order, kind) - basis_size(n, order - 1, kind) if order else 1
    parts = {"basis": 0 if cached_basis(n, order, kind) else 2 * basis_nbytes(n, order, kind),
             "jacobians": 3 * (1 + n) * max(units, inputs) * itemsize,
             "powers": 4 * widest * units * itemsize + 40 * m,
             "coefficients": 3 * outputs * m * itemsize,
             "overhead": OVERHEAD_BYTES}
    seconds = m / RATE_BASIS + outputs * 6 * m * units / RATE_TORCH
    return CostEstimate(memory=int(sum(parts.values())), seconds=seconds, parts=parts)


def _hope_widths(traced: trace.TracedModel) -> tuple[int, int, int]:
    """(I: the largest computed value that depends on the input, the largest such value or the input itself, the
    number of output values). The frontier (first hidden values) is computed, not a view of the input: its width I
    sizes the powers."""
    units = max((numel for _, c, numel, *_ in _jet_steps(traced) if not c.alias), default=1) or 1
    inputs = max((_numel(nd.meta.get("val")) for nd in trace.input_dependents(traced)), default=1) or 1
    out_numel = max(1, _numel([a.meta.get("val") for a in trace.output_node(traced).all_input_nodes]))
    return units, inputs, out_numel


def check_hope_budget(traced: trace.TracedModel, x0: torch.Tensor, n: int, order: int, kind: str,
                      memory_budget: int | None, time_budget: float | None) -> None:
    """``check_budget`` for ``method="hope"`` (called by ``expand_hope`` once its graph is traced)."""
    cost = estimate_hope_cost(traced, n, order, kind, x0.element_size())
    check_budget(cost, n, order, kind, memory_budget, time_budget, method="hope")


def check_budget(cost: CostEstimate, n: int, order: int, kind: str, memory_budget: int | None,
                 time_budget: float | None, method: str = "exact") -> None:
    """Refuse (one message with the numbers and the override) an expansion estimated over either budget.

    memory_budget None: ``default_memory_budget()`` (half the available memory); time_budget None: no limit."""
    from hope_engine.caches import default_memory_budget

    budget = default_memory_budget() if memory_budget is None else memory_budget
    if cost.memory <= budget and (time_budget is None or cost.seconds <= time_budget):
        return
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
