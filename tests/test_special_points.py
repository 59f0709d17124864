"""Every elementwise op right at its special points: 0, +-1, the thresholds and kinks its implementation has.

Three sweeps, each against an independent reference (float64 nested autograd, or mpmath where autograd itself fails,
as it does for sinc at 0, or a defining formula where PyTorch's kernel is not the documented function):

- ``CASES``: every elementwise op of the rule table (and the composites users call that decompose into it), at random
  points and at its special points. Where the function is smooth the expansion must match the reference and give no
  KinkWarning; at a true kink (or jump) it must warn and equal the series of the branch PyTorch's forward takes there.
- the OpInfo database (``torch.testing._internal``): every elementwise unary/binary float op it has samples for, at
  those samples, in one variable of each tensor argument. Ops the engine does not support are counted, not failed.
- the OpInfo unary ops not in ``CASES`` at 0, +-1 and a few more points of their domain.

``-m slow`` runs the OpInfo sweep over the whole database (every op, more samples).
"""

from __future__ import annotations

import functools
import math
import sys
import types
import unittest
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import mpmath
import pytest
import torch
import torch.nn.functional as tF
from support.autograd import assert_close_derivatives
from torch.utils._pytree import tree_flatten, tree_unflatten

from hope_engine import expand
from hope_engine.algebra.basis import make_basis
from hope_engine.capture import trace
from hope_engine.errors import KinkWarning, UnsupportedOperationError
from hope_engine.ops import linear as linear_ops
from hope_engine.ops import rules

D = torch.float64
ORDER = 5
RTOL = 1e-10


def _opinfo() -> tuple[list, type, type]:
    """PyTorch's OpInfo list and its unary/binary elementwise classes. Their modules import ``expecttest`` (for its
    TestCase only), stubbed where it is not installed."""
    if "expecttest" not in sys.modules:
        try:
            import expecttest  # noqa: F401
        except ImportError:
            stub = types.ModuleType("expecttest")
            stub.TestCase = unittest.TestCase
            sys.modules["expecttest"] = stub
    from torch.testing._internal.common_methods_invocations import op_db
    from torch.testing._internal.opinfo.core import BinaryUfuncInfo, UnaryUfuncInfo

    return op_db, UnaryUfuncInfo, BinaryUfuncInfo


# ------------------------------------------------------------------------------------------------- references
def autograd_pure(f: Callable, x0: torch.Tensor, order: int) -> torch.Tensor:
    """(order + 1, n): d^k f(x_i) / dx_i^k of an elementwise f at each point x_i, by nested autograd of sum f(x)."""
    x = x0.detach().clone().requires_grad_(True)
    out = [f(x0).detach()]
    with torch.enable_grad():
        g = f(x).sum()
        for k in range(1, order + 1):
            (d,) = torch.autograd.grad(g, x, create_graph=k < order, allow_unused=True)
            if d is None:
                out += [torch.zeros_like(x0)] * (order + 1 - k)
                break
            out.append(d.detach())
            g = d.sum()
            if not g.requires_grad:
                out += [torch.zeros_like(x0)] * (order - k)
                break
    return torch.stack(out)


def mpmath_pure(f: Callable, x0: torch.Tensor, order: int) -> torch.Tensor:
    """(order + 1, n): derivatives of the mpmath function f at each point, at 30 digits."""
    with mpmath.workdps(30):
        return torch.tensor([[float(mpmath.diff(f, mpmath.mpf(float(v)), k)) for v in x0] for k in range(order + 1)],
                            dtype=D)


