"""The guard's check (the code the stamp's walk writes, ``guard._Check``) against a full walk: after any change a
notebook user makes to a model (its module tree, its classes, the functions, globals and closures its code reads),
``stamp`` (which reuses the last walk while its check holds) equals ``walked_stamp`` (a fresh walk). A check that
missed a change would return the old stamp, and a stale graph would be reused."""

from __future__ import annotations

import array
import collections
import dataclasses
import functools
import gc
import types

import pytest
import torch
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from torch import nn

from hope_engine.capture import guard


def _tree() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Sequential(nn.Linear(4, 4, bias=False), nn.LeakyReLU(0.1)),
                         nn.LayerNorm(4), nn.Conv1d(1, 1, 3, padding=1), nn.Linear(4, 1)).double()


def _mutations(model: nn.Sequential, draw) -> list:
    lin, inner, norm, conv = model[0], model[2], model[3], model[4]
    handles: list = []

    def hook(m, a, out):
        return out

    return [
        lambda: model.__setitem__(1, nn.Tanh()),                        # a new module object of the same class
        lambda: model.__setitem__(1, nn.Sigmoid()),
        lambda: setattr(lin, "weight", nn.Parameter(lin.weight.detach().clone())),
        lambda: setattr(lin, "bias", None),
        lambda: setattr(inner[0].weight, "data", inner[0].weight.data.float()),
        lambda: setattr(inner[0].weight, "data", torch.randn(4, 5, dtype=torch.float64)),
        lambda: setattr(lin, "in_features", draw(st.integers(1, 3))),
        lambda: setattr(lin, "in_features", 2.0),                       # equal value, other type: equal stamps
        lambda: setattr(conv, "padding", (draw(st.integers(0, 2)),)),
        lambda: setattr(conv, "padding_mode", "circular"),
        lambda: setattr(inner[1], "negative_slope", draw(st.floats(0.0, 1.0))),
        lambda: setattr(norm, "extra", 3),
        lambda: delattr(norm, "extra") if "extra" in vars(norm) else None,
        lambda: setattr(norm, "other", vars(norm).pop("extra")) if "extra" in vars(norm) else None,  # renamed
        lambda: setattr(norm, "eps", [1e-5]),                           # a list: compared by content
        lambda: norm.eps.append(2.0) if isinstance(norm.eps, list) else None,  # ... written in place
        lambda: setattr(conv, "table", {"a": (1, [2.0]), "b": None}),    # nested containers
        lambda: conv.table["a"][1].__setitem__(0, 3.0) if hasattr(conv, "table") else None,
        lambda: conv.table.__setitem__("c", lin) if hasattr(conv, "table") else None,  # a module reached twice
        lambda: setattr(lin, "mask", torch.ones(2, dtype=torch.float64)),  # a tensor attribute ...
        lambda: lin.mask.add_(1.0) if hasattr(lin, "mask") else None,   # ... written in place (its version)
        lambda: setattr(inner[1], "negative_slope", float("nan")),      # equal to nothing, not even itself
        lambda: setattr(norm, "act", functools.partial(torch.clamp, min=draw(st.floats(-1.0, 0.0)))),
        lambda: handles.append(inner[1].register_forward_hook(hook)),
        lambda: handles.append(lin.register_forward_pre_hook(lambda m, a: None)),
        lambda: handles.pop().remove() if handles else None,
        lambda: handles.append(nn.modules.module.register_module_forward_hook(hook)),
        lambda: torch.set_default_dtype(torch.float32 if torch.get_default_dtype() == torch.float64 else
                                        torch.float64),
        lambda: setattr(model[1], "__class__", nn.Softsign),
        lambda: norm.register_buffer("scale", torch.ones(4)),
        lambda: model.append(nn.Identity()),
        lambda: lin.weight.data.mul_(2.0),                              # values: not part of the stamp
        lambda: model.float(),
        lambda: model.train(not model.training),                        # flags: not part of the stamp
        lambda: vars(lin)["_forward_hooks"].__setitem__(99, hook),      # a hook written into the dict directly
        lambda: gc.collect(),
    ], handles


