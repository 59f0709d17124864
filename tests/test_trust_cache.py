"""A cached graph is never stale: every change to what a model's code reads is seen by the next expansion.

Each case expands, changes the model the way notebook users do, expands again and compares with float64 nested
autograd of the model as it is now (an independent reference), so a stale graph fails the test.
"""

from __future__ import annotations

import array
import collections
import dataclasses
import functools
import importlib
import inspect
import math
import sys
import types
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.autograd import assert_matches_autograd
from torch import nn

from hope_engine import expand
from hope_engine.capture import guard, trace

D = torch.float64
ORDER = 3


def _x0(n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(1, n, generator=g, dtype=D) - 0.5)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).to(D).eval()


def _changed(model, mutate, x0=None, **expand_kwargs) -> None:
    """Expand, mutate, and check the next expansion follows the mutation."""
    x0 = _x0() if x0 is None else x0
    before = assert_matches_autograd(model, x0, ORDER, **expand_kwargs)
    mutate()
    after = assert_matches_autograd(model, x0, ORDER, **expand_kwargs)
    assert not torch.allclose(before.coefficients, after.coefficients), "the mutation should change the function"


def test_forward_hook_added():
    model = _mlp()
    _changed(model, lambda: model.register_forward_hook(lambda m, args, out: torch.sin(out) * 2))


def test_forward_pre_hook_added_on_a_submodule():
    model = _mlp()
    _changed(model, lambda: model[2].register_forward_pre_hook(lambda m, args: (args[0] ** 2,)))


def test_global_forward_hook_added():
    model = _mlp()
    handle = None

    def mutate():
        nonlocal handle
        handle = nn.modules.module.register_module_forward_hook(
            lambda m, args, out: out * 3 if isinstance(m, nn.Tanh) else None)

    try:
        _changed(model, mutate)
    finally:
        if handle is not None:
            handle.remove()


def test_hook_replaced_in_place_in_its_closure():
    model = _mlp()
    scale = [2.0]
    model.register_forward_hook(lambda m, args, out: out * scale[0])
    _changed(model, lambda: scale.__setitem__(0, 5.0))


class WithAct(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 3)
        self.act = torch.tanh
        self.shift = torch.tensor(0.25, dtype=D)
        self.out = nn.Linear(3, 1)

    def forward(self, x):
        return self.out(self.act(self.lin(x) + self.shift))


def _with_act() -> WithAct:
    torch.manual_seed(1)
    return WithAct().to(D).eval()


def test_function_valued_attribute_swapped():
    model = _with_act()
    _changed(model, lambda: setattr(model, "act", torch.cos))


def test_plain_tensor_attribute_replaced():
    model = _with_act()
    _changed(model, lambda: setattr(model, "shift", torch.tensor(-0.7, dtype=D)))


def test_plain_tensor_attribute_updated_in_place():
    model = _with_act()
    _changed(model, lambda: model.shift.fill_(1.5))


class ClassScaled(nn.Module):
    gain = 1.0

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x):
        return torch.sin(self.gain * self.lin(x))


def test_class_attribute_changed():
    torch.manual_seed(2)
    model = ClassScaled().to(D).eval()
    try:
        _changed(model, lambda: setattr(ClassScaled, "gain", 3.0))
    finally:
        ClassScaled.gain = 1.0


GLOBAL_GAIN = 1.0
SCALES = {"gain": 1.0}


class GlobalReader(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x):
        return torch.sin(GLOBAL_GAIN * SCALES["gain"] * self.lin(x))


def test_global_read_by_forward_reassigned():
    global GLOBAL_GAIN
    torch.manual_seed(3)
    model = GlobalReader().to(D).eval()

    def mutate():
        global GLOBAL_GAIN
        GLOBAL_GAIN = 2.5

    try:
        _changed(model, mutate)
    finally:
        GLOBAL_GAIN = 1.0


