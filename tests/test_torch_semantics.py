"""torch's autograd semantics, by construction (issue 20, part 2): what autograd does not differentiate through is a
constant to the expansion.

``.detach()``, tensors made under ``torch.no_grad()`` / ``torch.inference_mode()``, ``.data``, ``torch.tensor(t)``,
``torch.as_tensor(t.detach())`` and casts to integer or bool dtypes (used arithmetically, or as indices) have zero
derivative in every direction; the values they carry are still the model's values. Random ops are refused, naming
the op.

- a differential test: random small programs (``support.programs``) mixing these constructs with smooth ops, every
  Taylor coefficient up to order 3 against nested float64 autograd divided by alpha! (fast slice: 30 examples,
  derandomized; ``-m slow``: 300);
- one named test per construct at a fixed point, with its closed form, and a batched case for a few of them;
- the reference itself checked against the closed forms (autograd alone), so a failure is the engine's;
- random ops in forward refused with an ExpansionError naming the op.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, reject, settings
from support.autograd import autograd_derivatives
from support.indices import factorial_of, multi_indices
from support.programs import CONSTRUCTS, WRITES, Program, programs

from hope_engine import expand
from hope_engine.errors import ExpansionError

D = torch.float64
ORDER = 3
RTOL = 1e-10
# torch.tensor(t) of a tensor warns (use t.detach().clone()); a user's model may well do it
pytestmark = pytest.mark.filterwarnings("ignore:To copy construct from a tensor:UserWarning")


# ------------------------------------------------------------------------------------------------ the reference
def reference_coefficients(f: Callable, x0: torch.Tensor, order: int = ORDER) -> dict[tuple[int, ...], torch.Tensor]:
    """alpha -> d^alpha f(x0) / alpha! by nested float64 autograd, for every |alpha| <= order.

    A batch x0 (B, n) is done row by row (the model at x0[i:i+1], the other rows absent): (B, ...) per alpha.
    """
    if x0.dim() == 1:
        alphas = multi_indices(x0.numel(), order)
        d = autograd_derivatives(f, x0, alphas)
        return {a: d[m] / factorial_of(a) for m, a in enumerate(alphas)}
    alphas = multi_indices(x0.shape[1], order)
    rows = [autograd_derivatives(f, x0[i:i + 1], alphas) for i in range(x0.shape[0])]
    return {a: torch.cat([r[m] for r in rows]) / factorial_of(a) for m, a in enumerate(alphas)}


def assert_coefficients_match(p, want: dict[tuple[int, ...], torch.Tensor], rtol: float = RTOL, what: str = "") -> None:
    """Every coefficient of ``p`` against the reference: |got - want| <= rtol (|want| + s_d), s_d = max(1, the
    largest |want| of that degree) (absolute where the true value is 0, as in support.autograd)."""
    alphas = p.basis.multi_indices()
    assert sorted(alphas) == sorted(want), f"{what}: basis {alphas} is not every multi-index up to order {ORDER}"
    scale = {}
    for a, w in want.items():
        scale[sum(a)] = max(scale.get(sum(a), 1.0), float(w.abs().max()) if w.numel() else 0.0)
    bad = []
    for a in alphas:
        got, w = p.coefficient(a).detach().to(D), want[a]
        assert got.shape == w.shape, f"{what}: coefficient {a} has shape {tuple(got.shape)}, expected {tuple(w.shape)}"
        if not bool(((got - w).abs() <= rtol * (w.abs() + scale[sum(a)])).all()):
            bad.append(f"  alpha={a}: engine {got.flatten().tolist()}, autograd {w.flatten().tolist()}")
    assert not bad, f"{what}: {len(bad)} of {len(alphas)} Taylor coefficients differ from nested autograd:\n" + \
        "\n".join(bad[:8])


def assert_expands_like_autograd(f: Callable, x0: torch.Tensor, order: int = ORDER):
    """Expand f at x0 and compare every coefficient with nested autograd; returns the polynomial."""
    want = reference_coefficients(f, x0, order)
    p = expand(f, x0, order)
    assert_coefficients_match(p, want)
    return p


def assert_derivatives(p, expected: dict[tuple[int, ...], object], what: str) -> None:
    """Closed-form derivatives (not coefficients): alpha -> value (a number or a tensor shaped like the output)."""
    for alpha, value in expected.items():
        got = p.derivative(alpha).detach().to(D)
        want = torch.as_tensor(value, dtype=D).expand_as(got)
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12), \
            f"{what}: d^{alpha} is {got.flatten().tolist()}, expected {want.flatten().tolist()} (torch's autograd)"


# ------------------------------------------------------------------------------- one closed form per construct
def _detach(x):
    return x + (x ** 2).detach()


def _no_grad(x):
    with torch.no_grad():
        c = torch.sin(x) * x
    return x * c + x


def _inference_mode_cloned(x):
    with torch.inference_mode():
        c = torch.exp(x)
    return x * c.clone() + torch.tanh(x)


def _inference_mode_added(x):
    with torch.inference_mode():
        c = torch.exp(x)
    return x + c  # add saves neither input: torch accepts the inference tensor without a clone


def _data(x):
    h = torch.sin(x)
    return h * h.data


def _torch_tensor(x):
    return x * torch.tensor(x)


def _as_tensor(x):
    return x ** 2 * torch.as_tensor(x.detach())


def _long_alone(x):
    return (10 * x).long().to(torch.float64)


def _long_times_x(x):
    return x * (10 * x).long()  # long * float64 promotes: the cast is used arithmetically


def _int32(x):
    return torch.sin(x) + (10 * x).to(torch.int32).to(torch.float64)


def _bool(x):
    return (x > 0).to(torch.float64) * x ** 2 + x.to(torch.bool) * x


TABLE = torch.tensor([0.5, -1.25, 2.0, 3.5, -0.75], dtype=D)


def _table_index(x):
    return TABLE[(10 * x).long().clamp(0, 4)] * x


def _table_index_scalar(x):
    return TABLE[(3 * x[0]).long().clamp(0, 4)] + x[1] ** 2


def _self_index(x):
    return torch.sin(x)[(3 * x).long().clamp(0, 2)]


def _self_index_int32(x):
    return torch.exp(x)[(3 * x).to(torch.int32).clamp(0, 2)] * x


def _bool_mask(x):
    return (x * x)[x > 0].sum()


X1 = torch.tensor([0.3], dtype=D)
X1b = torch.tensor([0.33], dtype=D)
X3 = torch.tensor([0.33, 0.27, 0.61], dtype=D)
X3m = torch.tensor([0.33, -0.27, 0.61], dtype=D)
s3, c3 = math.sin(0.3), math.cos(0.3)
sin3, cos3 = torch.sin(X3), torch.cos(X3)
e3 = math.exp(0.3)

# name -> (model, point, closed-form derivatives alpha -> value): what torch's autograd gives, by hand
CLOSED_FORMS: dict[str, tuple[Callable, torch.Tensor, dict]] = {
    "detach": (_detach, X1, {(0,): 0.39, (1,): 1.0, (2,): 0.0, (3,): 0.0}),
    "no_grad": (_no_grad, X1, {(0,): 0.3 * 0.3 * s3 + 0.3, (1,): 0.3 * s3 + 1.0, (2,): 0.0, (3,): 0.0}),
    "inference_mode_cloned": (_inference_mode_cloned, X1, {
        (0,): 0.3 * e3 + math.tanh(0.3), (1,): e3 + 1 - math.tanh(0.3) ** 2,
        (2,): -2 * math.tanh(0.3) * (1 - math.tanh(0.3) ** 2),
        (3,): -2 * (1 - math.tanh(0.3) ** 2) ** 2 + 4 * math.tanh(0.3) ** 2 * (1 - math.tanh(0.3) ** 2)}),
    "inference_mode_added": (_inference_mode_added, X1, {(0,): 0.3 + e3, (1,): 1.0, (2,): 0.0, (3,): 0.0}),
    "data": (_data, X1, {(0,): s3 * s3, (1,): c3 * s3, (2,): -s3 * s3, (3,): -c3 * s3}),
    "torch_tensor": (_torch_tensor, X1, {(0,): 0.09, (1,): 0.3, (2,): 0.0, (3,): 0.0}),
    "as_tensor": (_as_tensor, X1, {(0,): 0.027, (1,): 0.18, (2,): 0.6, (3,): 0.0}),
    "long_alone": (_long_alone, X1b, {(0,): 3.0, (1,): 0.0, (2,): 0.0, (3,): 0.0}),
    "long_times_x": (_long_times_x, X1b, {(0,): 0.99, (1,): 3.0, (2,): 0.0, (3,): 0.0}),
    "int32": (_int32, X1b, {(0,): math.sin(0.33) + 3, (1,): math.cos(0.33), (2,): -math.sin(0.33),
                            (3,): -math.cos(0.33)}),
    "bool": (_bool, X1b, {(0,): 0.33 ** 2 + 0.33, (1,): 2 * 0.33 + 1, (2,): 2.0, (3,): 0.0}),
    # 10 x0 = (3.3, 2.7, 6.1) -> rows (3, 2, 4) of the table
    "table_index": (_table_index, X3, {(0, 0, 0): TABLE[[3, 2, 4]] * X3, (1, 0, 0): [3.5, 0.0, 0.0],
                                       (0, 1, 0): [0.0, 2.0, 0.0], (0, 0, 1): [0.0, 0.0, -0.75],
                                       (2, 0, 0): 0.0, (1, 1, 0): 0.0, (3, 0, 0): 0.0}),
    # 3 x0[0] = 0.99 -> row 0
    "table_index_scalar": (_table_index_scalar, X3, {(0, 0, 0): 0.5 + 0.27 ** 2, (1, 0, 0): 0.0, (0, 1, 0): 0.54,
                                                     (0, 2, 0): 2.0, (2, 0, 0): 0.0, (0, 3, 0): 0.0}),
    # 3 x0 = (0.99, 0.81, 1.83) -> (sin x1, sin x1, sin x2)
    "self_index": (_self_index, X3, {(0, 0, 0): sin3[[0, 0, 1]], (1, 0, 0): [cos3[0], cos3[0], 0.0],
                                     (0, 1, 0): [0.0, 0.0, cos3[1]], (0, 0, 1): 0.0,
                                     (3, 0, 0): [-cos3[0], -cos3[0], 0.0], (0, 2, 0): [0.0, 0.0, -sin3[1]]}),
    "self_index_int32": (_self_index_int32, X3, {
        (0, 0, 0): torch.exp(X3)[[0, 0, 1]] * X3,
        (1, 0, 0): [math.exp(0.33) * 1.33, math.exp(0.33) * 0.27, 0.0],
        (0, 1, 0): [0.0, math.exp(0.33), math.exp(0.27) * 0.61],
        (0, 0, 1): [0.0, 0.0, math.exp(0.27)], (1, 1, 0): [0.0, math.exp(0.33), 0.0]}),
    "bool_mask": (_bool_mask, X3m, {(0, 0, 0): 0.33 ** 2 + 0.61 ** 2, (1, 0, 0): 0.66, (0, 1, 0): 0.0,
                                    (0, 0, 1): 1.22, (2, 0, 0): 2.0, (0, 2, 0): 0.0}),
}


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_reference_matches_closed_form(name):
    """The autograd side alone (no engine): nested autograd gives the closed forms, so the tests below judge the
    engine against torch's semantics, not against a bug of the reference."""
    f, x0, expected = CLOSED_FORMS[name]
    want = reference_coefficients(f, x0)
    for alpha, value in expected.items():
        got = want[alpha] * factorial_of(alpha)
        torch.testing.assert_close(got, torch.as_tensor(value, dtype=D).expand_as(got), rtol=1e-12, atol=1e-12,
                                   msg=lambda m, alpha=alpha: f"{name}: autograd d^{alpha}: {m}")


