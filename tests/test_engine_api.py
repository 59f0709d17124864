"""The public entry's options: bases, batches of points, variable subsets, output selection, dtypes, output shapes,
plain functions, value-dependent control flow, and the graph cache."""

from __future__ import annotations

import warnings

import pytest
import torch
from support.autograd import assert_close_derivatives, assert_matches_autograd, autograd_derivatives
from torch import nn

from hope_engine import TrainingModeWarning, expand
from hope_engine.capture import trace

D = torch.float64


def mlp(n: int = 2, width: int = 5, out: int = 2, act=nn.Tanh) -> nn.Module:
    return nn.Sequential(nn.Linear(n, width), act(), nn.Linear(width, width), nn.Sigmoid(),
                         nn.Linear(width, out)).to(D).eval()


# ------------------------------------------------------------------------------------------------------ bases
def test_total_basis_has_every_mixed_partial():
    p = assert_matches_autograd(mlp(3), torch.randn(1, 3, dtype=D), 5)
    assert p.basis.size == 56  # C(3 + 5, 5)
    assert (2, 1, 2) in p.basis


def test_pure_basis_gives_exactly_the_unmixed_derivatives():
    model, x0 = mlp(3), torch.randn(1, 3, dtype=D)
    pure = assert_matches_autograd(model, x0, 6, terms="pure")
    assert pure.basis.size == 1 + 3 * 6
    assert all(sum(1 for e in a if e) <= 1 for a in pure.basis.multi_indices())
    total = expand(model, x0, 6)
    for alpha in pure.basis.multi_indices():
        torch.testing.assert_close(pure.derivative(alpha), total.derivative(alpha), rtol=1e-12, atol=1e-12)
    with pytest.raises(KeyError, match="mixed term"):
        pure.derivative((1, 1, 0))


def test_pure_basis_through_products_and_attention_like_bilinear_ops():
    def f(x):
        u, v = torch.tanh(x), torch.sigmoid(x.flip(-1))
        return (u * v / (1 + v)).sum(-1, keepdim=True) + (u.unsqueeze(-1) @ v.unsqueeze(-2)).sum((-1, -2))[..., None]

    assert_matches_autograd(f, torch.randn(1, 3, dtype=D), 6, terms="pure")


# ------------------------------------------------------------------------------------------------------ batches
def test_batch_of_reference_points_gives_one_polynomial_per_point():
    model = mlp(2)
    x0 = torch.randn(4, 2, dtype=D)
    p = assert_matches_autograd(model, x0, 6)
    assert p.batched and p.batch_size == 4
    assert p.derivative((2, 1)).shape == (4, 2)
    for i in range(4):
        single = expand(model, x0[i:i + 1], 6)
        torch.testing.assert_close(p.coefficients[:, i:i + 1], single.coefficients, rtol=1e-13, atol=1e-13)


def test_batch_with_pure_basis_and_conv_input():
    model = nn.Sequential(nn.Conv2d(1, 2, 2), nn.Tanh(), nn.Flatten(), nn.Linear(8, 1)).to(D).eval()
    assert_matches_autograd(model, torch.randn(3, 1, 3, 3, dtype=D), 4, terms="pure", variables=[0, 4, 8])


def test_unbatched_point_uses_every_element_as_a_variable():
    def f(x):  # x: (2, 2), no batch axis
        return torch.sin(x @ x).sum().reshape(1)

    x0 = torch.randn(2, 2, dtype=D)
    p = assert_matches_autograd(f, x0, 4, batched=False)
    assert not p.batched and p.n == 4


# ---------------------------------------------------------------------------------------------- variables, output
def test_variables_subset():
    model = mlp(4)
    x0 = torch.randn(1, 4, dtype=D)
    p = assert_matches_autograd(model, x0, 6, variables=[1, 3])
    assert p.n == 2
    # the subset's derivatives are those of the full expansion with zeros elsewhere
    full = expand(model, x0, 4)
    torch.testing.assert_close(p.derivative((2, 2)), full.derivative((0, 2, 0, 2)), rtol=1e-11, atol=1e-12)


def test_variables_subset_of_an_image_batch():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Softplus(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(8, 2)).to(D).eval()
    assert_matches_autograd(model, torch.randn(2, 1, 4, 4, dtype=D), 5, variables=[5, 10])