def test_dict_entry_read_by_forward_replaced():
    torch.manual_seed(3)
    model = GlobalReader().to(D).eval()
    try:
        _changed(model, lambda: SCALES.__setitem__("gain", -2.0))
    finally:
        SCALES["gain"] = 1.0


def test_forward_monkeypatched_on_the_instance():
    model = _mlp()
    _changed(model, lambda: setattr(model, "forward", lambda x: torch.exp(model[0](x)).sum(-1, keepdim=True)))


def test_forward_monkeypatched_on_the_class():
    class Local(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1)

        def forward(self, x):
            return torch.tanh(self.lin(x))

    torch.manual_seed(4)
    model = Local().to(D).eval()
    _changed(model, lambda: setattr(Local, "forward", lambda self, x: torch.sin(self.lin(x)) ** 2))


def test_python_list_of_layers_edited():
    class ListNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Linear(2, 3)
            self.last = nn.Linear(3, 1)
            self.acts = [torch.tanh]

        def forward(self, x):
            h = self.first(x)
            for act in self.acts:
                h = act(h)
            return self.last(h)

    torch.manual_seed(5)
    model = ListNet().to(D).eval()
    _changed(model, lambda: model.acts.append(torch.sin))


def test_plain_function_closure_and_module_list():
    torch.manual_seed(6)
    layers = [nn.Linear(2, 3).to(D), nn.Linear(3, 1).to(D)]

    def f(x):
        return layers[1](torch.tanh(layers[0](x)))

    _changed(f, lambda: layers.__setitem__(0, nn.Linear(2, 3).to(D)))


def test_weights_updated_in_place_reuse_the_graph():
    """The guard must not make the common case slow: an optimizer step keeps the graph."""
    model = _mlp()
    x0 = _x0()
    expand(model, x0, ORDER)
    first = trace.trace(model, x0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x0).sum().backward()
    opt.step()
    assert trace.trace(model, x0) is first
    assert_matches_autograd(model, x0, ORDER)


def test_graph_cache_is_an_explicit_bounded_object():
    model = _mlp()
    for n in range(1, 12):
        trace.trace(model, torch.zeros(n, 2, dtype=D))
    assert len(trace.GRAPHS.graphs(model)) == trace.GRAPHS.per_model
    trace.GRAPHS.clear()
    assert trace.GRAPHS.graphs(model) == []


def test_uncomparable_model_is_retraced_not_cached():
    class Big(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1)
            self.table = list(range(guard._MAX_ITEMS + 1))

        def forward(self, x):
            return torch.tanh(self.lin(x) * (1 + self.table[-1] * 1e-5))

    model = Big().to(D).eval()
    assert guard.stamp(model) is None
    _changed(model, lambda: model.table.append(2 * 10 ** 5))
    assert trace.GRAPHS.graphs(model) == []


# ------------------------------------------------------------------------------------------- property test
_ACTS = [torch.tanh, torch.sin, torch.sigmoid, torch.exp, torch.cos]


class Mutable(nn.Module):
    """A small net whose behaviour hangs on attributes of every kind users mutate."""

    scale_class = 1.0

    def __init__(self, width: int, depth: int):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(2 if i == 0 else width, width) for i in range(depth)])
        self.head = nn.Linear(width, 1)
        self.acts = [torch.tanh] * depth
        self.scale = 1.0
        self.offset = torch.zeros(width)
        self.options = {"square": False}

    def forward(self, x):
        h = x
        for layer, act in zip(self.layers, self.acts):
            h = act(self.scale * self.scale_class * layer(h) + self.offset)
        if self.options["square"]:
            h = h * h
        return self.head(h)


def _mutations(model: Mutable, draw) -> list:
    width = model.head.in_features
    depth = len(model.layers)
    return [
        lambda: setattr(model, "scale", draw(st.floats(0.2, 2.0))),
        lambda: model.acts.__setitem__(draw(st.integers(0, depth - 1)), draw(st.sampled_from(_ACTS))),
        lambda: setattr(model, "offset", torch.rand(width, dtype=D) - 0.5),
        lambda: model.offset.add_(draw(st.floats(-0.5, 0.5))),
        lambda: model.options.__setitem__("square", not model.options["square"]),
        lambda: _scale_output(model, draw(st.floats(0.5, 2.0))),
        lambda: setattr(model, "head", nn.Linear(width, 1).to(D)),
        lambda: setattr(type(model), "scale_class", draw(st.floats(0.5, 1.5))),
    ]


