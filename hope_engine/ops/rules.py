"""The rule table: for each aten op, how it acts on jets (its declaration's exact rule, ``spec.OpSpec``).

A rule receives the interpreter context and the op's arguments, where every argument that depends on the expansion
variables is a ``Jet`` and everything else is a plain value. This module is the registry (``defop``, ``defrule``,
``lookup``); the rules are declared by family, each declaration next to its rule:

- ``linear``: ops linear in the jet arguments (views, copies, sums, pads, interpolations: ``deflinear``), applied
  to every coefficient at once; an affine op's constant part goes to coefficient 0;
- ``arithmetic``: sums coefficient-wise, products of two jets through the basis' product table, quotients, powers,
  matrix products;
- ``analytic``: analytic elementwise functions by recurrences (``defanalytic``), analytic functions of two tensors;
- ``piecewise``: piecewise functions by the branch the value takes (relu, clamp, where, maximum...);
- ``selections``: ops whose value picks the entries (max pooling, amax, sort, topk, median, scatters);
- ``value_only``: non-differentiable ops (comparisons, rounding, argmax, integer casts, detach: ``defvalue``) on the
  value only: their result is a constant;
- ``layers``: convolutions, pooling, softmax, variance, losses and distances;
- ``helpers``: what the families share.

Importing any module of ``hope_engine.ops`` loads every declaration (the package imports the families).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

from hope_engine.ops.spec import NO_COST, Cost, OpSpec, Rule, declare, resolve


@dataclass
class Context:
    """What a rule may need besides its arguments: the basis and a record of one-sided (kink) expansions."""

    basis: object
    kinks: dict = field(default_factory=dict)

    def note_kink(self, what: str, count: int) -> None:
        if count:
            self.kinks[what] = self.kinks.get(what, 0) + int(count)


RULES: dict[object, Rule] = {}  # op -> its exact rule (its declaration's ``exact``, ``spec.SPECS``), kept by ``defop``
VALUE_ONLY: set = set()  # the ops declared by ``value_only.defvalue`` (their result does not depend on the variables)


def defop(op, rule: Rule, family: str = "rule", **declared):
    """The one way into the registry: declares op (``spec.declare``, which refuses a second declaration and unknown
    names) with ``rule`` as its exact rule; ``declared``: the declaration's other fields (``OpSpec``)."""
    key = declare(OpSpec(resolve(op), family, rule, **declared))
    RULES[key] = rule
    return key


def defrule(*ops, elementwise: bool = False, composite=None, linear: str | None = None, entries: str | None = None,
            cost: Cost = NO_COST):
    """Decorator: the function is the exact rule of every op named (``rule(ctx, op, *args, **kwargs)``).
    elementwise: one argument carries the jet and the result has its shape (the paper rule's activations);
    composite: ``(call, *args, **kwargs)``, the op as other declared ops (the certified path runs it);
    linear: "move" or "sum" for an op linear in the jet; entries: "reshape" or "injective" (see ``spec.OpSpec``);
    cost: see ``spec.Cost``."""

    def deco(fn: Rule) -> Rule:
        for op in ops:
            defop(op, fn, elementwise=elementwise, composite=composite, linear=linear, entries=entries, cost=cost)
        return fn

    return deco


def lookup(target) -> Rule | None:
    """The rule for an fx node target (an OpOverload, its packet, or a Python function)."""
    rule = RULES.get(target)
    if rule is None:
        rule = RULES.get(getattr(target, "overloadpacket", None))
    return rule


def is_value_only(target) -> bool:
    return target in VALUE_ONLY or getattr(target, "overloadpacket", None) in VALUE_ONLY


# the one Python function the graphs hold: an element of a multi-output op's result
defop(operator.getitem, lambda ctx, op, seq, i: seq[i])
