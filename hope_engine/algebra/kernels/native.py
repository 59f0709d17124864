"""The compiled jet kernels (hope_engine/algebra/kernels/_ckernels.c) behind a bounds-checked interface.

The same arithmetic as hope_engine.algebra.kernels.torch_backend, as C loops over blocks of 256 units so that every
operand stays in cache and no (T x units) temporary is written; a whole recurrence is one call. The library is built at
install time (setup.py) and loaded from the package directory only, never compiled at run time nor read from a
writable cache.

Every call validates in Python, before any pointer is passed: tensor types, CPU device, float32/float64 with one dtype,
contiguity, matching unit counts, row counts, and that each index table is int64, 1-D, of the right length and within
the rows it addresses (index ranges are checked once per table tensor and version). A violation is a ValueError.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.util
import os
import threading
from collections.abc import Sequence

import torch

from hope_engine.algebra.basis import Basis, flat_tables, product_tables


class CKind(enum.IntEnum):
    """The recurrence selector of hope_rec_* / hope_uni_* (the enum of _ckernels.c)."""

    EXP = 0
    SIN_COS = 1
    RICCATI = 2
    DIV = 3
    PRODUCT = 4


ABI = 3 * 100 + CKind.PRODUCT  # hope_kernels_abi() of a matching build
_SUFFIX = {torch.float64: "f64", torch.float32: "f32"}
_lock = threading.Lock()
_state: dict = {}


def _load() -> ctypes.CDLL | None:
    if os.environ.get("HOPE_NATIVE", "1") == "0":
        _state["error"] = "disabled by HOPE_NATIVE=0"
        return None
    try:
        spec = importlib.util.find_spec("hope_engine.algebra.kernels._ckernels")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        _state["error"] = ("hope_engine.algebra.kernels._ckernels is not built (no C compiler at install time?): "
                           "reinstall with a compiler, or `python setup.py build_ext --inplace` in a checkout")
        return None
    try:
        dll = ctypes.CDLL(spec.origin)
        abi = dll.hope_kernels_abi
        abi.restype, abi.argtypes = ctypes.c_int64, []
        if abi() != ABI:
            _state["error"] = f"{spec.origin}: kernel ABI {abi()} != {ABI} (a stale build: rebuild the extension)"
            return None
    except (OSError, AttributeError) as e:
        _state["error"] = f"{spec.origin}: {e}"
        return None
    p, i64, dbl, cint = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double, ctypes.c_int
    for s in _SUFFIX.values():
        for name, args in (("prod", [p, p, p, p, p, p, p, i64, i64, i64, i64, i64, dbl]),
                           ("rec", [cint, p, p, p, p, p, p, p, p, p, i64, i64, i64, i64, dbl, dbl, dbl]),
                           ("uni", [cint, p, p, p, i64, i64, i64, i64, i64, dbl, dbl, dbl])):
            fn = getattr(dll, f"hope_{name}_{s}")
            fn.argtypes, fn.restype = args, None
    return dll


def lib() -> ctypes.CDLL | None:
    """The compiled kernels, or None (not built, HOPE_NATIVE=0, or a stale build: the reason in ``error()``)."""
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                _state["lib"] = _load()
    return _state["lib"]


def error() -> str | None:
    """Why the kernels are unavailable (None when they are loaded or were not looked for yet)."""
    return _state.get("error")


# ------------------------------------------------------------------------------------------------ validation
def _floats(units: int | None, **tensors: torch.Tensor | None) -> tuple[torch.dtype, int]:
    """Check data tensors: CPU, float32/float64, one dtype, contiguous, at least one row, equal units per row."""
    dtype = None
    for name, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: expected a tensor, got {type(t).__name__}")
        if t.device.type != "cpu":
            raise ValueError(f"{name}: the compiled kernels run on CPU tensors, got device {t.device}")
        if t.dtype not in _SUFFIX:
            raise ValueError(f"{name}: float32 or float64 expected, got {t.dtype}")
        if dtype is not None and t.dtype != dtype:
            raise ValueError(f"{name}: dtype {t.dtype} differs from {dtype}")
        dtype = t.dtype
        if t.dim() < 1 or t.shape[0] < 1:
            raise ValueError(f"{name}: a coefficient tensor (rows, ...) with at least one row expected, "
                             f"got shape {tuple(t.shape)}")
        if not t.is_contiguous():
            raise ValueError(f"{name}: must be contiguous")
        n = t.numel() // t.shape[0]
        if units is not None and n != units:
            raise ValueError(f"{name}: {n} units per row, expected {units} (shape {tuple(t.shape)})")
        units = n
    assert dtype is not None and units is not None
    return dtype, units


def _index(name: str, t: torch.Tensor, length: int | None, bound: int) -> int:
    """Check an index table: int64, CPU, 1-D, contiguous, ``length`` entries, values in 0 .. bound - 1."""
    if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.device.type != "cpu" or t.dim() != 1:
        raise ValueError(f"{name}: a 1-D int64 CPU tensor expected, got "
                         f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: must be contiguous")
    if length is not None and t.numel() != length:
        raise ValueError(f"{name}: {t.numel()} entries, expected {length}")
    if t.numel():
        known = getattr(t, "_hope_range", None)  # (version, min, max) of an unchanged table: checked once
        if known is None or known[0] != _version(t):
            known = (_version(t), int(t.min()), int(t.max()))
            t._hope_range = known
        if known[1] < 0 or known[2] >= bound:
            raise ValueError(f"{name}: indices {known[1]}..{known[2]} outside 0..{bound - 1}")
    return t.numel()


def _require_lib() -> ctypes.CDLL:
    dll = lib()
    if dll is None:
        raise RuntimeError(f"compiled kernels unavailable: {error()}")
    return dll


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()  # the argtypes are c_void_p: ctypes converts the int


def _entry(name: str, dtype: torch.dtype):
    """The kernel ``hope_<name>_<f32|f64>`` (looked up once)."""
    key = (name, dtype)
    fn = _ENTRIES.get(key)
    if fn is None:
        fn = _ENTRIES[key] = getattr(_require_lib(), f"hope_{name}_{_SUFFIX[dtype]}")
    return fn


_ENTRIES: dict = {}


# ------------------------------------------------------------------------------------------- checked entry points
def prod(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, left: torch.Tensor, right: torch.Tensor,
         outi: torch.Tensor, weights: torch.Tensor | None = None, scale: float = 1.0) -> None:
    """out (W, ...) = scale * sum_t w_t a[left_t] b[right_t], accumulated into row outi_t (out is overwritten)."""
    dtype, units = _floats(None, a=a, b=b, out=out)
    nt = _index("left", left, None, a.shape[0])
    _index("right", right, nt, b.shape[0])
    _index("outi", outi, nt, out.shape[0])
    if weights is not None and (not isinstance(weights, torch.Tensor) or weights.dtype != torch.float64
                                or weights.device.type != "cpu" or weights.dim() != 1
                                or weights.numel() != nt or not weights.is_contiguous()):
        raise ValueError(f"weights: a contiguous 1-D float64 CPU tensor of {nt} entries expected")
    fn = _entry("prod", dtype)
    fn(_ptr(a), _ptr(b), _ptr(out), _ptr(left), _ptr(right), _ptr(outi), _ptr(weights), nt, out.shape[0], units,
       0, units, float(scale))


def _version(t: torch.Tensor):
    """t's version counter, or ("inference", data pointer) for a tensor made under ``torch.inference_mode`` (which
    has none; the engine's tables are written once, when made, so the check is still done once per table)."""
    try:
        return t._version
    except RuntimeError:
        return "inference", t.data_ptr()


