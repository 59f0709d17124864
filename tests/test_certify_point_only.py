"""certify refuses what would hold at x0 only: a Python branch on an input-dependent value, rows that read each other;
and its polynomial is checked against the model's own torch run, like expand's."""

import pytest
import torch
from torch import nn

from hope_engine import ExpansionError, certify

D = torch.float64


def _renormalised(x):
    if x.norm() > 1:  # a Python branch on the input: the graph of x0's side only
        x = x / x.norm()
    return x.sum()


BRANCHES = {
    "if on a norm": _renormalised,
    "if on an element": lambda x: x.sin().sum() if x[0] > 0 else x.cos().sum(),
    "Python max": lambda x: max(x[0], x[1]) * 2,
    "int() index": lambda x: x[int(x.argmax())] ** 2,
}


@pytest.mark.parametrize("name", sorted(BRANCHES))
def test_a_python_branch_on_the_input_is_refused(name):
    """Claimed R = 5e-7 where |f - P| = 1 before: the box crosses the branch the graph does not hold."""
    with pytest.raises(ExpansionError, match="branches in Python.*torch.where"):
        certify(BRANCHES[name], torch.tensor([0.7, 0.72], dtype=D), order=3, radius=0.3)


class OnAParameter(nn.Module):
    """A branch on a parameter holds over the whole box: certified."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, -1.0], dtype=D))

    def forward(self, x):
        return (x * self.w).tanh().sum() if self.w.sum() < 0 else x.sum()


def test_a_branch_on_a_parameter_is_certified_and_sound():
    model, x0 = OnAParameter(), torch.tensor([0.2, 0.1], dtype=D)
    tm = certify(model, x0, order=3, radius=0.2)
    xs = x0 + 0.2 * (2 * torch.rand(2000, 2, dtype=D, generator=torch.Generator().manual_seed(0)) - 1)
    f = torch.stack([model(x) for x in xs]).detach()
    assert float((f - tm.polynomial(xs)).abs().max()) <= float(tm.remainder)
    assert tm.polynomial.checks == ("value", "gradient")


def test_rows_that_read_each_other_are_refused():
    x0 = torch.rand(3, 2, dtype=D)
    with pytest.raises(ExpansionError, match="rows of this batch read each other"):
        certify(lambda x: torch.tanh(x - x.mean(0)).sum(1), x0, order=2, radius=0.1)
