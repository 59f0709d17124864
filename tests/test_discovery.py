"""Function discovery: exact on polynomial models, and the proofs that trained Sine networks give back the formulas
they were trained on (coefficients compared with the training target, not with the engine), by both methods: the
mean of re-centred expansions ("taylor") and the anchored least-squares fit ("fit"), with their held-out R^2; the
default method="auto" against the law's own Taylor coefficients (sympy) in two regimes, its data and constrained
candidates against numpy's least squares and the KKT system, and the closed-form hypotheses."""

from __future__ import annotations

import concurrent.futures
import math

import numpy as np
import pytest
import sympy as sp
import torch
from support.analysis import assert_image
from torch import nn

from hope_engine import expand
from hope_engine.analysis import discover, local_formula
from hope_engine.analysis.discovery_candidates import constrained_lstsq
from hope_engine.analysis.discovery_closed_form import simplest_number
from hope_engine.models import fit, sine_mlp


class Cubic(nn.Module):
    """f(x) = 1 + 2 x1 - 3 x1 x2 + 0.5 x2^3 (an exact polynomial: every expansion of order >= 3 is exact)."""

    def forward(self, x):
        x1, x2 = x[..., 0:1], x[..., 1:2]
        return 1 + 2 * x1 - 3 * x1 * x2 + 0.5 * x2 ** 3


X1, X2 = sp.symbols("x1 x2", real=True)
CUBIC = 1 + 2 * X1 - 3 * X1 * X2 + sp.Rational(1, 2) * X2 ** 3


def _same(expr, reference, tol=1e-9) -> bool:
    diff = sp.Poly(sp.expand(expr - reference), *sorted(reference.free_symbols | expr.free_symbols, key=str))
    return all(abs(float(c)) < tol for c in diff.coeffs())


def test_local_formula_in_x_and_around_x0():
    x0 = torch.tensor([[0.3, -0.7]], dtype=torch.float64)
    p = expand(Cubic().eval(), x0, 4)
    assert _same(local_formula(p), CUBIC)  # re-expressed in x: the model's own formula
    around = local_formula(p, in_x=False)
    assert any(isinstance(a, sp.Add) for a in sp.preorder_traversal(around) if a != around)  # has (x - x0) factors
    assert _same(around, CUBIC)
    top2 = local_formula(p, top=2, in_x=False)
    assert len(sp.Add.make_args(top2)) == 2


def test_global_discovery_of_a_polynomial_is_exact():
    d = discover(Cubic().eval(), [0.2, 0.1], order=3, radius=0.8, points=32, names=["x1", "x2"])
    assert d.coefficients.shape == (33, 10)
    assert float(d.std.max()) < 1e-12  # every reference expansion, shifted to the centre, is the same polynomial
    assert torch.allclose(d.mean, d.local, atol=1e-12)
    assert _same(d.formula(), CUBIC)
    # the table's local values are the Taylor coefficients at the centre: c_(1,0) = 2 - 3 x2 = 1.7
    row = {r.alpha: r for r in d.table()}
    assert abs(row[(1, 0)].local - (2 - 3 * 0.1)) < 1e-12
    assert abs(row[(1, 1)].mean + 3) < 1e-12
    assert len(d.table(top=3)) == 3
    assert "(x1 - 0.2)*(x2 - 0.1)" in str(d.table())
    assert _same(d.formula(top=1), -3 * (X1 - 0.2) * (X2 - 0.1))  # top term chosen around c, then written in x


def test_discovery_figure_renders(tmp_path):
    d = discover(sine_mlp([2, 8, 1]), [0.0, 0.0], order=3, radius=0.5, points=8)
    assert_image(d.figure(top=6), tmp_path / "terms.png")


def _terms(expr, symbols) -> dict[tuple[int, ...], float]:
    return {m: float(c) for m, c in sp.Poly(expr, *symbols).terms()}


