"""The compiled kernels (hope_engine._native) agree with the torch formulation of the same series arithmetic."""

import shutil

import pytest
import torch

from hope_engine import _native, functions, series
from hope_engine.basis import make_basis
from hope_engine.series import Jet

BASES = [(1, 7, "total"), (2, 5, "total"), (3, 4, "total"), (4, 3, "pure"), (1, 6, "pure")]


def test_kernels_build_when_a_compiler_exists():
    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        pytest.skip("no C compiler")
    import os

    if os.environ.get("HOPE_NATIVE") == "0":
        pytest.skip("HOPE_NATIVE=0")
    assert _native.lib() is not None, _native.error()


def _random(basis, shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((basis.size, *shape), generator=g, dtype=torch.float64).to(dtype) * 0.5


def _both(fn, monkeypatch):
    """fn() with the kernels, and with the torch formulation."""
    if _native.lib() is None:
        pytest.skip("compiled kernels unavailable")
    fast = fn()
    with monkeypatch.context() as m:
        m.setitem(_native._state, "lib", None)
        slow = fn()
    return fast, slow


@pytest.mark.parametrize("n,order,kind", BASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("op", ["exp", "sin", "cos", "tanh", "sigmoid", "mul", "div", "log", "tan"])
def test_kernels_match_torch(n, order, kind, dtype, op, monkeypatch):
    basis = make_basis(n, order, kind)
    u = _random(basis, (3, 4), dtype)
    v = _random(basis, (4,), dtype, seed=1)  # broadcast against u
    u[0] = u[0].abs() + 1.0 if op == "log" else u[0]
    v[0] = v[0].abs() + 1.0
    ju, jv = Jet(u, basis), Jet(v, basis)
    fn = {
        "exp": lambda: functions.exp(ju).c, "sin": lambda: functions.sin(ju).c, "cos": lambda: functions.cos(ju).c,
        "tanh": lambda: functions.tanh(ju).c, "sigmoid": lambda: functions.sigmoid(ju).c,
        "mul": lambda: series.mul(ju, jv).c, "div": lambda: functions.div(ju, jv).c,
        "log": lambda: functions.log(ju).c, "tan": lambda: functions.tan(ju).c,
    }[op]
    fast, slow = _both(fn, monkeypatch)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    assert fast.shape == slow.shape
    torch.testing.assert_close(fast, slow, rtol=tol, atol=tol * slow.abs().max().item())


@pytest.mark.parametrize("n,order,kind", BASES)
def test_exp_of_minus_infinity_has_no_nan(n, order, kind, monkeypatch):
    """An attention mask: exp(-inf + series) is the zero series, not NaN."""
    basis = make_basis(n, order, kind)
    u = _random(basis, (5,), torch.float64)
    u[0, 2] = float("-inf")
    fast, slow = _both(lambda: functions.exp(Jet(u, basis)).c, monkeypatch)
    assert not fast.isnan().any()
    assert (fast[:, 2] == 0).all()
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)