def _scale_output(model: nn.Module, factor: float) -> None:
    model.register_forward_hook(lambda m, a, out: out * factor)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(width=st.integers(2, 4), depth=st.integers(1, 2), data=st.data())
def test_random_mutations_between_calls_are_always_seen(width, depth, data):
    Mutable.scale_class = 1.0
    torch.manual_seed(width * 10 + depth)
    model = Mutable(width, depth).to(D).eval()
    model.offset = model.offset.to(D)
    x0 = _x0(seed=width)
    try:
        for _ in range(data.draw(st.integers(1, 3))):
            expand(model, x0, ORDER)
            steps = _mutations(model, data.draw)
            steps[data.draw(st.integers(0, len(steps) - 1))]()
            assert_matches_autograd(model, x0, ORDER)
    finally:
        Mutable.scale_class = 1.0


def test_stamp_of_a_plain_model_is_cheap_enough_to_run_every_call():
    """Not a timing assertion: the stamp of a 5-layer MLP walks a bounded number of objects (no model data)."""
    model = nn.Sequential(*[nn.Linear(8, 8) for _ in range(5)])
    assert guard.stamp(model) == guard.stamp(model)
    assert math.isfinite(len(repr(guard.stamp(model))))


def test_state_token_follows_parameter_values():
    model = _mlp()
    token = guard.state_token(model)
    with torch.no_grad():
        model[0].weight.data[0, 0] += 1.0   # through .data: the version counter does not move
    assert guard.state_token(model) != token
    with torch.no_grad():
        model[0].weight.data[0, 0] -= 1.0
    assert guard.state_token(model) == token


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__])


def test_training_mode_toggled_between_calls_is_warned_every_time():
    """The facts read before tracing (dtype, meta weights, mode-sensitive layers) are memoised on the stamp, which does
    not cover training flags: those are read at every call."""
    from hope_engine.errors import TrainingModeWarning

    model = nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.5), nn.Tanh(), nn.Linear(3, 1)).to(D).eval()
    x0 = _x0()
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingModeWarning)
        expand(model, x0, ORDER)
    model.train()
    with pytest.warns(TrainingModeWarning):
        expand(model, x0, ORDER)
    model[1].eval()  # the dropout alone: it is the layer that computes differently
    model[0].train()
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingModeWarning)
        expand(model, x0, ORDER)


def test_dtype_changed_in_place_between_calls_is_followed():
    """model.float() keeps the parameter objects and changes their dtype: the point follows the model's new dtype."""
    model = _mlp()
    assert expand(model, _x0(), ORDER).coefficients.dtype == torch.float64
    model.float()
    poly = expand(model, _x0(), ORDER)
    assert poly.coefficients.dtype == torch.float32
    model.double()
    assert_matches_autograd(model, _x0(), ORDER)


def test_weights_moved_to_meta_between_calls_are_refused():
    from hope_engine.errors import ExpansionError

    model = _mlp()
    expand(model, _x0(), ORDER)
    model.to("meta")
    with pytest.raises(ExpansionError, match="meta device"):
        expand(model, _x0(), ORDER)


@pytest.mark.parametrize("variables", [None, [1], [2, 0]])
def test_results_written_into_do_not_leak_into_the_next_call(variables):
    """The input series is copied from a cached template: a caller writing into a result (here the identity model's,
    which is the input series itself) changes neither the template nor the next expansion."""
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=D)
    first = expand(lambda x: x * 1.0, x0, 2, variables=variables)
    want = first.coefficients.clone()
    first.coefficients.add_(7.0)
    again = expand(lambda x: x * 1.0, x0, 2, variables=variables)
    torch.testing.assert_close(again.coefficients, want, rtol=0, atol=0)
    assert_matches_autograd(lambda x: torch.sin(x).sum(), x0, 3, variables=variables)


