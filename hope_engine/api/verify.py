"""Every expansion checks itself against the model's own torch run at the point, before it is returned.

Two checks, on the polynomial P as returned (after the output selection):

- value: P(x0) = f(x0), f run as torch runs it (a plain forward, in eval mode as the expansion is);
- gradient: for a random weighting w of the outputs, sum_o w_o dP_o/dx = d(sum_o w_o f_o)/dx at x0, the right side by
  one reverse-mode pass of torch's autograd (so detach, no_grad blocks and integer casts are constants there too).
  For a batch, P holds each row's derivatives in its own row's input; autograd's gradient of row b's input collects
  every row that reads it, so rows that interact (batch statistics, a norm over the batch) show as a mismatch.

Both agree up to rounding whenever the traced graph computes what the model computes near x0, so a stale graph, an
op whose torch semantics the engine does not follow, randomness or batch coupling raise ``VerificationError`` instead
of returning a number. Where torch's autograd cannot run the model (an op without a derivative), the value check runs
alone; ``TaylorPolynomial.checks`` says which ran. The residual risk: a wrong graph that still matches the value and
the first derivatives at x0 (only higher orders differ); the guard (``capture.guard``) covers stale state there.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from hope_engine.algebra.polynomial import TaylorPolynomial, select_output
from hope_engine.caches import memoize
from hope_engine.capture import trace
from hope_engine.errors import VerificationError

# relative tolerance by dtype (the graph's decomposed ops and the model's fused kernels round differently; torch's
# own backward of a few kernels rounds constants to float32), and an absolute one of 256 ulps of 1 (cancellation of
# values of order 1 to a tiny output)
_RTOL = {torch.float64: 1e-6, torch.float32: 5e-4}
_RTOL_LOW = 5e-2  # half, bfloat16
_ATOL_ULPS = 256


def verify(model, x0: torch.Tensor, poly: TaylorPolynomial, output=None, gradient: bool = True,
           rows_interact: bool = False) -> tuple[str, ...]:
    """The checks that ran (``("value", "gradient")`` or ``("value",)``); raises ``VerificationError`` on a mismatch.

    model: the one-tensor function the expansion traced (``PreparedCall.model``); output: the selection applied to
    the polynomial (None: the whole output). gradient: False where the point sits on a kink (one-sided: autograd's
    convention there need not be the branch the expansion took). rows_interact: the batch's rows read each other
    (expanded row by row): each row's gradient is taken in its own input alone, one backward pass per row."""
    with torch.inference_mode(False):  # (under a caller's inference_mode autograd would record nothing to check)
        return _verify(model, x0, poly, output, gradient, rows_interact)


def _verify(model, x0: torch.Tensor, poly: TaylorPolynomial, output, gradient: bool,
            rows_interact: bool) -> tuple[str, ...]:
    lead = 1 if poly.batched else 0
    dtype = poly.coefficients.dtype
    x = x0.detach().clone().requires_grad_(gradient and x0.is_floating_point())
    with _model_modes(model):
        try:
            with torch.enable_grad() if x.requires_grad else torch.no_grad():
                y = model(x.clone())  # (a clone: the model may write into its input)
        except RuntimeError:  # the model does not run under autograd (inference tensors saved for backward...)
            x.requires_grad_(False)
            with torch.no_grad():
                y = model(x.clone())
    y = _one_tensor(y)
    if y is None or not y.is_floating_point():
        return ()
    y = select_output(y, output, lead)
    p0 = poly.coefficients[0]
    if y.shape != p0.shape:
        return ()  # (a reshaped output: nothing to compare element by element)
    rtol = _RTOL.get(dtype, _RTOL_LOW)
    _compare(p0, y.detach().to(dtype), rtol, "value")
    if not (gradient and x.requires_grad and y.requires_grad and poly.order >= 1):
        return ("value",)
    w = _weights(tuple(y.shape)).to(y.dtype)
    try:
        g = _row_gradients(y, x, w.to(y.device)) if rows_interact else _gradient(y, x, w.to(y.device))
    except RuntimeError:  # an op torch cannot differentiate: the value check stands alone
        return ("value",)
    var = poly.variables.to(g.device)
    if poly.batched and y.dim() >= 1 and y.shape[0] == x0.shape[0]:  # row b's derivatives in row b's input
        mine = _weighted_gradient(poly, w.to(dtype).to(p0.device))
        theirs = g.reshape(g.shape[0], -1)[:, var]
    else:  # one polynomial (or an output without the batch axis): variable i is seeded in every row of the input
        mine = (poly.coefficients[1:1 + poly.n] * w.to(dtype).to(p0.device)).reshape(poly.n, -1).sum(-1)
        theirs = g.reshape(g.shape[0], -1)[:, var].sum(0) if poly.batched else g.reshape(-1)[var]
    _compare(mine, theirs.detach().to(dtype), rtol, "gradient", batched=poly.batched)
    return ("value", "gradient")


