"""Jet kernels behind one interface: the products and degree-by-degree recurrences of truncated Taylor series.

For coefficient tensors c of shape (M, *shape) in a basis of M monomials t^a (see hope_engine.algebra.jet):

- PRODUCT         (ab)_k = sum_{a_i + a_j = a_k} a_i b_j
- DEGREE_PRODUCT  the degree-d block of sum_{|a_i| = p} w_p a_i b_j (weights by left degree)
- EXP             y = exp(u):      y_d = [y E u]_d / d                    (E t^a = |a| t^a, the Euler operator)
- SIN_COS         sin(u), cos(u):  s_d = [c E u]_d / d, c_d = -[s E u]_d / d
- RICCATI         y' = a + b y + q y^2 (tanh, sigmoid, tan): y_d = [y' E u]_d / d
- DIV             q = a / b:       q_d = (a_d - [q b]_d without q_d b_0) / b_0

Each recurrence has two implementations with one signature: ``torch_backend`` (any device and dtype) and ``native``
(compiled C, CPU float32/float64, built at install time). The functions below pick the native one where it applies and
the active backend allows it, so callers never branch on the backend. ``HOPE_NATIVE=0`` in the environment, or
``set_backend("torch")`` / ``with use_backend("torch"):``, runs everything in torch.
"""

from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import Callable, Iterator, Sequence

import torch

from hope_engine.algebra.basis import Basis
from hope_engine.algebra.kernels import native, torch_backend
from hope_engine.algebra.kernels.torch_backend import collapse


class Recurrence(enum.Enum):
    """The kernels both backends implement (the value is the function's name in each backend module)."""

    PRODUCT = "product"
    DEGREE_PRODUCT = "degree_product"
    EXP = "exp"
    SIN_COS = "sin_cos"
    RICCATI = "riccati"
    DIV = "div"


BACKENDS = ("auto", "native", "torch")
_choice = {"backend": "torch" if os.environ.get("HOPE_NATIVE", "1") == "0" else "auto"}


def set_backend(name: str) -> None:
    """"auto" (native where it applies, else torch; the default), "native" (as auto, but raise when the compiled
    kernels are not available) or "torch" (never native)."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "native" and native.lib() is None:
        raise RuntimeError(f"compiled kernels unavailable: {native.error()}")
    _choice["backend"] = name


def get_backend() -> str:
    """The backend setting ("auto", "native" or "torch")."""
    return _choice["backend"]


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run a block with another backend setting (see ``set_backend``)."""
    before = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        _choice["backend"] = before


def native_available() -> bool:
    """Whether the compiled kernels are built and loaded (whatever the setting)."""
    return native.lib() is not None


def runs_natively(*tensors: torch.Tensor) -> bool:
    """Whether the compiled kernels would run on these tensors now: the setting allows them, they are loaded, and
    the tensors are CPU float32/float64 of one dtype."""
    if _choice["backend"] == "torch" or not native_available():
        return False
    t0 = tensors[0]
    return all(t.device.type == "cpu" and t.dtype == t0.dtype for t in tensors) and t0.dtype in (torch.float32,
                                                                                                  torch.float64)


def backend_name() -> str:
    """Which backend runs CPU float64 jets now: "native" or "torch"."""
    return "native" if _choice["backend"] != "torch" and native_available() else "torch"


def _native_applies(rec: Recurrence, basis: Basis, *tensors: torch.Tensor) -> bool:
    if _choice["backend"] == "torch" or basis.kind == "collapsed":
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False  # the compiled kernels have no backward: autograd runs through the torch formulation
    if rec is Recurrence.DEGREE_PRODUCT and (basis.kind != "total" or basis.n == 1):
        return False  # pure / one variable: a few torch ops per degree already
    return native.supports(basis, *tensors)


def implementations(rec: Recurrence) -> dict[str, Callable]:
    """The implementations of one kernel by backend name ("native", "torch"); for tests and benchmarks."""
    return {"native": getattr(native, rec.value), "torch": getattr(torch_backend, rec.value)}


def _pick(rec: Recurrence, basis: Basis, *tensors: torch.Tensor) -> Callable:
    module = native if _native_applies(rec, basis, *tensors) else torch_backend
    return getattr(module, rec.value)


# ---------------------------------------------------------------------------------------------- the interface
def product(a: torch.Tensor, b: torch.Tensor, basis: Basis) -> torch.Tensor:
    """a b for aligned coefficient tensors (M, *shape_a), (M, *shape_b): (M, *broadcast shape)."""
    return _pick(Recurrence.PRODUCT, basis, a, b)(a, b, basis)


def degree_product(a: torch.Tensor, b: torch.Tensor, basis: Basis, d: int,
                   weights: Sequence[float] | None = None) -> torch.Tensor:
    """Degree-d block of sum_{|a_i| = p, |a_j| = d - p} w_p a_i b_j (weights by left degree p, None: all 1); terms
    of weight 0 are skipped, never multiplied by 0."""
    return _pick(Recurrence.DEGREE_PRODUCT, basis, a, b)(a, b, basis, d, weights)


def exp(u: torch.Tensor, basis: Basis) -> torch.Tensor:
    """Coefficients of exp(u)."""
    return _pick(Recurrence.EXP, basis, u)(u, basis)


def sin_cos(u: torch.Tensor, basis: Basis) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients of (sin(u), cos(u))."""
    return _pick(Recurrence.SIN_COS, basis, u)(u, basis)


def riccati(u: torch.Tensor, basis: Basis, y0: torch.Tensor, a: float, b: float, q: float) -> torch.Tensor:
    """Coefficients of y(u) with dy/du = a + b y + q y^2 and y = y0 at u_0."""
    return _pick(Recurrence.RICCATI, basis, u)(u, basis, y0, a, b, q)


def div(a: torch.Tensor, b: torch.Tensor, basis: Basis) -> torch.Tensor:
    """Coefficients of a / b (b_0 != 0)."""
    return _pick(Recurrence.DIV, basis, a, b)(a, b, basis)


__all__ = [
    "BACKENDS", "Recurrence", "backend_name", "collapse", "degree_product", "div", "exp", "get_backend",
    "implementations", "native_available", "product", "riccati", "set_backend", "sin_cos", "use_backend",
]