def test_fit_of_a_polynomial_is_exact_and_reports_the_data_distance():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(400, 2, generator=gen, dtype=torch.float64) * 2 - 1
    noise = 0.01 * torch.randn(400, generator=gen, dtype=torch.float64)
    y = Cubic()(x).reshape(-1) + noise
    d = discover(Cubic().eval(), [0.2, 0.1], order=3, radius=0.8, method="fit", samples=40, data=(x, y))
    assert torch.allclose(d.mean, d.local, atol=1e-10)  # the fit recovers the exact polynomial
    assert _same(d.formula(), CUBIC, tol=1e-9)
    assert d.heldout_r2 == pytest.approx(1.0, abs=1e-12)
    assert d.data.rms == pytest.approx(float(noise.pow(2).mean().sqrt()), rel=1e-9)  # network <-> data: the noise
    assert d.data.inside == int(((x - torch.tensor([0.2, 0.1])).abs().amax(1) <= 0.8).sum())
    text = str(d.table())
    assert "method fit" in text and "network vs data: RMS 0.01" in text
    c = d.compare()
    assert c.r2_taylor == pytest.approx(1.0, abs=1e-12) and c.max_coefficient_gap < 1e-9
    with pytest.raises(ValueError, match="samples"):
        discover(Cubic().eval(), [0.0, 0.0], order=3, method="fit", samples=5)
    with pytest.raises(ValueError, match="method"):
        discover(Cubic().eval(), [0.0, 0.0], order=3, method="lsq")


def _terms(expr, symbols) -> dict[tuple[int, ...], float]:
    return {m: float(c) for m, c in sp.Poly(expr, *symbols).terms()}


@pytest.fixture(scope="module")
def half_net():
    """2-64-64-64-1 Sine MLP trained on y = (x1^2 + x2)/2 over [-1, 1]^2."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(512, 2, generator=gen, dtype=torch.float64) * 2 - 1
    y = (x[:, 0] ** 2 + x[:, 1]) / 2
    model = sine_mlp([2, 64, 64, 64, 1], seed=0)
    loss = fit(model, x, y, steps=8)
    return model, x, y, loss


@pytest.fixture(scope="module")
def five_net():
    """5-32-32-1 Sine MLP trained on y = 0.5 + x1 + 0.6 x2x3 - 0.8 x2x4 + x1x2x3 - x3x5 over [-1, 1]^5."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1024, 5, generator=gen, dtype=torch.float64) * 2 - 1
    x1, x2, x3, x4, x5 = x.T
    y = 0.5 + x1 + 0.6 * x2 * x3 - 0.8 * x2 * x4 + x1 * x2 * x3 - x3 * x5
    model = sine_mlp([5, 32, 32, 1], seed=0)
    loss = fit(model, x, y, steps=20)
    return model, x, y, loss


@pytest.mark.parametrize("method", ["taylor", "fit"])
def test_proof_sine_mlp_recovers_half_x1_squared_plus_x2(half_net, method):
    """-> 0.50 x2 + 0.50 x1^2 by either method."""
    model, x, y, loss = half_net
    assert loss < 1e-5
    d = discover(model, [0.0, 0.0], order=4, radius=0.5, points=32, method=method, data=(x, y))
    symbols = sp.symbols("x1 x2", real=True)
    terms = _terms(d.formula(), symbols)
    assert abs(terms[(0, 1)] - 0.5) < 0.05 and abs(terms[(2, 0)] - 0.5) < 0.05
    others = {m: c for m, c in terms.items() if m not in ((0, 1), (2, 0))}
    assert max(abs(c) for c in others.values()) < 0.05, others
    short = _terms(d.formula(threshold=0.05), symbols)
    assert set(short) == {(0, 1), (2, 0)}
    assert d.heldout_r2 > 0.9999 and d.data.rms < 0.01


@pytest.mark.parametrize("method", ["taylor", "fit"])
def test_proof_five_input_interactions(five_net, method):
    """Every true coefficient within 0.1, nothing else above 0.1, by either method."""
    model, x, y, _ = five_net
    d = discover(model, torch.zeros(5), order=3, radius=0.5, points=32, method=method)
    symbols = sp.symbols("x1:6", real=True)
    truth = {(0, 0, 0, 0, 0): 0.5, (1, 0, 0, 0, 0): 1.0, (0, 1, 1, 0, 0): 0.6, (0, 1, 0, 1, 0): -0.8,
             (1, 1, 1, 0, 0): 1.0, (0, 0, 1, 0, 1): -1.0}
    got = _terms(d.formula(), symbols)
    for m, c in truth.items():
        assert abs(got.get(m, 0.0) - c) < 0.1, (m, got.get(m), c)
    spurious = {m: c for m, c in got.items() if m not in truth and abs(c) >= 0.1}
    assert not spurious, spurious
    assert set(_terms(d.formula(threshold=0.1), symbols)) == set(truth)


