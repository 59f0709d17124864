"""laplacian, bilaplacian, differential_operator and expand(create_graph=True) against torch.func's nested derivatives.

Values: every operator of random MLPs (tanh, sin, softplus, gelu; hypothesis over widths, depths, input dims and output
shapes) equals sum_a c_a d^a f computed by nested jacfwd/jacrev in float64. Gradients: of a squared-Laplacian loss with
respect to the weights and the points, and of an expansion coefficient with respect to the weights, equal torch.func's
(gradients of nested derivatives), in float64 and float32, on the torch kernels and the default backend.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, jacfwd, jacrev, vmap

from hope_engine import ExpansionError, bilaplacian, differential_operator, expand, laplacian
from hope_engine.algebra.kernels import use_backend

DT = torch.float64
BACKENDS = ["auto", "torch"]


class Sine(nn.Module):
    def forward(self, x):
        return torch.sin(x)


ACTIVATIONS = {"tanh": nn.Tanh, "sin": Sine, "softplus": nn.Softplus, "gelu": nn.GELU}


def mlp(n: int, widths, act: str, out=(1,), dtype=DT, seed: int = 0) -> nn.Module:
    """n -> widths (act after each) -> prod(out), reshaped to (B, *out)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip((n, *widths), widths):
        layers += [nn.Linear(a, b), ACTIVATIONS[act]()]
    layers.append(nn.Linear(widths[-1] if widths else n, math.prod(out)))
    if len(out) > 1:
        layers.append(nn.Unflatten(1, out))
    return nn.Sequential(*layers).to(dtype)


# ------------------------------------------------------------------------------------------------- the reference
def reference_operator(net: nn.Module, x: torch.Tensor, terms: dict, params: dict | None = None) -> torch.Tensor:
    """sum_a c_a d^a f at each row of x by nested torch.func derivatives (jacrev inside, jacfwd outside), vmapped."""
    params = dict(net.named_parameters()) if params is None else params
    order = max(sum(a) for a in terms)

    def f(p):
        return functional_call(net, params, (p.unsqueeze(0),))[0]

    tensors = [f]
    for k in range(order):
        tensors.append((jacrev if k == 0 else jacfwd)(tensors[-1]))  # tensors[k](p): (*out, n, ..., n), k axes

    def op(p):
        total = 0.0
        cache = {}
        for a, w in terms.items():
            k = sum(a)
            if k not in cache:
                cache[k] = tensors[k](p)
            index = tuple(i for i, e in enumerate(a) for _ in range(e))
            # tensors[k]'s derivative axes are in differentiation order: the innermost (first) derivative is the last
            total = total + w * cache[k][(..., *index)]
        return total

    return vmap(op)(x)


def laplacian_terms(n: int) -> dict:
    return {tuple(2 if v == i else 0 for v in range(n)): 1.0 for i in range(n)}


def bilaplacian_terms(n: int) -> dict:
    terms: dict = {}
    for i in range(n):
        for j in range(n):
            a = [0] * n
            a[i] += 2
            a[j] += 2
            terms[tuple(a)] = terms.get(tuple(a), 0.0) + 1.0
    return terms


def mixed_terms(n: int) -> dict:
    """A mixed third-order operator (with a lower-order part): u_xxy - 2 u_yyy + 0.5 u_x - u (n = 1: u''' + 0.5 u')."""
    if n == 1:
        return {(3,): 1.0, (1,): 0.5}
    pad = (0,) * (n - 2)
    return {(2, 1, *pad): 1.0, (0, 3, *pad): -2.0, (1, 0, *pad): 0.5, (0, 0, *pad): -1.0}


def unmixed_terms(n: int) -> dict:
    """Unmixed partials of several degrees (collapsed path with lower degrees read per direction)."""
    terms = {tuple(4 if v == 0 else 0 for v in range(n)): 1.0}
    if n > 1:
        terms[tuple(2 if v == n - 1 else 0 for v in range(n))] = 3.0
    terms[tuple(1 if v == 0 else 0 for v in range(n))] = -1.5
    terms[(0,) * n] = 2.0
    return terms


