"""Window (receptive-field) pure expansions of conv stacks agree with the dense pure expansion to 1e-10."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hope_engine import expand
from hope_engine.analysis.digits_cnn import lenet
from hope_engine.sparse_pure import expand_pure_windows, windowed_prefix


def _close(model, x, order, **kw) -> None:
    dense = expand(model, x, order, terms="pure", **kw)
    sparse = expand_pure_windows(model, x, order, **kw)
    assert sparse.basis is dense.basis
    assert sparse.coefficients.shape == dense.coefficients.shape
    assert (sparse.coefficients - dense.coefficients).abs().max().item() <= 1e-10


def test_small_cnn_matches_dense():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(3, 4, 3, stride=2),
                          nn.Sigmoid(), nn.Flatten(), nn.Linear(16, 2), nn.Tanh()).double().eval()
    x = torch.randn(1, 1, 12, 12, dtype=torch.float64)
    assert windowed_prefix(model) == 5
    for order in (1, 2, 5):
        _close(model, x, order)


def test_channels_batch_dilation_and_no_dense_tail():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, (3, 2), padding=(1, 2), dilation=(1, 2)), nn.GELU(), nn.AvgPool2d(2, 1),
                          nn.Conv2d(3, 2, 3, stride=(2, 1)), nn.SiLU()).double().eval()
    x = torch.randn(2, 2, 9, 8, dtype=torch.float64)
    assert windowed_prefix(model) == 5
    _close(model, x, 3)


def test_mnist_shaped_cnn_order_4():
    model = lenet(10).double().eval()
    x = torch.rand(1, 1, 28, 28, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _close(model, x, 4)


def test_selected_output_and_nested_sequential():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh()), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(8, 3)).double().eval()
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64)
    _close(model, x, 4, output=1)


@pytest.mark.parametrize("model", [nn.Sequential(nn.Flatten(), nn.Linear(16, 1), nn.Tanh()),
                                   nn.Sequential(nn.Tanh(), nn.Flatten(), nn.Linear(16, 1))])
def test_other_models_fall_back_to_dense(model):
    model = model.double().eval()
    assert windowed_prefix(model) == 0
    _close(model, torch.randn(1, 1, 4, 4, dtype=torch.float64), 3)
