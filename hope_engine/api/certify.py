"""``certify(model, x0, order, radius)``: a Taylor polynomial with a guaranteed bound on |model - P| over a box.

    tm = certify(model, x0, order=4, radius=0.1)
    tm.polynomial      # the TaylorPolynomial P of ``expand`` (same coefficients)
    tm.remainder       # R with |f(x) - P(x)| <= R for every x with |x_i - x0_i| <= radius_i
    tm.bounds()        # (lower, upper) enclosing f over the box
    tm.certified_radius(1e-6)   # the largest box (same shape) whose remainder is <= 1e-6
    tm.radius_report(1e-6)      # the same, with why it is 0 where it is (float32's rounding floor, a kink, ...)
    tm.remainders_by_order()    # R_k for every truncation P_k, k <= order, from the same Taylor model
    tm.with_radius(0.05)        # the same polynomial certified over another box, without tracing again
    tm.bounds(split=Split(boxes=64, orders=(2, 4)))   # branch and bound: the hull over certified sub-boxes

The input is the Taylor model x0 + t (remainder 0) over the box |t_i| <= r_i; every op of the model's aten graph maps
Taylor models to Taylor models (``tm_rules``), so the output's remainder bounds the network's deviation from its
Taylor polynomial over the whole box. See docs/certify.md for what exactly is guaranteed in floating point.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from hope_engine.algebra.basis import make_basis
from hope_engine.algebra.intervals import make_box, poly_range, unit_roundoff, up
from hope_engine.algebra.jet import Jet
from hope_engine.algebra.polynomial import TaylorPolynomial, select_output
from hope_engine.api.expand import rows_interact
from hope_engine.api.verify import verify
from hope_engine.capture import trace
from hope_engine.capture.arguments import check_order, prepare_call, trace_model
from hope_engine.certified.rules import CertContext, check_certifiable, run
from hope_engine.certified.split import Leaf, Split, SplitResult, as_split, branch_and_bound
from hope_engine.certified.taylor_model import TM, constant, tight_enclosure
from hope_engine.errors import ExpansionError, KinkWarning
from hope_engine.ops import rules
from hope_engine.options import TERMS
from hope_engine.run import program
from hope_engine.run.cost import check_budget, estimate_cost

GRID = 64  # certified_radius searches radii r0 * 2^(m / GRID): about 1.1 % apart


@dataclass(frozen=True)
class RadiusReport:
    """Where |f - P_order| <= tol is certified (``CertifiedTaylorModel.radius_report``).

    radius: the certified L-inf radius per output (shaped like ``remainder``, as ``certified_radius``); floor: the
    remainder on the smallest box tried, the least any radius reaches; reasons / fixes: per output element (flattened),
    "" where the radius is positive, else why it is 0 and what to do (``.double()``, move the point, a larger tol)."""

    tol: float
    order: int
    radius: torch.Tensor
    floor: torch.Tensor
    reasons: tuple[str, ...]
    fixes: tuple[str, ...]

    def text(self, element: int = 0) -> str:
        """One line for an output element: the radius, or why it is 0 and the fix."""
        rho = float(self.radius.reshape(-1)[element])
        if rho > 0:
            return f"|f - P| <= {self.tol:.3g} certified within radius {rho:.4g}"
        return (f"|f - P| <= {self.tol:.3g} is certified on no box: {self.reasons[element]}; "
                f"{self.fixes[element]}")


class CertifiedTaylorModel:
    """A Taylor polynomial with a rigorous remainder over a box (see ``certify``).

    polynomial: the TaylorPolynomial; remainder: R (shaped like one output, with the batch axis for a batch of
    points); radius: the box half-widths per variable; crossings: the kinks (relu, max pooling, branches) the box
    crosses, name -> number of values, where a relaxation or the hull was used instead of one piece."""

    def __init__(self, polynomial: TaylorPolynomial, remainder: torch.Tensor, lower: torch.Tensor,
                 upper: torch.Tensor, radius: torch.Tensor, crossings: dict, rebuild, by_order=None, enclose=None,
                 split: Split | None = None):
        self.polynomial = polynomial
        self.remainder = remainder
        self.radius = radius
        self.crossings = dict(crossings)
        self._lower, self._upper = lower, upper
        self._rebuild = rebuild
        self._by_order = by_order
        self._enclose = enclose
        self._split = split

    @property
    def order(self) -> int:
        return self.polynomial.order

    def bounds(self, split=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(lower, upper) with lower <= f(x) <= upper over the box: the range bound of the Taylor model's polynomial
        (monotone variables fixed on their faces, Bernstein form for a few free ones) +- R.

        split: branch and bound over the box (True, a number of boxes, or ``Split(boxes, tol, seconds, orders)``;
        default: what ``certify(split=...)`` was given, else none): the hull of the enclosures of sub-boxes that
        cover the box, each certified at the orders asked for (the tighter kept). ``split_bounds`` says more."""
        spec = as_split(split) if split is not None else self._split
        if spec is None:
            return self._lower, self._upper
        result = self.split_bounds(spec)
        return result.lower, result.upper

    def split_bounds(self, split=True, goal: str = "range") -> SplitResult:
        """Branch and bound over this box (``hope_engine.certified.split``): the hull (lower, upper), the range of f
        seen at the sub-boxes' centres, how many boxes, how long and why it stopped. goal "positive": split until
        every output's lower bound is > 0 ("verified") or a centre's value is <= 0 ("falsified")."""
        spec = as_split(split)
        if spec is None:
            raise ExpansionError("split_bounds needs a split: True, a number of boxes or Split(...)")
        if self._enclose is None:
            raise ExpansionError("this certificate cannot be split (it was not made by certify)")
        orders = spec.orders or (self.order,)
        result = branch_and_bound(lambda shift, radius: self._enclose(shift, radius, orders), self.radius, spec, goal)
        bad = torch.isnan(result.lower) | torch.isnan(result.upper)
        result.lower = torch.where(bad, -torch.inf, result.lower)
        result.upper = torch.where(bad, torch.inf, result.upper)
        return result

    def remainders_by_order(self) -> torch.Tensor:
        """(order + 1, *remainder.shape): row k is R_k >= |f - P_k| over the box for every truncation P_k of the
        polynomial (k <= order), from this same Taylor model (R_k = its remainder + the range of the terms of degree
        k+1.. of its polynomial over the box): no new propagation. Row ``order`` is ``remainder``."""
        if self._by_order is None:
            return self.remainder.unsqueeze(0)
        return self._by_order()

    def with_radius(self, radius) -> CertifiedTaylorModel:
        """The same polynomial certified over another box (a number, or one half-width per variable), reusing the
        traced graph: one propagation, no trace."""
        return self._rebuild(_radius(radius, self.polynomial.n, self.radius))

    def _remainder_at(self, order: int | None):
        """tm -> its remainder of the truncation at ``order`` (None: this model's order)."""
        if order is None or order == self.order:
            return lambda tm: tm.remainder
        if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= self.order:
            raise ExpansionError(f"order must be an integer between 0 and {self.order}, got {order!r}")
        return lambda tm: tm.remainders_by_order()[order]

    def certified_radius(self, tol: float, *, order: int | None = None, max_doublings: int = 30) -> torch.Tensor:
        """Per output (shaped like ``remainder``): the largest L-inf radius rho (on a grid 1.1 % apart) whose box
        rho * radius / max(radius) was certified with remainder <= tol. 0 where even rho = r0 2^-max_doublings fails;
        the largest radius tried (r0 2^max_doublings) where no tried radius fails. ``order``: of the truncation P_k
        (k <= this model's order; default its own). ``radius_report`` also says why a radius is 0.

        Bisection on log rho, assuming the remainder grows with the box; every returned radius was certified itself."""
        if not tol >= 0:
            raise ExpansionError(f"tol must be a non-negative number, got {tol!r}")
        remainder_of = self._remainder_at(order)
        r0 = float(self.radius.max())
        r0 = r0 if r0 > 0 else 1.0
        direction = self.radius / r0 if float(self.radius.max()) > 0 else torch.ones_like(self.radius)
        cache: dict[int, torch.Tensor] = {0: remainder_of(self)} if float(self.radius.max()) > 0 else {}

        def ok(m: int) -> torch.Tensor:
            if m not in cache:
                cache[m] = remainder_of(self._rebuild(direction * (r0 * 2.0 ** (m / GRID))))
            return cache[m] <= tol

        shape = self.remainder.shape
        good = torch.full(shape, -GRID * max_doublings - 1, dtype=torch.long)  # certified (or the sentinel below)
        bad = torch.full(shape, GRID * max_doublings + 1, dtype=torch.long)    # not certified (or above the range)
        at0 = ok(0)
        good[at0], bad[~at0] = 0, 0
        for k in range(max_doublings.bit_length() + 6):  # exponential search outward in steps of 2^k grid points
            step = GRID * 2 ** k
            up_m, down_m = min(step, GRID * max_doublings), max(-step, -GRID * max_doublings)
            need_up = (bad > GRID * max_doublings) & (good >= 0)
            need_down = (good < -GRID * max_doublings) & (bad <= 0)
            if need_up.any():
                res = ok(up_m)
                good[need_up & res] = up_m
                bad[need_up & ~res] = up_m
            if need_down.any():
                res = ok(down_m)
                good[need_down & res] = down_m
                bad[need_down & ~res] = down_m
            if not (need_up.any() or need_down.any()):
                break
        while True:
            active = (bad - good > 1) & (good >= -GRID * max_doublings) & (bad <= GRID * max_doublings)
            if not active.any():
                break
            mids = torch.div(good + bad, 2, rounding_mode="floor")
            for m in mids[active].unique().tolist():
                sel = active & (mids == m)
                res = ok(int(m))
                good[sel & res] = m
                bad[sel & ~res] = m
        rho = r0 * torch.pow(2.0, good.to(torch.float64) / GRID)
        rho[good < -GRID * max_doublings] = 0.0
        return rho.to(self.remainder.dtype)

    def radius_report(self, tol: float, *, order: int | None = None, max_doublings: int = 30) -> RadiusReport:
        """``certified_radius(tol)`` with its floor and, where the radius is 0, why and what to do: the remainder on
        the smallest box tried (r0 2^-max_doublings) is the least any box reaches, and it is above tol because the
        polynomial is NaN at x0, the bound is infinite on every box (the edge of a function's domain), every box
        crosses a kink, or rounding: float32's floor (certify in float64) or float64's (a larger tol)."""
        radius = self.certified_radius(tol, order=order, max_doublings=max_doublings)
        r0 = float(self.radius.max())
        direction = self.radius / r0 if r0 > 0 else torch.ones_like(self.radius)
        tiny = self._rebuild(direction * ((r0 if r0 > 0 else 1.0) * 2.0 ** -max_doublings))
        floor = self._remainder_at(order)(tiny)
        k = self.order if order is None else order
        coefficients = self.polynomial.coefficients[:self.polynomial.basis.prefix(k)]
        finite = torch.isfinite(coefficients.reshape(coefficients.shape[0], -1)).all(0).tolist()
        dtype = str(self.remainder.dtype).replace("torch.", "")
        reasons, fixes = [], []
        for rho, low, ok in zip(radius.reshape(-1).tolist(), floor.reshape(-1).tolist(), finite):
            if rho > 0:
                why, fix = "", ""
            elif not ok:
                why = ("the polynomial is NaN or infinite at x0: x0 is outside the domain of a function the model "
                       "applies (log or sqrt of a negative number, a division by zero)")
                fix = "move the point into the domain"
            elif not math.isfinite(low):
                why = ("the bound is infinite on every box around x0, however small: x0 is at the edge of a "
                       "function's domain (log or sqrt near 0, a division by a value that reaches 0)")
                fix = "move the point away from the edge"
            elif tiny.crossings:
                why = (f"every box around x0 crosses a kink ({', '.join(tiny.crossings)}): x0 lies on it, where no "
                       "single polynomial piece holds")
                fix = "move the point off the kink"
            elif self.remainder.dtype != torch.float64:
                why = f"the rounding floor of {dtype}: R >= {low:.2g} on every box, however small"
                fix = f"certify the model in float64 (model.double()), or ask for tol >= {low:.2g}"
            else:
                why = f"tol is below the rounding floor of float64: R >= {low:.2g} on every box, however small"
                fix = f"ask for tol >= {low:.2g}"
            reasons.append(why)
            fixes.append(fix)
        return RadiusReport(float(tol), k, radius, floor, tuple(reasons), tuple(fixes))

    def __repr__(self) -> str:
        r = self.remainder
        cross = f", crosses {self.crossings}" if self.crossings else ""
        return (f"CertifiedTaylorModel(order={self.order}, n={self.polynomial.n}, radius max "
                f"{float(self.radius.max()):.3g}, remainder max {float(r.max()):.3g}{cross})")