def assert_close(got: torch.Tensor, want: torch.Tensor, dtype=DT) -> None:
    """Relative to the largest entry (operators of a net span orders of magnitude between rows)."""
    scale = float(want.detach().abs().max()) if want.numel() else 1.0
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    assert got.shape == want.shape, (got.shape, want.shape)
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * max(scale, 1e-3))


def grads(loss: torch.Tensor, inputs) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, inputs, allow_unused=True, materialize_grads=True))


# ----------------------------------------------------------------------------------------------------- values
@st.composite
def problems(draw):
    n = draw(st.integers(1, 3))
    widths = draw(st.lists(st.integers(1, 8), min_size=1, max_size=3))
    act = draw(st.sampled_from(sorted(ACTIVATIONS)))
    out = draw(st.sampled_from([(1,), (3,), (2, 2)]))
    batch = draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**31 - 1))
    return n, tuple(widths), act, out, batch, seed


def _check_values(problem) -> None:
    n, widths, act, out, batch, seed = problem
    net = mlp(n, widths, act, out, seed=seed)
    x = torch.randn(batch, n, dtype=DT, generator=torch.Generator().manual_seed(seed))
    assert_close(laplacian(net, x), reference_operator(net, x, laplacian_terms(n)))
    assert_close(bilaplacian(net, x), reference_operator(net, x, bilaplacian_terms(n)))
    for terms in (mixed_terms(n), unmixed_terms(n)):
        assert_close(differential_operator(net, x, terms), reference_operator(net, x, terms))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_operators_of_random_mlps_equal_torch_func(problem):
    _check_values(problem)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_operators_of_random_mlps_equal_torch_func_sweep(problem):
    _check_values(problem)


@pytest.mark.parametrize("backend", BACKENDS)
def test_multi_output_net_laplacian_bilaplacian_and_mixed_third_order(backend):
    """A 3-input, 4-output net: one value per output element, shape (B, 4) (and (4,) at one point)."""
    net = mlp(3, (12, 9), "tanh", out=(4,), seed=3)
    x = torch.randn(5, 3, dtype=DT)
    with use_backend(backend):
        got = [laplacian(net, x), bilaplacian(net, x), differential_operator(net, x, {(2, 1, 0): 1.0, (0, 3, 0): -2.0})]
        single = laplacian(net, x[2])
    want = [reference_operator(net, x, t) for t in
            (laplacian_terms(3), bilaplacian_terms(3), {(2, 1, 0): 1.0, (0, 3, 0): -2.0})]
    for g, w in zip(got, want):
        assert g.shape == (5, 4)
        assert_close(g, w)
    assert single.shape == (4,)
    assert_close(single, want[0][2])


def test_an_operator_over_some_of_the_inputs_and_a_plain_callable():
    """Terms in a subset of the variables (the others not differentiated) of a function that is not a module."""
    w = torch.randn(3, 4, dtype=DT)

    def f(p):
        return torch.tanh(p @ w.T).sum(-1, keepdim=True) * torch.sin(p[:, :1])

    x = torch.randn(3, 4, dtype=DT)
    terms = {(0, 2, 0, 1): 1.0, (0, 0, 0, 3): 0.25}

    class Wrapped(nn.Module):
        def forward(self, p):
            return f(p)

    assert_close(differential_operator(f, x, terms), reference_operator(Wrapped(), x, terms, params={}))


