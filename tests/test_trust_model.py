"""Expansion never changes the user's model, and values that leave the traced graph are errors, never numbers."""

from __future__ import annotations

import copy
import io
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from hope_engine import ExpansionError, GraphEscapeError, expand

D = torch.float64


# --------------------------------------------------------------------------------------------------- escapes
class ThroughNumpy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x):
        h = self.lin(x)
        return torch.from_numpy(np.tanh(h.detach().numpy()))


def _escaping_models() -> dict:
    lin = nn.Linear(2, 1).to(D)
    return {
        "numpy": ThroughNumpy().to(D),
        "item": lambda x: torch.sin(x).sum() * x.sum().item(),
        "tolist": lambda x: torch.tensor(x.tolist(), dtype=D).sum(-1, keepdim=True) * torch.exp(x[:, :1]),
        "float": lambda x: torch.tanh(lin(x)) * float(x[0, 0]),
        "np.asarray": lambda x: torch.as_tensor(np.asarray(x) ** 2).sum(-1, keepdim=True),
    }


@pytest.mark.parametrize("kind", list(_escaping_models()))
def test_values_escaping_the_graph_are_refused_with_the_line(kind):
    model = _escaping_models()[kind]
    x0 = torch.tensor([[0.3, -0.2]], dtype=D)
    with pytest.raises(GraphEscapeError) as info:
        expand(model, x0, 3)
    message = str(info.value)
    assert "Python or NumPy" in message and "torch operations" in message
    assert "test_trust_model.py:" in message, message


def test_a_branch_on_a_value_is_not_an_escape():
    def f(x):
        if (x.sum() > 0).item():
            return torch.sin(x).sum(-1, keepdim=True)
        return torch.cos(x).sum(-1, keepdim=True)

    x0 = torch.tensor([[0.3, 0.2]], dtype=D)
    p = expand(f, x0, 3)
    torch.testing.assert_close(p.derivative((1, 0)), torch.cos(x0[:, :1]))


def test_python_numbers_not_from_the_input_are_fine():
    shift = torch.tensor(0.5, dtype=D)

    def f(x):
        return torch.tanh(x * shift.item() + float(shift)).sum(-1, keepdim=True)

    p = expand(f, torch.zeros(1, 2, dtype=D), 3)
    # f = tanh(x0 / 2 + 1/2) + tanh(x1 / 2 + 1/2): d^(k,0) f = d^(0,k) f = tanh^(k)(1/2) / 2^k, mixed ones vanish
    t = math.tanh(0.5)
    tanh_k = [t, 1 - t * t, -2 * t * (1 - t * t), (6 * t * t - 2) * (1 - t * t)]  # the k-th derivative of tanh at 1/2
    alphas = sorted(tuple(int(e) for e in a) for a in p.basis.multi_indices())
    assert alphas == sorted((i, j) for i in range(4) for j in range(4 - i))
    for a, b in alphas:
        want = 2 * t if a == b == 0 else (tanh_k[a + b] / 2 ** (a + b) if a == 0 or b == 0 else 0.0)
        torch.testing.assert_close(p.derivative((a, b)), torch.full((1, 1), want, dtype=D), rtol=1e-13, atol=1e-14)


# ---------------------------------------------------------------------------------------- model untouched
def _zoo() -> dict:
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(2 * 2 * 2, 1))
    spectral = nn.Sequential(nn.utils.spectral_norm(nn.Linear(2, 4)), nn.Tanh(), nn.Linear(4, 1))
    weight_normed = nn.Sequential(nn.utils.weight_norm(nn.Linear(2, 4)), nn.Tanh(), nn.Linear(4, 1))
    parametrized = nn.Sequential(nn.utils.parametrizations.orthogonal(nn.Linear(2, 2)), nn.Tanh(), nn.Linear(2, 1))
    layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=8, dropout=0.1, batch_first=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = nn.Sequential(layer, nn.Flatten(), nn.Linear(3 * 4, 1))
    counted = Counting()
    hooked = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))
    hooked[0].register_forward_hook(lambda m, a, out: out * 1.5)
    hooked.register_forward_pre_hook(lambda m, a: (a[0] + 0.1,))
    return {
        "mlp": (nn.Sequential(nn.Linear(2, 4), nn.Dropout(0.2), nn.Tanh(), nn.Linear(4, 1)), (1, 2)),
        "conv": (conv, (1, 1, 6, 6)),
        "spectral_norm": (spectral, (1, 2)),
        "weight_norm": (weight_normed, (1, 2)),
        "parametrized": (parametrized, (1, 2)),
        "transformer": (encoder, (1, 3, 4)),
        "counting": (counted, (1, 2)),
        "hooked": (hooked, (1, 2)),
        "unsupported": (Unsupported(), (1, 2)),
    }


