"""``reference_sine_mlp`` against the HOPE reference repository's recipe, restated here from its ``utils/Network.py``:
``MLP.__init__`` builds every layer, then ``net.apply(sine_init)`` redraws each weight with numpy's sqrt bound and
``net[0].apply(first_layer_sine_init)`` the first; ``reproduc()`` seeds torch with 42 first."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hope_engine.models import Sine, reference_sine_mlp


def _recipe(inputs=1, hidden=1024, outputs=1, layers=5):
    torch.manual_seed(42)
    mods = [nn.Linear(inputs, hidden)]
    mods += [nn.Linear(hidden, hidden) for _ in range(layers - 2)]
    mods.append(nn.Linear(hidden, outputs))
    with torch.no_grad():
        for m in mods:  # sine_init, in Sequential order (apply visits children first, in order)
            n = m.weight.size(-1)
            m.weight.uniform_(-np.sqrt(6 / n) / 30, np.sqrt(6 / n) / 30)
        n = mods[0].weight.size(-1)  # first_layer_sine_init
        mods[0].weight.uniform_(-1 / n, 1 / n)
    return mods


def test_reference_net_is_drawn_as_the_repository_draws_it():
    net = reference_sine_mlp(1, 64, 1, 5)
    ref = _recipe(1, 64, 1, 5)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert len(linears) == 5 and isinstance(net[-1], Sine)  # output_act=True: a sine after the last layer too
    assert sum(isinstance(m, Sine) for m in net) == 5
    for got, want in zip(linears, ref):
        assert got.weight.dtype == torch.float64
        assert torch.equal(got.weight, want.weight.double()) and torch.equal(got.bias, want.bias.double())
    assert float(linears[0].weight.detach().abs().max()) <= 1.0
    assert float(linears[2].weight.detach().abs().max()) <= np.sqrt(6 / 64) / 30
    plain = reference_sine_mlp(2, 8, 3, 3, output_act=False, dtype=torch.float32)
    assert not isinstance(plain[-1], Sine) and plain[0].weight.dtype == torch.float32
    x = torch.rand(4, 2)
    assert plain(x).shape == (4, 3)