# -------------------------------------------------------------------------------------------------- gradients
def _loss_gradients_case(dtype, backend, act):
    net = mlp(2, (8, 6), act, out=(2,), dtype=dtype, seed=1)
    x = torch.randn(4, 2, dtype=dtype, requires_grad=True)
    params = dict(net.named_parameters())
    with use_backend(backend):
        lap = laplacian(net, x, create_graph=True)
        assert lap.requires_grad and lap.dtype == dtype
        got = grads((lap ** 2).sum(), [*params.values(), x])
    netd = mlp(2, (8, 6), act, out=(2,), dtype=DT, seed=1)
    ref_params = {k: v.detach().to(DT) for k, v in params.items()}

    def loss(p, points):
        return (reference_operator(netd, points, laplacian_terms(2), p) ** 2).sum()

    gp, gx = torch.func.grad(loss, argnums=(0, 1))(ref_params, x.detach().to(DT))
    for g, w in zip(got, [*gp.values(), gx]):
        assert_close(g.to(DT), w, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gradient_of_a_squared_laplacian_loss_wrt_weights_and_points(dtype, backend):
    _loss_gradients_case(dtype, backend, "tanh")


@pytest.mark.parametrize("act", ["sin", "softplus", "gelu"])
def test_gradient_of_a_squared_laplacian_loss_other_activations(act):
    _loss_gradients_case(DT, "auto", act)


@pytest.mark.parametrize("operator", ["bilaplacian", "mixed"])
def test_gradient_of_fourth_and_mixed_operators_wrt_weights_and_points(operator):
    net = mlp(2, (7, 5), "tanh", seed=2)
    x = torch.randn(3, 2, dtype=DT, requires_grad=True)
    params = dict(net.named_parameters())
    terms = bilaplacian_terms(2) if operator == "bilaplacian" else mixed_terms(2)
    value = bilaplacian(net, x, create_graph=True) if operator == "bilaplacian" else \
        differential_operator(net, x, terms, create_graph=True)
    got = grads((value ** 2).mean(), [*params.values(), x])

    def loss(p, points):
        return (reference_operator(net, points, terms, p) ** 2).mean()

    gp, gx = torch.func.grad(loss, argnums=(0, 1))({k: v.detach() for k, v in params.items()}, x.detach())
    for g, w in zip(got, [*gp.values(), gx]):
        assert_close(g, w)


@st.composite
def expansions(draw):
    n = draw(st.integers(1, 3))
    order = draw(st.integers(1, 4))
    widths = tuple(draw(st.lists(st.integers(2, 8), min_size=1, max_size=2)))
    act = draw(st.sampled_from(sorted(ACTIVATIONS)))
    alpha = tuple(draw(st.lists(st.integers(0, order), min_size=n, max_size=n).filter(lambda a: sum(a) <= order)))
    return n, order, widths, act, alpha, draw(st.integers(0, 2**31 - 1))


def _check_coefficient_gradient(case, dtype, backend):
    n, order, widths, act, alpha, seed = case
    net = mlp(n, widths, act, dtype=dtype, seed=seed)
    x0 = torch.randn(1, n, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    params = dict(net.named_parameters())
    with use_backend(backend):
        p = expand(net, x0, order, create_graph=True)
    k = p.basis.position(alpha)
    got = grads(p.coefficients[k].sum(), list(params.values()))
    netd = mlp(n, widths, act, seed=seed)
    factorial = math.prod(math.factorial(a) for a in alpha)

    def coefficient(prm):
        return reference_operator(netd, x0.detach().to(DT), {alpha: 1.0 / factorial}, prm).sum()

    want = torch.func.grad(coefficient)({k: v.detach().to(DT) for k, v in params.items()})
    for g, w in zip(got, want.values()):
        assert_close(g.to(DT), w, dtype)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expansions(), st.sampled_from([torch.float64, torch.float32]), st.sampled_from(BACKENDS))
def test_gradient_of_an_expansion_coefficient_wrt_weights(case, dtype, backend):
    _check_coefficient_gradient(case, dtype, backend)


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expansions(), st.sampled_from([torch.float64, torch.float32]), st.sampled_from(BACKENDS))
def test_gradient_of_an_expansion_coefficient_wrt_weights_sweep(case, dtype, backend):
    _check_coefficient_gradient(case, dtype, backend)


