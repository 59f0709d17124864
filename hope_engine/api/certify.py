"""``certify(model, x0, order, radius)``: a Taylor polynomial with a guaranteed bound on |model - P| over a box.

    tm = certify(model, x0, order=4, radius=0.1)
    tm.polynomial      # the TaylorPolynomial P of ``expand`` (same coefficients)
    tm.remainder       # R with |f(x) - P(x)| <= R for every x with |x_i - x0_i| <= radius_i
    tm.bounds()        # (lower, upper) enclosing f over the box
    tm.certified_radius(1e-6)   # the largest box (same shape) whose remainder is <= 1e-6

The input is the Taylor model x0 + t (remainder 0) over the box |t_i| <= r_i; every op of the model's aten graph maps
Taylor models to Taylor models (``tm_rules``), so the output's remainder bounds the network's deviation from its
Taylor polynomial over the whole box. See docs/certify.md for what exactly is guaranteed in floating point.
"""

from __future__ import annotations

import math
import warnings

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
from hope_engine.certified.taylor_model import TM, constant, enclosure
from hope_engine.errors import ExpansionError, KinkWarning
from hope_engine.ops import rules
from hope_engine.options import TERMS
from hope_engine.run import program
from hope_engine.run.cost import check_budget, estimate_cost

GRID = 64  # certified_radius searches radii r0 * 2^(m / GRID): about 1.1 % apart


class CertifiedTaylorModel:
    """A Taylor polynomial with a rigorous remainder over a box (see ``certify``).

    polynomial: the TaylorPolynomial; remainder: R (shaped like one output, with the batch axis for a batch of
    points); radius: the box half-widths per variable; crossings: the kinks (relu, max pooling, branches) the box
    crosses, name -> number of values, where a relaxation or the hull was used instead of one piece."""

    def __init__(self, polynomial: TaylorPolynomial, remainder: torch.Tensor, lower: torch.Tensor,
                 upper: torch.Tensor, radius: torch.Tensor, crossings: dict, rebuild):
        self.polynomial = polynomial
        self.remainder = remainder
        self.radius = radius
        self.crossings = dict(crossings)
        self._lower, self._upper = lower, upper
        self._rebuild = rebuild

    @property
    def order(self) -> int:
        return self.polynomial.order

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lower, upper) with lower <= f(x) <= upper over the box: P(x0) + the range bound of P - P(x0) +- R."""
        return self._lower, self._upper

    def certified_radius(self, tol: float, *, max_doublings: int = 30) -> torch.Tensor:
        """Per output (shaped like ``remainder``): the largest L-inf radius rho (on a grid 1.1 % apart) whose box
        rho * radius / max(radius) was certified with remainder <= tol. 0 where even rho = r0 2^-max_doublings fails;
        the largest radius tried (r0 2^max_doublings) where no tried radius fails.

        Bisection on log rho, assuming the remainder grows with the box; every returned radius was certified itself."""
        if not tol >= 0:
            raise ExpansionError(f"tol must be a non-negative number, got {tol!r}")
        r0 = float(self.radius.max())
        r0 = r0 if r0 > 0 else 1.0
        direction = self.radius / r0 if float(self.radius.max()) > 0 else torch.ones_like(self.radius)
        cache: dict[int, torch.Tensor] = {0: self.remainder} if float(self.radius.max()) > 0 else {}

        def ok(m: int) -> torch.Tensor:
            if m not in cache:
                cache[m] = self._rebuild(direction * (r0 * 2.0 ** (m / GRID))).remainder
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
            time_budget: float | None = None) -> CertifiedTaylorModel:
    """Taylor polynomial of ``model`` at ``x0`` up to ``order`` with a certified remainder over a box.

    radius: a number (the L-inf ball |x_i - x0_i| <= radius for every variable) or one half-width per variable.
    extra_orders: the Taylor models are carried to order + extra_orders and the terms above ``order`` are bounded
    over the box at the end (with their signs through every layer: much tighter than bounding them op by op).
    The other arguments are those of ``expand``; only terms="total" can be certified in more than one variable (a
    product of truncated pure series drops mixed terms that the remainder would have to hold)."""
    order = check_order(order)
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
        return _certify_traced(model, traced, x0, basis, order, var_index, batched, radius_vector, names, output,
                               build)

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


@torch.no_grad()
def _certify_traced(model, traced, x0, basis, order, var_index, batched, radius, names, output, rebuild):
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
    lower, upper = enclosure(o, box)
    keep = basis.prefix(order)
    coefficients = o.c[:keep].clone()
    tail = o.c.clone()
    tail[:keep] = 0
    slack = torch.zeros_like(o.r)
    # relaxed or hulled values, or a void certificate somewhere (a rule past an unbounded input may hull it without a
    # crossing): the polynomial is not the Taylor polynomial any more; expand's is
    if ctx.crossings or not bool(torch.isfinite(o.r).all()):
        with warnings.catch_warnings(), trace.eval_mode(model):
            warnings.simplefilter("ignore", KinkWarning)
            jets = program.run(traced, Jet(c, basis), rules.Context(basis))
        taylor = program.single_output(jets)
        taylor = taylor.c[:keep] if isinstance(taylor, Jet) else _constant_coefficients(taylor, keep)
        tail[:keep] = o.c[:keep] - taylor
        # the rounding of those differences over the box (added to R: a shift of the signed constant tail[0] could
        # move the range towards 0 instead of widening it)
        w = box.weights[:keep].reshape(-1, *([1] * (tail.dim() - 1)))
        slack = 2 * unit_roundoff(tail.dtype) * ((o.c[:keep].abs() + taylor.abs()) * w).sum(0)
        coefficients = taylor.clone()
    lo, hi = poly_range(tail, box)  # what P leaves out of the Taylor model's polynomial, bounded over the box
    remainder = up(o.r + torch.maximum((tail[0] + lo).abs(), (tail[0] + hi).abs()) + slack, 4 + keep)
    # a NaN or infinite coefficient (a NaN weight, an op outside its domain at x0): no bound, never a finite number
    bad = ~(torch.isfinite(coefficients).all(0) & torch.isfinite(o.c).all(0))
    remainder = torch.where(torch.isnan(remainder) | bad, torch.inf, remainder)
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
    return CertifiedTaylorModel(poly, remainder, lower, upper, radius, ctx.crossings, rebuild)


def _constant_coefficients(value: torch.Tensor, keep: int) -> torch.Tensor:
    c = value.new_zeros((keep, *value.shape))
    c[0] = value
    return c


def remainder_scaling(order: int) -> float:
    """How the remainder of a smooth network shrinks when the radius halves, asymptotically: 2^-(K+1)."""
    return math.ldexp(1.0, -(order + 1))