class _UsesExpand(nn.Module):
    """Its forward calls Tensor.expand, and this module's globals hold hope_engine.expand under that name."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 3)

    def forward(self, x):
        return torch.tanh(self.lin(x)).sum(-1, keepdim=True).expand(-1, 2)


def test_a_global_named_like_a_method_does_not_reach_into_the_engine():
    """Code names are looked up in the globals: here ``expand`` finds the engine's function. Its internals (caches
    that every expansion changes, weak dictionaries that shrink during a walk) are the engine's own: compared by
    identity, so the stamp stays put and the graph is reused."""
    assert expand.__module__.startswith("hope_engine")
    model = _UsesExpand().to(D).eval()
    first = guard.walked_stamp(model)
    expand(model, _x0(), ORDER)
    expand(model, _x0(seed=1), ORDER)
    assert guard.walked_stamp(model) == first
    traced = trace.GRAPHS.graphs(model)
    assert len(traced) == 1
    expand(model, _x0(seed=2), ORDER)
    assert trace.GRAPHS.graphs(model)[0] is traced[0]


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)
        self.scale = 1.0

    def forward(self, a, b):
        return self.lin(torch.tanh(torch.cat([a, b], -1)) * self.scale)


@pytest.mark.parametrize("change", ["attribute", "hook", "layer"])
def test_the_model_inside_an_engine_wrapper_is_still_walked(change):
    """Several inputs (or a picked output) wrap the model in an engine class: the stamp walks that wrapper's
    instance, so a change to the model inside it is seen."""
    torch.manual_seed(0)
    model = _TwoInputs().to(D).eval()
    point = (torch.tensor([[0.2, -0.1]], dtype=D), torch.tensor([[0.4]], dtype=D))
    first = expand(model, point, ORDER).coefficients.clone()
    if change == "attribute":
        model.scale = 2.0
    elif change == "hook":
        model.register_forward_hook(lambda m, a, out: out * 3.0)
    else:
        model.lin = nn.Linear(3, 1).to(D)
    again = expand(model, point, ORDER).coefficients
    assert not torch.allclose(first, again)
    want = expand(lambda x: model(x[:, :2], x[:, 2:]), torch.cat(point, -1), ORDER).coefficients
    torch.testing.assert_close(again, want)


# ------------------------------------------------------------- state read through descriptors, helpers, buffers
# The guard alone: expand's self-check against the model's own torch run would retrace a stale graph whose value or
# first derivative moved; these tests check that the guard sees the change by itself.
GUARD_ONLY = {"verify": False} if "verify" in inspect.signature(expand).parameters else {}
GAIN = 1.0  # read by the classes below through a descriptor, a cached helper or a globals() lookup


def _set_gain(value: float) -> None:
    global GAIN
    GAIN = value


@pytest.fixture
def set_gain():
    """``_set_gain``, and ``GAIN`` restored after the test."""
    yield _set_gain
    _set_gain(1.0)


class _StaticAct(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 3)

    @staticmethod
    def act(h):
        return torch.tanh(GAIN * h)

    def forward(self, x):
        return self.act(self.lin(x)).sum(-1, keepdim=True)


class _ClassAct(_StaticAct):
    @classmethod
    def act(cls, h):
        return torch.sin(GAIN * h)


class _PropertyGain(_StaticAct):
    @property
    def gain(self):
        return GAIN

    def forward(self, x):
        return torch.tanh(self.gain * self.lin(x)).sum(-1, keepdim=True)


@functools.lru_cache(maxsize=4)
def _cached_act(h):  # keyed by the tensor's identity: every call computes, reading GAIN
    return torch.tanh(GAIN * h)


class _CachedAct(_StaticAct):
    def forward(self, x):
        return _cached_act(self.lin(x)).sum(-1, keepdim=True)


class _GlobalsLookup(_StaticAct):
    def forward(self, x):
        return torch.tanh(globals()["GAIN"] * self.lin(x)).sum(-1, keepdim=True)


class _ComputedGlobalsLookup(_StaticAct):
    def forward(self, x):
        return torch.tanh(globals()["".join(("GA", "IN"))] * self.lin(x)).sum(-1, keepdim=True)


@pytest.mark.parametrize("model_class", [_StaticAct, _ClassAct, _PropertyGain, _CachedAct, _GlobalsLookup,
                                         _ComputedGlobalsLookup])
def test_a_global_read_through_a_descriptor_a_cached_helper_or_globals_is_followed(model_class, set_gain):
    torch.manual_seed(8)
    model = model_class().to(D).eval()
    expand(model, _x0(), ORDER, **GUARD_ONLY)  # (the guard writes its check, then serves the stamp from it)
    _changed(model, lambda: set_gain(2.5), **GUARD_ONLY)


def test_a_helper_modules_function_reading_its_global_is_followed(tmp_path, monkeypatch):
    """``helpers.act(x)``, helpers a module of the user's (imported by the model's module, and held as an attribute)
    whose global changes."""
    (tmp_path / "guard_helpers_t.py").write_text("import torch\n\nK = 1.0\n\n\ndef act(h):\n"
                                                  "    return torch.tanh(K * h)\n")
    (tmp_path / "guard_net_t.py").write_text(
        "import torch\nfrom torch import nn\n\nimport guard_helpers_t as helpers\n\n\nclass Net(nn.Module):\n"
        "    def __init__(self, hold):\n        super().__init__()\n        self.lin = nn.Linear(2, 3)\n"
        "        self.held = helpers if hold else None\n\n    def forward(self, x):\n"
        "        act = self.held.act if self.held is not None else helpers.act\n"
        "        return act(self.lin(x)).sum(-1, keepdim=True)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("guard_helpers_t", "guard_net_t"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    helpers = importlib.import_module("guard_helpers_t")
    net = importlib.import_module("guard_net_t")
    for hold in (False, True):
        torch.manual_seed(9)
        model = net.Net(hold).to(D).eval()
        expand(model, _x0(), ORDER, **GUARD_ONLY)
        _changed(model, lambda: setattr(helpers, "K", helpers.K * 2), **GUARD_ONLY)


@dataclasses.dataclass(slots=True)
class _SlotsConfig:
    gain: float = 1.0


class _WithBuffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 3)
        self.cfg = _SlotsConfig()
        self.gains = collections.deque([1.0])
        self.table = array.array("d", [1.0])

    def forward(self, x):
        k = self.cfg.gain * self.gains[-1] * self.table[0]
        return torch.tanh(k * self.lin(x)).sum(-1, keepdim=True)


@pytest.mark.parametrize("change", ["slots", "deque", "array"])
def test_slots_configs_deques_and_arrays_changed_in_place_are_followed(change):
    torch.manual_seed(10)
    model = _WithBuffers().to(D).eval()
    expand(model, _x0(), ORDER, **GUARD_ONLY)
    mutate = {"slots": lambda: setattr(model.cfg, "gain", 2.0), "deque": lambda: model.gains.append(-1.5),
              "array": lambda: model.table.__setitem__(0, 0.5)}[change]
    _changed(model, mutate, **GUARD_ONLY)


def test_a_class_level_patch_of_a_torch_module_is_followed():
    """``nn.SiLU.forward = ...`` after a first expansion, and ``F.gelu`` replaced while ``nn.GELU`` is used."""
    import torch.nn.functional as F

    torch.manual_seed(11)
    silu = nn.Sequential(nn.Linear(2, 3), nn.SiLU(), nn.Linear(3, 1)).to(D).eval()
    gelu = nn.Sequential(nn.Linear(2, 3), nn.GELU(), nn.Linear(3, 1)).to(D).eval()
    saved_forward, saved_gelu = nn.SiLU.forward, F.gelu
    try:
        expand(silu, _x0(), ORDER, **GUARD_ONLY)
        _changed(silu, lambda: setattr(nn.SiLU, "forward", lambda self, h: torch.sin(h) * 2), **GUARD_ONLY)
        expand(gelu, _x0(), ORDER, **GUARD_ONLY)
        _changed(gelu, lambda: setattr(F, "gelu", lambda h, approximate="none": torch.tanh(h) * 3), **GUARD_ONLY)
    finally:
        nn.SiLU.forward, F.gelu = saved_forward, saved_gelu
    assert_matches_autograd(silu, _x0(), ORDER, **GUARD_ONLY)  # and restored: followed too


class _ScriptScaled(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 3)
        self.k = 1.0

    def forward(self, x):
        return torch.tanh(self.k * self.lin(x)).sum(-1, keepdim=True)


class _HoldsScript(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.jit.script(_ScriptScaled())

    def forward(self, x):
        return self.inner(x) * 2


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_attributes_changed_are_followed():
    torch.manual_seed(12)
    scripted = torch.jit.script(_ScriptScaled().to(D).eval())
    expand(scripted, _x0(), ORDER, **GUARD_ONLY)
    _changed(scripted, lambda: setattr(scripted, "k", 2.5), **GUARD_ONLY)
    holder = _HoldsScript().to(D).eval()
    expand(holder, _x0(), ORDER, **GUARD_ONLY)
    _changed(holder, lambda: setattr(holder.inner, "k", -1.5), **GUARD_ONLY)
    _changed(holder, lambda: setattr(holder.inner.lin, "weight", nn.Parameter(torch.randn(3, 2, dtype=D))),
             **GUARD_ONLY)


def test_a_graph_recorded_under_autocast_is_never_served_outside_it():
    """torch's semantics: under ``torch.autocast`` the model's output (and so its expansion) is in the autocast dtype;
    outside it, in the model's own. A graph recorded under autocast holds its casts: never reused outside."""
    torch.manual_seed(13)
    model = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).eval()
    x0 = _x0().float()
    fresh = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).eval()
    fresh.load_state_dict(model.state_dict())
    outside = expand(fresh, x0, ORDER).coefficients
    for _ in range(3):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = expand(model, x0, ORDER).coefficients
            assert inside.dtype == model(x0).dtype == torch.bfloat16
        again = expand(model, x0, ORDER).coefficients
        assert again.dtype == torch.float32
        torch.testing.assert_close(again, outside, rtol=0, atol=0)