def test_compare_picks_the_higher_heldout_r2(five_net, tmp_path):
    model, x, y, _ = five_net
    d = discover(model, torch.zeros(5), order=3, radius=0.5, points=32, method="taylor")
    c = d.compare()
    assert c.r2_taylor == d.heldout_r2 and c.better == ("fit" if c.r2_fit > c.r2_taylor else "taylor")
    assert c.better in str(c) and c.points == 512
    f = discover(model, torch.zeros(5), order=3, radius=0.5, points=32, method="fit")
    assert f.compare().r2_fit == c.r2_fit and f.compare().r2_taylor == c.r2_taylor  # same fresh points
    assert_image(f.figure(top=8), tmp_path / "fit.png")


class _InlineExecutor(concurrent.futures.Executor):
    """Runs each submitted call at once in this thread (tests/test_many.py covers process pools)."""

    def submit(self, fn, /, *args, **kwargs):
        future = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future


def test_reference_expansions_go_through_expand_many_in_chunks(monkeypatch):
    import importlib

    module = importlib.import_module("hope_engine.analysis.discovery")
    model = sine_mlp([2, 8, 1], seed=1)
    center = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    kwargs = dict(order=4, radius=0.4, points=11, heldout=64)
    d = discover(model, center, **kwargs)
    # before: one batched expand of all reference rows, each Taylor-shifted to the centre
    p = expand(model, d.points, 4, batched=True)
    before = p.recenter(center.expand_as(d.points)).coefficients.reshape(p.coefficients.shape[0], -1).T
    assert torch.allclose(d.coefficients, before, rtol=1e-12, atol=1e-14)
    chunk_sizes = []
    real = module.expand_many

    def spy(model, points, order, **kw):
        chunk_sizes.append(kw["chunk_size"])
        return real(model, points, order, **kw)

    monkeypatch.setattr(module, "expand_many", spy)
    chunked = discover(model, center, **kwargs, chunk_size=4, executor=_InlineExecutor(), progress=False)
    assert chunk_sizes == [4]
    assert torch.allclose(chunked.coefficients, d.coefficients, rtol=1e-12, atol=1e-14)
    assert chunked.heldout_r2 == pytest.approx(d.heldout_r2, rel=1e-12)
    assert str(chunked.formula(top=4)) == str(d.formula(top=4))
    fitted = discover(model, center, **kwargs, method="fit", chunk_size=4)  # the centre alone: one chunk of 1
    assert chunk_sizes[-1] == 1 and fitted.method == "fit"


# ----------------------------------------------------------------------------------------------- method="auto"


def _direct_monomials(t: torch.Tensor, alphas) -> torch.Tensor:
    """(N, M) table of prod_i t_i^a_i written term by term (not the engine's monomial table)."""
    cols = []
    for alpha in alphas:
        col = torch.ones(t.shape[0], dtype=torch.float64)
        for i, e in enumerate(alpha):
            col = col * t[:, i] ** e
        cols.append(col)
    return torch.stack(cols, 1)


def _taylor_truth(expr, symbols, order, alphas) -> torch.Tensor:
    """The Taylor coefficients of ``expr`` at 0 up to ``order`` (sympy series), in the order of ``alphas``."""
    e = sp.Symbol("e")
    s = sp.series(expr.subs({v: e * v for v in symbols}, simultaneous=True), e, 0, order + 1).removeO().subs(e, 1)
    got = {m: float(c) for m, c in sp.Poly(sp.expand(s), *symbols).terms()}
    return torch.tensor([got.get(a, 0.0) for a in alphas], dtype=torch.float64)


