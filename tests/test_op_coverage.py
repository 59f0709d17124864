"""Ops real models use beyond the elementwise ones: sorting and selection, scatters, two-argument functions, special
functions, losses and distances, grid sampling, bilinear layers. Each is checked against float64 nested autograd at a
random point (or against a defining formula where PyTorch's own higher derivatives are missing), plus its ties, jumps
and singular points."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as tF
from support.autograd import assert_matches_autograd

from hope_engine import expand
from hope_engine.errors import ExpansionError, KinkWarning

D = torch.float64
X0 = torch.tensor([0.31, -0.72, 1.13, 0.52, -0.24, 0.93, -1.41, 0.07], dtype=D)
VARS = [0, 2, 5]
IDX = torch.tensor([[0, 2, 0, 1], [1, 0, 2, 2]])


def _cdist_formula(a, b):
    return ((a.unsqueeze(-2) - b.unsqueeze(-3)) ** 2).sum(-1).sqrt()


def _grid_sample_formula(img, grid):
    """Bilinear sampling (align_corners=True, zero padding, grid inside): sum of the 4 neighbours times the weights."""
    h, w = img.shape[-2:]
    ix, iy = (grid[..., 0] + 1) / 2 * (w - 1), (grid[..., 1] + 1) / 2 * (h - 1)
    x0, y0 = ix.detach().floor().long(), iy.detach().floor().long()
    out = 0
    for dx in (0, 1):
        for dy in (0, 1):
            wx = (ix - x0) if dx else (x0 + 1 - ix)
            wy = (iy - y0) if dy else (y0 + 1 - iy)
            xs, ys = (x0 + dx).clamp(0, w - 1), (y0 + dy).clamp(0, h - 1)
            out = out + img[0, 0][ys, xs] * wx * wy
    return out.unsqueeze(1)


GRID = torch.tensor([[[[-0.3, 0.41], [0.62, -0.77]], [[0.15, 0.2], [-0.9, 0.33]]]], dtype=D)
IMG = torch.linspace(-1, 1, 12, dtype=D).reshape(1, 1, 3, 4).sin()

# name -> (f, reference or None)
CASES = {
    "sort": (lambda x: torch.sort(x.sin())[0] * torch.arange(8, dtype=D), None),
    "sort_descending": (lambda x: torch.sort(x.reshape(2, 4).exp(), dim=0, descending=True)[0].cos(), None),
    "topk": (lambda x: torch.topk(x * x, 3)[0].exp(), None),
    "median": (lambda x: torch.median(x.sin()) * x, None),
    "median_dim": (lambda x: torch.median(x.reshape(2, 4).tanh(), 1)[0], None),
    "kthvalue": (lambda x: torch.kthvalue(x.reshape(2, 4) ** 3, 2, 1, keepdim=True)[0] * x, None),
    "cummax": (lambda x: torch.cummax(x.sin(), 0)[0].exp(), None),
    "cummin": (lambda x: torch.cummin(x.cos(), 0)[0] * x, None),
    "cumprod": (lambda x: torch.cumprod(x + 1.5, 0), None),
    "scatter": (lambda x: torch.zeros(2, 3, dtype=D).scatter(1, torch.tensor([[0, 2, 1], [1, 0, 2]]),
                                                             x.reshape(2, 4)[:, :3].exp()), None),
    "scatter_self": (lambda x: x[:6].reshape(2, 3).sin().scatter(1, IDX[:, :1], x.reshape(2, 4)[:, :1] ** 2), None),
    "scatter_value": (lambda x: x[:6].reshape(2, 3).exp().scatter(1, IDX[:, :1], 0.5), None),
    "scatter_reduce_sum": (lambda x: x[:6].reshape(2, 3).scatter_reduce(1, IDX, x.reshape(2, 4).sin(), "sum"), None),
    "scatter_reduce_mean": (lambda x: x[:6].reshape(2, 3).scatter_reduce(1, IDX, x.reshape(2, 4) ** 2, "mean",
                                                                         include_self=False), None),
    "scatter_reduce_amax": (lambda x: x[:6].reshape(2, 3).scatter_reduce(1, IDX, x.reshape(2, 4).sin(), "amax"),
                            None),
    "scatter_reduce_amin": (lambda x: x[:6].reshape(2, 3).cos().scatter_reduce(1, IDX, x.reshape(2, 4), "amin",
                                                                               include_self=False), None),
    "atan2": (lambda x: torch.atan2(x, x.roll(1) + 0.3), None),
    "remainder": (lambda x: torch.remainder(x * 3, x.roll(1) + 2.0), None),
    "fmod": (lambda x: torch.fmod(x * 3, 0.7), None),
    "hypot": (lambda x: torch.hypot(x, x.roll(1) * 0.5), None),
    "logaddexp": (lambda x: torch.logaddexp(x * 3, x.roll(1) ** 2), None),
    "logaddexp2": (lambda x: torch.logaddexp2(x * 3, -x), None),
    "cdist": (lambda x: torch.cdist(x.reshape(4, 2), x[:6].reshape(3, 2).exp()), None),
    "cdist_p1": (lambda x: torch.cdist(x.reshape(4, 2), x[:6].reshape(3, 2).exp(), p=1.0), None),
    "cdist_p3": (lambda x: torch.cdist(x.reshape(4, 2), x[:6].reshape(3, 2).exp(), p=3.0), None),
    "cross_entropy": (lambda x: tF.cross_entropy(x.reshape(2, 4), torch.tensor([1, 3])), None),
    "cross_entropy_weighted": (lambda x: tF.cross_entropy(x.reshape(2, 4), torch.tensor([1, 3]),
                                                          weight=torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=D)), None),
    "cross_entropy_2d": (lambda x: tF.cross_entropy(x.reshape(1, 2, 2, 2), torch.tensor([[[0, 1], [1, -100]]]),
                                                    reduction="sum"), None),
    "cross_entropy_smoothing": (lambda x: tF.cross_entropy(x.reshape(2, 4), torch.tensor([1, 3]),
                                                           label_smoothing=0.1), None),
    "nll_loss": (lambda x: tF.nll_loss(tF.log_softmax(x.reshape(2, 4), 1), torch.tensor([2, 0]), reduction="none"),
                 None),
    "erfinv": (lambda x: torch.erfinv(x * 0.6), None),
    "lgamma": (lambda x: torch.lgamma(x + 1.7), None),
    "digamma": (lambda x: torch.digamma(x * x + 0.5), None),
    "polygamma": (lambda x: torch.polygamma(2, x + 2.0), None),
    "copysign": (lambda x: torch.copysign(x.exp(), x.roll(1)) * x, None),
    "fmax": (lambda x: torch.fmax(x, x.roll(1).cos()), None),
    "fmin": (lambda x: torch.fmin(x.sin(), x.roll(1) * 0.5), None),
    "bilinear_three_jets": (lambda x: tF.bilinear(x[:4].reshape(2, 2), x[4:].reshape(2, 2).sin(),
                                                  x.reshape(2, 2, 2).exp(), x[:2]), None),
    "grid_sample_input": (lambda x: tF.grid_sample(x[:6].repeat(2).reshape(1, 1, 3, 4).sin(), GRID,
                                                   align_corners=True),
                          lambda x: _grid_sample_formula(x[:6].repeat(2).reshape(1, 1, 3, 4).sin(), GRID)),
    "grid_sample_grid": (lambda x: tF.grid_sample(IMG, (GRID + 0.1 * x[:8].reshape(1, 2, 2, 2)).tanh(),
                                                  align_corners=True),
                         lambda x: _grid_sample_formula(IMG, (GRID + 0.1 * x[:8].reshape(1, 2, 2, 2)).tanh())),
    "grid_sample_both": (lambda x: tF.grid_sample(x[:6].repeat(2).reshape(1, 1, 3, 4), (GRID * x[3]).tanh(),
                                                  align_corners=True),
                         lambda x: _grid_sample_formula(x[:6].repeat(2).reshape(1, 1, 3, 4), (GRID * x[3]).tanh())),
}
REFERENCES = {  # PyTorch has no derivative of _cdist_backward: the defining formula
    "cdist": lambda x: _cdist_formula(x.reshape(4, 2), x[:6].reshape(3, 2).exp()),
    "cdist_p1": lambda x: (x.reshape(4, 2).unsqueeze(-2) - x[:6].reshape(3, 2).exp().unsqueeze(-3)).abs().sum(-1),
    "cdist_p3": lambda x: ((x.reshape(4, 2).unsqueeze(-2) - x[:6].reshape(3, 2).exp().unsqueeze(-3)).abs() ** 3)
    .sum(-1) ** (1 / 3),
}


# autograd's derivatives of these pass through torch's trigamma (polygamma(1, x)), only ~3e-10 accurate; the
# expansion's come from Hurwitz zeta (against mpmath: tests/test_special_points.py, tests/test_derivative_bounds.py)
TRIGAMMA_REFERENCE = {"lgamma", "digamma"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_op_matches_autograd(name):
    f, ref = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", KinkWarning)
        assert_matches_autograd(f, X0, 3, variables=VARS, reference=ref or REFERENCES.get(name),
                                rtol=1e-8 if name in TRIGAMMA_REFERENCE else 1e-10)


# ------------------------------------------------------------------------------------------ ties and jumps
def _warns(f, x0, order=2) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        expand(f, x0, order)
    return [str(w.message) for w in caught if issubclass(w.category, KinkWarning)]


TIES = {
    "sort": lambda x: torch.sort(torch.stack([x[0], x[1], 2 * x[0]]))[0],
    "topk": lambda x: torch.topk(torch.stack([x[0], 2 * x[0], x[1] - 5]), 1)[0],
    "median": lambda x: torch.median(torch.stack([x[0], x[1], 2 * x[0]])),
    "kthvalue": lambda x: torch.kthvalue(torch.stack([x[0], x[1], 2 * x[0]]), 2)[0],
    "cummax": lambda x: torch.cummax(torch.stack([x[0], -x[1], 2 * x[0]]), 0)[0],
    "scatter_reduce": lambda x: torch.zeros(1, dtype=D).scatter_reduce(0, torch.tensor([0, 0]),
                                                                       torch.stack([x[0], 2 * x[0]]), "amax",
                                                                       include_self=False),
}


@pytest.mark.parametrize("name", sorted(TIES))
def test_a_tie_between_different_series_warns(name):
    """x0 = (0, 1): x and 2x tie at 0 (or -x and x); the picked series changes on either side: a kink."""
    assert _warns(TIES[name], torch.tensor([0.0, 1.0], dtype=D)), name
    assert not _warns(TIES[name], torch.tensor([0.5, 1.3], dtype=D)), name


def test_equal_values_with_equal_series_do_not_warn():
    x0 = torch.tensor([0.3, 1.0], dtype=D)
    assert not _warns(lambda x: torch.sort(torch.stack([x[0], x[1], x[0]]))[0], x0)


@pytest.mark.parametrize(("f", "point", "warns"), [
    (lambda x: torch.remainder(x, 0.75), 0.75, True),
    (lambda x: torch.remainder(x, 0.75), 0.0, True),
    (lambda x: torch.fmod(x, 0.75), 0.75, True),
    (lambda x: torch.fmod(x, 0.75), 0.0, False),  # fmod(x, b) = x on both sides of 0
    (lambda x: torch.atan2(0 * x + 0.3, x), -1.0, False),
    (lambda x: torch.atan2(x, 0 * x - 1.0), 0.0, True),  # on the cut: pi above, -pi below
    (lambda x: torch.copysign(torch.ones_like(x), x), 0.0, True),
])
def test_jumps_warn(f, point, warns):
    assert bool(_warns(f, torch.tensor([point], dtype=D))) == warns


# ------------------------------------------------------------------------------------------ singular points
@pytest.mark.parametrize(("name", "f", "x0"), [
    ("linalg_vector_norm", lambda x: torch.linalg.norm(x), [0.0, 0.0]),
    ("sqrt", torch.sqrt, [0.0, 1.0]),
    ("rsqrt", torch.rsqrt, [1.0, 0.0]),
    ("pow", lambda x: x ** 1.5, [0.0, 1.0]),
    ("pow", lambda x: x ** -2, [0.0, 1.0]),
    ("log", torch.log, [0.0, 1.0]),
    ("log1p", torch.log1p, [-1.0, 1.0]),
    ("div", lambda x: 1.0 / x, [0.0, 1.0]),
    ("hypot", lambda x: torch.hypot(x[0], x[1]), [0.0, 0.0]),
    ("atan2", lambda x: torch.atan2(x[0], x[1]), [0.0, 0.0]),
    ("cdist", lambda x: torch.cdist(x.reshape(1, 2), torch.zeros(1, 2, dtype=D)), [0.0, 0.0]),
    ("lgamma", torch.lgamma, [-1.0, 1.0]),
])
def test_not_analytic_points_raise_naming_the_op(name, f, x0):
    """A function that is not analytic at the point (sqrt at 0: a norm at the zero vector) has no Taylor expansion:
    an error naming the op, never NaN coefficients."""
    with pytest.raises(ExpansionError, match="not analytic") as e:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expand(f, torch.tensor(x0, dtype=D), 2)
    assert name.split("_")[0] in str(e.value) or "sqrt" in str(e.value) or "pow" in str(e.value), str(e.value)


def test_a_singular_value_that_does_not_move_is_a_constant():
    """sqrt of an element that is 0 and does not depend on the variables: the constant 0, no NaN."""
    p = expand(lambda x: torch.sqrt(x * torch.tensor([1.0, 0.0], dtype=D)) + torch.log(x + 1), torch.tensor(
        [2.0, 0.0], dtype=D), 3, variables=[0])
    assert torch.isfinite(p.coefficients).all()
    q = expand(lambda x: torch.sqrt(torch.stack([x[0], 0 * x[1]])), torch.tensor([2.0, 0.0], dtype=D), 3)
    assert torch.isfinite(q.coefficients).all()
