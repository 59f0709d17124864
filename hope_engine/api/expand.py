"""The public entry: ``expand(model, x0, order)`` -> ``TaylorPolynomial``.

Every input element (or a chosen subset) is a variable; the input becomes the jet x0 + t, is pushed through the
model's aten graph with the rule table, and the output jet's coefficients are the Taylor coefficients.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings

import torch

from hope_engine.algebra.basis import KINDS, make_basis
from hope_engine.algebra.jet import Jet
from hope_engine.algebra.polynomial import TaylorPolynomial
from hope_engine.api.verify import verify as check
from hope_engine.caches import BoundedCache
from hope_engine.capture import batch_axis, guard, trace
from hope_engine.capture.arguments import check_order, prepare_call, trace_model
from hope_engine.errors import ExpansionError, KinkWarning, VerificationError, warn_one_sided
from hope_engine.methods import windows
from hope_engine.ops import rules
from hope_engine.options import METHODS
from hope_engine.run import program
from hope_engine.run.cost import check_budget, estimate_cost


def expand(model, x0, order: int = 6, *, terms: str = "total", output=None, variables=None, names=None,
           method: str = "exact", batched: bool | None = None, memory_budget: int | None = None,
           time_budget: float | None = None, wrt=None, verify: bool = True,
           create_graph: bool = False) -> TaylorPolynomial:
    """Taylor polynomial of ``model`` at ``x0`` up to ``order``.

    model: an ``nn.Module`` or a function. x0: a point shaped as the model takes it; when it has two or more
    dimensions, axis 0 is a batch of reference points (one polynomial each, the expansion of that row's output in
    that row's input with the other rows held fixed) unless ``batched=False``. For a model of
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
    verify: check the result against the model's own torch run at the point before returning it (``api.verify``);
    a mismatch raises ``VerificationError``. True (default): the value P(x0) against a forward at every call, the
    first derivatives against one pass of torch's autograd on the first expansion of each traced graph (whether the
    engine differentiates the graph as torch does) and again whenever the graph is traced afresh; "full": the first
    derivatives at every call too; False: no check, and no guarantee (for benchmarks). ``poly.checks`` says what ran.
    create_graph: the coefficients carry autograd history to the model's parameters and, when x0 is a tensor that
    requires grad, to x0 (the jets run on the torch kernels, which autograd differentiates: a loss of the
    coefficients can be trained through). Default False: no graph is recorded.
    """
    order = check_order(order)
    if verify not in (True, False, "full"):
        raise ExpansionError(f"verify must be True, False or 'full', got {verify!r}")
    if terms not in KINDS:
        raise ExpansionError(f"terms must be one of {KINDS}, got {terms!r}")
    if method not in METHODS:
        raise ExpansionError(f"method must be one of {METHODS}, got {method!r}")
    if create_graph not in (True, False):
        raise ExpansionError(f"create_graph must be True or False, got {create_graph!r}")
    if create_graph and method != "exact":
        raise ExpansionError("create_graph=True needs method='exact' (the paper's rule records no autograd graph)")
    point = x0 if create_graph and isinstance(x0, torch.Tensor) and x0.requires_grad else None
    call = prepare_call(model, x0, output=output, variables=variables, names=names, batched=batched, wrt=wrt,
                        verb="expanded")
    cached = bool(trace.GRAPHS.graphs(call.model))
    poly, kinked, interact, traced = _expand_call(call, order, terms, method, memory_budget, time_budget,
                                                  create_graph, point)
    if verify is False:
        return poly
    try:
        checks = _checked(call, poly, kinked, interact, traced, verify == "full")
    except VerificationError:
        if not cached:
            raise
        # a cached graph the guard did not see go stale: once more on a fresh trace, checked again
        trace.GRAPHS.forget(call.model)
        call = dataclasses.replace(call, stamp=guard.UNKNOWN)
        poly, kinked, interact, traced = _expand_call(call, order, terms, method, memory_budget, time_budget,
                                                      create_graph, point)
        checks = _checked(call, poly, kinked, interact, traced, True)
    poly.checks = checks
    return poly


def _checked(call, poly: TaylorPolynomial, kinked: bool, interact: bool, traced, full: bool) -> tuple[str, ...]:
    """Run the self-check: the first derivatives where asked (``full``), where no graph records having passed it, or
    where the graph is not cached (the paper rule, a per-point graph); the value always. Off a kink only."""
    gradient = not kinked and (full or traced is None or not traced.reusable or not traced.gradient_checked)
    checks = check(call.model, call.x0, poly, call.output, gradient=gradient, rows_interact=interact, traced=traced)
    if "gradient" in checks and traced is not None:
        traced.gradient_checked = True
    return checks


def _expand_call(call, order: int, terms: str, method: str, memory_budget, time_budget, create_graph: bool = False,
                 point: torch.Tensor | None = None) -> tuple:
    """(the polynomial, with the output selected; whether the point sits on a kink; whether the batch's rows
    interact, so that each was expanded with the others held fixed; the traced graph, None for the paper rule)."""
    if method == "hope":
        from hope_engine.methods.paper_rule import expand_hope

        with _kink_warnings() as kinks:
            poly = expand_hope(call.model, call.x0, order, terms=terms, output=call.output, variables=call.variables,
                               names=call.names, batched=call.batched, memory_budget=memory_budget,
                               time_budget=time_budget, stamp=call.stamp)
        return poly, bool(kinks), False, None
    model, x0, batched, var_index, n, names, output = (call.model, call.x0, call.batched, call.variables, call.n,
                                                       call.names, call.output)
    traced = trace_model(model, x0, call.stamp)
    trace.check_supported(traced)
    trace.require_one_output(traced)

    cost = estimate_cost(traced, n, order, terms, x0.element_size(), like=x0, input_numel=x0.numel())
    interact = batched and rows_interact(traced, x0)
    if interact:  # one run per row
        cost = dataclasses.replace(cost, seconds=cost.seconds * x0.shape[0])
    check_budget(cost, n, order, terms, memory_budget, time_budget)
    # a CNN's heat map: receptive-field windows (no autograd graph through them)
    if not interact and not create_graph and windows.applies(call, traced, terms, order):
        with _kink_warnings() as kinks:
            poly = windows.expand_windows(call, traced, order)  # (the output selected there)
        return poly, bool(kinks), False, traced

    basis = make_basis(n, order, terms)
    c = input_coefficients(x0, basis, var_index, batched)
    if point is not None:  # the caller's point, with its autograd history, as the value
        c = torch.cat([point.to(dtype=x0.dtype, device=x0.device).reshape(1, *x0.shape), c[1:]])
    ctx = rules.Context(basis)
    # the graph is run, not the model: the modules' training flags (set to eval while tracing) play no part here
    with torch.enable_grad() if create_graph else torch.no_grad():
        if interact:  # rows that interact: each row's expansion with the others held fixed, one run per row
            coefficients = torch.stack([_output_coefficients(program.run(traced, Jet(_row_only(c, i, n), basis),
                                                                         ctx), basis, x0)[:, i]
                                        for i in range(x0.shape[0])], 1)
        else:
            coefficients = _output_coefficients(program.run(traced, Jet(c, basis), ctx), basis, x0)
    warn_one_sided(ctx.kinks, stacklevel=3)
    poly = TaylorPolynomial(basis, coefficients, x0, var_index, batched, names=names, method="exact")
    return _selected(poly, output), bool(ctx.kinks), interact, traced


def _selected(poly: TaylorPolynomial, output) -> TaylorPolynomial:
    if output is None:
        return poly
    try:
        return poly.select(output)
    except IndexError as e:
        raise ExpansionError(str(e)) from None


@contextlib.contextmanager
def _kink_warnings():
    """Collects the KinkWarnings raised inside (for the self-check) and passes every warning on."""
    kinks: list = []
    # (catch_warnings swaps process-wide state: one thread at a time, with tracing's lock)
    with trace.model_lock(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield kinks
    for w in caught:
        if issubclass(w.category, KinkWarning):
            kinks.append(w)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def rows_interact(traced: trace.TracedModel, x0: torch.Tensor) -> bool:
    """Whether the graph's output rows read other rows of its input (batch statistics, a norm or softmax over the
    batch axis): row 0 of the input moved, does any other output row change? Once per graph (its structure)."""
    if x0.dim() < 1 or x0.shape[0] < 2:
        return False
    return trace.derived(traced, "rows interact", lambda: _rows_interact(traced, x0))


def _rows_interact(traced: trace.TracedModel, x0: torch.Tensor) -> bool:
    """Each of up to 8 rows (all of a small batch; else the first, last and a spread between) moved alone: does an
    output row other than its own change?"""
    rows = x0.shape[0]
    noise = torch.rand(x0[0].shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        a = program.single_output(program.run(traced, x0, None, table=program.PLAIN))
        if a.dim() < 1 or a.shape[0] != rows or not batch_axis.rows_are_points(traced):
            return False
        for i in sorted({round(k * (rows - 1) / 7) for k in range(8)} if rows > 8 else range(rows)):
            moved = x0.clone()
            moved[i] = x0[i] + ((x0[i].abs() + 1) * (0.25 + 0.5 * noise).to(x0.dtype)).to(x0.dtype)
            b = program.single_output(program.run(traced, moved, None, table=program.PLAIN))
            if b.shape != a.shape:
                return False
            others = torch.arange(rows) != i
            same = (a[others] == b[others]) | (torch.isnan(a[others]) & torch.isnan(b[others]))
            if not bool(same.all()):
                return True
    return False


def _row_only(c: torch.Tensor, i: int, n: int) -> torch.Tensor:
    """The batched input series with the variables seeded in row i only (the other rows held at their values)."""
    c = c.clone()
    c[1:1 + n, :i] = 0
    c[1:1 + n, i + 1:] = 0
    return c


_TEMPLATES = BoundedCache("input templates", max_entries=16)  # small seeded input series
_TEMPLATE_BYTES = 1 << 16


def input_coefficients(x0: torch.Tensor, basis, var_index: torch.Tensor, batched: bool) -> torch.Tensor:
    """The input series x0 + t: coefficient 0 is x0, coefficient 1 + i is 1 at variable i's element (of every row of a
    batch), all others 0. Small ones are copied from a cached template with the ones in place."""
    small = basis.size * x0.numel() * x0.element_size() <= _TEMPLATE_BYTES
    key = (basis, tuple(x0.shape), x0.dtype, x0.device, batched, tuple(var_index.tolist())) if small else None
    template = _TEMPLATES.get(key) if small else None
    if template is None:
        template = x0.new_zeros((basis.size, *x0.shape))
        flat = template.reshape(basis.size, x0.shape[0], -1) if batched else template.reshape(basis.size, -1)
        n = var_index.numel()
        if basis.order >= 1:  # coefficient 1 + i of variable i is 1: one scatter into rows 1..n
            index = var_index.to(x0.device).reshape(n, *([1] * (flat.dim() - 1)))
            flat[1:1 + n].scatter_(-1, index.expand(n, *flat.shape[1:-1], 1), 1)
        if small:
            _TEMPLATES.put(key, template)
    c = template.clone()
    c[0] = x0
    return c


def _output_coefficients(out, basis, x0) -> torch.Tensor:
    """The coefficients of the run's one output (a constant polynomial for an output that does not move)."""
    o = program.single_output(out)
    if isinstance(o, Jet):
        return o.c
    # the output does not depend on the input: a constant polynomial
    c = o.new_zeros((basis.size, *o.shape)) if o.is_floating_point() else torch.zeros(
        (basis.size, *o.shape), dtype=x0.dtype, device=x0.device)
    c[0] = o
    return c
