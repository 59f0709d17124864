"""Every bad input gets one clear message: what was wrong and what to do."""

from __future__ import annotations

import warnings

import pytest
import torch
from support.autograd import assert_matches_autograd
from torch import nn

import hope_engine.run.program
from hope_engine import (
    ExpansionError,
    KinkWarning,
    MemoryBudgetError,
    UnsupportedOperationError,
    expand,
)

D = torch.float64


def mlp(n: int = 3, out: int = 2) -> nn.Module:
    return nn.Sequential(nn.Linear(n, 4), nn.Tanh(), nn.Linear(4, out)).to(D).eval()


# ------------------------------------------------------------------------------------------------------ the point
def test_point_shape_that_does_not_fit_the_model():
    with pytest.raises(ExpansionError, match=r"shape \(1, 4\).*Linear\(3, \.\.\.\).*\(1, 3\)"):
        expand(mlp(3), torch.zeros(1, 4, dtype=D), 2)


def test_point_with_wrong_channel_count_for_a_convolution():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten()).to(D).eval()
    with pytest.raises(ExpansionError, match=r"shape \(1, 1, 5, 5\).*3 input channel"):
        expand(model, torch.zeros(1, 1, 5, 5, dtype=D), 2)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_point(bad):
    x0 = torch.zeros(1, 3, dtype=D)
    x0[0, 1] = bad
    with pytest.raises(ExpansionError, match=r"1 NaN/inf value"):
        expand(mlp(), x0, 2)


def test_point_that_is_not_numbers():
    with pytest.raises(ExpansionError, match="reference point must be a tensor"):
        expand(mlp(), "one two three", 2)
    with pytest.raises(ExpansionError, match="empty"):
        expand(mlp(), torch.zeros(0, 3, dtype=D), 2)


def test_integer_point_is_converted_to_the_model_dtype():
    p = expand(mlp(), torch.tensor([[1, 0, -1]]), 2)
    assert p.coefficients.dtype == D and p.center.dtype == D


# ------------------------------------------------------------------------------------------------------ options
@pytest.mark.parametrize("order", [-1, 2.5, "3", None, True, float("nan")])
def test_order_must_be_a_non_negative_integer(order):
    with pytest.raises(ExpansionError, match="order must be a non-negative integer"):
        expand(mlp(), torch.zeros(1, 3, dtype=D), order)


def test_order_zero_and_integral_float_are_accepted():
    model, x0 = mlp(), torch.randn(1, 3, dtype=D)
    p0 = expand(model, x0, 0)
    assert p0.basis.size == 1
    torch.testing.assert_close(p0.value, model(x0))
    assert expand(model, x0, 2.0).order == 2


def test_unknown_terms_and_method():
    x0 = torch.zeros(1, 3, dtype=D)
    with pytest.raises(ExpansionError, match=r"terms must be one of \('total', 'pure'\), got 'mixed'"):
        expand(mlp(), x0, 2, terms="mixed")
    with pytest.raises(ExpansionError, match=r"method must be one of .*'exact'.*got 'taylor'"):
        expand(mlp(), x0, 2, method="taylor")


def test_bad_variables_names_and_output():
    x0 = torch.zeros(1, 3, dtype=D)
    with pytest.raises(ExpansionError, match=r"flat indices in \[0, 3\)"):
        expand(mlp(), x0, 2, variables=[0, 3])
    with pytest.raises(ExpansionError, match="empty"):
        expand(mlp(), x0, 2, variables=[])
    with pytest.raises(ExpansionError, match="repeated"):
        expand(mlp(), x0, 2, variables=[1, 1])
    with pytest.raises(ExpansionError, match="names has 2 entries for 3 variables"):
        expand(mlp(), x0, 2, names=["a", "b"])
    with pytest.raises(ExpansionError, match="out of range: the model has 2 outputs per point"):
        expand(mlp(), x0, 2, output=2)
    with pytest.raises(ExpansionError, match=r"per-point output of shape \(2,\)"):
        expand(mlp(), x0, 2, output=(0, 0))


def test_model_that_is_not_callable():
    with pytest.raises(ExpansionError, match="torch.nn.Module or a function"):
        expand(42, torch.zeros(1, 3, dtype=D), 2)


def test_multi_output_model_is_refused_before_the_expansion(monkeypatch):
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            h = self.lin(x)
            return torch.tanh(h), torch.sin(h)

    def no_run(*args, **kwargs):
        raise AssertionError("the expansion ran before the error")

    monkeypatch.setattr(hope_engine.run.program, "run", no_run)
    with pytest.raises(ExpansionError, match=r"returns 2 tensors.*lambda x: model\(x\)\[0\]"):
        expand(Two().to(D).eval(), torch.zeros(1, 3, dtype=D), 2)


# ------------------------------------------------------------------------------------------------- memory budget
def test_memory_budget_is_stated_and_can_be_raised():
    model = mlp(4)
    x0 = torch.randn(1, 4, dtype=D)
    with pytest.raises(MemoryBudgetError) as info:
        expand(model, x0, 8, memory_budget=10_000)
    e = info.value
    assert e.estimate > e.budget == 10_000
    msg = str(e)
    assert "needs about" in msg and "KiB" in msg and "over the memory budget of 9.8 KiB" in msg
    assert "495 coefficients" in msg  # C(4 + 8, 8)
    assert f"memory_budget={2 ** (e.estimate - 1).bit_length()}" in msg
    p = expand(model, x0, 8, memory_budget=2 * e.estimate)
    # the estimate covers at least the output coefficients the expansion really holds
    assert e.estimate >= p.coefficients.numel() * p.coefficients.element_size()
    torch.testing.assert_close(p.coefficients, expand(model, x0, 8).coefficients)


