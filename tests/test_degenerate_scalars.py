"""Degenerate scalar arguments (a division by 0, a variance with no degrees of freedom) follow torch: an infinite or
NaN value, never a Python exception from the rule; the polynomial's value is the model's, and certify says no bound."""

from __future__ import annotations

import pytest
import torch

from hope_engine import certify, expand

CASES = {
    "divide by 0.0": lambda x: x / 0.0,
    "divide by -0.0": lambda x: x / -0.0,
    "divide by int 0": lambda x: x / 0,
    "var, correction = count": lambda x: torch.var(x, correction=2) + x,
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_expand_follows_torch_on_degenerate_scalars(name):
    f = CASES[name]
    x0 = torch.tensor([0.3, -0.2], dtype=torch.float64)
    p = expand(f, x0, 2, verify=False)
    torch.testing.assert_close(p.coefficients[0], f(x0), equal_nan=True)
    c = certify(f, x0, order=2, radius=0.1)
    assert not torch.isfinite(c.remainder).any()