def _check_tables(tables: Sequence[torch.Tensor], order: int, rows: int) -> None:
    """The flat tables of a total basis (left, right, out row, degree starts, basis offsets, right degrees)."""
    if len(tables) != 6:
        raise ValueError(f"tables: 6 tensors expected (left, right, out, start, offsets, rdeg), got {len(tables)}")
    left, right, outk, start, off, rdeg = tables
    key = (order, rows, *((id(t), _version(t)) if isinstance(t, torch.Tensor) else None for t in tables))
    if isinstance(outk, torch.Tensor) and getattr(outk, "_hope_tables", None) == key:
        return
    nt = _index("left", left, None, rows)
    _index("right", right, nt, rows)
    _index("out", outk, nt, rows)
    _index("start", start, order + 2, nt + 1)
    _index("offsets", off, order + 2, rows + 1)
    s, o = start.tolist(), off.tolist()
    if s[0] != 0 or s[-1] != nt or any(x > y for x, y in zip(s, s[1:])):
        raise ValueError("start: degree starts must rise from 0 to the number of triples")
    if o[0] != 0 or o[1] != 1 or o[-1] != rows or any(x >= y for x, y in zip(o, o[1:])):
        raise ValueError(f"offsets: basis offsets must rise from 0 (row 0 = the value) to {rows} rows")
    if any(o[d + 1] - o[d] > s[d + 1] - s[d] for d in range(1, order + 1)):
        raise ValueError("start/offsets: a degree has fewer triples than output rows")
    if (not isinstance(rdeg, torch.Tensor) or rdeg.dtype != torch.float64 or rdeg.device.type != "cpu"
            or rdeg.dim() != 1 or rdeg.numel() != nt or not rdeg.is_contiguous()):
        raise ValueError(f"rdeg: a contiguous 1-D float64 CPU tensor of {nt} entries expected")
    outk._hope_tables = key