def test_output_selection():
    model = mlp(2, out=3)
    x0 = torch.randn(2, 2, dtype=D)
    full = expand(model, x0, 5)
    one = expand(model, x0, 5, output=1)
    assert one.coefficients.shape == (full.basis.size, 2)
    torch.testing.assert_close(one.coefficients, full.coefficients[..., 1])
    torch.testing.assert_close(expand(model, x0, 5, output=(2,)).coefficients, full.coefficients[..., 2])
    # a scalar output is what terms()/to_sympy() need
    assert len(one.terms(point=1)) > 0


def test_multi_dimensional_output():
    class Grid(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 6)

        def forward(self, x):
            h = torch.tanh(self.lin(x)).reshape(x.shape[0], 2, 3)
            return h * h.softmax(dim=-1)

    model = Grid().to(D).eval()
    x0 = torch.randn(2, 2, dtype=D)
    p = assert_matches_autograd(model, x0, 4)
    assert p.coefficients.shape == (15, 2, 2, 3)
    assert p.derivative((1, 3)).shape == (2, 2, 3)
    one = expand(model, x0, 4, output=(1, 2))
    torch.testing.assert_close(one.coefficients, p.coefficients[:, :, 1, 2])
    torch.testing.assert_close(expand(model, x0, 4, output=5).coefficients, p.coefficients[:, :, 1, 2])


def test_plain_function_of_a_tensor():
    def f(x):
        return torch.sin(x[:, :1]) * torch.exp(x[:, 1:]) + x[:, :1] ** 2 / (2 + torch.cos(x[:, 1:]))

    assert_matches_autograd(f, torch.randn(3, 2, dtype=D), 6)


def test_output_independent_of_the_input_is_a_constant_polynomial():
    p = expand(lambda x: torch.ones(1, 2, dtype=D) * 3.0, torch.randn(1, 2, dtype=D), 3)
    torch.testing.assert_close(p.value, torch.full((1, 2), 3.0, dtype=D))
    assert p.coefficients[1:].abs().max() == 0


# ------------------------------------------------------------------------------------------------- dtypes
def test_float32_model_matches_float64_autograd_loosely():
    model64 = mlp(2)
    model32 = mlp(2)
    model32.load_state_dict(model64.state_dict())
    model32 = model32.float()
    x0 = torch.randn(2, 2, dtype=D)
    p = expand(model32, x0, 5)  # the point follows the model's dtype
    assert p.coefficients.dtype == torch.float32
    alphas = p.basis.multi_indices()
    for i in range(2):
        want = autograd_derivatives(model64, x0[i:i + 1], alphas)
        assert_close_derivatives(p.derivatives()[:, i:i + 1], want, [sum(a) for a in alphas], rtol=2e-4)


def test_float32_plain_function_with_float32_point():
    def f(x):
        return torch.tanh(x).sum(-1, keepdim=True) * torch.sigmoid(x[:, :1])

    x0 = torch.randn(1, 3)
    p = expand(f, x0, 4)
    assert p.coefficients.dtype == torch.float32
    want = autograd_derivatives(f, x0.double(), p.basis.multi_indices())
    assert_close_derivatives(p.derivatives(), want, [sum(a) for a in p.basis.multi_indices()], rtol=1e-4)