def _check(model):
    """The check written for ``model`` (None: not yet, a model is walked until met unchanged twice, or not possible)."""
    known = guard._GUARDS.get(model)
    return None if known is None else known[0]


def _assert_seen(model, step) -> None:
    """After ``step``, the stamp equals a fresh walk, the check written for it holds, and a change of the walked stamp
    is a change of the stamp."""
    before = guard.walked_stamp(model)
    step()
    now = guard.stamp(model)
    assert now == guard.walked_stamp(model)
    check = _check(model)
    assert check is None or check(), "a check holds while nothing changes"
    assert guard.stamp(model) == now  # and again: met unchanged, the walk's check is written ...
    check = _check(model)
    assert check is None or check(), "a check holds while nothing changes"
    assert guard.stamp(model) is guard.stamp(model) == now  # ... and serves the same stamp object
    if before != now:
        assert guard.stamp(model) != before


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_reused_stamp_always_equals_a_fresh_walk(data):
    default = torch.get_default_dtype()
    model = _tree()
    assert guard.stamp(model) == guard.walked_stamp(model)
    guard.stamp(model)  # met unchanged a second time: the walk's check is written
    assert _check(model) is not None, "a tree of torch's modules has a check"
    steps, handles = _mutations(model, data.draw)
    try:
        for _ in range(data.draw(st.integers(1, 6))):
            _assert_seen(model, steps[data.draw(st.integers(0, len(steps) - 1))])
    finally:
        for h in handles:
            h.remove()
        torch.set_default_dtype(default)


def test_a_replaced_module_is_seen_even_when_its_id_is_reused():
    model = _tree()
    first = guard.stamp(model)
    for _ in range(50):  # replacements free the old object: a new one often lands at the same address
        model[1] = nn.Tanh() if isinstance(model[1], nn.Softsign) else nn.Softsign()
        assert guard.stamp(model) == guard.walked_stamp(model)
    assert (first == guard.stamp(model)) == isinstance(model[1], nn.Tanh)


def test_the_check_holds_no_strong_reference_to_the_model():
    import weakref

    model = _tree()
    guard.stamp(model)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_renamed_attributes_parameters_and_children_are_seen():
    """Renames keep every value (and the count): only the names tell them apart."""
    model = _tree()
    lin = model[0]
    lin.extra = 3
    steps = [
        lambda: setattr(lin, "other", vars(lin).pop("extra")),
        lambda: lin._parameters.__setitem__("w2", lin._parameters.pop("weight")),
        lambda: model._modules.__setitem__("z", model._modules.pop("5")),
    ]
    for step in steps:
        before = guard.stamp(model)
        step()
        assert guard.stamp(model) == guard.walked_stamp(model) != before


# ------------------------------------------------------------------------- user-defined classes, functions, globals
SCALE = 1.0
ACT = torch.tanh
ops = types.ModuleType("ops")
ops.act = torch.tanh


def helper(h, shift=0.0):
    return h * SCALE + shift


def _scaled(f):
    def scaled(h):
        return f(h) * 2.0
    return scaled


closed = _scaled(torch.tanh)


class Base(nn.Module):
    k = 1.0


class OtherBase(nn.Module):
    k = 5.0


class Net(Base):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 3), nn.Linear(3, 1)

    def forward(self, x):
        return self.b(ops.act(helper(ACT(self.a(x))) * self.k) + closed(x).sum())


def _other_helper(h, shift=0.0):
    return h * 2.0 + shift


def _other_forward(self, x):
    return self.b(torch.sin(self.a(x)))