class Counting(nn.Module):
    """Writes to itself in forward (a call counter, a cached activation)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.calls = 0
        self.last = None

    def forward(self, x):
        self.calls += 1
        self.last = self.lin(x)
        return torch.sin(self.last)


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 3)

    def forward(self, x):
        return torch.special.zeta(self.lin(x), torch.tensor(2.0, dtype=x.dtype)).sum(-1, keepdim=True)


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "objects": {name: dict(vars(m)) for name, m in model.named_modules()},
        "tensors": {name: {k: v for k, v in vars(m).items() if isinstance(v, torch.Tensor)}
                    for name, m in model.named_modules()},
        "training": {name: m.training for name, m in model.named_modules()},
        "hooks": {name: (list(m._forward_hooks.items()), list(m._forward_pre_hooks.items()))
                  for name, m in model.named_modules()},
    }


def _assert_same(before: dict, model: nn.Module) -> None:
    after = _snapshot(model)
    assert before["state"].keys() == after["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"state {k} changed"
    for name, attrs in before["objects"].items():
        now = after["objects"][name]
        assert attrs.keys() == now.keys(), f"{name}: attributes {set(attrs) ^ set(now)} added or removed"
        for k, v in attrs.items():
            assert now[k] is v or (not isinstance(v, (torch.Tensor, nn.Module)) and now[k] == v), f"{name}.{k} changed"
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"]
    for name, tensors in after["tensors"].items():
        for k, t in tensors.items():
            assert type(t) in (torch.Tensor, nn.Parameter), f"{name}.{k} is now a {type(t).__name__}"


@pytest.mark.parametrize("name", list(_zoo()))
@pytest.mark.parametrize("train", [False, True])
def test_expand_leaves_the_model_exactly_as_it_was(name, train):
    model, shape = _zoo()[name]
    model = model.to(D).train(train)
    x0 = torch.rand(shape, dtype=D) - 0.5
    with torch.no_grad():
        model(x0)  # a first forward, as users do: hooks such as spectral_norm's have set their attributes
    before = _snapshot(model)
    savable = _saves(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in ("exact", "hope"):
            try:
                expand(model, x0, 2, method=method)
            except ExpansionError:
                pass  # refusals must leave the model untouched too
    _assert_same(before, model)
    copy.deepcopy(model)
    assert _saves(model) == savable
    pickle.dumps(model.state_dict())


def _saves(model: nn.Module) -> bool:
    """Whether torch.save of the whole module works (parametrized modules and lambda hooks never do)."""
    try:
        torch.save(model, io.BytesIO())
    except (RuntimeError, AttributeError, pickle.PicklingError):
        return False
    return True


def test_int_of_an_input_value_is_an_escape_and_printing_is_not(capsys):
    def counts(x):
        return torch.sin(x).sum(-1, keepdim=True) * int(x[0, 0] * 10)

    with pytest.raises(GraphEscapeError, match=r"int\(\.\.\.\)"):
        expand(counts, torch.tensor([[0.3, -0.2]], dtype=D), 2)

    def chatty(x):
        print(f"input {x[0, 0]:.3f}")  # formatting a value feeds nothing back into the computation
        return torch.sin(x).sum(-1, keepdim=True)

    p = expand(chatty, torch.tensor([[0.3, -0.2]], dtype=D), 2)
    torch.testing.assert_close(p.derivative((1, 0)), torch.cos(torch.tensor([[0.3]], dtype=D)))