def test_without_create_graph_the_operators_record_nothing():
    net = mlp(2, (5,), "tanh")
    x = torch.randn(3, 2, dtype=DT, requires_grad=True)
    for value in (laplacian(net, x), bilaplacian(net, x), differential_operator(net, x, {(1, 2): 1.0})):
        assert not value.requires_grad
    assert_close(laplacian(net, x, create_graph=True).detach(), laplacian(net, x))


# ------------------------------------------------------------------------------- a polynomial with autograd history
def test_a_polynomial_built_with_create_graph_works_in_every_accessor():
    net = mlp(2, (6,), "tanh", out=(2,), seed=4)
    x0 = torch.tensor([[0.3, -0.2], [0.1, 0.4]], dtype=DT, requires_grad=True)
    p = expand(net, x0, 3, create_graph=True)
    plain = expand(net, x0.detach(), 3)
    assert p.coefficients.requires_grad
    x = torch.tensor([[0.35, -0.1], [0.0, 0.5]], dtype=DT)
    same = torch.testing.assert_close
    same(p(x).detach(), plain(x))
    same(p.derivative((1, 2)).detach(), plain.derivative((1, 2)))
    same(p.coefficient((2, 1)).detach(), plain.coefficient((2, 1)))
    same(p.derivatives().detach(), plain.derivatives())
    same(p.value.detach(), plain.value)
    same(p.truncate(2)(x).detach(), plain.truncate(2)(x))
    same(p.select(1).coefficients.detach(), plain.select(1).coefficients)
    same(p.point(1).coefficients.detach(), plain.point(1).coefficients)
    same(p.recenter(x).coefficients.detach(), plain.recenter(x).coefficients)
    same(p.scalar_coefficients(0, point=1).detach(), plain.scalar_coefficients(0, point=1))
    same(p.partial_sums(x).detach(), plain.partial_sums(x))
    same(p.to(torch.float32).coefficients.detach(), plain.to(torch.float32).coefficients)
    # (the graph runs the torch kernels, the plain run the compiled ones: equal to rounding, not bit for bit)
    got, want = p.terms(output=1, point=1), plain.terms(output=1, point=1)
    assert [t.alpha for t in got] == [t.alpha for t in want]
    assert all(t.coefficient == pytest.approx(w.coefficient, rel=1e-12) for t, w in zip(got, want))
    assert p.latex(output=0) == plain.latex(output=0)
    assert p.scalar(output=0, point=0).latex() == plain.scalar(output=0, point=0).latex()
    assert p.to_sympy(output=1, digits=10) == plain.to_sympy(output=1, digits=10)
    assert p._repr_latex_() is None or p._repr_latex_() == plain._repr_latex_()
    assert str(p) == str(plain) and repr(p) == repr(plain)
    # the accessors keep the history: a loss of an evaluation reaches the weights and the point
    gw, gx = torch.autograd.grad(p(x).sum() + p.derivative((0, 2)).sum(), [net[0].weight, x0])
    assert gw.abs().sum() > 0 and gx.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("coefficients, match", [
    ({(2, 0, 0): 1.0}, "multi-index of 2 non-negative integers"),
    ({(2,): 1.0}, "multi-index of 2 non-negative integers"),
    ({(2, -1): 1.0}, "multi-index of 2 non-negative integers"),
    ({(1.5, 0): 1.0}, "multi-index of 2 non-negative integers"),
    ({(True, 0): 1.0}, "multi-index of 2 non-negative integers"),
    ({"xx": 1.0}, "multi-index of 2 non-negative integers"),
    ({(2, 0): float("nan")}, "must be a finite number"),
    ({(2, 0): "1"}, "must be a finite number"),
    ({}, "non-empty dict"),
    ([((2, 0), 1.0)], "non-empty dict"),
])
def test_bad_coefficients_are_one_clear_expansion_error(coefficients, match):
    net = mlp(2, (4,), "tanh")
    with pytest.raises(ExpansionError, match=match) as info:
        differential_operator(net, torch.zeros(2, 2, dtype=DT), coefficients)
    assert info.value.__cause__ is None and "\n" not in str(info.value)
