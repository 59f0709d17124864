"""What the engine knows about each aten op: one declaration per op (``spec.OpSpec``), by family (``rules``),
compositions of declared ops (``composites``) and the ops of rewritten graphs (``fused``). Importing the package loads
every declaration."""

from hope_engine.ops import fused, rules  # noqa: F401  (the declarations register themselves)