def _radius(radius, n: int, like: torch.Tensor) -> torch.Tensor:
    r = torch.as_tensor(radius, dtype=like.dtype, device=like.device).detach()
    if r.numel() == 1:
        r = r.reshape(1).expand(n).clone()
    if r.numel() != n:
        raise ExpansionError(f"radius must be a number or one value per variable ({n}), got {r.numel()} values")
    r = r.reshape(n)
    if not torch.isfinite(r).all() or (r < 0).any():
        raise ExpansionError("radius must be finite and non-negative")
    return r


def certify(model, x0, order: int = 4, radius=0.1, *, terms: str = "total", output=None, variables=None,
            names=None, batched: bool | None = None, extra_orders: int = 1, memory_budget: int | None = None,
            time_budget: float | None = None, split=None) -> CertifiedTaylorModel:
    """Taylor polynomial of ``model`` at ``x0`` up to ``order`` with a certified remainder over a box.

    radius: a number (the L-inf ball |x_i - x0_i| <= radius for every variable) or one half-width per variable.
    extra_orders: the Taylor models are carried to order + extra_orders and the terms above ``order`` are bounded
    over the box at the end (with their signs through every layer: much tighter than bounding them op by op).
    split: the default of ``bounds(split=...)`` (True, a number of boxes or ``Split(...)``): the enclosure becomes the
    hull over sub-boxes (branch and bound on the one traced graph). The polynomial and remainder stay the whole box's.
    The other arguments are those of ``expand``; only terms="total" can be certified in more than one variable (a
    product of truncated pure series drops mixed terms that the remainder would have to hold)."""
    order = check_order(order)
    split = as_split(split)
    if isinstance(extra_orders, bool) or not isinstance(extra_orders, int) or extra_orders < 0:
        raise ExpansionError(f"extra_orders must be a non-negative integer, got {extra_orders!r}")
    if terms not in TERMS:
        raise ExpansionError(f"terms must be 'total' or 'pure', got {terms!r}")
    call = prepare_call(model, x0, output=output, variables=variables, names=names, batched=batched,
                        verb="certified")
    model, x0, batched, var_index, n, names, output = (call.model, call.x0, call.batched, call.variables, call.n,
                                                       call.names, call.output)
    if terms == "pure" and n > 1:
        raise ExpansionError("certify needs terms='total' with more than one variable: the mixed terms a pure basis "
                             "drops are part of the error the remainder must bound")
    r = _radius(radius, n, x0)
    traced = trace_model(model, x0, call.stamp)
    trace.check_supported(traced)
    check_certifiable(traced)
    trace.require_one_output(traced, "certify")
    refuse_point_only(traced, x0, batched)
    inner = order + extra_orders
    cost = estimate_cost(traced, n, inner, "total", x0.element_size(), like=x0, input_numel=x0.numel())
    check_budget(cost, n, inner, "total", memory_budget, time_budget)
    basis = make_basis(n, inner, "total")

    def build(radius_vector: torch.Tensor) -> CertifiedTaylorModel:
        cert = _certify_traced(model, traced, x0, basis, order, var_index, batched, radius_vector, names, output,
                               build)
        cert._enclose, cert._split = enclose, split
        return cert

    def enclose(shift: torch.Tensor, radius_vector: torch.Tensor, orders) -> Leaf:
        leaf = _enclose_traced(model, traced, _shifted(x0, shift, var_index, batched), orders, extra_orders, n,
                               var_index, batched, radius_vector, output)
        leaf.shift = shift
        return leaf

    tm = build(r)
    # relaxed or hulled somewhere in the box, or no finite certificate (a NaN in the model): the value check alone
    value_only = bool(tm.crossings) or not bool(torch.isfinite(tm.remainder).all())
    tm.polynomial.checks = verify(model, x0, tm.polynomial, output, gradient=not value_only)
    return tm


