"""Models people bring: recurrent layers, in-place input writes, compiled modules; and the real cause when not."""

from __future__ import annotations

import pytest
import torch
from support.autograd import assert_close_derivatives, assert_matches_autograd, autograd_derivatives
from torch import nn

from hope_engine import ExpansionError, expand

D = torch.float64


def _last_step(rnn: nn.Module):
    def f(x):
        out = rnn(x)[0]
        return out[:, -1]
    return f


def _cell(cell: nn.Module):
    def f(x):
        out = cell(x)
        return out[0] if isinstance(out, tuple) else out
    return f


RECURRENT = {
    "rnn": lambda: _last_step(nn.RNN(2, 3, batch_first=True)),
    "gru": lambda: _last_step(nn.GRU(2, 3, batch_first=True)),
    "lstm": lambda: _last_step(nn.LSTM(2, 3, batch_first=True)),
    "bilstm-2layer": lambda: _last_step(nn.LSTM(2, 3, batch_first=True, bidirectional=True, num_layers=2)),
    "grucell": lambda: _cell(nn.GRUCell(2, 3)),
    "lstmcell": lambda: _cell(nn.LSTMCell(2, 3)),
}


def _point(name: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn((1, 2) if "cell" in name else (1, 3, 2), generator=g, dtype=D) * 0.5


@pytest.mark.parametrize("name", list(RECURRENT))
def test_recurrent_layers_match_nested_autograd(name):
    torch.manual_seed(0)
    f = RECURRENT[name]()
    for m in f.__closure__[0].cell_contents.modules():
        m.to(D)
    assert_matches_autograd(f, _point(name), 3)


@pytest.mark.parametrize("name", ["lstm", "gru", "bilstm-2layer"])
def test_recurrent_layers_in_float32_agree_with_float64(name):
    torch.manual_seed(0)
    f = RECURRENT[name]()
    rnn = f.__closure__[0].cell_contents
    x0 = _point(name)
    p32 = expand(f, x0.float(), 3)
    rnn.to(D)
    p64 = expand(f, x0, 3)
    torch.testing.assert_close(p32.coefficients.double(), p64.coefficients, rtol=1e-4, atol=1e-5)


def test_in_place_write_to_the_input_expands_and_leaves_the_point_alone():
    torch.manual_seed(0)
    lin = nn.Linear(2, 1).to(D)

    def f(x):
        x /= 255
        x[:, 0] += 1.0
        return torch.tanh(lin(x))

    x0 = torch.tensor([[3.0, -7.0]], dtype=D)
    p = expand(f, x0, 3)
    alphas = p.basis.multi_indices()
    want = autograd_derivatives(lambda z: f(z.clone()), x0, alphas)  # autograd cannot write into a leaf
    assert_close_derivatives(p.derivatives(), want, [sum(a) for a in alphas])
    assert x0.tolist() == [[3.0, -7.0]]


def test_torch_compiled_module_expands_as_its_original():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).to(D)
    compiled = torch.compile(net)
    x0 = torch.tensor([[0.1, 0.2]], dtype=D)
    torch.testing.assert_close(expand(compiled, x0, 4).coefficients, expand(net, x0, 4).coefficients)


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * x

    @staticmethod
    def backward(ctx, grad):
        return grad


CAUSES = {
    "custom autograd.Function": (lambda x: Square.apply(x).sum(-1), torch.ones(1, 2, dtype=D),
                                 "custom torch.autograd.Function"),
    "integer ids": (nn.Embedding(5, 3), torch.tensor([[1, 2]]), "inputs_embeds"),
    "MultiheadAttention called with one tensor": (nn.MultiheadAttention(4, 2, batch_first=True),
                                                  torch.zeros(1, 3, 4), "expand(model, (q, k, v)"),
    "meta device": (nn.Linear(2, 1, device="meta"), torch.zeros(1, 2), "meta device"),
}


@pytest.mark.parametrize("case", list(CAUSES))
def test_failures_name_their_real_cause(case):
    model, x0, expected = CAUSES[case]
    with pytest.raises(ExpansionError) as info:
        expand(model, x0, 2)
    assert expected in str(info.value)
    assert "point of shape" not in str(info.value)


def test_torchscript_traced_convolution_expands():
    """torch.jit.trace lowers Conv2d to aten._convolution (the CLI loads such files)."""
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 1)).to(D).eval()
    x = torch.rand(1, 1, 6, 6, dtype=D)
    with pytest.warns(DeprecationWarning):
        traced = torch.jit.trace(conv, x)
    assert_matches_autograd(traced, x, 3, variables=[0, 7, 14], reference=conv)