_INSTALLED_PKG = None  # set by the test below: a package "installed under site-packages"


def test_an_installed_packages_internals_are_compared_by_identity(monkeypatch):
    """A package installed under site-packages (``einops.rearrange``-like) is library code: its functions by identity,
    so a cache it fills at every call does not re-trace; the user's own modules are walked (the test above)."""
    pkg = types.ModuleType("guard_installed_pkg")
    pkg.__file__ = "/opt/venv/lib/python3/site-packages/guard_installed_pkg/__init__.py"
    exec("CALLS = []\n\ndef act(h):\n    CALLS.append(1)\n    return h * 2\n", vars(pkg))  # noqa: S102
    monkeypatch.setitem(sys.modules, "guard_installed_pkg", pkg)
    monkeypatch.setattr(sys.modules[__name__], "_INSTALLED_PKG", pkg)
    lin = nn.Linear(2, 1).to(D)
    held = pkg

    def through_global(x):
        return _INSTALLED_PKG.act(lin(x))

    def through_closure(x):
        return held.act(lin(x))

    x0 = _x0()
    for f in (through_global, through_closure):
        expand(f, x0, ORDER)
        first = trace.trace(f, x0)
        pkg.CALLS.append(1)  # (its state changes between calls, as a cache filled at every call does)
        expand(f, x0, ORDER)
        assert trace.trace(f, x0) is first