def expand_pure(f: Callable, x0: torch.Tensor, order: int) -> tuple[torch.Tensor, list[str]]:
    """(order + 1, n) derivatives of an elementwise f at each point (one variable per point, the pure basis), and the
    KinkWarnings raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = expand(f, x0, order, terms="pure", batched=False)
    kinks = [str(w.message) for w in caught if issubclass(w.category, KinkWarning)]
    d = p.derivatives().reshape(p.basis.size, -1)
    n = x0.numel()
    rows = [d[0]] + [torch.diagonal(d[1 + (k - 1) * n:1 + k * n]) for k in range(1, order + 1)]
    return torch.stack(rows), kinks


# ---------------------------------------------------------------------------------------------------- the cases
@dataclass
class Case:
    """An elementwise function of one tensor; ``smooth``: points where it is analytic; ``kinks``: (point, branch)
    pairs, branch being the piece PyTorch's forward takes at the point; ``mp``: an mpmath reference replacing autograd
    of ``ref`` (default: the function itself)."""

    f: Callable
    smooth: list[float]
    kinks: list[tuple[float, Callable]] = field(default_factory=list)
    ref: Callable | None = None
    mp: Callable | None = None
    ops: tuple[str, ...] = ()  # the rule-table ops the case exercises (besides its name)


def _softplus_formula(beta: float) -> Callable:
    return lambda x: torch.log1p(torch.exp(beta * x)) / beta


def _zero(x):
    return 0 * x


def _const(c: float) -> Callable:
    return lambda x: 0 * x + c


RANDOM = [-2.3, -0.71, 0.37, 1.9]
REAL = [0.0, 1.0, -1.0, *RANDOM]
POSITIVE = [0.25, 0.5, 1.0, 2.0, 3.7]

CASES: dict[str, Case] = {
    # analytic functions of the rule table (the recurrences), on their domains
    "exp": Case(torch.exp, REAL), "expm1": Case(torch.expm1, REAL), "sin": Case(torch.sin, REAL),
    "cos": Case(torch.cos, REAL), "tanh": Case(torch.tanh, REAL), "sigmoid": Case(torch.sigmoid, [*REAL, 30.0, -30.0]),
    "erf": Case(torch.erf, REAL), "erfc": Case(torch.erfc, REAL), "sinh": Case(torch.sinh, REAL),
    "cosh": Case(torch.cosh, REAL), "atan": Case(torch.atan, REAL), "asinh": Case(torch.asinh, REAL),
    "exp2": Case(torch.exp2, REAL), "tan": Case(torch.tan, [0.0, 1.0, -1.0, 0.37, -1.2]),
    "log": Case(torch.log, POSITIVE), "log2": Case(torch.log2, POSITIVE), "log10": Case(torch.log10, POSITIVE),
    "log1p": Case(torch.log1p, [0.0, -0.5, 1.0, 2.5]), "sqrt": Case(torch.sqrt, POSITIVE),
    "rsqrt": Case(torch.rsqrt, POSITIVE), "reciprocal": Case(torch.reciprocal, [1.0, -1.0, 0.5, -2.3, 3.7]),
    "asin": Case(torch.asin, [0.0, 0.5, -0.5, 0.9]), "acos": Case(torch.acos, [0.0, 0.5, -0.5, 0.9]),
    "atanh": Case(torch.atanh, [0.0, 0.5, -0.5, 0.9]), "acosh": Case(torch.acosh, [1.5, 2.0, 3.7]),
    "square": Case(torch.square, REAL), "neg": Case(torch.neg, REAL),
    "mul": Case(lambda x: x * x * 0.5, REAL), "div": Case(lambda x: 1.0 / (2.0 + x), REAL),
    "pow": Case(lambda x: x ** 3, REAL), "pow_half": Case(lambda x: x ** 0.5, POSITIVE, ops=("pow",)),
    "pow_exponent": Case(lambda x: 2.0 ** x, REAL, ops=("pow",)),
    "add": Case(lambda x: x + 1.5, REAL), "sub": Case(lambda x: 1.5 - x, REAL, ops=("rsub",)),
    # composites decomposed into the table
    "silu": Case(tF.silu, REAL), "gelu": Case(tF.gelu, REAL),
    "gelu_tanh": Case(lambda x: tF.gelu(x, approximate="tanh"), REAL),
    "tanhshrink": Case(tF.tanhshrink, REAL), "glu": Case(lambda x: tF.glu(torch.stack([x, 0.5 * x]), 0)[0], REAL),
    # smooth functions whose PyTorch kernels branch: the smooth function everywhere
    # torch's branch: x past the threshold (beta x > threshold), the smooth side at it
    "softplus": Case(tF.softplus, [*REAL, 19.5, 20.5, 30.0, -30.0], kinks=[(20.0, _softplus_formula(1.0))]),
    "softplus_threshold": Case(lambda x: tF.softplus(x, beta=2.0, threshold=1.0), [0.75, 0.25, 0.0, -1.0],
                               kinks=[(0.5, _softplus_formula(2.0))], ops=("softplus",)),
    "logsigmoid": Case(tF.logsigmoid, [*REAL, 30.0, -30.0], ops=("log_sigmoid_forward",)),
    "mish": Case(tF.mish, [*REAL, 20.0, 20.5, -25.0], ref=lambda x: x * torch.tanh(torch.log1p(torch.exp(x)))),
    "sinc": Case(torch.sinc, [0.0, 1.0, -1.0, 1 / math.pi, -1 / math.pi, 0.5, 1e-3, *RANDOM],
                 mp=lambda t: mpmath.sinc(mpmath.pi * t)),
    "logit": Case(torch.logit, [0.5, 0.25, 0.9, 0.01]),
    "logit_eps": Case(lambda x: torch.logit(x, eps=0.1), [0.5, 0.25, 0.8], ops=("logit",),
                      kinks=[(0.1, _const(math.log(0.1 / 0.9))), (0.9, _const(math.log(0.9 / 0.1)))],
                      ref=lambda x: torch.log(x / (1 - x))),
    # piecewise: smooth off their kinks, one-sided (with a warning) on them
    "relu": Case(tF.relu, [1.0, -1.0, 0.37], kinks=[(0.0, _zero)]),
    "leaky_relu": Case(lambda x: tF.leaky_relu(x, 0.1), [1.0, -1.0], kinks=[(0.0, lambda x: 0.1 * x)]),
    "hardtanh": Case(tF.hardtanh, [0.0, 0.5, 2.0, -2.0], kinks=[(1.0, _const(1.0)), (-1.0, _const(-1.0))]),
    "relu6": Case(tF.relu6, [3.0, -1.0, 7.0], kinks=[(0.0, _const(0.0)), (6.0, _const(6.0))], ops=("hardtanh",)),
    "clamp": Case(lambda x: torch.clamp(x, -1.0, 2.0), [0.0, 1.0, 3.0], kinks=[(-1.0, _const(-1.0)),
                                                                             (2.0, _const(2.0))]),
    "clamp_min": Case(lambda x: torch.clamp_min(x, 0.5), [0.0, 1.0], kinks=[(0.5, _const(0.5))]),
    "clamp_max": Case(lambda x: torch.clamp_max(x, 0.5), [0.0, 1.0], kinks=[(0.5, _const(0.5))]),
    "abs": Case(torch.abs, [1.0, -1.0, 0.37], kinks=[(0.0, lambda x: x)]),
    "elu": Case(tF.elu, [1.0, -1.0, 0.37], kinks=[(0.0, torch.expm1)]),
    "elu_alpha": Case(lambda x: tF.elu(x, 2.0), [1.0, -1.0], kinks=[(0.0, lambda x: 2.0 * torch.expm1(x))],
                      ops=("elu",)),
    "selu": Case(tF.selu, [1.0, -1.0], kinks=[(0.0, lambda x: 1.0507009873554805 * 1.6732632423543772
                                                 * torch.expm1(x))], ops=("elu",)),
    "celu": Case(lambda x: tF.celu(x, 2.0), [1.0, -1.0, 0.37], kinks=[(0.0, lambda x: 2.0 * torch.expm1(x / 2.0))],
                 ref=lambda x: torch.where(x > 0, x, 2.0 * torch.expm1(x / 2.0))),
    "celu_1": Case(tF.celu, [1.0, -1.0], kinks=[(0.0, torch.expm1)], ops=("celu",),
                   ref=lambda x: torch.where(x > 0, x, torch.expm1(x))),
    "prelu": Case(lambda x: tF.prelu(x, torch.tensor([0.25], dtype=D)), [1.0, -1.0], kinks=[(0.0, lambda x: 0.25 * x)],
                  ops=("_prelu_kernel",)),
    "rrelu": Case(lambda x: tF.rrelu(x, training=False), [1.0, -1.0], kinks=[(0.0, lambda x: (1 / 8 + 1 / 3) / 2 * x)],
                  ops=("leaky_relu",)),
    "threshold": Case(lambda x: tF.threshold(x, 0.5, -1.0), [0.0, 1.0, -1.0], kinks=[(0.5, _const(-1.0))]),
    "hardshrink": Case(tF.hardshrink, [0.0, 0.25, 1.0, -1.0], kinks=[(0.5, _zero), (-0.5, _zero)]),
    "softshrink": Case(tF.softshrink, [0.0, 0.25, 1.0, -1.0], kinks=[(0.5, _zero), (-0.5, _zero)]),
    "hardsigmoid": Case(tF.hardsigmoid, [0.0, 1.0, -1.0, 4.0, -4.0], kinks=[(3.0, _const(1.0)), (-3.0, _zero)],
                        ref=lambda x: torch.clamp(x / 6 + 0.5, 0.0, 1.0), ops=("clamp",)),
    "hardswish": Case(tF.hardswish, [0.0, 1.0, -1.0, 4.0, -4.0], kinks=[(3.0, lambda x: x), (-3.0, _zero)],
                      ops=("clamp",)),
    "softsign": Case(tF.softsign, [1.0, -1.0, 0.37], kinks=[(0.0, lambda x: x / (1 + x))], ops=("abs", "div")),
    "maximum": Case(lambda x: torch.maximum(x, 0.5 * x + 0.5), [0.0, 2.0], kinks=[(1.0, lambda x: 0.5 * x + 0.5)]),
    "minimum": Case(lambda x: torch.minimum(x, 0.5 * x + 0.5), [0.0, 2.0], kinks=[(1.0, lambda x: 0.5 * x + 0.5)]),
    "where_gt": Case(lambda x: torch.where(x > 0, x, 0.1 * x), [1.0, -1.0], kinks=[(0.0, lambda x: 0.1 * x)],
                     ops=("where",)),
    "sign": Case(lambda x: torch.sign(x) * x, [1.0, -1.0], kinks=[(0.0, _zero)], ops=("mul",)),
    "floor": Case(lambda x: torch.floor(x) + x, [0.5, -1.5], kinks=[(1.0, lambda x: x + 1.0)], ops=("add",)),
    "frac": Case(torch.frac, [0.5, -1.5, 2.25], kinks=[(1.0, lambda x: x - 1.0), (0.0, lambda x: x)], ops=("sub",)),
    "huber_loss": Case(lambda x: tF.huber_loss(x, torch.zeros_like(x), reduction="none", delta=0.5), [0.0, 0.25, 1.0],
                       kinks=[(0.5, lambda x: 0.5 * (x - 0.25))],
                       ref=lambda x: torch.where(x.abs() < 0.5, 0.5 * x * x, 0.5 * (x.abs() - 0.25))),
    "smooth_l1_loss": Case(lambda x: tF.smooth_l1_loss(x, torch.zeros_like(x), reduction="none", beta=0.5),
                           [0.0, 0.25, 1.0], kinks=[(0.5, lambda x: x - 0.25)],
                           ref=lambda x: torch.where(x.abs() < 0.5, x * x, x.abs() - 0.25)),
    "l1_loss": Case(lambda x: tF.l1_loss(x, torch.zeros_like(x), reduction="none"), [1.0, -1.0],
                    kinks=[(0.0, lambda x: x)], ops=("abs",)),
    # special functions: analytic on their domains (their poles and branch points raise: test_op_coverage)
    "erfinv": Case(torch.erfinv, [0.0, 0.5, -0.5, 0.9, -0.99]),
    # mpmath, not autograd: autograd's derivatives of these go through torch's trigamma, ~3e-10 accurate
    "lgamma": Case(torch.lgamma, [1.0, 2.0, 0.5, -0.5, -1.5, 3.7], mp=lambda x: mpmath.log(abs(mpmath.gamma(x)))),
    "digamma": Case(torch.digamma, [1.0, 2.0, 0.5, -0.5, 3.7], mp=mpmath.digamma),
    "polygamma": Case(lambda x: torch.polygamma(2, x), [1.0, 0.5, -0.5, 2.0]),
    # functions of two tensors, the second one a function of the first
    "atan2": Case(lambda x: torch.atan2(x, 0.5 * x + 1), [*REAL, -2.0]),
    "atan2_cut": Case(lambda x: torch.atan2(x - 1, -x), [0.5, 2.0, -1.0], ops=("atan2",),  # y = 0, x < 0 at x = 1
                      kinks=[(1.0, lambda x: math.pi + torch.atan((x - 1) / -x))]),
    "hypot": Case(lambda x: torch.hypot(x, 0.5 * x + 1), [*REAL, -2.0]),
    "logaddexp": Case(lambda x: torch.logaddexp(x, -x), [*REAL, 30.0, -30.0]),
    "logaddexp2": Case(lambda x: torch.logaddexp2(x, 0.5 * x), [*REAL, 30.0, -30.0]),
    "remainder": Case(lambda x: torch.remainder(x, 0.75), [0.3, -0.3, 1.0, 2.0],
                      kinks=[(0.75, lambda x: x - 0.75), (0.0, lambda x: x), (-0.75, lambda x: x + 0.75)]),
    "fmod": Case(lambda x: torch.fmod(x, 0.75), [0.0, 0.3, -0.3, 1.0],
                 kinks=[(0.75, lambda x: x - 0.75), (-0.75, lambda x: x + 0.75)]),
    "copysign": Case(lambda x: torch.copysign(x, 0.5 - x), [1.0, -1.0, 0.25],
                     kinks=[(0.0, lambda x: x), (0.5, lambda x: x)]),
    "fmax": Case(lambda x: torch.fmax(x, 0.5 * x + 0.5), [0.0, 2.0], kinks=[(1.0, lambda x: 0.5 * x + 0.5)]),
    "fmin": Case(lambda x: torch.fmin(x, 0.5 * x + 0.5), [0.0, 2.0], kinks=[(1.0, lambda x: 0.5 * x + 0.5)]),
}


def _reference(case: Case, f: Callable, x0: torch.Tensor, order: int) -> torch.Tensor:
    if case.mp is not None:
        return mpmath_pure(case.mp, x0, order)
    return autograd_pure(f, x0, order)


@pytest.mark.parametrize("name", sorted(CASES))
def test_smooth_points_match_and_do_not_warn(name):
    """At its smooth points (0, +-1, thresholds, random points) every op matches the reference, with no KinkWarning."""
    case = CASES[name]
    x0 = torch.tensor(case.smooth, dtype=D)
    got, kinks = expand_pure(case.f, x0, ORDER)
    assert not kinks, f"{name}: a KinkWarning at smooth points {case.smooth}: {kinks}"
    want = _reference(case, case.ref or case.f, x0, ORDER)
    assert_close_derivatives(got, want, list(range(ORDER + 1)), RTOL, what=name)


KINKS = [(name, i) for name, case in sorted(CASES.items()) for i in range(len(case.kinks))]


@pytest.mark.parametrize(("name", "i"), KINKS)
def test_kinks_warn_and_follow_the_branch_taken(name, i):
    """At a true kink (or jump) the expansion warns, and it is the series of the branch PyTorch's forward takes."""
    point, branch = CASES[name].kinks[i]
    x0 = torch.tensor([point], dtype=D)
    got, kinks = expand_pure(CASES[name].f, x0, ORDER)
    assert kinks, f"{name}: no KinkWarning at its kink {point}"
    assert_close_derivatives(got, autograd_pure(branch, x0, ORDER), list(range(ORDER + 1)), RTOL, what=name)
    torch.testing.assert_close(got[0], CASES[name].f(x0), rtol=1e-14, atol=1e-14)  # the value PyTorch computes