def _check_construct(name: str):
    f, x0, expected = CLOSED_FORMS[name]
    p = expand(f, x0, ORDER)
    assert_derivatives(p, expected, name)
    assert_coefficients_match(p, reference_coefficients(f, x0), what=name)


def test_detach_is_a_constant():
    """x + (x**2).detach() at 0.3: derivative 1 (torch), not 1 + 2 x = 1.6."""
    _check_construct("detach")


def test_no_grad_block_is_a_constant():
    _check_construct("no_grad")


def test_inference_mode_block_is_a_constant():
    _check_construct("inference_mode_cloned")


def test_inference_tensor_used_without_clone_is_a_constant():
    _check_construct("inference_mode_added")


def test_data_is_a_constant():
    _check_construct("data")


def test_torch_tensor_of_a_tensor_is_a_constant():
    _check_construct("torch_tensor")


def test_as_tensor_of_detached_is_a_constant():
    _check_construct("as_tensor")


def test_long_cast_has_zero_derivative():
    """(10 x).long() at 0.33: value 3, derivative 0 (not 10)."""
    _check_construct("long_alone")


def test_long_cast_used_arithmetically_is_a_constant():
    """x * (10 x).long() at 0.33: derivative 3 (the integer), not 3 + 10 x = 6.3."""
    _check_construct("long_times_x")


