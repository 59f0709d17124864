"""Trust, round two, what a review found left (issue 20): no engine lock held while the model runs, the self-check's
forward leaves parameters and tensor attributes as they were, per-entry tolerances, float32 models checked against a
float64 run before a mismatch is reported, and the odd ops (inference mode, unsafe_split_with_sizes, degenerate
softplus)."""

from __future__ import annotations

import threading
import weakref

import pytest
import torch
from torch import nn

from hope_engine import expand

D = torch.float64


# ------------------------------------------------------------------------------------------------------ threads
class _WaitsOnAnotherExpansion(nn.Module):
    """A forward that hands work to another thread, which expands another model, and waits for it (a data loader,
    a pool): no lock of the engine may be held while this forward runs."""

    def __init__(self, other: nn.Module, timeout: float):
        super().__init__()
        self.lin = nn.Linear(2, 2).to(D)
        self.others, self.timeout = (other,), timeout  # (not a submodule: a separate model)
        self.finished_in_time: list[bool] = []

    def forward(self, x):
        done = threading.Event()
        worker = threading.Thread(target=lambda: (expand(self.others[0], torch.tensor([0.1, 0.2], dtype=D), 2),
                                                  done.set()), daemon=True)
        worker.start()
        worker.join(self.timeout)
        self.finished_in_time.append(done.is_set())
        return torch.tanh(self.lin(x))


def test_a_forward_waiting_on_another_threads_expansion_does_not_deadlock():
    torch.manual_seed(0)
    other = nn.Sequential(nn.Linear(2, 3), nn.Tanh()).to(D)
    model = _WaitsOnAnotherExpansion(other, timeout=20.0)
    p = expand(model, torch.tensor([0.3, -0.2], dtype=D), 2)
    assert model.finished_in_time and all(model.finished_in_time), \
        "the other thread's expand waited for this one (a lock held across the model's forward)"
    want = expand(model.lin, torch.tensor([0.3, -0.2], dtype=D), 1, verify=False).coefficients
    torch.testing.assert_close(p.coefficients[0], torch.tanh(want[0]), rtol=1e-14, atol=1e-14)