# ---------------------------------------------------------------------- the regressions this file was written for
def test_logsigmoid_at_zero_is_smooth():
    """d/dx log sigmoid(x) = sigmoid(-x) = 1/2 at 0 (was 3/2, through min/abs in the decomposition, and a kink)."""
    got, kinks = expand_pure(tF.logsigmoid, torch.tensor([0.0], dtype=D), 4)
    assert not kinks
    torch.testing.assert_close(got[:, 0], torch.tensor([-math.log(2), 0.5, -0.25, 0.0, 0.125], dtype=D))


def test_sinc_at_zero_has_its_series():
    """sinc(x) = 1 - (pi x)^2 / 6 + (pi x)^4 / 120 - ...: derivatives 1, 0, -pi^2/3, 0, pi^4/5, 0 (were all 0)."""
    got, kinks = expand_pure(torch.sinc, torch.tensor([0.0], dtype=D), 5)
    assert not kinks
    want = torch.tensor([1.0, 0.0, -math.pi ** 2 / 3, 0.0, math.pi ** 4 / 5, 0.0], dtype=D)
    torch.testing.assert_close(got[:, 0], want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("fn", ["xlogy", "xlog1py"])
def test_xlogy_at_zero_is_the_product(fn):
    """x log y is smooth at x = 0 (y > 0): d/dx = log y, d^2/dxdy = 1/y (were all 0). Only x that is identically 0
    gives the zero series."""
    op, log = (torch.xlogy, torch.log) if fn == "xlogy" else (torch.special.xlog1py, torch.log1p)
    with warnings.catch_warnings():
        warnings.simplefilter("error", KinkWarning)
        p = expand(lambda z: op(z[0], z[1]), torch.tensor([0.0, 2.0], dtype=D), 4)
    assert p.value.item() == 0.0
    assert p.derivative((1, 0)).item() == pytest.approx(float(log(torch.tensor(2.0, dtype=D))), rel=1e-15)
    want = torch.tensor(0.5 if fn == "xlogy" else 1 / 3, dtype=D)
    assert p.derivative((1, 1)).item() == pytest.approx(float(want), rel=1e-15)
    q = expand(lambda z: op(torch.zeros_like(z[0]), z[1]) + 0 * z[0], torch.tensor([0.0, 2.0], dtype=D), 3)
    assert bool((q.coefficients == 0).all())


def test_celu_warns_only_where_its_kink_is_reached():
    """celu and elu(alpha=1) are C^1 at 0 and not C^2: no kink at order 1, a kink from order 2 (elu(alpha=2) from
    order 1)."""
    x0 = torch.tensor([0.0], dtype=D)
    for f, first in ((tF.celu, 2), (lambda x: tF.celu(x, 0.5), 2), (tF.elu, 2), (lambda x: tF.elu(x, 2.0), 1)):
        for order in (1, 2, 3):
            _, kinks = expand_pure(f, x0, order)
            assert bool(kinks) == (order >= first), (order, first, kinks)


def test_a_jet_that_does_not_move_crosses_no_kink():
    """relu of an element that does not depend on the expansion variables sits on 0 but never leaves it: no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", KinkWarning)
        p = expand(lambda x: torch.relu(x) * x[0], torch.tensor([1.0, 0.0], dtype=D), 3, variables=[0])
    assert p.derivative((1,)).tolist() == [2.0, 0.0]


def test_clamp_with_tensor_bounds():
    """clamp(x, lo, hi) with bounds that depend on the input (were refused with a TypeError)."""
    def f(z):
        return torch.clamp(z[0] * z[1], z[1] - 1, torch.exp(z[1]))

    for point in ([0.3, 0.7], [2.0, 0.5], [-3.0, 0.5]):
        x0 = torch.tensor(point, dtype=D)
        p = expand(f, x0, 3)
        alphas = p.basis.multi_indices()
        from support.autograd import autograd_derivatives

        want = autograd_derivatives(f, x0, alphas)
        assert_close_derivatives(p.derivatives(), want, [sum(a) for a in alphas], RTOL)


# ------------------------------------------------------------------------------------------------ OpInfo sweeps
# OpInfo ops whose float64 nested autograd is not the function the engine expands (reference: a defining formula)
OPINFO_REFERENCES: dict[str, Callable] = {
    # PyTorch's celu backward rounds 1/alpha to float32
    "nn.functional.celu": lambda x, alpha=1.0: torch.where(x > 0, x, alpha * torch.expm1(x / alpha)),
    # hardsigmoid's backward has no derivative
    "nn.functional.hardsigmoid": lambda x: torch.clamp(x / 6 + 0.5, 0.0, 1.0),
}
# OpInfo entries whose samples are not elementwise float functions of their tensors (random, integer, in-place...)
ELEMENTWISE_EXTRA = {
    "nn.functional.elu", "nn.functional.celu", "nn.functional.selu", "nn.functional.silu", "nn.functional.mish",
    "nn.functional.logsigmoid", "nn.functional.softplus", "nn.functional.softsign", "nn.functional.tanhshrink",
    "nn.functional.threshold", "nn.functional.softshrink", "nn.functional.hardshrink", "nn.functional.hardtanh",
    "nn.functional.relu6", "nn.functional.hardsigmoid", "nn.functional.hardswish", "nn.functional.gelu",
    "nn.functional.leaky_relu", "nn.functional.prelu", "nn.functional.glu", "nn.functional.huber_loss",
    "nn.functional.smooth_l1_loss", "nn.functional.l1_loss", "nn.functional.mse_loss", "clamp", "clamp_min",
    "clamp_max", "logit", "xlogy", "special.xlog1py", "lerp", "addcmul", "addcdiv", "where", "sinc", "erfc",
    "special.ndtr", "nn.functional.relu", "special.entr", "square",
}
# OpInfo entries the whole-database (slow) sweep knows to fail, with the reason (outside the elementwise rules)
KNOWN_FAILURES = {
    "nn.functional.layer_norm": "PyTorch's layer_norm autograd is wrong from order 3 (test_engine_layers)",
    "native_layer_norm": "PyTorch's layer_norm autograd is wrong from order 3 (test_engine_layers)",
    "nn.functional.bilinear": "bilinear with input, weight and bias all depending on the input: not supported",
    "nn.functional.multi_head_attention_forward": "the sample trains with dropout: random",
    "nn.functional.feature_alpha_dropout": "the sample trains with dropout: random",
    "empty_like": "uninitialised memory", "new_empty": "uninitialised memory", "empty": "uninitialised memory",
    "torch.ops.aten._safe_softmax.default": "its sample has -inf inputs",
    "to": "channels_last samples of 3-d tensors",
    "linalg.norm": "the norm at 0 is a cone point: no Taylor expansion (an ExpansionError names sqrt)",
    "sparse.mm": "sparse tensors", "masked.log_softmax": "inf in the sample", "__rpow__": "NaN in the sample",
    "nn.functional.dropout": "training mode: random", "nn.functional.dropout2d": "training mode: random",
    "nn.functional.dropout3d": "training mode: random", "nn.functional.alpha_dropout": "training mode: random",
    "nn.functional.scaled_dot_product_attention": "the sample has dropout: random",
    "masked.logaddexp": "autograd gives NaN in masked lanes (-inf on both sides), where the output does not move: the "
                        "expansion's 0 is right",
}


def _opinfo_name(op) -> str:
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


def _packed(sample):
    """(z, f, variables): the sample's float64 tensors (input, args, kwargs) flattened into one vector z, f(z) the op
    on them, and one variable in each tensor (its first element)."""
    leaves, spec = tree_flatten((sample.input, sample.args, sample.kwargs))
    idx = [i for i, t in enumerate(leaves)
           if isinstance(t, torch.Tensor) and t.dtype == D and t.layout == torch.strided and t.numel()]
    if not idx:
        return None
    sizes, shapes = [leaves[i].numel() for i in idx], [leaves[i].shape for i in idx]
    z = torch.cat([leaves[i].detach().reshape(-1) for i in idx])

    def unpack(z):
        out, off = list(leaves), 0
        for i, n, s in zip(idx, sizes, shapes):
            out[i] = z[off:off + n].reshape(s)
            off += n
        return tree_unflatten(out, spec)

    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    return z, unpack, starts[:2]


def _projected_autograd(f, z, variables, order, w) -> torch.Tensor:
    """Derivatives of sum_j w_j f_j(z) in ``variables`` (total basis), by nested autograd."""
    basis = make_basis(len(variables), order, "total")
    x = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        cache = {(): (f(x) * w).sum()}

        def der(seq):
            if seq not in cache:
                parent = der(seq[:-1])
                grads = None
                if parent is not None and parent.requires_grad:
                    (grads,) = torch.autograd.grad(parent, x, create_graph=True, allow_unused=True)
                for v in variables:
                    cache[seq[:-1] + (v,)] = None if grads is None else grads[v]
            return cache[seq]

        out = []
        for a in basis.multi_indices():
            d = der(tuple(variables[i] for i, e in enumerate(a) for _ in range(e)))
            out.append(0.0 if d is None else float(d.detach()))
    return torch.tensor(out, dtype=D)


@dataclass
class SweepResult:
    checked: list = field(default_factory=list)
    unsupported: dict = field(default_factory=dict)
    no_reference: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)
    exercised: set = field(default_factory=set)


def _check_sample(op, sample, order: int, result: SweepResult) -> bool:
    """Expand one sample and compare; False when the op is unsupported (no point trying its other samples)."""
    name = _opinfo_name(op)
    packed = _packed(sample)
    if packed is None:
        return True
    z, unpack, variables = packed

    def call(z, fn):
        a = unpack(z)
        out = fn(a[0], *a[1], **a[2])
        return out[0] if isinstance(out, (tuple, list)) else out

    try:
        y = call(z, op.op)
    except Exception:  # noqa: BLE001 - samples meant to raise
        return True
    if not isinstance(y, torch.Tensor) or y.dtype != D or y.layout != torch.strided or not y.numel() \
            or not torch.isfinite(y).all():
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = expand(lambda z: call(z, op.op), z, order, variables=variables, batched=False)
    except UnsupportedOperationError as e:
        result.unsupported[name] = e.ops
        return False
    except Exception as e:  # noqa: BLE001 - an engine error on a supported op is a failure
        result.failures[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        return False
    ref_fn = OPINFO_REFERENCES.get(op.name, op.op)
    w = torch.randn(y.shape, dtype=D, generator=torch.Generator().manual_seed(len(result.checked)))
    try:
        want = _projected_autograd(lambda z: call(z, ref_fn), z, variables, order, w)
    except RuntimeError as e:
        result.no_reference[name] = str(e).splitlines()[0][:120]
        return True
    per_output = p.derivatives().reshape(p.basis.size, -1)
    got = (per_output * w.reshape(-1)).sum(1)
    scale = (per_output.abs() * w.abs().reshape(-1)).sum(1) + want.abs() + 1.0
    err = (got - want).abs()
    if not bool((err <= 1e-9 * scale).all()):
        worst = int((err / scale).argmax())
        result.failures[name] = f"derivative #{worst}: got {float(got[worst])!r}, expected {float(want[worst])!r}"
    result.checked.append(name)
    return True


@functools.cache
def opinfo_sweep(everything: bool) -> SweepResult:
    """The elementwise OpInfo entries (all of them when ``everything``), their first samples, order 3 in 2 variables."""
    op_db, UnaryUfuncInfo, BinaryUfuncInfo = _opinfo()
    result = SweepResult()
    with _recording_rules(result.exercised):
        for op in op_db:
            elementwise = isinstance(op, (UnaryUfuncInfo, BinaryUfuncInfo)) or op.name in ELEMENTWISE_EXTRA
            if not (everything or elementwise) or D not in op.supported_dtypes("cpu"):
                continue
            try:
                samples = list(op.sample_inputs("cpu", D, requires_grad=False))[:3 if everything else 2]
            except Exception:  # noqa: BLE001 - an OpInfo entry that cannot make float64 samples
                continue
            for sample in samples:
                if not _check_sample(op, sample, 3, result):
                    break
    return result


class _recording_rules:
    """Within the block, every rule-table entry records its op in ``seen`` when it runs."""

    def __init__(self, seen: set):
        self.seen, self.saved = seen, {}

    def __enter__(self):
        self.saved = dict(rules.RULES)
        for key, rule in self.saved.items():
            def recorded(ctx, op, *args, _rule=rule, _key=key, **kwargs):
                self.seen.add(_key)
                return _rule(ctx, op, *args, **kwargs)

            rules.RULES[key] = recorded
        return self

    def __exit__(self, *exc):
        rules.RULES.clear()
        rules.RULES.update(self.saved)


def _report(result: SweepResult) -> str:
    lines = [f"{len(set(result.checked))} OpInfo ops checked ({len(result.checked)} samples), "
             f"{len(result.unsupported)} unsupported, {len(result.no_reference)} without an autograd reference"]
    lines += [f"  unsupported {k}: {', '.join(v)}" for k, v in sorted(result.unsupported.items())]
    lines += [f"  no reference {k}: {v}" for k, v in sorted(result.no_reference.items())]
    return "\n".join(lines)


def test_opinfo_elementwise_ops_match_autograd():
    """Every elementwise OpInfo op the engine supports matches nested autograd at its samples (coverage printed)."""
    result = opinfo_sweep(False)
    print(_report(result))
    assert len(set(result.checked)) >= 100, _report(result)
    assert not result.failures, "\n".join(f"{k}: {v}" for k, v in sorted(result.failures.items()))


@pytest.mark.slow
def test_opinfo_whole_database_matches_autograd():
    """Every OpInfo op the engine supports, not only the elementwise ones (known failures listed with reasons)."""
    result = opinfo_sweep(True)
    print(_report(result))
    failures = {k: v for k, v in result.failures.items() if k.split(".")[0] not in KNOWN_FAILURES
                and k not in KNOWN_FAILURES and k.rsplit(".", 1)[0] not in KNOWN_FAILURES}
    assert not failures, "\n".join(f"{k}: {v}" for k, v in sorted(failures.items()))


def _unary_special_points(op) -> list[float]:
    """0, +-1, +-1/2, 2 and a random point, those inside the op's domain (UnaryUfuncInfo.domain, open bounds)."""
    lo, hi = op.domain
    points = [0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -1.7, 0.83]
    return [v for v in points if (lo is None or v > lo) and (hi is None or v < hi)]


def test_opinfo_unary_ops_at_special_points():
    """The OpInfo unary ops outside ``CASES`` at 0, +-1, ... of their domain: equal to autograd, no KinkWarning."""
    op_db, UnaryUfuncInfo, _ = _opinfo()
    covered = {name.replace("_", "") for name in CASES}
    checked, failures = [], {}
    for op in op_db:
        if not isinstance(op, UnaryUfuncInfo) or D not in op.supported_dtypes("cpu"):
            continue
        if op.name.split(".")[-1].replace("_", "") in covered:
            continue
        x0 = torch.tensor(_unary_special_points(op), dtype=D)
        try:
            y = op.op(x0)
        except Exception:  # noqa: BLE001 - an entry that needs more arguments (polygamma's n) or another device
            continue
        if not (isinstance(y, torch.Tensor) and y.dtype == D and y.shape == x0.shape and torch.isfinite(y).all()):
            continue
        try:
            got, kinks = expand_pure(op.op, x0, 4)
        except UnsupportedOperationError:
            continue
        except Exception as e:  # noqa: BLE001 - the op is supported but its expansion fails
            failures[op.name] = f"{type(e).__name__}: {e}"
            continue
        try:
            want = autograd_pure(op.op, x0, 4)
        except RuntimeError:
            continue
        if kinks and op.name not in ("round", "trunc", "floor", "ceil", "sign", "sgn", "nn.functional.rrelu"):
            failures[op.name] = f"KinkWarning at smooth points: {kinks}"
        ok = torch.isclose(got, want, rtol=1e-9, atol=1e-9) | (torch.isnan(want) & ~torch.isfinite(y))
        if not bool(ok.all()):
            failures[op.name] = f"got {got.tolist()}, expected {want.tolist()}"
        checked.append(op.name)
    print(f"{len(checked)} unary ops at their special points: {', '.join(checked)}")
    assert len(checked) >= 10, checked
    assert not failures, "\n".join(f"{k}: {v}" for k, v in sorted(failures.items()))


# --------------------------------------------------------------------------------------- rule-table coverage
# rule-table ops reached only by layer tests (not elementwise, or needing a module): test_engine_layers covers them
LAYER_OPS = {
    "linear_1d",  # the fused 1-d linear layer: tests/test_program.py (every start node, random MLPs)
    "convolution", "_convolution", "avg_pool1d", "avg_pool2d", "avg_pool3d", "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices", "_softmax", "_safe_softmax", "_log_softmax", "var_mean", "var", "as_strided",
    "_trilinear", "addmm", "baddbmm", "mm", "bmm", "matmul", "copy", "fill", "masked_fill", "prod", "amax", "amin",
    "max", "min", "select_scatter", "slice_scatter", "diagonal_scatter", "index_put", "masked_scatter", "index_add",
    "index_copy", "scatter_add", "constant_pad_nd", "getitem", "_unsafe_view", "reshape",
    # selections, scatters, losses and distances: tests/test_op_coverage.py
    "sort", "topk", "kthvalue", "median", "nanmedian", "mode", "cummax", "cummin", "cumprod", "scatter",
    "scatter_reduce", "nll_loss_forward", "nll_loss2d_forward", "_cdist_forward",
    # never in a traced graph of torch functions: torch.square traces as pow, special_xlogy is traced as xlogy,
    # F.logsigmoid as log_sigmoid_forward
    "square", "special_xlogy", "log_sigmoid",
    # casts (to floating dtypes: linear; to integer and bool dtypes: constants): tests/test_torch_semantics.py
    "_to_copy",
}


def _op_name(key) -> str:
    return getattr(key, "__name__", str(key)).split(".")[-1]


def test_every_elementwise_rule_is_swept():
    """Each rule-table op is exercised by a case here or by the OpInfo sweep (linear ops, by construction, and layer
    ops in test_engine_layers aside)."""
    seen: set = set()
    trace.GRAPHS.clear()  # a graph cached by an earlier test holds the rules it was planned with, not the recorders
    with _recording_rules(seen):
        for case in CASES.values():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                points = case.smooth + [p for p, _ in case.kinks]
                expand(case.f, torch.tensor(points, dtype=D), 1, terms="pure", batched=False)
    seen |= opinfo_sweep(False).exercised
    linear = {k for k, rule in rules.RULES.items() if rule is linear_ops.linear}
    missing = sorted(_op_name(k) for k in rules.RULES if k not in seen and k not in linear
                     and k not in rules.VALUE_ONLY and _op_name(k) not in LAYER_OPS)
    assert not missing, f"rule-table ops no sweep exercises: {missing}"
