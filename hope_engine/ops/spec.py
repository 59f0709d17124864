"""One declaration per op (``OpSpec``): everything the engine's paths need to know about an aten op.

The exact rule (how the op acts on jets) is the declaration's ``exact``; the other paths derive theirs from the same
entry instead of keeping tables of their own:

- certified (Taylor models, ``hope_engine.certified.rules``): an analytic op with a derivative ``bound`` is composed
  with the Lagrange remainder bound f^(K+1)(xi) / (K+1)! <= bound(lo, hi, K+1); an op with a ``composite`` runs that
  composition of other declared ops on Taylor models; other ops need a certified rule registered by name there;
- certified, linear ops: a "move" (entries moved, copied or set to 0) applies itself to the remainders; a "sum" (weights
  in [0, 1]) too, plus the rounding of its sums;
- the paper's rule (``hope_engine.methods.paper_rule``): an ``elementwise`` op (one argument carries the jet, the result
  has its shape) is an activation, whose univariate series f^(m)(u0) / m! is its exact rule on u0 + t; a "move" is a
  0/1 matrix (v_k passes back through its transpose), ``entries`` "reshape" passes v_k back reshaped, and "reshape" or
  "injective" ops may sit in the first layer (where the mixed partials are formed); ops torch tags pointwise (and
  the elementwise ones) make up the groups of pointwise ops of one value it takes as one activation;
- the cost model (``hope_engine.run.cost``): the declaration's ``cost``.

An op missing what a path needs is refused by name in that path. ``declare`` refuses an op declared twice (also
through its packet or an overload) and names that are not aten ops.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch

aten = torch.ops.aten

Rule = Callable[..., object]


@dataclass(frozen=True)
class Cost:
    """How an op's jet rule spends time and memory, per coefficient (``hope_engine.run.cost``).

    alias: returns a view (no new coefficients); bilinear: a product through the table when both arguments carry jets
    (mm, conv); gemm: a matrix product over the coefficients; product: one pass over the product table when two
    arguments carry jets (mul); products (+ products_per_order x order): passes of a recurrence or composition;
    copies: coefficient-sized temporaries besides the output (None: one where an argument is broadcast);
    weighted: its recurrence weights terms by degree (one more pass on a total basis)."""

    alias: bool = False
    bilinear: bool = False
    gemm: bool = False
    product: bool = False
    products: float = 0.0
    products_per_order: float = 0.0
    copies: int | None = None
    weighted: bool = False


NO_COST = Cost()
ALIAS = Cost(alias=True)


def cost_of(target) -> Cost:
    """The declared cost of an fx node target (getitem: an alias; an undeclared op: nothing)."""
    if target is operator.getitem:
        return ALIAS
    spec = spec_of(target)
    return spec.cost if spec is not None else NO_COST


@dataclass(frozen=True)
class OpSpec:
    """What the engine knows about one op (see the module text)."""

    op: object                       # the aten OpOverloadPacket (or OpOverload, or a Python function such as getitem)
    family: str                      # "linear", "value", "analytic", "rule"
    exact: Rule                      # rule(ctx, op, *args, **kwargs) on jets
    elementwise: bool = False        # one jet argument, result of its shape: an activation for the paper rule
    fn: Callable | None = None       # analytic: the jet function f(jet) -> jet
    bound: Callable | None = None    # analytic: (lo, hi, n) -> D >= sup |f^(n)| / n! over [lo, hi]
    range: tuple | None = None       # analytic: the function's range (a certified remainder is capped to it)
    composite: Callable | None = None  # (call, *args, **kwargs) -> value: the op as other declared ops
    linear: str | None = None        # linear ops: "move" (entries moved, copied or zeroed), "sum" (weights in [0, 1])
    entries: str | None = None       # "reshape": the jet argument's entries in the same order (views of all of it,
    #                                  copies, float casts); "injective": each result entry one argument entry times a
    #                                  number, each argument entry in at most one result entry (transposes, slices,
    #                                  flips, negation); None: not claimed (the paper rule's reshapes and first layer)
    cost: Cost = NO_COST

    @property
    def name(self) -> str:
        return op_name(self.op)


SPECS: dict[object, OpSpec] = {}


class DuplicateRuleError(RuntimeError):
    """An op declared twice (or an overload next to its packet): every op has exactly one declaration."""


class UnknownOpError(ValueError):
    """A name that is not an aten op was declared (a typo would otherwise be skipped silently)."""


def resolve(op):
    """The aten op named ``op`` (a string), or ``op`` itself; an unknown name is refused."""
    if not isinstance(op, str):
        return op
    if not hasattr(aten, op):
        raise UnknownOpError(f"'{op}' is not an aten op (torch.ops.aten.{op} does not exist): check the name")
    return getattr(aten, op)


def op_name(op) -> str:
    if op is operator.getitem:
        return "getitem"
    packet = getattr(op, "overloadpacket", op)
    return getattr(packet, "__name__", str(packet))


def declare(spec: OpSpec) -> object:
    """The one way into the registry: refuses an op that is declared already (also through its packet or one of its
    overloads, which ``spec_of`` would otherwise pick silently)."""
    key = spec.op
    packet = getattr(key, "overloadpacket", None)
    clash = key if key in SPECS else packet if packet in SPECS else next(
        (k for k in SPECS if getattr(k, "overloadpacket", None) is key), None)
    if clash is not None:
        old = SPECS[clash]
        raise DuplicateRuleError(f"{key} already has a rule ({old.family}, "
                                 f"{getattr(old.exact, '__name__', old.exact)} for {clash}): every op has exactly "
                                 "one declaration")
    SPECS[key] = spec
    return key


def spec_of(target) -> OpSpec | None:
    """The declaration of an op (an overload falls back to its packet's)."""
    spec = SPECS.get(target)
    if spec is None:
        spec = SPECS.get(getattr(target, "overloadpacket", None))
    return spec


def declared(predicate: Callable[[OpSpec], bool]) -> set:
    """The declared ops (packets, or the Python functions graphs hold) whose declaration satisfies ``predicate``."""
    return {op for op, s in SPECS.items() if predicate(s)}


def elementwise_ops() -> set:
    """The declared ops that act elementwise on one jet argument (packets)."""
    return declared(lambda s: s.elementwise)


def pointwise(op) -> bool:
    """Whether torch tags ``op`` (an overload, or any overload of a packet) pointwise: it acts entry by entry."""
    tags = getattr(op, "tags", None)
    if tags is None and isinstance(op, torch._ops.OpOverloadPacket):
        tags = set().union(*(getattr(op, name).tags for name in op.overloads()))
    return torch.Tag.pointwise in (tags or ())


def overload(name: str):
    """The aten op ``name`` ("squeeze.dim", or "exp" for its ``default``, else its first overload), which every rule
    accepts as ``op``."""
    base, _, which = name.partition(".")
    packet = resolve(base)
    if which:
        return getattr(packet, which)
    return getattr(packet, "default", None) or getattr(packet, packet.overloads()[0])


def caller(lookup: Callable, carries: Callable, ctx) -> Callable:
    """``call(name, *args, **kwargs)`` for a composite: the declared op's rule from ``lookup`` where an argument
    carries the expansion (``carries``), the op itself on plain values otherwise."""
    def call(name, *args, **kwargs):
        target = overload(name)
        if not (any(carries(a) for a in args) or any(carries(v) for v in kwargs.values())):
            return target(*args, **kwargs)
        rule = lookup(target)
        if rule is None:
            raise UnknownOpError(f"a composite calls {name}, which has no rule on this path")
        return rule(ctx, target, *args, **kwargs)

    return call