def test_constrained_lstsq_matches_the_kkt_system():
    """Elimination against an independent solve of the equality-constrained least squares' KKT system."""
    gen = torch.Generator().manual_seed(4)
    for trial in range(5):
        a = torch.randn(40, 7, generator=gen, dtype=torch.float64)
        y = torch.randn(40, generator=gen, dtype=torch.float64)
        fixed = torch.zeros(7, dtype=torch.bool)
        fixed[: 1 + trial % 4] = True
        values = torch.randn(7, generator=gen, dtype=torch.float64)
        got, se = constrained_lstsq(a, y, fixed, values)
        e = torch.eye(7, dtype=torch.float64)[fixed]  # E b = v_fixed
        k = e.shape[0]
        kkt = torch.zeros(7 + k, 7 + k, dtype=torch.float64)
        kkt[:7, :7] = 2 * a.T @ a
        kkt[:7, 7:] = e.T
        kkt[7:, :7] = e
        rhs = torch.cat([2 * a.T @ y, values[fixed]])
        ref = torch.linalg.solve(kkt, rhs)[:7]
        assert torch.allclose(got, ref, rtol=1e-10, atol=1e-12)
        assert torch.equal(got[fixed], values[fixed]) and bool((se[fixed] == 0).all()) and bool((se[~fixed] > 0).all())


class Law(nn.Module):
    """A known smooth law standing in for a trained network: exp(-x1^2) x2, optionally plus a small fast wiggle
    w sin(40 x1) (a network's typical error: small in value, large in its derivatives at the centre)."""

    def __init__(self, wiggle: float = 0.0, polynomial: bool = False):
        super().__init__()
        self.wiggle, self.polynomial = wiggle, polynomial

    def forward(self, x):
        x1, x2 = x[..., 0:1], x[..., 1:2]
        base = (x1 - x2) ** 3 / 3 if self.polynomial else torch.exp(-x1 ** 2) * x2
        return base + self.wiggle * torch.sin(40 * x1)


def _law_data(polynomial: bool, count: int = 1500, noise: float = 0.01):
    gen = torch.Generator().manual_seed(11)
    x = torch.rand(count, 2, generator=gen, dtype=torch.float64) * 2 - 1
    y = Law(polynomial=polynomial)(x).reshape(-1) + noise * torch.randn(count, generator=gen, dtype=torch.float64)
    return x, y


@pytest.mark.parametrize("polynomial, wiggle", [(False, 0.0), (True, 0.003)])
def test_auto_is_within_1_5x_of_the_best_candidate(polynomial, wiggle):
    """Two regimes against the law's own Taylor coefficients (sympy): a law with large terms beyond the order over the
    box (the fits absorb them, the expansion at the centre is exact) and a polynomial law read through a 'network'
    with a fast wiggle (the expansion at the centre is off, the fits are not)."""
    x, y = _law_data(polynomial)
    d = discover(Law(wiggle, polynomial).eval(), [0.0, 0.0], order=4, radius=1.0, data=(x, y))
    assert [c.method for c in d.candidates] == ["local", "taylor", "fit", "constrained", "data"]
    expr = (X1 - X2) ** 3 / 3 if polynomial else sp.exp(-X1 ** 2) * X2
    truth = _taylor_truth(expr, (X1, X2), 4, d.basis.multi_indices())
    errs = {c.method: float((c.coefficients - truth).abs().max()) for c in d.candidates}
    assert d.method == "auto" and sum(c.chosen for c in d.candidates) == 1
    assert errs[d.chosen] <= 1.5 * min(errs.values()), (d.chosen, errs)
    assert torch.equal(d.mean, d.candidates.by_name(d.chosen).coefficients.to(d.mean.dtype))
    if polynomial:
        assert d.chosen in ("fit", "data") and errs["local"] > 5 * errs[d.chosen]
    else:
        assert d.chosen == "local" and errs["fit"] > 5 * errs["local"]
    text = repr(d)
    assert all(name in text for name in errs) and "* " + d.chosen in text and "chosen:" in text