def refuse_point_only(traced, x0: torch.Tensor, batched: bool) -> None:
    """Refuse a graph that holds at x0 only (the model read a value computed from its input into Python: a branch,
    max(a, b), int(t)) and a batch whose rows read each other: no certificate over a box could follow either."""
    if traced.branches_on_input:
        raise ExpansionError(
            "certify: the model branches in Python on a value computed from its input (if t > 0, Python max/min, "
            "int(t) or .item() steering the computation), so the traced graph holds at x0 only, not over the box, "
            "and no certificate of it would be sound. Write the branch as a tensor op (torch.where, torch.maximum, "
            "torch.clamp) and certify again.")
    if batched and rows_interact(traced, x0):
        raise ExpansionError(
            "certify: the rows of this batch read each other (batch statistics, a norm or softmax over axis 0), so "
            "each row's box would move the others; certify one point at a time (x0[i:i + 1]) or make the model "
            "treat rows independently (eval mode for batch norm).")


def _shifted(x0: torch.Tensor, shift: torch.Tensor, var_index: torch.Tensor, batched: bool) -> torch.Tensor:
    """x0 with the expansion variables moved by ``shift`` (n,) (every row of a batch alike)."""
    x = x0.clone()
    flat = x.reshape(x0.shape[0], -1) if batched else x.reshape(-1)
    flat[..., var_index.to(x0.device)] += shift.to(x0.dtype)
    return x