def recurrence(kind: CKind, u: torch.Tensor, y: torch.Tensor, g: torch.Tensor | None, tables: Sequence[torch.Tensor],
               order: int, p1: float = 0.0, p2: float = 0.0, p0: float = 0.0) -> None:
    """Fill rows 1.. of y (and g) in place over a total basis (flat tables); row 0 is the caller's (RICCATI's g: all
    rows written). EXP: g unused; SIN_COS: y = sin, g = cos; RICCATI: g = p0 + p1 y + p2 y^2 (y' of the activation);
    DIV: y = g / u."""
    kind = CKind(kind)
    if kind == CKind.PRODUCT:
        raise ValueError("recurrence: PRODUCT runs through prod()")
    if kind != CKind.EXP and g is None:
        raise ValueError(f"recurrence: {kind.name} needs g")
    dtype, units = _floats(None, u=u, y=y, g=None if kind == CKind.EXP else g)
    rows = y.shape[0]
    if u.shape[0] != rows or (g is not None and kind != CKind.EXP and g.shape[0] != rows):
        raise ValueError(f"recurrence: u, y (and g) must have the same rows, got {u.shape[0]}, {rows}"
                         + (f", {g.shape[0]}" if g is not None else ""))
    if not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be a positive int, got {order!r}")
    _check_tables(tables, order, rows)
    left, right, outk, start, off, rdeg = tables
    fn = _entry("rec", dtype)
    fn(int(kind), _ptr(u), _ptr(y), _ptr(g if kind != CKind.EXP else None), _ptr(left), _ptr(right), _ptr(outk),
       _ptr(rdeg), _ptr(start), _ptr(off), order, units, 0, units, float(p0), float(p1), float(p2))


