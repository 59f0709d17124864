"""hope: exact high-order Taylor expansions of PyTorch networks.

    from hope_engine import expand
    p = expand(model, x0, order=6)   # every mixed partial up to order 6, exact to rounding

Importing the package does not import torch: the names below that need it are loaded on first use (``_LAZY``), so
``hope --help`` starts without torch. A new public name that needs torch goes into ``_LAZY`` (and ``__all__``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from hope_engine.errors import (
    ExpansionError,
    GraphEscapeError,
    KinkWarning,
    MemoryBudgetError,
    TimeBudgetError,
    TrainingModeWarning,
    UnsupportedOperationError,
    VerificationError,
)

__all__ = [
    "Basis", "ExpansionError", "GraphEscapeError", "KinkWarning", "MemoryBudgetError", "TaylorPolynomial", "Term",
    "TimeBudgetError", "TrainingModeWarning", "UnsupportedOperationError", "VerificationError", "bilaplacian",
    "certify", "differential_operator", "expand", "expand_many", "laplacian", "make_basis",
]
__version__ = "0.1.0"

#: public name -> the module that defines it, imported on first access (these import torch)
_LAZY = {
    "Basis": "hope_engine.algebra.basis", "make_basis": "hope_engine.algebra.basis",
    "TaylorPolynomial": "hope_engine.algebra.polynomial", "Term": "hope_engine.algebra.polynomial",
    "certify": "hope_engine.api.certify", "expand": "hope_engine.api.expand", "expand_many": "hope_engine.api.many",
    "bilaplacian": "hope_engine.api.operators", "differential_operator": "hope_engine.api.operators",
    "laplacian": "hope_engine.api.operators",
}

if TYPE_CHECKING:
    from hope_engine.algebra.basis import Basis, make_basis
    from hope_engine.algebra.polynomial import TaylorPolynomial, Term
    from hope_engine.api.certify import certify
    from hope_engine.api.expand import expand
    from hope_engine.api.many import expand_many
    from hope_engine.api.operators import bilaplacian, differential_operator, laplacian


def __getattr__(name: str):
    """A lazy public name, imported now; any other attribute (a submodule such as ``hope_engine.api``) after the
    imports the package made eagerly before (every module in ``_LAZY``), as it was then."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("__"):
        for module in set(_LAZY.values()):
            importlib.import_module(module)
        if name in globals():
            return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