def test_int32_cast_is_a_constant():
    _check_construct("int32")


def test_bool_casts_are_constants():
    _check_construct("bool")


def test_int_cast_indexes_a_constant_table():
    """table[(10 x).long().clamp(0, 4)] * x: the looked-up rows are the model's, derivative = the rows."""
    _check_construct("table_index")


def test_int_cast_of_one_element_indexes_a_constant_table():
    _check_construct("table_index_scalar")


def test_int_cast_indexes_a_tensor_derived_from_x():
    """sin(x)[(3 x).long().clamp(0, 2)]: the derivative flows through sin(x) to the elements picked."""
    _check_construct("self_index")


def test_int32_cast_indexes_a_tensor_derived_from_x():
    _check_construct("self_index_int32")


def test_bool_mask_indexes_a_tensor_derived_from_x():
    _check_construct("bool_mask")


# ----------------------------------------------------------------------------------------------------- batched
XB = torch.tensor([[0.33, -0.27], [0.14, 0.52], [-0.61, 0.08], [0.77, -0.43]], dtype=D)


def _batched_detach(x):
    return torch.tanh(x) + (x ** 2).detach() * x


def _batched_no_grad(x):
    with torch.no_grad():
        scale = torch.exp(x[:, :1])
    return torch.sin(x) * scale


