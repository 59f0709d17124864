"""What the engine knows about each aten op: one declaration per op (``spec.OpSpec``), registered in ``rules`` by the
family modules (``linear``, ``arithmetic``, ``analytic``, ``piecewise``, ``selections``, ``value_only``, ``layers``;
what they share in ``helpers``), compositions of declared ops (``composites``) and the ops of rewritten graphs
(``fused``). Importing the package (any module of it) loads every declaration."""

from hope_engine.ops import (  # noqa: F401  (the declarations register themselves)
    analytic,
    arithmetic,
    fused,
    layers,
    linear,
    piecewise,
    rules,
    selections,
    value_only,
)
