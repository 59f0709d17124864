"""The kernel interface (hope_engine.algebra.kernels): the compiled kernels agree with the torch formulation on every
recurrence, and the native entry points reject bad arguments with a ValueError before any pointer reaches C."""

import importlib.util
import os
import shutil

import pytest
import torch

from hope_engine.algebra import basis as basis_mod
from hope_engine.algebra import functions, kernels
from hope_engine.algebra import jet as series
from hope_engine.algebra.basis import make_basis
from hope_engine.algebra.jet import Jet
from hope_engine.algebra.kernels import Recurrence, native

BASES = [(1, 7, "total"), (2, 5, "total"), (3, 4, "total"), (4, 3, "pure"), (1, 6, "pure")]
DTYPES = [torch.float64, torch.float32]
needs_native = pytest.mark.skipif(not kernels.native_available(), reason="compiled kernels unavailable")


def _random(basis, shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((basis.size, *shape), generator=g, dtype=torch.float64).to(dtype) * 0.5


def _tol(dtype):
    return 1e-12 if dtype == torch.float64 else 1e-4


def _close(fast, slow, dtype):
    fast = (fast,) if isinstance(fast, torch.Tensor) else fast
    slow = (slow,) if isinstance(slow, torch.Tensor) else slow
    for f, s in zip(fast, slow, strict=True):
        assert f.shape == s.shape and f.dtype == s.dtype
        torch.testing.assert_close(f, s, rtol=_tol(dtype), atol=_tol(dtype) * max(s.abs().max().item(), 1.0))


def test_kernels_build_when_a_compiler_exists():
    """HOPE_REQUIRE_KERNELS=1 (the wheel builds' test step): the kernels must be there, compiler or not."""
    if os.environ.get("HOPE_REQUIRE_KERNELS") == "1":
        assert native.lib() is not None, native.error()
        return
    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        pytest.skip("no C compiler")
    if os.environ.get("HOPE_NATIVE") == "0":
        pytest.skip("HOPE_NATIVE=0")
    assert native.lib() is not None, native.error()


def test_kernels_load_from_the_package_only():
    """Built at install time into the package; nothing is compiled or cached at run time."""
    spec = importlib.util.find_spec("hope_engine.algebra.kernels._ckernels")
    if spec is None:
        pytest.skip("extension not built")
    package = os.path.dirname(os.path.abspath(kernels.__file__))
    assert os.path.dirname(os.path.abspath(spec.origin)) == package
    assert not hasattr(native, "_compile")


def test_every_recurrence_has_both_backends():
    import inspect

    for rec in Recurrence:
        impl = kernels.implementations(rec)
        assert set(impl) == {"native", "torch"}
        assert inspect.signature(impl["native"]).parameters.keys() == inspect.signature(impl["torch"]).parameters.keys()
        assert callable(getattr(kernels, rec.value))


def _arguments(rec: Recurrence, basis, dtype, units: int = 4):
    """Random arguments for one kernel (broadcasting operands where the kernel takes two)."""
    u = _random(basis, (3, units), dtype)
    v = _random(basis, (1, units), dtype, seed=1)
    if rec is Recurrence.PRODUCT:
        return [(u, v, basis)]
    if rec is Recurrence.DEGREE_PRODUCT:
        out = []
        for d in range(1, basis.order + 1):
            out.append((u, v, basis, d, None))
            out.append((u, v, basis, d, [0.0] + [float(p + 1) for p in range(1, d)] + [0.0]))  # zero ends skipped
        return out
    if rec is Recurrence.EXP or rec is Recurrence.SIN_COS:
        return [(u, basis)]
    if rec is Recurrence.RICCATI:
        return [(u, basis, torch.tanh(u[0]), 1.0, 0.0, -1.0), (u, basis, torch.sigmoid(u[0]), 0.0, 1.0, -1.0),
                (u, basis, torch.tan(u[0]), 1.0, 0.0, 1.0)]
    if rec is Recurrence.DIV:
        v[0] = v[0].abs() + 1.0
        return [(u, v, basis), (v, u[:, :1].abs() + 1.0, basis)]
    raise AssertionError(f"no arguments for {rec}")


@needs_native
@pytest.mark.parametrize("n,order,kind", BASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rec", list(Recurrence), ids=lambda r: r.value)
def test_native_matches_torch_on_every_kernel(rec, n, order, kind, dtype):
    basis = make_basis(n, order, kind)
    impl = kernels.implementations(rec)
    for args in _arguments(rec, basis, dtype):
        if rec is Recurrence.DEGREE_PRODUCT and (kind == "pure" or n == 1):
            continue  # the native backend runs degree products of a total basis in n > 1 only
        _close(impl["native"](*args), impl["torch"](*args), dtype)


@pytest.mark.parametrize("n,order,kind", BASES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["exp", "sin", "cos", "tanh", "sigmoid", "mul", "div", "log", "tan"])
def test_functions_agree_across_backends(n, order, kind, dtype, op):
    """The jet functions built on the kernels give the same series whichever backend runs them."""
    if not kernels.native_available():
        pytest.skip("compiled kernels unavailable")
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
    with kernels.use_backend("native"):
        fast = fn()
    with kernels.use_backend("torch"):
        slow = fn()
    _close(fast, slow, dtype)


@needs_native
@pytest.mark.parametrize("n,order,kind", BASES)
def test_exp_of_minus_infinity_has_no_nan(n, order, kind):
    """An attention mask: exp(-inf + series) is the zero series, not NaN."""
    basis = make_basis(n, order, kind)
    u = _random(basis, (5,), torch.float64)
    u[0, 2] = float("-inf")
    impl = kernels.implementations(Recurrence.EXP)
    fast, slow = impl["native"](u, basis), impl["torch"](u, basis)
    assert not fast.isnan().any()
    assert (fast[:, 2] == 0).all()
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)


def test_backend_setting():
    with kernels.use_backend("torch"):
        assert kernels.backend_name() == "torch"
        assert not kernels.runs_natively(torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError):
        kernels.set_backend("cuda")


# ---------------------------------------------------------------------------------- the bounds-checked interface
def _prod_args():
    a = torch.randn(6, 10, dtype=torch.float64)
    idx = torch.tensor([0, 1, 2], dtype=torch.int64)
    return dict(a=a, b=a.clone(), out=torch.empty(3, 10, dtype=torch.float64), left=idx, right=idx.clone(),
                outi=idx.clone())


@pytest.mark.parametrize("change,message", [
    (dict(b=torch.randn(6, 11, dtype=torch.float64)), "units"),
    (dict(b=torch.randn(6, 10, dtype=torch.float32)), "dtype"),
    (dict(a=torch.randn(10, 6, dtype=torch.float64).t()), "contiguous"),
    (dict(a=torch.randn(6, 10, dtype=torch.float64, device="meta")), "CPU"),
    (dict(a=torch.randint(0, 5, (6, 10))), "float32 or float64"),
    (dict(out=torch.empty(0, 10, dtype=torch.float64)), "at least one row"),
    (dict(left=torch.tensor([0, 1, 6])), "outside"),
    (dict(right=torch.tensor([0, -1, 2])), "outside"),
    (dict(outi=torch.tensor([0, 1, 3])), "outside"),
    (dict(outi=torch.tensor([0, 1])), "entries"),
    (dict(left=torch.tensor([0, 1, 2], dtype=torch.int32)), "int64"),
    (dict(weights=torch.ones(2, dtype=torch.float64)), "weights"),
    (dict(a=[1.0, 2.0]), "tensor"),
])
def test_prod_rejects_bad_arguments(change, message):
    args = {**_prod_args(), **change}
    with pytest.raises(ValueError, match=message):
        native.prod(**args)


def test_prod_notices_an_index_table_changed_in_place():
    args = _prod_args()
    if kernels.native_available():
        native.prod(**args)  # valid: ranges checked and remembered
    args["left"][2] = 100
    with pytest.raises(ValueError, match="outside"):
        native.prod(**args)


def _flat(n=2, order=3):
    basis = make_basis(n, order, "total")
    return basis, list(basis_mod.flat_tables(basis))


@pytest.mark.parametrize("broken,message", [
    (lambda t: t.__setitem__(0, t[0][:-1]), "entries"),
    (lambda t: t.__setitem__(2, t[2] + 100), "outside"),
    (lambda t: t.__setitem__(3, t[3][:-1]), "entries"),
    (lambda t: t.__setitem__(4, torch.tensor([0, 1, 3, 6, 11])), "outside|offsets"),
    (lambda t: t.__setitem__(5, t[5].float()), "rdeg"),
    (lambda t: t.pop(), "6 tensors"),
])
def test_recurrence_rejects_bad_tables(broken, message):
    basis, tables = _flat()
    u = torch.randn(basis.size, 7, dtype=torch.float64)
    broken(tables)
    with pytest.raises(ValueError, match=message):
        native.recurrence(native.CKind.EXP, u, torch.empty_like(u), None, tables, basis.order)


def test_recurrence_and_univariate_reject_wrong_shapes():
    basis, tables = _flat()
    u = torch.randn(basis.size, 7, dtype=torch.float64)
    with pytest.raises(ValueError, match="rows"):
        native.recurrence(native.CKind.EXP, u, torch.empty(basis.size + 1, 7, dtype=torch.float64), None, tables, 3)
    with pytest.raises(ValueError, match="entries"):  # tables of order 3 used at order 4
        native.recurrence(native.CKind.EXP, u, torch.empty_like(u), None, tables, 4)
    with pytest.raises(ValueError, match="needs g"):
        native.recurrence(native.CKind.SIN_COS, u, torch.empty_like(u), None, tables, 3)
    with pytest.raises(ValueError, match="units"):
        native.recurrence(native.CKind.SIN_COS, u, torch.empty_like(u), torch.empty(basis.size, 6,
                                                                                  dtype=torch.float64), tables, 3)
    pure = torch.randn(1 + 4 * 3, 5, dtype=torch.float64)
    with pytest.raises(ValueError, match="rows"):
        native.univariate(native.CKind.EXP, pure, torch.empty_like(pure), None, 4, 4)
    with pytest.raises(ValueError, match="positive"):
        native.univariate(native.CKind.EXP, pure, torch.empty_like(pure), None, 0, 3)
    with pytest.raises(ValueError):
        native.univariate(7, pure, torch.empty_like(pure), None, 4, 3)


@pytest.mark.parametrize("rec", [r for r in Recurrence if r is not Recurrence.DEGREE_PRODUCT], ids=lambda r: r.value)
@pytest.mark.parametrize("n,order", [(2, 4), (3, 3)])
def test_torch_blocks_of_units_match_one_pass(rec, n, order, monkeypatch):
    """The torch formulation's CPU blocks of units (total basis, n > 1) give the one-pass result."""
    from hope_engine.algebra.kernels import torch_backend

    basis = make_basis(n, order, "total")
    monkeypatch.setattr(torch_backend, "BLOCK_MIN", 4)
    monkeypatch.setattr(torch_backend, "BLOCK_MAX", 8)
    assert torch_backend.unit_block(basis, 21, torch.device("cpu")) == 8
    whole = getattr(torch_backend, f"_{rec.value}_whole")
    for args in _arguments(rec, basis, torch.float64, units=7):  # 21 units (and 7 for a broadcast operand)
        _close(getattr(torch_backend, rec.value)(*args), whole(*args), torch.float64)