def univariate(kind: CKind, u: torch.Tensor, y: torch.Tensor, g: torch.Tensor | None, n: int, order: int,
               p1: float = 0.0, p2: float = 0.0, p0: float = 0.0) -> None:
    """A pure basis in n variables (or a total basis in one, n = 1; 1 + n K rows): kinds as ``recurrence`` fill rows
    1.. of y (and g); PRODUCT writes u * g into all rows of y."""
    kind = CKind(kind)
    if kind != CKind.EXP and g is None:
        raise ValueError(f"univariate: {kind.name} needs g")
    if not isinstance(n, int) or not isinstance(order, int) or n < 1 or order < 1:
        raise ValueError(f"univariate: positive int n and order expected, got {n!r}, {order!r}")
    dtype, units = _floats(None, u=u, y=y, g=None if kind == CKind.EXP else g)
    rows = 1 + n * order
    for name, t in (("u", u), ("y", y), ("g", None if kind == CKind.EXP else g)):
        if t is not None and t.shape[0] != rows:
            raise ValueError(f"univariate: {name} has {t.shape[0]} rows, a basis of n={n}, order={order} has {rows}")
    fn = _entry("uni", dtype)
    fn(int(kind), _ptr(u), _ptr(y), _ptr(g if kind != CKind.EXP else None), n, order, units, 0, units, float(p0),
       float(p1), float(p2))


# --------------------------------------------------------------------------- the backend (torch_backend's signatures)
def supports(basis: Basis, *tensors: torch.Tensor) -> bool:
    """Whether these kernels run on the tensors: loaded, CPU, float32/float64, one dtype, order >= 1."""
    t0 = tensors[0]
    if basis.order < 1 or t0.device.type != "cpu" or t0.dtype not in _SUFFIX:
        return False
    if any(t.device.type != "cpu" or t.dtype != t0.dtype for t in tensors[1:]):
        return False
    return lib() is not None


def _univariate(basis: Basis) -> bool:
    return basis.kind == "pure" or basis.n == 1


def _flat(basis: Basis) -> tuple[torch.Tensor, ...]:
    return flat_tables(basis)