@torch.no_grad()
def _enclose_traced(model, traced, x0, orders, extra_orders, n, var_index, batched, radius, output) -> Leaf:
    """A split's leaf: the box x0 +- radius certified at each of ``orders`` (the tightest bounds kept), f at x0, and
    each variable's share of the width (sum over the monomials holding t_i of a_i |c_a| r^a, per unit of width)."""
    lower = upper = share = None
    for k in orders:
        basis = make_basis(n, check_order(k) + extra_orders, "total")
        o, box, _ = _propagate(model, traced, x0, basis, var_index, batched, radius)
        lo, hi = (select_output(t, output, int(batched)) for t in tight_enclosure(o, box))
        lo, hi = torch.where(torch.isnan(lo), -torch.inf, lo), torch.where(torch.isnan(hi), torch.inf, hi)
        if lower is None:
            lower, upper = lo, hi
            mass = select_output(o.c.abs() * box.weights.reshape(-1, *([1] * (o.c.dim() - 1))), output,
                                 1 + int(batched)).reshape(basis.size, -1)
            width = (hi - lo).reshape(-1).clamp(min=torch.finfo(lo.dtype).tiny)
            share = (basis.indices.to(mass).t() @ torch.nan_to_num(mass, nan=torch.inf) / width).sum(1)
        else:
            lower, upper = torch.maximum(lower, lo), torch.minimum(upper, hi)
    with trace.eval_mode(model):
        value = select_output(program.single_output(model(x0)).detach().to(x0.dtype), output, int(batched))
    return Leaf(torch.zeros_like(radius), radius, lower, upper, value, share)  # the caller sets the shift


