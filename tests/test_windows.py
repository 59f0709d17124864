"""Window (receptive-field) pure expansions of conv stacks agree with the dense pure expansion to 1e-10."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support.autograd import assert_matches_autograd
from torch import nn

from hope_engine import expand
from hope_engine.analysis.digits_cnn import lenet
from hope_engine.methods import windows


def _dense(model, x, order, **kw):
    """The dense pure expansion (the window path switched off)."""
    applies = windows.applies
    windows.applies = lambda *a: False
    try:
        return expand(model, x, order, terms="pure", **kw)
    finally:
        windows.applies = applies


def _windows_used(model, x, order, **kw):
    """expand(terms="pure") and whether it ran on windows."""
    ran = []
    inner = windows.expand_windows
    windows.expand_windows = lambda *a, **k: ran.append(1) or inner(*a, **k)
    try:
        return expand(model, x, order, terms="pure", **kw), bool(ran)
    finally:
        windows.expand_windows = inner


def _close(model, x, order, windows: bool = True, **kw) -> None:
    dense = _dense(model, x, order, **kw)
    sparse, used = _windows_used(model, x, order, **kw)
    assert used == windows
    assert sparse.basis is dense.basis
    assert sparse.coefficients.shape == dense.coefficients.shape
    assert (sparse.coefficients - dense.coefficients).abs().max().item() <= 1e-10


def test_small_cnn_matches_dense():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(3, 4, 3, stride=2),
                          nn.Sigmoid(), nn.Flatten(), nn.Linear(16, 2), nn.Tanh()).double().eval()
    x = torch.randn(1, 1, 12, 12, dtype=torch.float64)
    for order in (1, 2, 5):
        _close(model, x, order)


def test_channels_batch_dilation_and_no_dense_tail():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, (3, 2), padding=(1, 2), dilation=(1, 2)), nn.GELU(), nn.AvgPool2d(2, 1),
                          nn.Conv2d(3, 2, 3, stride=(2, 1)), nn.SiLU()).double().eval()
    x = torch.randn(2, 2, 9, 8, dtype=torch.float64)
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
    _close(model, torch.randn(1, 1, 4, 4, dtype=torch.float64), 3, windows=False)


class _DoubledConv(nn.Conv2d):
    def forward(self, x):
        return 2 * super().forward(x)


class _Chain(nn.Sequential):
    def forward(self, x):
        return super().forward(x) * 3


def _cnn(first: nn.Module | None = None, cls=nn.Sequential) -> nn.Module:
    torch.manual_seed(3)
    return cls(first or nn.Conv2d(1, 2, 3), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 1)).double()


def _hooked(kind: str) -> nn.Module:
    model = _cnn()
    if kind == "forward-hook":
        model[0].register_forward_hook(lambda m, args, out: out * 1.5)
    elif kind == "pre-hook":
        model[0].register_forward_pre_hook(lambda m, args: (args[0] ** 2,))
    elif kind == "parametrized":
        torch.nn.utils.parametrize.register_parametrization(model[0], "weight", _Halve())
    return model


class _Halve(nn.Module):
    def forward(self, w):
        return w / 2


@pytest.mark.parametrize("case", ["subclass", "sequential-subclass", "forward-hook", "pre-hook", "parametrized",
                                  "global-hook", "some-variables", "total"])
def test_window_path_follows_the_graph_and_matches_autograd(case):
    """The windows follow the traced graph, so a subclass, a hook or a parametrization is expanded as the forward
    computes it (a module-level window rule would have missed them); other coefficients (a subset of pixels, mixed
    terms) take the dense path. Every case matches nested autograd through the real forward."""
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    model = {"subclass": lambda: _cnn(_DoubledConv(1, 2, 3)), "sequential-subclass": lambda: _cnn(cls=_Chain)}.get(
        case, lambda: _hooked(case))()
    terms = "total" if case == "total" else "pure"
    variables = [0, 7, 14] if case in ("some-variables", "total") else None
    handle = nn.modules.module.register_module_forward_hook(lambda m, a, out: out) if case == "global-hook" else None
    used = []
    inner = windows.expand_windows
    windows.expand_windows = lambda *a, **k: used.append(1) or inner(*a, **k)
    try:
        assert_matches_autograd(model, x, 2, terms=terms, variables=variables)
    finally:
        windows.expand_windows = inner
        if handle is not None:
            handle.remove()
    assert bool(used) == (variables is None)


class _Functional(nn.Module):
    """A CNN written as most are: its own class, functional calls, a skip connection and a flatten."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.bn, self.fc = nn.BatchNorm2d(3), nn.Linear(27, 2)

    def forward(self, x):
        h = torch.tanh(self.bn(self.c1(x)))
        h = nn.functional.max_pool2d(h, 2)
        h = h + 0.5 * torch.sigmoid(self.c2(h))  # two windows of one geometry: still windows
        h = nn.functional.avg_pool2d(h, 1) * nn.functional.silu(h)
        return self.fc(h.flatten(1))


