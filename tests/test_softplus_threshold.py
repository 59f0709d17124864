"""softplus(x, beta, threshold) as torch computes it: x where beta x > threshold, the smooth function elsewhere.

expand follows torch's branch (its autograd is the reference); certify is sound across the threshold (sampled), where
the two pieces differ by log(1 + exp(-threshold)) / beta."""

import pytest
import torch
from torch import nn

from hope_engine import certify, expand

D = torch.float64


@pytest.mark.parametrize("beta, threshold, x0", [(1.0, 1.0, 1.3), (1.0, 1.0, 0.7), (2.0, 0.5, 0.4), (1.0, 20.0, 25.0),
                                                 (0.5, 3.0, 6.2), (1.0, -1.0, -0.5)])
def test_expand_follows_torch_branch(beta, threshold, x0):
    from support.autograd import autograd_derivatives

    m = nn.Softplus(beta=beta, threshold=threshold)
    x = torch.tensor([x0], dtype=D)
    p = expand(m, x, 3)
    want = autograd_derivatives(m, x, [(k,) for k in range(4)], formulas=False)  # torch's own autograd
    torch.testing.assert_close(p.derivatives().flatten(), want.flatten(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("beta, threshold, x0, r", [(1.0, 1.0, 0.9, 0.2), (1.0, 0.5, 0.45, 0.3), (2.0, 1.0, 0.5, 0.05),
                                                    (1.0, 20.0, 20.0, 0.5), (1.0, 1.0, 3.0, 0.5),
                                                    (0.5, 2.0, 3.9, 0.4), (1.0, 1.0, 1.2, 0.5)])
@pytest.mark.parametrize("order", [0, 1, 3])
def test_certify_is_sound_across_the_threshold(beta, threshold, x0, r, order):
    m = nn.Softplus(beta=beta, threshold=threshold)
    x = torch.tensor([x0], dtype=D)
    c = certify(m, x, order=order, radius=r)
    xs = x0 + torch.linspace(-r, r, 4001, dtype=D).reshape(-1, 1)
    f = m(xs).flatten()
    err = (f - c.polynomial(xs).flatten()).abs().max()
    assert err <= float(c.remainder) * (1 + 1e-12) + 1e-15, (float(err), float(c.remainder))
    torch.testing.assert_close(c.polynomial.coefficients, expand(m, x, order).coefficients)  # expand's P
    lo, hi = c.bounds()
    assert float(lo) <= float(f.min()) and float(f.max()) <= float(hi)
