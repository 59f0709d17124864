"""Interaction maps and the main-effect / pairwise decomposition, against closed forms and explicit forward passes."""

from __future__ import annotations

import pytest
import torch
from support.analysis import assert_image
from torch import nn

from hope_engine.analysis import decompose, interactions
from hope_engine.analysis.groups import patch_groups


class OnePair(nn.Module):
    """f(x) = x_3 x_7 + sum_i sin(x_i) + 0.3 tanh(2 x_1): one interacting pair, the rest additive ("noise") terms."""

    def forward(self, x):
        x = x.reshape(x.shape[0], -1)
        return (x[:, 3] * x[:, 7] + torch.sin(x).sum(1) + 0.3 * torch.tanh(2 * x[:, 1]))[:, None]


def test_interaction_map_finds_exactly_the_one_pair():
    x = torch.rand(1, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    imap = interactions(OnePair(), x, top=12, order=3)
    first, rest = imap.pairs[0], imap.pairs[1:]
    assert first.groups == (3, 7)
    assert first.mixed == pytest.approx(float(x[0, 3] * x[0, 7]), rel=1e-12)  # d2g/dz3 dz7 = dx_3 dx_7 * 1
    assert first.exact == pytest.approx(first.mixed, rel=1e-12)  # removal interaction of a product: exactly that
    assert max(abs(p.mixed) for p in rest) < 1e-13
    assert max(abs(p.exact) for p in rest) < 1e-12
    assert max(abs(t.mixed) for t in imap.triples) < 1e-13
    assert "p3 x p7" in imap.table(3)


def test_decomposition_of_the_one_pair_model():
    x = torch.rand(1, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.3
    d = decompose(OnePair(), x, order=6)  # anchored at the baseline 0, one segment
    assert d.pairs[3, 7] == pytest.approx(float(x[0, 3] * x[0, 7]), rel=1e-12)
    off = d.pairs.clone()
    off[3, 7] = 0
    assert float(off.abs().max()) < 1e-13 and abs(d.higher) < 1e-13
    expected_main = torch.sin(x[0]) + 0.3 * torch.tanh(2 * x[0]) * (torch.arange(12) == 1)
    assert torch.allclose(d.main, expected_main, atol=1e-6)  # order-6 truncation of sin/tanh on [0, 0.3]
    assert d.unexplained < 1e-5 and abs(d.remainder) < 1e-6
    fine = decompose(OnePair(), x, order=2, segments=8)
    assert fine.pairs[3, 7] == pytest.approx(float(x[0, 3] * x[0, 7]) / 8, rel=1e-9)  # the pair shrinks as 1/m
    assert abs(fine.total - d.total) < 1e-14


def test_third_order_triples_and_patches():
    class Triple(nn.Module):
        def forward(self, x):
            x = x.reshape(x.shape[0], -1)
            return (2.0 * x[:, 0] * x[:, 5] * x[:, 10] + x[:, 1] ** 2)[:, None]

    x = torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64)
    imap = interactions(Triple(), x, top=16, order=3)
    assert imap.triples[0].groups == (0, 5, 10)
    assert imap.triples[0].mixed == pytest.approx(2.0 * 0.125)
    masks = patch_groups((1, 4, 4), 2)
    assert masks.shape == (4, 16) and torch.equal(masks.sum(0), torch.ones(16, dtype=masks.dtype))
    by_patch = interactions(Triple(), x, top=4, patch=2)
    # elements 0 and 5 share patch 0, element 10 is in patch 3: the triple becomes a pair term between them
    assert by_patch.pairs[0].groups == (0, 3)
    assert by_patch.pairs[0].mixed == pytest.approx(2.0 * 2 * 0.125)  # d2/dz0dz3 of 2 z0^2 z3 (0.5^3) at z = 1


def test_cnn_interactions_agree_with_forward_passes(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(36, 8), nn.Tanh(),
                        nn.Linear(8, 3)).double().eval()
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    imap = interactions(net, x, output=1, top=6, order=3)
    exact = torch.tensor([p.exact for p in imap.pairs])
    third = torch.tensor([p.taylor for p in imap.pairs])  # order-3 terms on the pair: closer than the mixed term
    second = torch.tensor([p.mixed for p in imap.pairs])
    assert float((third - exact).abs().max()) < 0.15 * float(exact.abs().max())
    assert float((third - exact).abs().sum()) < float((second - exact).abs().sum())
    assert torch.corrcoef(torch.stack([third, exact]))[0, 1] > 0.98
    d = decompose(net, x, output=1, patch=2, segments=4)
    with torch.no_grad():
        assert d.total == pytest.approx(float(net(x)[0, 1] - net(torch.zeros_like(x))[0, 1]), rel=1e-12)
    parts = float(d.main.sum() + d.pairs.sum()) + d.higher + d.remainder
    assert parts == pytest.approx(d.total, rel=1e-12)
    assert d.unexplained < 0.05
    assert len(d.top_pairs(3)) == 3 and "explain" in str(d)
    assert_image(imap.figure(), tmp_path / "pairs.png")
    with pytest.raises(ValueError, match="one input"):
        interactions(net, torch.rand(2, 1, 8, 8, dtype=torch.float64), output=1)
