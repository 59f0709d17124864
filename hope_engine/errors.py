"""The errors and warnings users see: each names what was wrong and what to do."""

from __future__ import annotations


class ExpansionError(ValueError):
    """Bad input to an expansion (point, order, basis, options)."""


class UnsupportedOperationError(ExpansionError):
    """The model uses operations that have no Taylor rule; ``ops`` lists them all."""

    def __init__(self, message: str, ops: list[str] | None = None):
        super().__init__(message)
        self.ops = ops or []


class GraphEscapeError(ExpansionError):
    """The model turns an input-dependent value into a Python number or a NumPy array, out of the traced graph."""


class MemoryBudgetError(ExpansionError):
    """The estimated memory of an expansion exceeds the budget; ``estimate`` is in bytes."""

    def __init__(self, message: str, estimate: int, budget: int):
        super().__init__(message)
        self.estimate = estimate
        self.budget = budget


class KinkWarning(UserWarning):
    """The reference point lies exactly on a kink (relu, max pool tie...): the expansion there is one-sided."""


class TrainingModeWarning(UserWarning):
    """The model was in training mode; it is expanded in eval mode."""
