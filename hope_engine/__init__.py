"""hope: exact high-order Taylor expansions of PyTorch networks.

    from hope_engine import expand
    p = expand(model, x0, order=6)   # every mixed partial up to order 6, exact to rounding
"""

from .basis import Basis, make_basis
from .certify import certify
from .errors import (
    ExpansionError,
    GraphEscapeError,
    KinkWarning,
    MemoryBudgetError,
    TimeBudgetError,
    TrainingModeWarning,
    UnsupportedOperationError,
)
from .expand import expand
from .many import expand_many
from .polynomial import TaylorPolynomial, Term

__all__ = [
    "Basis", "ExpansionError", "GraphEscapeError", "KinkWarning", "MemoryBudgetError", "TaylorPolynomial", "Term",
    "TimeBudgetError", "TrainingModeWarning", "UnsupportedOperationError", "certify", "expand", "expand_many",
    "make_basis",
]
__version__ = "0.1.0"
