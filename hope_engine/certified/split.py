"""Input-domain splitting (branch and bound) over the box |t_i| <= r_i: the leaves cover the box, so the hull of
their certified enclosures encloses f over it, and it tightens as the leaves shrink (a Taylor model's remainder falls
like width^(K+1), the polynomial's range bound towards the true range).

The driver knows nothing of networks: ``evaluate(shift, radius)`` certifies the sub-box x0 + shift +- radius and
returns a ``Leaf``. Each step bisects the leaf that sets the hull furthest beyond the values of f seen (at the
leaves' centres), along the variable that contributes most to its polynomial, until the hull is within ``tol`` of
the seen range, the leaves number ``boxes``, or two more leaves (at the mean cost so far) would pass ``seconds``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from hope_engine.errors import ExpansionError

GOALS = ("range", "positive")


@dataclass(frozen=True)
class Split:
    """How far to split. boxes: the most leaves; tol: stop when the hull's excess over the range of f seen is at most
    tol times that range (per output element); seconds: a time budget (None: none); orders: the expansion orders
    certified on every leaf, the tighter bounds kept (None: the model's own order only)."""

    boxes: int = 64
    tol: float = 0.01
    seconds: float | None = 8.0
    orders: tuple[int, ...] | None = None

    def __post_init__(self):
        if isinstance(self.boxes, bool) or not isinstance(self.boxes, int) or self.boxes < 1:
            raise ExpansionError(f"Split(boxes=...) must be a positive integer, got {self.boxes!r}")
        if not self.tol >= 0:
            raise ExpansionError(f"Split(tol=...) must be a non-negative number, got {self.tol!r}")
        if self.seconds is not None and not self.seconds >= 0:
            raise ExpansionError(f"Split(seconds=...) must be a non-negative number or None, got {self.seconds!r}")
        if self.orders is not None:
            orders = tuple(self.orders)
            if not orders or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in orders):
                raise ExpansionError(f"Split(orders=...) must be non-negative integers, got {self.orders!r}")
            object.__setattr__(self, "orders", orders)


def as_split(split) -> Split | None:
    """None / False: no split; True: the default Split(); an int: Split(boxes=int); a Split as it is."""
    if split is None or split is False:
        return None
    if split is True:
        return Split()
    if isinstance(split, Split):
        return split
    if isinstance(split, int):
        return Split(boxes=split)
    raise ExpansionError(f"split must be None, True, a number of boxes or a Split(...), got {split!r}")


@dataclass
class Leaf:
    """A certified sub-box: centre shift and half-widths (n,), the enclosure (lower, upper) and the value of f seen at
    the centre (each shaped like the output), and each variable's share of the enclosure's width (n,) (>= 0)."""

    shift: torch.Tensor
    radius: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    value: torch.Tensor
    share: torch.Tensor


@dataclass
class SplitResult:
    """lower / upper: the hull of the leaves' enclosures (f lies within over the whole box); seen_low / seen_high: the
    least and largest f seen at the leaves' centres (inner bounds of the true range, up to the rounding of f);
    leaves; seconds; stop: "tolerance", "verified", "falsified", "boxes" or "time"; worst: the leaf with the least
    lower bound; witness: the leaf whose centre had the least value seen (a counterexample for goal "positive" when
    that value is <= 0)."""

    lower: torch.Tensor
    upper: torch.Tensor
    seen_low: torch.Tensor
    seen_high: torch.Tensor
    leaves: int
    seconds: float
    stop: str
    worst: Leaf
    witness: Leaf


def _excess(leaf: Leaf, low: torch.Tensor, high: torch.Tensor, goal: str) -> float:
    """How far the leaf's enclosure reaches beyond what is settled: past the seen range relative to its width
    ("range"), or below 0 ("positive"; 0 when the leaf's lower bounds are all positive)."""
    if goal == "positive":
        lower = torch.nan_to_num(leaf.lower, nan=-torch.inf)
        return float((-lower).clamp(min=0).max()) if bool((lower <= 0).any()) else 0.0
    scale = (high - low).clamp(min=torch.finfo(high.dtype).tiny)
    over = torch.maximum(leaf.upper - high, low - leaf.lower).clamp(min=0) / scale
    return float(torch.nan_to_num(over, nan=torch.inf).max())


def _bisect(leaf: Leaf) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The two halves of a leaf along the variable with the largest share (the widest one where no share is known)."""
    share = torch.where(leaf.radius > 0, torch.nan_to_num(leaf.share, nan=torch.inf), -torch.ones_like(leaf.share))
    i = int(share.argmax()) if bool((share > 0).any()) else int(leaf.radius.argmax())
    half = leaf.radius.clone()
    half[i] = leaf.radius[i] / 2
    step = torch.zeros_like(leaf.shift)
    step[i] = half[i]
    return (leaf.shift - step, half), (leaf.shift + step, half)


def branch_and_bound(evaluate, radius: torch.Tensor, split: Split, goal: str = "range",
                     root: Leaf | None = None) -> SplitResult:
    """Split the box |t| <= radius until ``split``'s tolerance, box count or time is met (see the module doc).

    goal "range": tighten the hull; "positive": prove every output > 0 over the box (stop "verified"), or find a centre
    where some output is <= 0 (stop "falsified"); then ``lower`` is the least certified lower bound over the leaves."""
    if goal not in GOALS:
        raise ExpansionError(f"goal must be one of {GOALS}, got {goal!r}")
    start = time.perf_counter()
    leaves = [root if root is not None else evaluate(torch.zeros_like(radius), radius)]
    low, high = leaves[0].value.clone(), leaves[0].value.clone()
    witness = leaves[0]
    evaluated = 1
    stop = "boxes"
    while True:
        scores = [_excess(leaf, low, high, goal) for leaf in leaves]
        worst = max(range(len(leaves)), key=scores.__getitem__)
        if goal == "positive" and bool((low <= 0).any()):
            stop = "falsified"
            break
        if scores[worst] <= (0.0 if goal == "positive" else split.tol):
            stop = "verified" if goal == "positive" else "tolerance"
            break
        if len(leaves) >= split.boxes:
            stop = "boxes"
            break
        elapsed = time.perf_counter() - start
        if split.seconds is not None and elapsed + 2 * elapsed / evaluated > split.seconds:
            stop = "time"  # two more leaves, at the mean cost so far, would not fit
            break
        parent = leaves.pop(worst)
        for shift, half in _bisect(parent):
            leaf = evaluate(shift, half)
            evaluated += 1
            leaves.append(leaf)
            if float(leaf.value.min()) < float(witness.value.min()):
                witness = leaf
            low, high = torch.minimum(low, leaf.value), torch.maximum(high, leaf.value)
    lower = torch.stack([leaf.lower for leaf in leaves]).amin(0)
    upper = torch.stack([leaf.upper for leaf in leaves]).amax(0)
    least = min(leaves, key=lambda leaf: float(torch.nan_to_num(leaf.lower, nan=-torch.inf).min()))
    return SplitResult(lower, upper, low, high, len(leaves), time.perf_counter() - start, stop, least, witness)
