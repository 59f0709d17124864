"""What expanding must not change in a model: a snapshot of its modules, and the check against it."""

from __future__ import annotations

import torch


def model_snapshot(model) -> dict:
    """What expanding must not change: every module's attributes (by identity), parameter/buffer values, mode."""
    from hope_engine.capture.guard import referenced_modules

    return {id(m): (m, dict(vars(m)), {k: v.detach().clone() for k, v in m.state_dict(keep_vars=True).items()
                                       if isinstance(v, torch.Tensor)}, m.training)
            for root in referenced_modules(model) for m in root.modules()}


def assert_model_unchanged(before: dict, model) -> None:
    """Every module as ``model_snapshot`` saw it: same attribute objects, equal values, same training flag."""
    for m, attrs, state, training in before.values():
        now = vars(m)
        assert now.keys() == attrs.keys(), f"{type(m).__name__}: attributes {set(now) ^ set(attrs)} added/removed"
        for k, v in attrs.items():
            assert now[k] is v, f"{type(m).__name__}.{k} was replaced by expanding"
        for k, v in m.state_dict(keep_vars=True).items():
            if isinstance(v, torch.Tensor) and k in state:
                assert torch.equal(v.detach(), state[k]), f"{type(m).__name__}: {k} changed by expanding"
        assert m.training == training, f"{type(m).__name__}: training flag changed by expanding"