def test_a_cnn_class_with_functional_calls_takes_the_window_path():
    torch.manual_seed(13)
    model = _Functional().double()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.3, 0.3)
        model.bn.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(14))
    _close(model, x, 3)
    assert_matches_autograd(model, x[:1], 2, terms="pure")


def test_heat_map_entry_points_take_the_window_path():
    """expand(terms="pure") on a plain CNN runs on windows, and agrees with nested autograd."""
    model = _cnn()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    used = []
    inner = windows.expand_windows
    windows.expand_windows = lambda *a, **k: used.append(1) or inner(*a, **k)
    try:
        assert_matches_autograd(model, x, 3, terms="pure")
    finally:
        windows.expand_windows = inner
    assert used


def test_grouped_conv_batch_norm_and_max_pool_match_dense():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, groups=2), nn.BatchNorm2d(4), nn.Tanh(),
                          nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, groups=4, padding=1), nn.BatchNorm2d(4, affine=False),
                          nn.SiLU(), nn.MaxPool2d(3, stride=2, padding=1, dilation=1), nn.Flatten(),
                          nn.Linear(16, 2)).double()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    for order in (1, 3):
        _close(model, x, order)


def test_max_pool_with_dilation_matches_nested_autograd():
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(1, 2, 2), nn.Tanh(), nn.MaxPool2d(2, stride=1, dilation=2), nn.Flatten(),
                          nn.Linear(18, 1)).double().eval()
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    _close(model, x, 2)
    assert_matches_autograd(model, x, 2, terms="pure")


def test_max_pool_ties_warn_on_both_paths():
    """ReLU zeros make max-pool ties (a kink): the window path warns as the dense one does."""
    from hope_engine.errors import KinkWarning

    torch.manual_seed(10)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 1)).double()
    with torch.no_grad():
        model[0].bias.fill_(-5.0)  # every unit negative: every pooling window a tie at 0
    x = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    for run in (_dense, lambda *a: _windows_used(*a)[0]):
        with pytest.warns(KinkWarning, match="max_pool"):
            run(model, x, 2)


def test_same_padding_and_more_elementwise_layers_match_dense():
    torch.manual_seed(11)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding="same", dilation=2), nn.PReLU(3), nn.Dropout2d(0.3),
                          nn.Conv2d(3, 2, 3, padding="valid"), nn.Hardswish(), nn.ReLU6(), nn.Softsign(),
                          nn.Conv2d(2, 2, (2, 3), padding="same"), nn.Flatten(), nn.Linear(32, 1)).double().eval()
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    _close(model, x, 3)