@contextlib.contextmanager
def _model_modes(model):
    """The modes the expansion ran the model in (eval, the model left untouched; serialized with tracing)."""
    modules = trace.modules_of(model)
    with (trace.untouched(model, modules), trace.eval_mode(model, modules), torch.jit.optimized_execution(False),
          _buffers_kept(modules)):
        yield


@contextlib.contextmanager
def _buffers_kept(modules: list):
    """Buffers a forward writes into (a counter, running statistics) get their values back afterwards: checking an
    expansion must not change the user's model."""
    saved = [(b, b._version, b.detach().clone()) for m in modules for b in m.buffers(recurse=False)]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, version, value in saved:
                if b._version != version:
                    b.copy_(value)


@memoize("self-check output weights", max_entries=16)
def _weights(shape: tuple) -> torch.Tensor:
    """Fixed random output weights of a shape (standard normal, seed 0): the same for every call."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _one_tensor(y):
    if isinstance(y, torch.Tensor):
        return y
    leaves = [t for t in (y if isinstance(y, (list, tuple)) else [y]) if isinstance(t, torch.Tensor)]
    return leaves[0] if len(leaves) == 1 else None


def _gradient(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, retain: bool = False) -> torch.Tensor:
    """d(sum w y)/dx by torch's autograd."""
    (g,) = torch.autograd.grad(y, x, grad_outputs=w, allow_unused=True, retain_graph=retain)
    return torch.zeros_like(x) if g is None else g


def _row_gradients(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Row b of the result: d(sum_o w_bo y_bo)/dx_b, the other rows' outputs left out."""
    rows = []
    for b in range(x.shape[0]):
        wb = torch.zeros_like(w)
        wb[b] = w[b]
        rows.append(_gradient(y, x, wb, retain=b + 1 < x.shape[0])[b])
    return torch.stack(rows)


def _weighted_gradient(poly: TaylorPolynomial, w: torch.Tensor) -> torch.Tensor:
    """sum_o w_bo dP_bo/dx_bi at x0 for each row b and variable i: (B, n) (coefficients 1..n are degree 1)."""
    first = poly.coefficients[1:1 + poly.n]  # (n, B, *out)
    return (first * w.unsqueeze(0)).reshape(poly.n, first.shape[1], -1).sum(-1).T


def _compare(mine: torch.Tensor, theirs: torch.Tensor, rtol: float, check: str, batched: bool = False) -> None:
    """Raise unless |mine - theirs| <= rtol max|.| + atol entrywise. Entries not finite on either side are not
    compared: the engine keeps a constant where autograd's chain rule gives 0 * inf (a singular point that does not
    move), and a NaN is the polynomial's own to report. (NumPy: a dozen tiny torch ops cost more than the check.)"""
    if mine.numel() <= 64:  # (plain floats: faster than any array library at this size)
        _compare_few(mine.reshape(-1).tolist(), theirs.reshape(-1).tolist(), rtol, check, batched,
                     _ATOL_ULPS * torch.finfo(mine.dtype).eps)
        return
    a = mine.detach().cpu().double().numpy().reshape(-1)
    b = theirs.detach().cpu().double().numpy().reshape(-1)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(a) & np.isfinite(b)
        if not finite.any():
            return
        scale = max(np.abs(a[finite]).max(), np.abs(b[finite]).max())
        bad = finite & (np.abs(a - b) > rtol * scale + _ATOL_ULPS * torch.finfo(mine.dtype).eps)
    if not bad.any():
        return
    where = int(np.flatnonzero(bad)[0])
    raise VerificationError(_message(check, float(a[where]), float(b[where]), int(bad.sum()), bad.size, batched),
                            check)


def _compare_few(a: list, b: list, rtol: float, check: str, batched: bool, atol: float) -> None:
    pairs = [(u, v) for u, v in zip(a, b) if math.isfinite(u) and math.isfinite(v)]
    if not pairs:
        return
    tol = rtol * max(max(abs(u), abs(v)) for u, v in pairs) + atol
    bad = [(u, v) for u, v in pairs if abs(u - v) > tol]
    if bad:
        raise VerificationError(_message(check, bad[0][0], bad[0][1], len(bad), len(a), batched), check)


def _message(check: str, mine: float, theirs: float, count: int, total: int, batched: bool) -> str:
    what = ("the value P(x0)" if check == "value" else
            "a first derivative (sum of output-weighted gradients)")
    causes = ["state the forward reads changed in a way the graph cache did not see (the expansion was retried "
              "on a fresh trace and still differs)",
              "an op whose torch semantics the engine does not follow",
              "randomness in forward"]
    if check == "gradient" and batched:
        causes.insert(0, "rows of the batch interact (batch statistics, a norm or softmax over the batch axis)")
    return (f"the expansion does not match the model's own torch run at the point: {what} is {mine:.10g}, torch "
            f"gives {theirs:.10g} ({count} of {total} entries differ beyond rounding). Likely causes: "
            + "; ".join(causes) + ". No result is returned rather than a wrong one; please report the model if "
            "none applies. verify=False skips this check (and the guarantee).")
