"""Ops that exist only in rewritten graphs: ``linear_1d``, one 1-d linear layer (``run.program.fuse_linear_layers``).

Declared like any other op: its exact rule is one matmul of the jet's coefficients; its composite (the five aten ops
``nn.Linear`` records on one point) serves every other case and the certified path.
"""

from __future__ import annotations

import torch

from hope_engine.algebra.jet import Jet, add_constant, add_to_value, fits, holds
from hope_engine.ops.rules import defrule, lookup
from hope_engine.ops.spec import Cost, caller


def linear_1d(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, *, transposed: bool = False,
              fits: bool = False) -> torch.Tensor:
    """squeeze(mm(unsqueeze(x, 0), w^T if transposed else w), 0) + bias, as the aten ops compute it."""
    y = torch.ops.aten.mm.default(x.unsqueeze(0), w.t() if transposed else w).squeeze(0)
    return y if bias is None else y + bias


def _composite(call, op, x, w, bias=None, *, transposed=False, fits=False):
    """The layer as the aten ops it replaces."""
    y = call("squeeze.dim", call("mm", call("unsqueeze", x, 0), call("t", w) if transposed else w), 0)
    return y if bias is None else call("add.Tensor", y, bias)


def vector_linear(x: Jet, w: torch.Tensor, bias: torch.Tensor | None, bias_fits: bool = False) -> Jet:
    """squeeze(mm(unsqueeze(x, 0), w), 0) + bias for a jet x of one vector: the coefficients (M, in) times w, the bias
    added to the value row of that fresh product (as the add rule adds it after a matmul). ``bias_fits``: the graph's
    shapes and dtypes show that the bias has the output's shape and dtype."""
    out = Jet(torch.matmul(x.c, w), x.basis)
    if bias is None:
        return out
    if bias_fits or (bias.dtype == out.c.dtype and fits(bias.shape, out.c.shape[1:])):
        return Jet(add_to_value(out.c, bias), x.basis)
    return add_constant(out, bias)


@defrule(linear_1d, composite=_composite, cost=Cost(gemm=True))
def _linear_1d(ctx, op, x, w, bias=None, *, transposed=False, fits=False):
    if type(x) is Jet and isinstance(w, torch.Tensor) and (bias is None or isinstance(bias, torch.Tensor)):
        return vector_linear(x, w.t() if transposed else w, bias, fits)
    return _composite(caller(lookup, holds, ctx), op, x, w, bias, transposed=transposed, fits=fits)