def _batched_table_index(x):
    return TABLE[(3 * x[:, 0]).long().clamp(0, 4)] * x[:, 1] + torch.sin(x[:, 0])


def _batched_long_arith(x):
    return x * (10 * x).long() + x.detach().sum(dim=1, keepdim=True)


@pytest.mark.parametrize("f", [_batched_detach, _batched_no_grad, _batched_table_index, _batched_long_arith],
                         ids=lambda f: f.__name__.removeprefix("_batched_"))
def test_batched_points(f):
    """x0 of shape (4, 2): one polynomial per row, each against autograd of that row alone."""
    p = assert_expands_like_autograd(f, XB)
    assert p.batched and p.batch_size == 4


def test_batched_detach_closed_form():
    """tanh(x) + detach(x^2) x, per row: d/dx_j of output j is 1 - tanh^2 + x_j^2 (not + 3 x_j^2)."""
    p = expand(_batched_detach, XB, ORDER)
    t = torch.tanh(XB)
    assert_derivatives(p, {(1, 0): torch.stack([1 - t[:, 0] ** 2 + XB[:, 0] ** 2, torch.zeros(4, dtype=D)], 1),
                           (2, 0): torch.stack([-2 * t[:, 0] * (1 - t[:, 0] ** 2), torch.zeros(4, dtype=D)], 1)},
                      "batched detach")


# ---------------------------------------------------------------------------------------------------- random ops
RANDOM_OPS = {
    "randn_like": (lambda x: x + torch.randn_like(x), r"randn_like"),
    "randn": (lambda x: x * torch.randn(2, dtype=torch.float64), r"\brandn\b"),
    "rand": (lambda x: x + torch.rand(2, dtype=torch.float64), r"\brand\b"),
    "dropout": (lambda x: F.dropout(torch.sin(x), p=0.5, training=True), r"dropout|bernoulli"),
    "bernoulli": (lambda x: x + torch.bernoulli(torch.sigmoid(x)), r"bernoulli"),
}


@pytest.mark.parametrize("name", sorted(RANDOM_OPS))
def test_random_op_in_forward_is_refused(name):
    """Each call would draw new numbers: an "exact" expansion of one draw is a wrong answer; refuse, naming the op."""
    f, pattern = RANDOM_OPS[name]
    with pytest.raises(ExpansionError) as info:
        expand(f, torch.tensor([0.3, -0.2], dtype=D), ORDER)
    assert re.search(pattern, str(info.value), re.IGNORECASE), \
        f"the refusal does not name the op ({pattern}): {info.value}"


# -------------------------------------------------------------------------------------- the differential test
JUMP_MARGIN = 1e-3


