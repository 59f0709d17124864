"""The rule table has one registration path (``rules.defop`` and its helpers): an op registered twice is refused, no op
is both ruled and decomposed before tracing, and every rule can be reached by ``rules.lookup``."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as tF
from support.autograd import assert_matches_autograd

from hope_engine.capture import trace
from hope_engine.ops import analytic, linear, rules, value_only
from hope_engine.ops.spec import Cost, DuplicateRuleError

aten = torch.ops.aten
D = torch.float64

# ops both ruled and in trace.DECOMPOSITIONS, each with the reason (none today)
RULED_AND_DECOMPOSED: dict[object, str] = {}


def _dummy(ctx, op, *args, **kwargs):
    raise AssertionError("never called")


@pytest.mark.parametrize("register", [
    lambda: linear.deflinear("view"),
    lambda: value_only.defvalue("gt"),
    lambda: analytic.defanalytic("exp", lambda x: x, cost=Cost()),
    lambda: rules.defrule("relu")(_dummy),
    lambda: rules.defop(aten.add.Tensor, _dummy),  # an overload next to its packet's rule
    lambda: linear.deflinear("permute", "permute"),
])
def test_registering_an_op_twice_raises(register):
    before = dict(rules.RULES)
    with pytest.raises(DuplicateRuleError, match="already has a rule"):
        register()
    assert rules.RULES.keys() == before.keys() or set(rules.RULES) - set(before) <= {aten.permute}
    rules.RULES.clear()
    rules.RULES.update(before)


def test_a_new_op_is_one_line_and_found_by_lookup():
    def my_op(x):
        return x

    try:
        linear.deflinear(my_op)
        assert rules.lookup(my_op) is linear.linear
        with pytest.raises(DuplicateRuleError):
            rules.defrule(my_op)(_dummy)
    finally:
        rules.RULES.pop(my_op, None)


def test_a_packet_after_one_of_its_overloads_raises():
    key = aten.lgamma.default if aten.lgamma not in rules.RULES else None
    if key is None:  # lgamma ruled as a packet: its overload clashes the other way round
        with pytest.raises(DuplicateRuleError):
            rules.defop(aten.lgamma.default, _dummy)
        return
    try:
        rules.defop(key, _dummy)
        with pytest.raises(DuplicateRuleError):
            rules.defop(aten.lgamma, _dummy)
    finally:
        rules.RULES.pop(key, None)


def test_rules_py_writes_the_table_in_one_place():
    """Only ``defop`` assigns into RULES (no loops or lists writing it on the side), in any module of the ops package;
    only ``defvalue`` adds to VALUE_ONLY, through ``defop``."""
    sources = {p.name: p.read_text() for p in Path(inspect.getfile(rules)).parent.glob("*.py")}
    writes = {name: re.findall(r"RULES\[[^\]]*\]\s*=", s) for name, s in sources.items()}
    assert {name: w for name, w in writes.items() if w} == {"rules.py": ["RULES[key] ="]}, writes
    adds = {name: s.count("VALUE_ONLY.add") for name, s in sources.items() if "VALUE_ONLY.add" in s}
    assert adds == {"value_only.py": 1} and "VALUE_ONLY.add(defop(" in sources["value_only.py"], adds


def test_no_op_is_both_ruled_and_decomposed():
    """A decomposed op never reaches the rule table in the exact variant: its rule would be dead code there."""
    both = {}
    for op in trace.DECOMPOSITIONS:
        packet = getattr(op, "overloadpacket", None)
        for key in (op, packet):
            if key in rules.RULES and key not in RULED_AND_DECOMPOSED:
                both[str(op)] = rules.RULES[key].__name__
    assert not both, f"ops with a rule that DECOMPOSITIONS rewrites away: {both}"


def _overloads(packet) -> list:
    return [getattr(packet, name) for name in packet.overloads()]


def test_every_rule_is_reachable():
    """Every key is a real op; lookup returns its rule for every overload; some overload survives decomposition."""
    unreachable = {}
    for key, rule in rules.RULES.items():
        if isinstance(key, torch._ops.OpOverloadPacket):
            overloads = _overloads(key)
            kept = [o for o in overloads if o not in trace.DECOMPOSITIONS]
            if not kept:
                unreachable[str(key)] = "every overload is decomposed"
            wrong = [str(o) for o in overloads if rules.lookup(o) is not rule]
            if wrong:
                unreachable[str(key)] = f"lookup gives another rule for {wrong}"
        elif isinstance(key, torch._ops.OpOverload):
            if key in trace.DECOMPOSITIONS:
                unreachable[str(key)] = "decomposed"
            if rules.lookup(key) is not rule:
                unreachable[str(key)] = "lookup gives another rule"
        else:
            assert callable(key), key
            assert rules.lookup(key) is rule
    assert not unreachable, unreachable


def test_value_only_ops_are_those_defvalue_registered():
    for key in rules.VALUE_ONLY:
        assert rules.RULES[key] is value_only.value_only
        assert all(rules.is_value_only(o) for o in _overloads(key))
    assert not rules.is_value_only(aten.add.Tensor)


def test_formerly_shadowed_rules_are_the_ones_that_run():
    """view/reshape, constant_pad_nd and avg_pool were listed as linear and then overwritten: their own rules run."""
    assert rules.lookup(aten.view.default).__name__ == "_view"
    assert rules.lookup(aten.constant_pad_nd.default).__name__ == "_constant_pad"
    assert rules.lookup(aten.avg_pool2d.default).__name__ == "_avg_pool"


# the ops whose decompositions were dropped in favour of their rules: exact through the rule
KEPT_RULES = {
    "baddbmm": lambda x: torch.baddbmm(x[:4].reshape(1, 2, 2), x.reshape(1, 2, 3), x.reshape(1, 3, 2).sin()),
    "rsub": lambda x: torch.rsub(x, 1.5) * x,
    "channel_shuffle": lambda x: tF.channel_shuffle(x.reshape(1, 6, 1, 1), 2).sin(),
    "pixel_unshuffle": lambda x: tF.pixel_unshuffle(x[:4].reshape(1, 1, 2, 2), 2).exp(),
    "im2col_col2im": lambda x: tF.fold(tF.unfold(x.reshape(1, 1, 2, 3), 2), (2, 3), 2).tanh(),
    "upsample_bilinear2d": lambda x: tF.interpolate(x.reshape(1, 1, 2, 3), scale_factor=2, mode="bilinear").sin(),
}


@pytest.mark.parametrize("name", sorted(KEPT_RULES))
def test_kept_rules_match_autograd(name):
    x0 = torch.tensor([0.3, -0.7, 1.1, 0.5, -0.2, 0.9], dtype=D)
    seen = []
    original = dict(rules.RULES)
    packet = getattr(aten, name.split("_col2im")[0])
    rules.RULES[packet] = lambda ctx, op, *a, _r=original[packet], **k: seen.append(op) or _r(ctx, op, *a, **k)
    try:
        assert_matches_autograd(KEPT_RULES[name], x0, 3, variables=[0, 2])
    finally:
        rules.RULES.clear()
        rules.RULES.update(original)
    assert seen, f"the {packet} rule did not run"