def test_concurrent_calls_restore_modes_and_attributes():
    """Four threads on one cold train-mode model: every module back in train mode and its attributes the same
    objects afterwards, whatever the interleaving (the last call out restores)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.1), nn.Tanh(), nn.Linear(8, 1)).to(D).train()
    before = [dict(vars(m)) for m in model.modules()]
    errors: list = []

    def work():
        try:
            for _ in range(3):
                expand(model, torch.tensor([[0.3, -0.2, 0.1]], dtype=D), 2)
        except Exception as e:  # noqa: BLE001 (collected and reported below)
            errors.append(e)

    with pytest.warns(UserWarning):
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert not errors, errors
    assert all(m.training for m in model.modules())
    for m, attrs in zip(model.modules(), before):
        assert all(vars(m)[k] is v for k, v in attrs.items() if not isinstance(v, dict))


# ------------------------------------------------------------------------------------------------ inference mode
def _smooth(t):
    return torch.exp(t).sin().sum() / (1 + t[0] ** 2) + torch.tanh(t).prod()


@pytest.mark.parametrize("make", [lambda: _smooth, lambda: nn.Sequential(nn.Linear(3, 8), nn.Tanh(),
                                                                          nn.Linear(8, 2)).to(D)],
                         ids=["function", "mlp"])
def test_expand_inside_inference_mode_equals_outside(make):
    """With the engine's caches cold, inside torch.inference_mode(): the product tables are made there (inference
    tensors, without version counters); the result is the same as outside, and the tables made there serve a later
    call that records autograd history (create_graph)."""
    from hope_engine import caches

    torch.manual_seed(0)
    model, x0 = make(), torch.tensor([0.3, -0.2, 0.1], dtype=D)
    caches.clear_all()
    with torch.inference_mode():
        inside = expand(model, x0, 4).coefficients
    outside = expand(model, x0, 4).coefficients
    torch.testing.assert_close(inside, outside, rtol=0, atol=0)
    point = x0.clone().requires_grad_()
    graph = expand(model, point, 3, create_graph=True).coefficients
    (g,) = torch.autograd.grad(graph.sum(), point)
    assert torch.isfinite(g).all()


# ----------------------------------------------------------------------------------------- unsafe_split and kin
UNSAFE_SPLITS = {
    "unsafe_split_with_sizes": lambda x: torch.stack([t.sin().sum() for t in torch.unsafe_split_with_sizes(x, [2, 1])]),
    "unsafe_split": lambda x: torch.cat([t.exp() * t[0] for t in torch.unsafe_split(x, 2)]),
    "unsafe_chunk": lambda x: torch.cat([torch.tanh(t) * t.sum() for t in torch.unsafe_chunk(x, 2)]),
    "unsafe_split_with_sizes, dim 1": lambda x: torch.stack(
        [t.sin().prod() for t in torch.unsafe_split_with_sizes(x.reshape(1, 3), [1, 2], 1)]),
}


@pytest.mark.parametrize("name", sorted(UNSAFE_SPLITS))
def test_unsafe_splits_expand_like_autograd(name):
    """torch.unsafe_split_with_sizes (no vmap batching rule) and its kin: every coefficient up to order 3 against
    nested float64 autograd."""
    from support.autograd import assert_matches_autograd

    assert_matches_autograd(UNSAFE_SPLITS[name], torch.tensor([0.3, -0.2, 0.5], dtype=D), 3)


# ----------------------------------------------------------------------------------- degenerate softplus
def test_certify_softplus_with_beta_zero_is_a_clear_error():
    """nn.Softplus(beta=0) is log(2) / 0 = inf at every x in torch: certify refuses, naming softplus and beta (a
    ZeroDivisionError before); expand gives torch's value, inf."""
    from hope_engine import certify
    from hope_engine.errors import ExpansionError

    x0 = torch.tensor([0.3, -0.2], dtype=D)
    with pytest.raises(ExpansionError, match=r"softplus with beta=0.*non-zero beta"):
        certify(nn.Softplus(beta=0.0), x0, 3, radius=0.1)
    p = expand(nn.Softplus(beta=0.0), x0, 2)
    assert torch.isinf(p.coefficients[0]).all() and torch.isinf(nn.Softplus(beta=0.0)(x0)).all()


# ------------------------------------------------------------------------------------- a weakref the forward reads
class _Config:
    def __init__(self, scale: float):
        self.scale = scale


class _ReadsThroughWeakref(nn.Module):
    """A forward that dereferences weak references (to a config object and to another module)."""

    def __init__(self, config: _Config, other: nn.Module):
        super().__init__()
        self.lin = nn.Linear(2, 2).to(D)
        self._config = weakref.ref(config)
        self._other = weakref.ref(other)

    def forward(self, x):
        return self.lin(x) * self._config().scale + self._other()(x)


def test_the_guard_follows_a_weakref_the_forward_dereferences():
    """Changing what a weakref points at (a config's value, a module's submodule) is a change of the model: the guard
    stamp changes (it was the same object before, so a cached graph stayed in use)."""
    from hope_engine.capture import guard

    torch.manual_seed(0)
    config, other = _Config(2.0), nn.Linear(2, 2).to(D)
    model, x0 = _ReadsThroughWeakref(config, other), torch.tensor([0.3, -0.2], dtype=D)
    before = guard.stamp(model)
    assert guard.stamp(model) is before  # (nothing changed: the same stamp)
    config.scale = 3.0
    after = guard.stamp(model)
    assert after != before
    other.bias = nn.Parameter(torch.ones(2, dtype=D))
    assert guard.stamp(model) != after
    p = expand(model, x0, 2, verify=False)
    torch.testing.assert_close(p.coefficients[0], model(x0).detach(), rtol=1e-14, atol=1e-14)