def _code_mutations(draw) -> list:
    g = globals()
    return [
        lambda: g.__setitem__("SCALE", draw(st.floats(0.5, 2.0))),
        lambda: g.__setitem__("ACT", torch.sigmoid),
        lambda: g.__setitem__("tanh", torch.sin),                     # a new global the code names (absent before)
        lambda: setattr(ops, "act", torch.sin),                        # a module member the code reads
        lambda: setattr(ops, "helper", helper),                        # a member the code names, absent before
        lambda: setattr(helper, "__code__", _other_helper.__code__),
        lambda: setattr(helper, "__defaults__", (draw(st.floats(-1.0, 1.0)),)),
        lambda: setattr(helper, "note", "x"),                          # a function attribute
        lambda: setattr(Net, "forward", _other_forward),
        lambda: setattr(Base, "k", draw(st.floats(0.5, 2.0))),
        lambda: setattr(Net, "extra", [1]),                            # a list: compared by content
        lambda: delattr(Net, "extra") if "extra" in vars(Net) else None,
        lambda: setattr(Net, "k", 3.0),                                # shadows the base's
        lambda: g.__setitem__("helper", _other_helper),
        lambda: setattr(closed.__closure__[0], "cell_contents", torch.sin),  # a closure cell rebound
        lambda: setattr(helper, "__kwdefaults__", {"k": 1}),
        lambda: setattr(Net, "__bases__", (OtherBase,)),                # another MRO
        lambda: setattr(helper, "__kwdefaults__", {}),                  # empty, but not None
        lambda: setattr(helper, "__module__", "torch.fake"),           # the walk now takes it for torch's own
        lambda: setattr(Net, "__module__", "torch.fake"),
        lambda: (setattr(Net, "kk", vars(Net)["k"]), delattr(Net, "k")) if "k" in vars(Net) else None,  # renamed
    ]


_SAVED = {"SCALE": SCALE, "ACT": ACT, "helper": helper}


def _restore() -> None:
    g = globals()
    g.update(_SAVED)
    g.pop("tanh", None)
    ops.act = torch.tanh
    vars(ops).pop("helper", None)
    helper.__code__, helper.__defaults__, helper.__kwdefaults__ = _HELPER_CODE, (0.0,), None
    helper.__module__ = Net.__module__ = __name__
    closed.__closure__[0].cell_contents = torch.tanh
    vars(helper).pop("note", None)
    Net.forward = _FORWARD
    Net.__bases__ = (Base,)
    Base.k = 1.0
    for name in ("extra", "k", "kk"):
        if name in vars(Net):
            delattr(Net, name)


_FORWARD = Net.forward
_HELPER_CODE = helper.__code__


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_user_classes_functions_and_globals_are_re_read(data):
    _restore()
    model = Net().double()
    assert guard.stamp(model) == guard.walked_stamp(model)
    guard.stamp(model)
    assert _check(model) is not None, "a user class with plain methods has a check"
    steps = _code_mutations(data.draw)
    try:
        for _ in range(data.draw(st.integers(1, 5))):
            _assert_seen(model, steps[data.draw(st.integers(0, len(steps) - 1))])
    finally:
        _restore()


def test_renamed_class_attributes_are_seen():
    _restore()
    model = Net().double()
    Net.k = 3.0
    try:
        before = guard.stamp(model)
        Net.kk = vars(Net)["k"]
        del Net.k
        assert guard.stamp(model) == guard.walked_stamp(model) != before
    finally:
        _restore()


def _smallest(strategy):
    """A draw outside @given: the strategy's simplest value."""
    return find(strategy, lambda v: True)


@pytest.mark.parametrize("which", range(len(_code_mutations(_smallest))))
def test_each_kind_of_code_change_alone_is_seen(which):
    """Every mutation of the random sequences, once each from a model with a fresh check."""
    _restore()
    model = Net().double()
    guard.stamp(model)
    guard.stamp(model)
    assert _check(model) is not None
    try:
        _code_mutations(_smallest)[which]()
        assert guard.stamp(model) == guard.walked_stamp(model)
    finally:
        _restore()


@pytest.mark.parametrize("which", range(len(_mutations(_tree(), _smallest)[0])))
def test_each_kind_of_module_change_alone_is_seen(which):
    default = torch.get_default_dtype()
    model = _tree()
    guard.stamp(model)
    guard.stamp(model)
    assert _check(model) is not None
    steps, handles = _mutations(model, _smallest)
    try:
        steps[which]()
        assert guard.stamp(model) == guard.walked_stamp(model)
    finally:
        for h in handles:
            h.remove()
        torch.set_default_dtype(default)