def _propagate(model, traced, x0, basis, var_index, batched, radius):
    """The output's Taylor model over the box x0 +- radius (the input x0 + t with remainder 0), its box and context."""
    c = x0.new_zeros((basis.size, *x0.shape))
    c[0] = x0
    flat = c.reshape(basis.size, x0.shape[0], -1) if batched else c.reshape(basis.size, -1)
    r_in = torch.zeros_like(x0)
    if basis.order >= 1:
        flat[1 + torch.arange(basis.n, device=x0.device), ..., var_index.to(x0.device)] = 1
    else:  # degree 0 holds no t: x0 + t is the constant x0 with remainder |t_i| <= r_i
        r_flat = r_in.reshape(x0.shape[0], -1) if batched else r_in.reshape(-1)
        r_flat[..., var_index.to(x0.device)] = radius.to(x0.dtype)
    box = make_box(basis, radius)
    ctx = CertContext(box, rules.Context(basis))
    with trace.eval_mode(model):
        out = run(traced, TM(c, basis, r_in), ctx)
    o = program.single_output(out)
    if not isinstance(o, TM):  # the output does not depend on the input
        o = constant(o.to(x0.dtype), basis)
    return o, box, ctx


@torch.no_grad()
def _certify_traced(model, traced, x0, basis, order, var_index, batched, radius, names, output, rebuild):
    o, box, ctx = _propagate(model, traced, x0, basis, var_index, batched, radius)
    c = x0.new_zeros((basis.size, *x0.shape))
    c[0] = x0
    if basis.order >= 1:
        flat = c.reshape(basis.size, x0.shape[0], -1) if batched else c.reshape(basis.size, -1)
        flat[1 + torch.arange(basis.n, device=x0.device), ..., var_index.to(x0.device)] = 1
    lower, upper = tight_enclosure(o, box)
    taylor = None
    # relaxed or hulled values, or a void certificate somewhere (a rule past an unbounded input may hull it without a
    # crossing): the polynomial is not the Taylor polynomial any more; expand's is
    if ctx.crossings or not bool(torch.isfinite(o.r).all()):
        with warnings.catch_warnings(), trace.eval_mode(model):
            warnings.simplefilter("ignore", KinkWarning)
            jets = program.run(traced, Jet(c, basis), rules.Context(basis))
        taylor = program.single_output(jets)
        taylor = taylor.c if isinstance(taylor, Jet) else _constant_coefficients(taylor, basis.size)
    remainder, bad, coefficients = _truncation_remainder(o, box, basis.prefix(order), taylor)
    lower = torch.where(torch.isnan(lower) | bad, -torch.inf, lower)
    upper = torch.where(torch.isnan(upper) | bad, torch.inf, upper)
    poly = TaylorPolynomial(basis.truncate(order), coefficients, x0, var_index, batched, names=names,
                            method="exact")
    if output is not None:
        try:
            poly = poly.select(output)
        except IndexError as e:
            raise ExpansionError(str(e)) from None
        remainder, lower, upper = (select_output(t, output, int(batched)) for t in (remainder, lower, upper))

    def by_order() -> torch.Tensor:
        rows = torch.stack([_truncation_remainder(o, box, basis.prefix(k), taylor)[0] for k in range(order + 1)])
        return select_output(rows, output, 1 + int(batched))

    return CertifiedTaylorModel(poly, remainder, lower, upper, radius, ctx.crossings, rebuild, by_order)