def test_data_and_constrained_candidates_against_numpy_least_squares():
    x, y = _law_data(False, count=600)
    model = Law().eval()
    d = discover(model, [0.1, -0.2], order=3, radius=0.7, data=(x, y), constrained_on="data", constrained_order=1)
    alphas = d.basis.multi_indices()
    t = x - torch.tensor([0.1, -0.2], dtype=torch.float64)
    inside = t.abs().amax(1) <= 0.7
    a = _direct_monomials(t[inside], alphas).numpy()
    ref = np.linalg.lstsq(a, y[inside].numpy(), rcond=None)[0]
    assert np.allclose(d.candidates.by_name("data").coefficients.numpy(), ref, rtol=1e-9, atol=1e-11)
    cons = d.candidates.by_name("constrained")
    fixed = np.array([sum(al) <= 1 for al in alphas])
    local = d.local.numpy()
    assert np.array_equal(cons.coefficients.numpy()[fixed], local[fixed])
    free = np.linalg.lstsq(a[:, ~fixed], y[inside].numpy() - a[:, fixed] @ local[fixed], rcond=None)[0]
    assert np.allclose(cons.coefficients.numpy()[~fixed], free, rtol=1e-9, atol=1e-11)
    # the expansion at the centre: exp(-x1^2) x2's Taylor coefficients at (0.1, -0.2) (sympy derivatives)
    c = {X1: sp.Rational(1, 10), X2: sp.Rational(-1, 5)}
    f = sp.exp(-X1 ** 2) * X2
    for m, al in enumerate(alphas):
        ref_c = float(sp.diff(f, X1, al[0], X2, al[1]).subs(c)) / (math.factorial(al[0]) * math.factorial(al[1]))
        assert abs(float(d.candidates.by_name("local").coefficients[m]) - ref_c) < 1e-12


def test_auto_without_data_scores_on_network_samples_and_bad_calls_say_what_to_do():
    d = discover(Cubic().eval(), [0.2, 0.1], order=3, radius=0.8, points=16)
    assert [c.method for c in d.candidates] == ["local", "taylor", "fit", "constrained"]
    assert "fresh network samples" in d.candidates.metric
    for cand in d.candidates:  # an exact cubic: every candidate is the model itself
        assert torch.allclose(cand.coefficients, d.local.double(), atol=1e-9)
        assert cand.heldout < 1e-18
    assert _same(d.formula(), CUBIC, tol=1e-9)
    with pytest.raises(ValueError, match="data=\\(x, y\\)"):
        discover(Cubic().eval(), [0.0, 0.0], order=3, method="data")
    with pytest.raises(ValueError, match="heldout > 0 or data"):
        discover(Cubic().eval(), [0.0, 0.0], order=3, heldout=0)
    x = torch.tensor([[5.0, 5.0]] * 20, dtype=torch.float64)
    with pytest.raises(ValueError, match="too few"):
        discover(Cubic().eval(), [0.0, 0.0], order=3, method="data", data=(x, torch.zeros(20)))
    d = discover(Cubic().eval(), [0.0, 0.0], order=3, data=(x, torch.zeros(20)))  # auto goes on without the data
    assert "data" not in [c.method for c in d.candidates] and "data not used" in d.candidates.reason
    with pytest.raises(ValueError, match="constrained_order"):
        discover(Cubic().eval(), [0.0, 0.0], order=3, constrained_order=3)


def test_closed_form_recovers_rationals_and_reports_its_error():
    d = discover(Cubic().eval(), [0.2, 0.1], order=3, radius=0.8, points=8)
    hyp = d.closed_form(tolerance=1e-6)
    assert sp.simplify(hyp.formula - CUBIC) == 0 and hyp.max_change < 1e-9 and not hyp.unmatched
    assert hyp.heldout < 1e-18 and "MSE" in hyp.metric
    assert simplest_number(0.3334, 0.01) == sp.Rational(1, 3)
    assert simplest_number(0.96, 0.05) == 1  # the smallest denominator within the tolerance
    assert simplest_number(0.004, 0.01) == 0
    assert simplest_number(0.123456, 1e-4, max_denominator=12) is None
    assert simplest_number(3.14159, 1e-4, constants=(sp.pi,)) == sp.pi
    x, y = _law_data(False)
    d = discover(Law().eval(), [0.0, 0.0], order=4, radius=1.0, data=(x, y))
    hyp = d.closed_form(tolerance=0.02)
    assert sp.expand(hyp.formula - (X2 - X1 ** 2 * X2)) == 0  # exp(-x1^2) x2 to degree 4
    assert hyp.heldout >= 0 and str(hyp).startswith("hypothesis")
