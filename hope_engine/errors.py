"""The errors and warnings users see: each names what was wrong and what to do."""

from __future__ import annotations

import warnings


class ExpansionError(ValueError):
    """Bad input to an expansion (point, order, basis, options)."""


class UnsupportedOperationError(ExpansionError):
    """The model uses operations that have no Taylor rule; ``ops`` lists them all."""

    def __init__(self, message: str, ops: list[str] | None = None):
        super().__init__(message)
        self.ops = ops or []


class RandomOperationError(UnsupportedOperationError):
    """The model draws random numbers in forward: each call is a different function, so no expansion is exact."""


class VerificationError(ExpansionError):
    """The expansion disagrees with the model's own torch run at the point (``api.verify``); ``check`` is "value" or
    "gradient"."""

    def __init__(self, message: str, check: str):
        super().__init__(message)
        self.check = check


class GraphEscapeError(ExpansionError):
    """The model turns an input-dependent value into a Python number or a NumPy array, out of the traced graph."""


class MemoryBudgetError(ExpansionError):
    """The estimated memory of an expansion exceeds the budget; ``estimate`` is in bytes."""

    def __init__(self, message: str, estimate: int, budget: int):
        super().__init__(message)
        self.estimate = estimate
        self.budget = budget


class TimeBudgetError(ExpansionError):
    """The estimated run time of an expansion exceeds ``time_budget``; ``estimate`` and ``budget`` are in seconds."""

    def __init__(self, message: str, estimate: float, budget: float):
        super().__init__(message)
        self.estimate = estimate
        self.budget = budget


class ModelLoadError(ValueError):
    """The file could not be loaded as a model; the message says why and what to do."""


class KinkWarning(UserWarning):
    """The reference point lies exactly on a kink (relu, max pool tie...): the expansion there is one-sided."""


def warn_one_sided(kinks: dict, stacklevel: int = 3) -> None:
    """One KinkWarning naming every kink the point lies on (``{op: number of values}``), if any."""
    if kinks:
        where = ", ".join(f"{k} ({v} value{'s' if v > 1 else ''})" for k, v in kinks.items())
        warnings.warn(f"the reference point lies exactly on a kink of {where}: the expansion there is one-sided "
                      "(it uses the branch the implementation takes at the kink). Move the point slightly for a "
                      "two-sided view.", KinkWarning, stacklevel=stacklevel + 1)


class TrainingModeWarning(UserWarning):
    """The model was in training mode; it is expanded in eval mode."""


def describe(e: BaseException, max_foreign_lines: int = 3) -> str:
    """The text to show for an error, in one block: the whole message of an error this package raised (written for
    the user), the type and first lines of any other (a library's message can run to a traceback)."""
    text = str(e).strip()
    if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
        text = e.args[0]
    if (type(e).__module__ or "").split(".")[0] in ("hope_engine", "hope_widgets"):
        return text or type(e).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    shown = "\n".join(lines[:max_foreign_lines]) + ("\n..." if len(lines) > max_foreign_lines else "")
    return f"{type(e).__name__}: {shown}" if shown else type(e).__name__