# --------------------------------------------------------------------------------------- control flow and caching
class Branchy(nn.Module):
    """A Python branch on a tensor value: the graph depends on the point."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 3)
        self.out = nn.Linear(3, 1)

    def forward(self, x):
        h = self.lin(x)
        if x.sum() > 0:
            return self.out(torch.sin(h))
        return self.out(torch.exp(h) * h)


def test_value_dependent_control_flow_is_traced_per_point():
    model = Branchy().to(D).eval()
    positive = torch.tensor([[0.7, 0.4]], dtype=D)
    negative = torch.tensor([[-0.6, -0.3]], dtype=D)
    for x0 in (positive, negative, positive, negative):
        assert_matches_autograd(model, x0, 5)
    # the two branches give different polynomials, so a reused graph would have been caught above
    assert not torch.allclose(expand(model, positive, 2).derivative((1, 1)),
                              expand(model, negative, 2).derivative((1, 1)))
    assert not trace.GRAPHS.graphs(model)


def test_cached_graph_is_reused_and_sees_weight_updates():
    model = mlp(2)
    x0 = torch.randn(1, 2, dtype=D)
    before = assert_matches_autograd(model, x0, 5)
    first = trace.trace(model, x0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.3).add_(0.05)
    after = assert_matches_autograd(model, x0, 5)
    assert trace.trace(model, x0) is first, "the value-free graph should be reused"
    assert not torch.allclose(before.coefficients, after.coefficients)


def test_cache_sees_replaced_parameters_buffers_and_attributes():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 3)
            self.bn = nn.BatchNorm1d(3)
            self.w0 = 1.0

        def forward(self, x):
            return torch.sin(self.w0 * self.bn(self.lin(x))).sum(-1, keepdim=True)

    model = Scaled().to(D).eval()
    x0 = torch.randn(1, 2, dtype=D)
    assert_matches_autograd(model, x0, 4)
    model.lin.weight = nn.Parameter(torch.randn(3, 2, dtype=D))        # a new parameter object
    model.bn.running_mean.fill_(0.3)                                    # a buffer updated in place
    model.bn.running_var = torch.full((3,), 2.0, dtype=D)              # a buffer replaced
    assert_matches_autograd(model, x0, 4)
    model.w0 = 3.0                                                      # a Python attribute the graph bakes in
    assert_matches_autograd(model, x0, 4)
    model.lin = nn.Linear(2, 3, bias=False).to(D)                       # a submodule swapped
    assert_matches_autograd(model, x0, 4)


def test_training_mode_is_expanded_in_eval_mode_and_restored():
    model = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Dropout(0.5), nn.Tanh(), nn.Linear(4, 1)).to(D)
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    x0 = torch.randn(2, 2, dtype=D)
    model.train()
    with pytest.warns(TrainingModeWarning, match="eval mode"):
        p_train = expand(model, x0, 4)
    assert model.training and model[1].training
    stats = model[1].running_mean.clone()
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p_eval = assert_matches_autograd(model, x0, 4)
    torch.testing.assert_close(p_train.coefficients, p_eval.coefficients, rtol=0, atol=0)
    torch.testing.assert_close(model[1].running_mean, stats)  # expanding did not update batch-norm statistics


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device_follows_the_model():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(2, 8)
            self.mha = nn.MultiheadAttention(4, 2, batch_first=True)
            self.conv = nn.Conv1d(2, 2, 3, padding=1)
            self.head = nn.Linear(8, 1)

        def forward(self, x):
            h = self.inp(x).reshape(x.shape[0], 2, 4)
            h = self.mha(h, h, h, need_weights=False)[0]
            return self.head(torch.tanh(self.conv(h)).reshape(x.shape[0], 8))

    model = Net().to(D).eval()
    x0 = torch.randn(3, 2, dtype=D)                       # a CPU point: it moves to the model's device
    on_cpu = expand(model, x0, 4)
    p = expand(model.cuda(), x0, 4)
    assert p.coefficients.device.type == "cuda"
    torch.testing.assert_close(p.coefficients.cpu(), on_cpu.coefficients, rtol=1e-10, atol=1e-12)


def test_function_reading_a_module_sees_its_mode_parameters_and_attributes():
    model = nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.5), nn.Tanh(), nn.Linear(3, 1)).to(D)
    model.train()
    scale = {"value": 2.0}

    def f(x):
        return model(x) * scale["value"]

    x0 = torch.randn(1, 2, dtype=D)
    with pytest.warns(TrainingModeWarning):
        first = expand(f, x0, 4)                       # dropout off: deterministic, equal to eval mode
    assert model.training
    model.eval()
    assert_matches_autograd(f, x0, 4)
    torch.testing.assert_close(first.coefficients, expand(f, x0, 4).coefficients, rtol=0, atol=0)
    model[0].weight = nn.Parameter(torch.randn(3, 2, dtype=D))   # a new parameter object behind the function
    assert_matches_autograd(f, x0, 4)
    model.forward_scale = 1.0
    assert_matches_autograd(model.forward, x0, 4)                  # a bound method


def test_torchscript_and_exported_models_expand_like_the_module():
    """Saved-model formats the CLI loads (TorchScript scripted/traced, torch.export) expand directly."""
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double().eval()
    x = torch.tensor([[0.2, -0.4]], dtype=torch.float64)
    reference = expand(net, x, 4).coefficients
    for saved in (torch.jit.script(net), torch.jit.trace(net, x), torch.export.export(net, (x,)).module()):
        for point in (x, x + 0.3):
            got = expand(saved, point, 4).coefficients
            assert torch.allclose(got, expand(net, point, 4).coefficients, rtol=1e-12, atol=1e-14)
        assert torch.allclose(expand(saved, x, 4).coefficients, reference, rtol=1e-12, atol=1e-14)
