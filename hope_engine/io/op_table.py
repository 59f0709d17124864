"""The table of every declared op and the paths that support it, generated from the declarations (docs/ops.md).

Run ``python -m hope_engine.io.op_table > docs/ops.md``; a test checks the committed page is current.
"""

from __future__ import annotations

import sys

from hope_engine.certified import rules as certified_rules
from hope_engine.methods import paper_rule
from hope_engine.ops.spec import SPECS, OpSpec, op_name, pointwise

HEADER = """# Declared ops

Generated from the op declarations in `hope_engine/ops/` by `python -m hope_engine.io.op_table > docs/ops.md` (a test
checks that this page is current). Every op has exactly one declaration; each path derives its rule from it:

- **exact**: the declaration's jet rule (every op listed);
- **certify**: `bound` (a derivative bound: Lagrange remainder), `composite` (a composition of other declared ops run
  on Taylor models), `rule` (a certified rule registered for the op in `hope_engine/certified/rules.py`), or `-`
  (refused by name);
- **paper rule** (`method="hope"`): `activation` (elementwise: its univariate series), `linear` (a backward rule of
  the paper's method), or `-` (refused by name, unless it sits in a group of pointwise ops of one value);
- **windows**: a pointwise op the receptive-field windows of CNN heat maps run;
- **cost**: the class the memory and time estimate uses.
"""


def _certify_path(spec: OpSpec) -> str:
    if spec.bound is not None and spec.fn is not None:
        return "bound"
    if spec.composite is not None:
        return "composite"
    return "rule" if certified_rules.lookup(spec.op) is not None else "-"


def _paper_path(spec: OpSpec) -> str:
    if spec.op in paper_rule.ELEMENTWISE:
        return "activation"
    return "linear" if spec.op in paper_rule.BACKWARD else "-"


def _windows(spec: OpSpec) -> str:
    return "yes" if pointwise(spec.op) else "-"


def _cost(spec: OpSpec) -> str:
    c = spec.cost
    if c.alias:
        return "view"
    parts = [p for p, on in (("gemm", c.gemm), ("bilinear", c.bilinear), ("product", c.product)) if on]
    if c.products or c.products_per_order:
        passes = f"{c.products:g}" if c.products else ""
        if c.products_per_order:
            passes += ("+" if passes else "") + f"{c.products_per_order:g}K"
        parts.append(f"{passes} passes")
    if c.copies:
        parts.append(f"{c.copies} copies")
    if c.weighted:
        parts.append("weighted")
    return ", ".join(parts) or "-"


def rows() -> list[tuple[str, ...]]:
    """(op, family, certify, paper rule, windows, cost) for every declared op, sorted by name."""
    out = []
    for spec in SPECS.values():
        out.append((op_name(spec.op), spec.family, _certify_path(spec), _paper_path(spec), _windows(spec),
                    _cost(spec)))
    return sorted(out)


def markdown() -> str:
    lines = [HEADER, "| op | family | certify | paper rule | windows | cost |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(f"`{r[0]}`" if i == 0 else r[i] for i in range(len(r))) + " |" for r in rows()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
