"""Linear differential operators of a network at a batch of points: Laplacian, bi-Laplacian, any sum of partials.

Each pushes one series per point through the traced graph, carrying only what the operator needs:

- ``laplacian``: the n unit directions to order 2, their top coefficients collapsed into one sum (collapsed Taylor
  mode): 2 + n coefficient rows per value. Delta f = 2 sum_i [t_i^2] f.
- ``bilaplacian``: directions e_i and e_i +- e_j (i < j) to order 4, top collapsed with weights: with D_v^4 f the
  fourth directional derivative, D^4_{e_i+e_j} + D^4_{e_i-e_j} = 2 d_i^4 + 12 d_i^2 d_j^2 + 2 d_j^4, so
  Delta^2 f = (1 - (n - 1) / 3) sum_i d_i^4 f + (1 / 6) sum_{i<j} (D^4_{e_i+e_j} + D^4_{e_i-e_j}) f: n^2 directions.
- ``differential_operator``: sum_a c_a d^a f. Unmixed partials only (a = k e_i): the involved unit directions up to
  the top degree K, the degree-K terms collapsed with weights c_{K e_i}, lower degrees read per direction. Any mixed
  partial: the total basis in the involved variables to order K (every mixed coefficient, C(m + K, K) rows).

``create_graph=True``: the result carries autograd history to the model's parameters and to ``x`` (the series run on
the torch kernels, which autograd differentiates); otherwise the run holds no graph. The value of the series is
checked against the model's own forward (``verify``), as every expansion is.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping

import torch

from hope_engine.algebra.basis import Basis, make_basis, make_collapsed_basis
from hope_engine.algebra.jet import Jet
from hope_engine.algebra.polynomial import TaylorPolynomial
from hope_engine.api.expand import input_coefficients, rows_interact
from hope_engine.api.verify import verify as check
from hope_engine.capture import trace
from hope_engine.capture.arguments import prepare_call, trace_model
from hope_engine.errors import ExpansionError, warn_one_sided
from hope_engine.ops import rules
from hope_engine.run import program


def laplacian(f, x, *, create_graph: bool = False, verify: bool = True) -> torch.Tensor:
    """Delta f = sum_i d^2 f / dx_i^2 at each row of ``x`` ((B, n), or (n,) for one point): shape (B, *output) (or
    the output's shape). Collapsed Taylor mode: the n unit directions to order 2, one summed second coefficient."""
    run = _Run(f, x, "laplacian", create_graph, verify)
    eye = torch.eye(run.n, dtype=run.x0.dtype, device=run.x0.device)
    top = run.series(eye, 2, [1.0] * run.n, create_graph, verify)
    return run.shaped(2 * top[-1])


def bilaplacian(f, x, *, create_graph: bool = False, verify: bool = True) -> torch.Tensor:
    """Delta^2 f = sum_{i,j} d^4 f / dx_i^2 dx_j^2 at each row of ``x``: shape (B, *output). Collapsed Taylor mode
    over the n^2 directions e_i, e_i +- e_j (i < j) to order 4, with the weights of the module docstring."""
    run = _Run(f, x, "bilaplacian", create_graph, verify)
    n = run.n
    eye = torch.eye(n, dtype=run.x0.dtype, device=run.x0.device)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    directions = [eye] + ([torch.stack([eye[i] + s * eye[j] for i, j in pairs for s in (1.0, -1.0)])] if pairs else [])
    weights = [1.0 - (n - 1) / 3.0] * n + [1.0 / 6.0] * (2 * len(pairs))
    top = run.series(torch.cat(directions), 4, weights, create_graph, verify)
    return run.shaped(24 * top[-1])


def differential_operator(f, x, coefficients, *, names=None, create_graph: bool = False,
                          verify: bool = True) -> torch.Tensor:
    """sum_a c_a d^|a| f / dx^a at each row of ``x`` for ``coefficients`` {multi-index a (one entry per input
    variable): c_a}, e.g. {(2, 0): 1.0, (0, 2): 1.0} is the Laplacian in two variables: shape (B, *output).
    Or a sympy expression of derivatives of a function of the input names (``names``, default x1 .. xn), e.g.
    ``u.diff(x, 2) + u.diff(y, 2)`` with ``u = Function("u")(x, y)`` and names=["x", "y"].

    Unmixed partials in two or more variables: collapsed Taylor mode over the involved unit directions (the top
    degree summed with the weights c_a). One variable, or a mixed partial anywhere: the total basis in the involved
    variables up to the top degree (in one variable, a plain univariate series: the compiled kernels' fast path)."""
    run = _Run(f, x, "differential_operator", create_graph, verify)
    terms = _terms(_from_sympy(coefficients, run.n, names), run.n)
    order = max(sum(a) for a in terms)
    involved = sorted({i for a in terms for i, k in enumerate(a) if k})
    if order == 0:
        value = run.value(create_graph, verify)
        return run.shaped(terms[(0,) * run.n] * value)
    if len(involved) > 1 and all(sum(1 for k in a if k) <= 1 for a in terms):  # unmixed: collapsed directions
        eye = torch.eye(run.n, dtype=run.x0.dtype, device=run.x0.device)[involved]
        weights = [terms.get(_unit(run.n, i, order), 0.0) for i in involved]
        c = run.series(eye, order, weights, create_graph, verify)
        total = math.factorial(order) * c[-1]
        for a, w in terms.items():
            k = sum(a)
            if k == 0:
                total = total + w * c[0]
            elif k < order:
                i = next(v for v, e in enumerate(a) if e)
                total = total + (w * math.factorial(k)) * c[1 + (k - 1) * len(involved) + involved.index(i)]
        return run.shaped(total)
    basis = make_basis(len(involved), order, "total")
    c = run.total_series(basis, involved, create_graph, verify)
    total = None
    for a, w in terms.items():
        m = basis.position(tuple(a[i] for i in involved))
        term = (w * math.prod(math.factorial(k) for k in a)) * c[m]
        total = term if total is None else total + term
    return run.shaped(total)


def _unit(n: int, i: int, k: int) -> tuple[int, ...]:
    return tuple(k if v == i else 0 for v in range(n))


def _from_sympy(expr, n: int, names) -> object:
    """{multi-index: weight} of a sympy expression sum_a c_a Derivative(u, ...) (+ c_0 u); anything else as given."""
    if not (hasattr(expr, "free_symbols") and hasattr(expr, "atoms")):
        return expr
    import sympy as sp

    names = [f"x{i + 1}" for i in range(n)] if names is None else [str(v) for v in names]
    if len(names) != n:
        raise ExpansionError(f"names must name the {n} input variables, got {len(names)}")
    position = {name: i for i, name in enumerate(names)}
    terms: dict[tuple[int, ...], float] = {}
    for term, weight in sp.expand(expr).as_coefficients_dict().items():
        alpha = [0] * n
        if isinstance(term, sp.Derivative):
            for v, k in term.variable_count:
                if str(v) not in position:
                    raise ExpansionError(f"the operator differentiates in {v}, which is not one of the inputs {names}")
                alpha[position[str(v)]] += int(k)
        elif not isinstance(term, sp.core.function.AppliedUndef):
            raise ExpansionError(f"each term of the operator must be a number times a derivative of the function "
                                 f"(or the function itself), got {term}")
        key = tuple(alpha)
        terms[key] = terms.get(key, 0.0) + float(weight)
    return terms


def _terms(coefficients, n: int) -> dict[tuple[int, ...], float]:
    """The operator's {multi-index: weight}, validated: one clear error for a malformed dict."""
    if not isinstance(coefficients, Mapping) or not coefficients:
        raise ExpansionError("coefficients must be a non-empty dict {multi-index: weight}, e.g. {(2, 0): 1.0, "
                             f"(0, 2): 1.0}} for the Laplacian in two variables; got {coefficients!r}")
    terms: dict[tuple[int, ...], float] = {}
    for a, w in coefficients.items():
        index = (a,) if isinstance(a, int) and n == 1 else a
        if (not isinstance(index, (tuple, list)) or len(index) != n
                or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in index)):
            raise ExpansionError(f"each key of coefficients must be a multi-index of {n} non-negative integers (one "
                                 f"per input variable), got {a!r}")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(float(w)):
            raise ExpansionError(f"the weight of {a!r} must be a finite number, got {w!r}")
        key = tuple(int(k) for k in index)
        terms[key] = terms.get(key, 0.0) + float(w)
    return terms


