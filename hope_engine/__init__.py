"""hope: exact high-order Taylor expansions of PyTorch networks.

    from hope_engine import expand
    p = expand(model, x0, order=6)   # every mixed partial up to order 6, exact to rounding
"""

from hope_engine.algebra.basis import Basis, make_basis
from hope_engine.algebra.polynomial import TaylorPolynomial, Term
from hope_engine.api.certify import certify
from hope_engine.api.expand import expand
from hope_engine.api.many import expand_many
from hope_engine.api.operators import bilaplacian, differential_operator, laplacian
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