# ------------------------------------------- descriptors, slots, buffers, torch's classes patched, autocast state
@dataclasses.dataclass(slots=True)
class _Config:
    gain: float = 1.0


@functools.cache
def _cached(h):
    return h * SCALE


class Kinds(nn.Module):
    """Reads state of every kind the walk once took by identity only."""

    def __init__(self):
        super().__init__()
        self.a, self.act, self.gelu = nn.Linear(2, 3), nn.SiLU(), nn.GELU()
        self.cfg = _Config()
        self.gains = collections.deque([1.0])
        self.table = array.array("d", [1.0])
        self.ops = ops  # a user's module held as a value

    @staticmethod
    def scaled(h):
        return h * SCALE

    @classmethod
    def shifted(cls, h):
        return h + SCALE

    @property
    def gain(self):
        return SCALE

    def forward(self, x):
        h = self.gelu(self.act(self.a(x))) * self.cfg.gain * self.gains[-1] * self.table[0] * self.gain
        return _cached(self.ops.act(self.shifted(self.scaled(h)))) * globals()["SCALE"]


_SILU_FORWARD = nn.SiLU.forward
_GELU = torch.nn.functional.gelu


def _kind_mutations(model: Kinds, draw) -> list:
    g = globals()
    return [
        lambda: g.__setitem__("SCALE", draw(st.floats(0.5, 2.0))),     # read by descriptors, lru_cache, globals()
        lambda: setattr(model.cfg, "gain", draw(st.floats(0.5, 2.0))),
        lambda: model.gains.append(draw(st.floats(0.5, 2.0))),
        lambda: model.table.__setitem__(0, draw(st.floats(0.5, 2.0))),
        lambda: setattr(ops, "act", draw(st.sampled_from([torch.tanh, torch.sin]))),
        lambda: setattr(nn.SiLU, "forward", draw(st.sampled_from([_SILU_FORWARD, lambda self, h: h * SCALE]))),
        lambda: setattr(torch.nn.functional, "gelu", draw(st.sampled_from([_GELU, lambda h, approximate="none": h]))),
        lambda: torch.set_autocast_enabled("cpu", not torch.is_autocast_enabled("cpu")),
        lambda: (torch.set_autocast_enabled("cpu", True),
                 torch.set_autocast_dtype("cpu", draw(st.sampled_from([torch.bfloat16, torch.float16])))),
    ]


def _restore_kinds() -> None:
    _restore()
    nn.SiLU.forward, torch.nn.functional.gelu = _SILU_FORWARD, _GELU
    torch.set_autocast_enabled("cpu", False)
    torch.set_autocast_dtype("cpu", torch.bfloat16)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_descriptors_slots_buffers_patches_and_autocast_are_re_read(data):
    _restore_kinds()
    model = Kinds().double()
    assert guard.stamp(model) == guard.walked_stamp(model)
    guard.stamp(model)
    assert _check(model) is not None, "these kinds of state keep the guard's check (and its cost)"
    steps = _kind_mutations(model, data.draw)
    try:
        for _ in range(data.draw(st.integers(1, 5))):
            _assert_seen(model, steps[data.draw(st.integers(0, len(steps) - 1))])
    finally:
        _restore_kinds()


@pytest.mark.parametrize("which", range(len(_kind_mutations(Kinds(), _smallest))))
def test_each_kind_of_descriptor_buffer_patch_or_autocast_change_alone_is_seen(which):
    _restore_kinds()
    model = Kinds().double()
    guard.stamp(model)
    first = guard.stamp(model)
    assert _check(model) is not None
    try:
        _kind_mutations(model, lambda s: _changed_value(s))[which]()
        now = guard.stamp(model)
        assert now == guard.walked_stamp(model) and now != first
    finally:
        _restore_kinds()


def _changed_value(strategy):
    """A draw that differs from every value the model starts with: the last of a sampled list, or 1.5."""
    values = getattr(strategy, "elements", None)
    return values[-1] if values is not None else 1.5