def check_program(prog: Program) -> None:
    """Reject points within JUMP_MARGIN of a cast's jump and programs torch itself refuses, then compare."""
    assume(prog.largest_cast_argument() < 1e6)
    assume(prog.jump_distance() >= JUMP_MARGIN)
    try:
        want = reference_coefficients(prog.fn, prog.x0)
    except RuntimeError as e:
        if "Inference tensors cannot be saved for backward" in str(e):
            reject()  # an inference tensor used without .clone() in an op that saves it: torch refuses the program
        raise
    p = expand(prog.fn, prog.x0, ORDER)
    assert_coefficients_match(p, want, what="program")


_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@settings(max_examples=30, **_SETTINGS)
@given(programs())
def test_random_programs_match_nested_autograd(prog):
    check_program(prog)


@pytest.mark.slow
@settings(max_examples=300, **_SETTINGS)
@given(programs(max_steps=8))
def test_random_programs_match_nested_autograd_long(prog):
    check_program(prog)


# ------------------------------------------------------------------- writes autograd does not see (issue 20, left)
def _write_no_grad(x):
    h = x * 2
    with torch.no_grad():
        h.add_(1)
    return h * x


def _write_data(x):
    h = x * 2
    h.data.mul_(2)
    return h * x


def _write_detached(x):
    h = torch.sin(x)
    h.detach().mul_(3)
    return h * x


def _write_setitem_no_grad(x):
    h = torch.sin(x) + 1
    with torch.no_grad():
        h[0] = 5.0 * x[1]
    return h * x


def _write_view_no_grad(x):
    h = x ** 2
    v = h[1:]
    with torch.no_grad():
        v.mul_(torch.tanh(x[0]))
    return torch.sin(h) + v.sum()


def _write_inference_mode(x):
    h = torch.sin(x)
    with torch.inference_mode():
        h.sub_(0.5)
    return h * h


def _write_relu_inplace_no_grad(x):
    h = x - 0.35
    with torch.no_grad():
        torch.nn.functional.relu(h, inplace=True)
    return h ** 3


def _write_out_no_grad(x):
    h = torch.sin(x)
    with torch.no_grad():
        torch.mul(x, 4.0, out=h)
    return h * torch.cos(x)


def _write_detached_view(x):
    h = x ** 3
    h.detach()[0].fill_(2.0)
    return h.sum() * h


class _NoGradWriteModule(torch.nn.Module):
    """A module writing into an activation under no_grad (a running clamp), then reading it with grad."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3).double()

    def forward(self, x):
        h = self.lin(x)
        with torch.no_grad():
            h.clamp_(-0.2, 0.2)
        return torch.tanh(h) * h


HIDDEN_WRITES = [_write_no_grad, _write_data, _write_detached, _write_setitem_no_grad, _write_view_no_grad,
                 _write_inference_mode, _write_relu_inplace_no_grad, _write_out_no_grad, _write_detached_view]


@pytest.mark.parametrize("f", HIDDEN_WRITES, ids=lambda f: f.__name__.removeprefix("_write_"))
def test_hidden_write_keeps_the_old_derivatives(f):
    """An in-place write autograd does not record (no_grad, inference_mode, .data, .detach(), a view of one) changes
    the value but not the derivatives: h.add_(1) under no_grad after h = 2 x keeps dh/dx = 2 (torch), not 0."""
    assert_expands_like_autograd(f, X3)


def test_hidden_write_closed_form():
    """h = 2 x; under no_grad h += 1; h * x: value (2 x + 1) x, derivative 2 x + 1 + 2 x = 4 x + 1, second 4."""
    p = expand(_write_no_grad, X1, ORDER)
    assert_derivatives(p, {(0,): 1.6 * 0.3, (1,): 2.2, (2,): 4.0, (3,): 0.0}, "no_grad write")


def test_hidden_write_in_a_module_and_batched():
    torch.manual_seed(0)
    model = _NoGradWriteModule()
    assert_expands_like_autograd(model, torch.tensor([0.1, -0.05, 0.3], dtype=D))
    xb = torch.tensor([[0.1, -0.05, 0.3], [0.02, 0.04, -0.06]], dtype=D)
    p = assert_expands_like_autograd(model, xb)
    assert p.batched


@settings(max_examples=30, **_SETTINGS)
@given(programs(constructs=CONSTRUCTS + WRITES))
def test_random_programs_with_hidden_writes_match_nested_autograd(prog):
    check_program(prog)


@pytest.mark.slow
@settings(max_examples=300, **_SETTINGS)
@given(programs(max_steps=8, constructs=CONSTRUCTS + WRITES))
def test_random_programs_with_hidden_writes_match_nested_autograd_long(prog):
    check_program(prog)