class _Block(nn.Module):
    """A residual block; ``stride`` 2 makes the shortcut a strided 1x1 convolution (windows of other sizes to add)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.a = nn.Conv2d(cin, cout, 3, stride, padding=1)
        self.b = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn = nn.BatchNorm2d(cout)
        self.short = nn.Identity() if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride)

    def forward(self, x):
        return torch.tanh(self.bn(self.b(torch.tanh(self.a(x)))) + self.short(x))


def test_residual_blocks_with_identity_and_strided_shortcuts_run_on_windows():
    torch.manual_seed(15)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), _Block(2, 2, 1), _Block(2, 3, 2), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Linear(12, 1)).double().eval()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(16))
    _close(model, x, 3)
    assert_matches_autograd(model, x, 2, terms="pure")


class _Padded(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, (2, 3), padding="same")
        self.fc = nn.Linear(2 * 4 * 6, 1)

    def forward(self, x):
        h = torch.tanh(self.c1(nn.functional.pad(x, (1, 2, 0, 1), value=0.25)))
        h = nn.functional.pad(torch.sigmoid(self.c2(h)), (0, -1, -1, 0))  # a crop
        return self.fc(h.flatten(1))


def test_constant_padding_crops_and_even_kernel_same_padding_run_on_windows():
    torch.manual_seed(17)
    model = _Padded().double().eval()
    x = torch.randn(1, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(18))
    _close(model, x, 3)
    assert_matches_autograd(model, x, 2, terms="pure")


def test_windows_stop_growing_at_the_size_of_the_image():
    """Padded convolutions grow the windows past the image: from there the dense path is cheaper (and the dense
    memory estimate stays an upper bound); the result is the same."""
    torch.manual_seed(19)
    model = nn.Sequential(*[m for _ in range(4) for m in (nn.Conv2d(1, 1, 3, padding=1), nn.Tanh())], nn.Flatten(),
                          nn.Linear(16, 1)).double().eval()
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(20))
    _close(model, x, 3)


# ------------------------------------------------------------------------------ random CNN graphs, windows vs dense
class _RandomCNN(nn.Module):
    """A chain of convolutions, poolings, pads, activations, batch norms and residual sums drawn by hypothesis."""

    def __init__(self, cin: int, specs: list[tuple], seed: int, dims: int = 2):
        super().__init__()
        torch.manual_seed(seed)
        self.specs, self.convs, c, self.dims = specs, nn.ModuleList(), cin, dims
        conv, norm = (nn.Conv1d, nn.BatchNorm1d) if dims == 1 else (nn.Conv2d, nn.BatchNorm2d)
        for spec in specs:
            if spec[0] in ("conv", "residual"):
                _, k, stride, pad, dil, depthwise = spec if spec[0] == "conv" else ("", 3, 1, 1, 1, False)
                out = c if depthwise or spec[0] == "residual" else c + 1
                self.convs.append(conv(c, out, k, stride, pad, dil, groups=c if depthwise else 1))
                c = out
            elif spec[0] == "bn":
                bn = norm(c)
                with torch.no_grad():
                    bn.running_mean.uniform_(-0.3, 0.3)
                    bn.running_var.uniform_(0.5, 2.0)
                self.convs.append(bn)
        self.channels = c

    def forward(self, x):
        layers = iter(self.convs)
        for spec in self.specs:
            kind = spec[0]
            if kind in ("conv", "bn"):
                x = next(layers)(x)
            elif kind == "residual":
                x = x + 0.5 * torch.tanh(next(layers)(x))
            elif kind == "avg":
                pool = nn.functional.avg_pool1d if self.dims == 1 else nn.functional.avg_pool2d
                x = pool(x, spec[1], spec[2], spec[3], count_include_pad=spec[4], ceil_mode=spec[5])
            elif kind == "max":
                pool = nn.functional.max_pool1d if self.dims == 1 else nn.functional.max_pool2d
                x = pool(x, *spec[1:4], ceil_mode=spec[4])
            elif kind == "pad":
                x = nn.functional.pad(x, spec[1][:2 * self.dims])
            elif kind == "rpad":
                x = nn.functional.pad(x, spec[2][:2 * self.dims], mode=spec[1])
            else:
                x = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "silu": nn.functional.silu,
                     "softplus": nn.functional.softplus}[kind](x)
            if x.numel() == 0:
                raise RuntimeError("cropped to nothing")
        return x.flatten(1).sum(1, keepdim=True) + x.flatten(1)[:, :1] ** 2


_SPECS = st.one_of(
    st.tuples(st.just("conv"), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1), st.integers(1, 2),
              st.booleans()),
    st.tuples(st.just("residual")), st.tuples(st.just("bn")),
    st.tuples(st.just("avg"), st.integers(1, 3), st.integers(1, 3), st.integers(0, 1), st.booleans(), st.booleans()),
    st.tuples(st.just("max"), st.integers(2, 3), st.integers(1, 3), st.integers(0, 1), st.booleans()),
    st.tuples(st.just("pad"), st.tuples(st.integers(-1, 2), st.integers(-1, 2), st.integers(-1, 2),
                                        st.integers(-1, 2))),
    st.tuples(st.just("rpad"), st.sampled_from(["reflect", "replicate"]),
              st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2))),
    st.tuples(st.sampled_from(["tanh", "sigmoid", "silu", "softplus"])),
)


def _random_case(cin: int, spatial: tuple, batch: int, specs: list, seed: int, order: int) -> None:
    """A random chain (led by a conv or pooling) on a point of this spatial shape: windows against the dense
    expansion; draws whose shapes the chain cannot take are rejected."""
    if specs[0][0] not in ("conv", "avg", "max", "residual"):
        specs = [("conv", 3, 1, 1, 1, False), *specs]
    model = _RandomCNN(cin, specs, seed, dims=len(spatial)).double().eval()
    x = torch.randn(batch, cin, *spatial, dtype=torch.float64, generator=torch.Generator().manual_seed(seed % 997))
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError:  # the draw shrank the input below a kernel: not a model
        assume(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max-pool ties (kinks) warn on both paths alike
        _close(model, x, order)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(cin=st.integers(1, 2), side=st.integers(5, 8), batch=st.integers(1, 2),
       specs=st.lists(_SPECS, min_size=1, max_size=5), seed=st.integers(0, 2**31 - 1), order=st.integers(1, 3))
def test_random_cnn_graphs_match_the_dense_expansion(cin, side, batch, specs, seed, order):
    """Windows against the dense pure expansion on random chains of every op the window walk covers."""
    _random_case(cin, (side, side), batch, specs, seed, order)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(cin=st.integers(1, 2), length=st.integers(5, 24), batch=st.integers(1, 2),
       specs=st.lists(_SPECS, min_size=1, max_size=5), seed=st.integers(0, 2**31 - 1), order=st.integers(1, 3))
def test_random_1d_cnn_graphs_match_the_dense_expansion(cin, length, batch, specs, seed, order):
    """Sequences (N, C, L): 1-d convolutions, poolings (which record as 2-d ones on an unsqueezed map), pads."""
    _random_case(cin, (length,), batch, specs, seed, order)


def test_1d_cnn_matches_nested_autograd_and_runs_on_windows_to_the_flatten():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv1d(2, 4, 5, padding=2), nn.AvgPool1d(2), nn.Tanh(), nn.Conv1d(4, 4, 3, padding=1,
                          dilation=2, stride=2), nn.MaxPool1d(2), nn.Tanh(), nn.Flatten(), nn.Linear(12, 1))
    model = model.double().eval()
    x = torch.randn(1, 2, 30, dtype=torch.float64)
    assert _first_dense_op(model, x) == "aten.view.default"
    assert_matches_autograd(model, x, 3, terms="pure")


class _Inception(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 1), nn.Conv2d(1, 3, 3, padding=1)
        self.c, self.fc = nn.Conv2d(5, 2, 3), nn.Linear(2 * 4 * 4, 1)

    def forward(self, x):
        h = torch.cat([torch.tanh(self.a(x)), torch.sigmoid(self.b(x))], dim=1)  # windows of two sizes, channels
        return self.fc(torch.tanh(self.c(h)).flatten(1))


def _first_dense_op(model, x) -> str:
    """The op at which the window walk hands over to the dense interpreter."""
    stops = []
    inner = windows._window_step

    def spy(node, *a, **k):
        out = inner(node, *a, **k)
        if out is None:
            stops.append(str(node.target))
        return out

    windows._window_step = spy
    try:
        expand(model, x, 1, terms="pure")
    finally:
        windows._window_step = inner
    return stops[0]


def test_channel_concatenation_of_branches_runs_on_windows():
    torch.manual_seed(21)
    model = _Inception().double().eval()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(22))
    _close(model, x, 3)
    assert_matches_autograd(model, x[:1], 2, terms="pure")
    assert _first_dense_op(model, x) == "aten.view.default"  # the concatenation and the conv after it: windows


@pytest.mark.parametrize("include_pad", [True, False])
def test_padded_average_pooling_runs_on_windows(include_pad):
    torch.manual_seed(23)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(),
                          nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=include_pad), nn.Sigmoid(),
                          nn.AvgPool2d(2, padding=1, divisor_override=3), nn.Flatten(), nn.Linear(2 * 4 * 4, 1)
                          ).double().eval()
    x = torch.randn(2, 1, 12, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(24))
    _close(model, x, 3)
    assert_matches_autograd(model, x[:1], 2, terms="pure")
    assert _first_dense_op(model, x) == "aten.view.default"


@pytest.mark.parametrize("include_pad", [True, False])
def test_ceil_mode_pooling_runs_on_windows(include_pad):
    """Ceil-mode pools: the last windows run past the far edge (their taps there are zero; an average divides by the
    taps torch counts), in 2-d and 1-d."""
    torch.manual_seed(5)
    image = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=include_pad),
                          nn.Tanh(), nn.MaxPool2d(2, 2, ceil_mode=True), nn.Sigmoid(), nn.Flatten(),
                          nn.Linear(2 * 3 * 3, 1)).double().eval()
    x = torch.randn(1, 1, 11, 11, dtype=torch.float64)
    assert _first_dense_op(image, x) == "aten.view.default"
    assert_matches_autograd(image, x, 2, terms="pure")
    sequence = nn.Sequential(nn.Conv1d(1, 2, 3), nn.AvgPool1d(3, 2, 1, ceil_mode=True,
                                                              count_include_pad=include_pad),
                             nn.Tanh(), nn.MaxPool1d(2, 2, ceil_mode=True), nn.Flatten(), nn.Linear(2 * 3, 1))
    s = torch.randn(2, 1, 11, dtype=torch.float64)
    sequence = sequence.double().eval()
    assert _first_dense_op(sequence, s) == "aten.view.default"
    assert_matches_autograd(sequence, s, 3, terms="pure")


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_reflection_and_replication_padding_run_on_windows(mode):
    """A conv net with padding_mode="reflect"/"replicate": each padded unit takes the window of the unit it copies
    (windows grow by the largest shifts either way: a reflection's far side reaches back 2 pads), in 2-d and 1-d."""
    torch.manual_seed(6)
    image = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode=mode), nn.Tanh(), nn.AvgPool2d(2),
                          nn.Conv2d(2, 2, 3, padding=1, padding_mode=mode), nn.Sigmoid(), nn.Flatten(),
                          nn.Linear(2 * 16 * 16, 1)).double().eval()
    x = torch.randn(1, 1, 32, 32, dtype=torch.float64)
    assert _first_dense_op(image, x) == "aten.view.default"
    _close(image, x, 2)
    sequence = nn.Sequential(nn.Conv1d(1, 2, 3, padding=1, padding_mode=mode), nn.Tanh(), nn.Flatten(),
                             nn.Linear(2 * 9, 1)).double().eval()
    s = torch.randn(2, 1, 9, dtype=torch.float64)
    assert _first_dense_op(sequence, s) == "aten.view.default"
    assert_matches_autograd(sequence, s, 3, terms="pure")