def _pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a and b broadcast to one coefficient shape, contiguous (the kernels index rows of equal length)."""
    shape = torch.broadcast_shapes(a.shape[1:], b.shape[1:])
    return a.expand(a.shape[0], *shape).contiguous(), b.expand(b.shape[0], *shape).contiguous()


def degree_product(a: torch.Tensor, b: torch.Tensor, basis: Basis, d: int,
                   weights: Sequence[float] | None) -> torch.Tensor:
    """Degree-d block of sum_{|a_i| = p, |a_j| = d - p} w_p a_i b_j (total basis, n > 1); weight-0 terms skipped."""
    table = product_tables(basis, "cpu")[d]
    a, b = _pair(a, b)
    out = a.new_empty((basis.offsets[d + 1] - basis.offsets[d], *a.shape[1:]))
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)[table.left_degree].contiguous()
    prod(a, b, out, table.left.contiguous(), table.right.contiguous(), table.out.contiguous(), w, 1.0)
    return out


def product(a: torch.Tensor, b: torch.Tensor, basis: Basis) -> torch.Tensor:
    """a b for two aligned coefficient tensors: (M, *broadcast shape)."""
    a, b = _pair(a, b)
    out = a.new_empty(a.shape)
    if _univariate(basis):
        univariate(CKind.PRODUCT, a, out, b, basis.n, basis.order)
    else:
        left, right, outk = _flat(basis)[:3]
        prod(a, b, out, left, right, outk, None, 1.0)
    return out


def _run(kind: CKind, u: torch.Tensor, y: torch.Tensor, g: torch.Tensor | None, basis: Basis, p1: float = 0.0,
         p2: float = 0.0) -> None:
    u = u.contiguous()
    if _univariate(basis):
        univariate(kind, u, y, g, basis.n, basis.order, p1, p2)
    else:
        recurrence(kind, u, y, g, _flat(basis), basis.order, p1, p2)


def _run_own(kind: CKind, u: torch.Tensor, y: torch.Tensor, g: torch.Tensor | None, basis: Basis, p1: float = 0.0,
             p2: float = 0.0, p0: float = 0.0) -> None:
    """``_run`` where y (and g) are buffers made here by ``u.new_empty(u.shape)``: same shape, dtype and device as u,
    contiguous. Only u and the tables are checked (as ``recurrence`` / ``univariate`` check them)."""
    u = u.contiguous()
    if type(u) is torch.Tensor and u.dtype in _SUFFIX and u.dim() and u.shape[0] and u.device.type == "cpu":
        dtype, units = u.dtype, u.numel() // u.shape[0]
    else:
        dtype, units = _floats(None, u=u)  # raises what is wrong
    if y.shape != u.shape or not y.is_contiguous() or (g is not None and (g.shape != u.shape
                                                                          or not g.is_contiguous())):
        raise ValueError("internal: the output buffers must be contiguous and shaped like u")
    gp = g.data_ptr() if g is not None else None
    if _univariate(basis):
        if u.shape[0] != 1 + basis.n * basis.order:
            raise ValueError(f"univariate: u has {u.shape[0]} rows, a basis of n={basis.n}, order={basis.order} has "
                             f"{1 + basis.n * basis.order}")
        _entry("uni", dtype)(int(kind), u.data_ptr(), y.data_ptr(), gp, basis.n, basis.order, units, 0, units,
                             float(p0), float(p1), float(p2))
        return
    tables = _flat(basis)
    pointers = _checked_pointers(tables, basis.order, u.shape[0])
    _entry("rec", dtype)(int(kind), u.data_ptr(), y.data_ptr(), gp, *pointers, basis.order, units, 0, units,
                         float(p0), float(p1), float(p2))


def _checked_pointers(tables: tuple, order: int, rows: int) -> tuple:
    """(left, right, out, rdeg, start, offsets) data pointers of flat tables that ``_check_tables`` accepted; the
    check is redone when the tables' versions (an in-place write) or the order and rows change. Kept on the tables'
    out-row tensor (so it lives and goes with the tables: no module-level cache)."""
    key = (order, rows, *((id(t), _version(t)) for t in tables))
    outk = tables[2] if len(tables) == 6 else None
    known = getattr(outk, "_hope_pointers", None) if isinstance(outk, torch.Tensor) else None
    if known is None or known[0] != key:
        _check_tables(tables, order, rows)
        left, right, outk, start, off, rdeg = tables
        known = (key, tuple(t.data_ptr() for t in (left, right, outk, rdeg, start, off)))
        outk._hope_pointers = known
    return known[1]


def exp(u: torch.Tensor, basis: Basis) -> torch.Tensor:
    """y = exp(u): y_d = [y E u]_d / d."""
    y = u.new_empty(u.shape)
    y[0] = torch.exp(u[0])
    _run_own(CKind.EXP, u, y, None, basis)
    return y


def sin_cos(u: torch.Tensor, basis: Basis) -> tuple[torch.Tensor, torch.Tensor]:
    """s = sin(u), c = cos(u): s_d = [c E u]_d / d, c_d = -[s E u]_d / d, both filled by one call."""
    s = u.new_empty(u.shape)
    c = torch.empty_like(s)
    s[0], c[0] = torch.sin(u[0]), torch.cos(u[0])
    _run_own(CKind.SIN_COS, u, s, c, basis)
    return s, c


def riccati(u: torch.Tensor, basis: Basis, y0: torch.Tensor, a: float, b: float, q: float) -> torch.Tensor:
    """y with y' = a + b y + q y^2: y_d = [y' E u]_d / d, y'_d = b y_d + q [y y]_d (y'_0 = a + b y_0 + q y_0^2 is
    written by the kernel)."""
    y, g = u.new_empty((2, *u.shape)).unbind(0)  # one allocation; both contiguous
    y[0] = y0
    _run_own(CKind.RICCATI, u, y, g, basis, b, q, a)
    return y


def div(a: torch.Tensor, b: torch.Tensor, basis: Basis) -> torch.Tensor:
    """q = a / b: q_d = (a_d - [q b]_d without q_d b_0) / b_0."""
    a, b = _pair(a, b)
    q = a.new_empty(a.shape)
    q[0] = a[0] / b[0]
    _run(CKind.DIV, b, q, a, basis)
    return q