# ---------------------------------------------------------------------------------------------------------- kinks
def _kinked_linear() -> nn.Linear:
    lin = nn.Linear(2, 3).to(D)
    with torch.no_grad():
        lin.weight[0] = torch.tensor([2.0, -1.0], dtype=D)  # 2 * 1 - 1 * 2 + 0 = 0 at the point below
        lin.bias[0] = 0.0
    return lin


KINK_POINT = torch.tensor([[1.0, 2.0]], dtype=D)


@pytest.mark.parametrize("act,name", [(nn.ReLU(), "relu"), (nn.LeakyReLU(0.2), "leaky_relu"),
                                      (nn.Hardtanh(0.0, 1.0), "hardtanh")])
def test_point_on_a_kink_warns_and_expands_one_sided(act, name):
    model = nn.Sequential(_kinked_linear(), act, nn.Linear(3, 1)).to(D).eval()
    with pytest.warns(KinkWarning, match=rf"kink of {name} \(1 value\).*one-sided"):
        # the side taken is the one PyTorch's own derivative takes at the kink
        assert_matches_autograd(model, KINK_POINT, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expand(model, KINK_POINT + 0.01, 3)


def test_point_on_a_max_pool_tie_warns():
    model = nn.Sequential(nn.MaxPool1d(2), nn.Flatten(), nn.Linear(2, 1)).to(D).eval()
    x0 = torch.tensor([[[0.5, 0.5, -1.0, 2.0]]], dtype=D)
    with pytest.warns(KinkWarning, match=r"max_pool \(1 value\)"):
        assert_matches_autograd(model, x0, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expand(model, torch.tensor([[[0.5, 0.4, -1.0, 2.0]]], dtype=D), 2)


def test_max_pool2d_tie_warns():
    model = nn.Sequential(nn.MaxPool2d(2), nn.Flatten()).to(D).eval()
    x0 = torch.tensor([[[[1.0, 3.0], [3.0, 0.0]]]], dtype=D)
    with pytest.warns(KinkWarning, match="max_pool"):
        p = expand(model, x0, 1)
    assert p.derivative((0, 1, 0, 0)).item() == 1.0  # the element the kernel picks gets the whole slope


# ------------------------------------------------------------------------------------------------ unsupported ops
class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        h = self.block(x)
        h = torch.special.i1(h) + torch.igamma(2.0 + h, h.new_tensor(1.5)) + torch.special.i1(self.head.weight).sum()
        return self.head(torch.special.i0(h))


def test_unsupported_ops_are_all_named_with_their_module_before_any_work(monkeypatch):
    def no_run(*args, **kwargs):
        raise AssertionError("the expansion ran before the support check")

    monkeypatch.setattr(hope_engine.run.program, "run", no_run)
    with pytest.raises(UnsupportedOperationError) as info:
        expand(Unsupported().to(D).eval(), torch.zeros(1, 3, dtype=D), 4)
    e = info.value
    assert {op.split(".")[1] for op in e.ops} == {"special_i1", "igamma", "i0"}, e.ops
    msg = str(e)
    assert msg.count("special_i1") == 1 and "igamma" in msg and "i0" in msg
    assert "block.0 (Linear)" not in msg and "<top level> (Unsupported)" in msg
    assert "no Taylor rule" in msg


def test_unsupported_op_inside_a_submodule_names_its_path():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.special.i1(x)

    model = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.Tanh(), Odd())).to(D).eval()
    with pytest.raises(UnsupportedOperationError, match=r"aten\.special_i1\.default\s+in 1\.1 \(Odd\)"):
        expand(model, torch.zeros(1, 2, dtype=D), 2)


def test_ops_on_constants_only_need_no_rule():
    class ConstCumprod(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 3)

        def forward(self, x):
            return self.lin(x) * torch.cumprod(self.lin.bias, dim=0)

    assert_matches_autograd(ConstCumprod().to(D).eval(), torch.randn(1, 2, dtype=D), 3)


def test_piecewise_constant_ops_have_a_zero_series():
    def f(x):
        return torch.div(x * 3, 1.0, rounding_mode="floor") + torch.round(x) * x + torch.sign(x) * x ** 2

    assert_matches_autograd(f, torch.tensor([[0.3, -1.2]], dtype=D), 3)
    x0 = torch.tensor([[0.3, -1.2]], dtype=D)
    p = expand(lambda x: torch.floor_divide(x * 3, 1.0), x0, 3)  # PyTorch has no derivative for it; ours is 0
    torch.testing.assert_close(p.value, torch.tensor([[0.0, -4.0]], dtype=D))
    assert p.coefficients[1:].abs().max() == 0


def test_forms_of_an_op_without_a_rule_are_one_unsupported_error():
    """scatter(reduce='multiply') of input-dependent values has no rule: an UnsupportedOperationError naming it (it
    was a bare NotImplementedError from inside the run)."""
    from hope_engine.errors import UnsupportedOperationError

    index = torch.tensor([[0, 1, 0]])

    def f(x):
        return torch.ones(1, 2, dtype=x.dtype).scatter(1, index, x, reduce="multiply")

    with pytest.raises(UnsupportedOperationError, match=r"scatter\(reduce='multiply'\).*no Taylor rule") as err:
        expand(f, torch.tensor([[0.5, -0.2, 0.3]], dtype=torch.float64), 2, batched=False)
    assert err.value.ops == ["aten.scatter.reduce"]