def _truncation_remainder(o: TM, box, keep: int, taylor: torch.Tensor | None):
    """(R, bad, coefficients) for P = the first ``keep`` coefficients: R >= |f - P| over the box is the Taylor model's
    remainder plus the range of what P leaves out of its polynomial; ``taylor``: the Taylor coefficients when the Taylor
    model's own polynomial is not them (a relaxation or a hull), else None. bad: where P is not finite (R is inf)."""
    tail = o.c.clone()
    if taylor is None:
        coefficients = o.c[:keep].clone()
        tail[:keep] = 0
        slack = torch.zeros_like(o.r)
    else:
        coefficients = taylor[:keep].clone()
        tail[:keep] = o.c[:keep] - coefficients
        # the rounding of those differences over the box (added to R: a shift of the signed constant tail[0] could
        # move the range towards 0 instead of widening it)
        w = box.weights[:keep].reshape(-1, *([1] * (tail.dim() - 1)))
        slack = 2 * unit_roundoff(tail.dtype) * ((o.c[:keep].abs() + coefficients.abs()) * w).sum(0)
    lo, hi = poly_range(tail, box)  # what P leaves out of the Taylor model's polynomial, bounded over the box
    remainder = up(o.r + torch.maximum((tail[0] + lo).abs(), (tail[0] + hi).abs()) + slack, 4 + keep)
    # a NaN or infinite coefficient (a NaN weight, an op outside its domain at x0): no bound, never a finite number
    bad = ~(torch.isfinite(coefficients).all(0) & torch.isfinite(o.c).all(0))
    return torch.where(torch.isnan(remainder) | bad, torch.inf, remainder), bad, coefficients


def _constant_coefficients(value: torch.Tensor, keep: int) -> torch.Tensor:
    c = value.new_zeros((keep, *value.shape))
    c[0] = value
    return c


def remainder_scaling(order: int) -> float:
    """How the remainder of a smooth network shrinks when the radius halves, asymptotically: 2^-(K+1)."""
    return math.ldexp(1.0, -(order + 1))