class _Run:
    """One operator call: the prepared model and points, the traced graph, and how to shape the result."""

    def __init__(self, f, x, verb: str, create_graph: bool = False, verify: bool = True):
        for name, flag in (("create_graph", create_graph), ("verify", verify)):
            if flag not in (True, False):
                raise ExpansionError(f"{verb}: {name} must be True or False, got {flag!r}")
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(x, dtype=torch.float64)
        if x.dim() == 0:
            raise ExpansionError(f"{verb}: x must be a batch of points (B, n) or one point (n,), got a scalar")
        self.single = x.dim() == 1
        live = x.unsqueeze(0) if self.single else x
        call = prepare_call(f, live.detach(), batched=True, verb="differentiated")
        if call.n != call.x0[0].numel():
            raise ExpansionError(f"{verb}: every input element is a variable; got a selection")
        self.call = call
        self.x0 = call.x0
        self.live = live  # the caller's tensor, with its autograd history (create_graph)
        self.n = call.n
        self.traced = trace_model(call.model, call.x0, call.stamp)
        trace.check_supported(self.traced)
        trace.require_one_output(self.traced, verb)
        self.interact = rows_interact(self.traced, self.x0)

    def shaped(self, out: torch.Tensor) -> torch.Tensor:
        return out[0] if self.single else out

    def _point(self, create_graph: bool) -> torch.Tensor:
        if create_graph and self.live.requires_grad:
            return self.live.to(dtype=self.x0.dtype, device=self.x0.device).reshape(self.x0.shape)
        return self.x0

    def series(self, directions: torch.Tensor, order: int, weights, create_graph: bool, verify) -> torch.Tensor:
        """The output's coefficients for the input x + sum_d t_d v_d (v_d the rows of ``directions``, in one row's
        flattened elements) in the collapsed basis of those directions to ``order``."""
        basis = make_collapsed_basis(directions.shape[0], order, weights)
        c = self.x0.new_zeros((basis.size, *self.x0.shape))
        c[0] = self.x0
        flat = c.reshape(basis.size, self.x0.shape[0], -1)
        flat[1:1 + basis.n] = directions.to(c.dtype).unsqueeze(1)
        return self._run(basis, c, create_graph, verify)

    def total_series(self, basis: Basis, involved: list[int], create_graph: bool, verify) -> torch.Tensor:
        c = input_coefficients(self.x0, basis, torch.tensor(involved), True)
        return self._run(basis, c, create_graph, verify)

    def value(self, create_graph: bool, verify) -> torch.Tensor:
        return self._run(make_basis(self.n, 0, "total"), self.x0.unsqueeze(0).clone(), create_graph, verify)[0]

    def _run(self, basis: Basis, c: torch.Tensor, create_graph: bool, verify) -> torch.Tensor:
        point = self._point(create_graph)
        if point is not self.x0:
            c = torch.cat([point.unsqueeze(0), c[1:]])
        ctx = rules.Context(basis)
        grad = torch.enable_grad() if create_graph else torch.no_grad()
        with grad:
            if self.interact:  # rows that read each other: each row's series with the others held fixed
                rows = []
                for i in range(self.x0.shape[0]):
                    own = c.clone()
                    own[1:, :i] = 0
                    own[1:, i + 1:] = 0
                    rows.append(self._coefficients(program.run(self.traced, Jet(own, basis), ctx), basis)[:, i])
                out = torch.stack(rows, 1)
            else:
                out = self._coefficients(program.run(self.traced, Jet(c, basis), ctx), basis)
        warn_one_sided(ctx.kinks, stacklevel=4)
        if verify:
            # the value against the model's own forward: rows that do not read each other, on the first and last row
            # (the same graph computes every row); all rows otherwise
            rows = self.x0.shape[0]
            pick = torch.tensor([0, rows - 1]) if rows > 2 and not self.interact else torch.arange(rows)
            pick = pick.to(self.x0.device)
            value = TaylorPolynomial(make_basis(self.n, 0, "total"), out[:1].detach().index_select(1, pick),
                                     self.x0.index_select(0, pick), self.call.variables, True, names=self.call.names)
            check(self.call.model, value.center, value, self.call.output, gradient=False)
        return out

    def _coefficients(self, out, basis: Basis) -> torch.Tensor:
        o = program.single_output(out)
        if isinstance(o, Jet):
            return o.c
        c = torch.zeros((basis.size, *o.shape), dtype=self.x0.dtype, device=self.x0.device)
        with contextlib.suppress(RuntimeError):
            c = c.to(o.dtype) if o.is_floating_point() else c
        c[0] = o
        return c
