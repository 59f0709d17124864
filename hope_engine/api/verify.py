"""Every expansion checks itself against the model's own torch run at the point, before it is returned.

Two checks, on the polynomial P as returned (after the output selection):

- value: P(x0) = f(x0), f run as torch runs it (a plain forward, in eval mode as the expansion is);
- gradient: for a random weighting w of the outputs, sum_o w_o dP_o/dx = d(sum_o w_o f_o)/dx at x0, the right side by
  one reverse-mode pass of torch's autograd (so detach, no_grad blocks and integer casts are constants there too).
  For a batch, P holds each row's derivatives in its own row's input; autograd's gradient of row b's input collects
  every row that reads it, so rows that interact (batch statistics, a norm over the batch) show as a mismatch. Which
  output axis holds the batch's points is read from the traced graph (``batch_axis``), not from a coincidence of sizes.

Entry by entry, |mine - torch| <= rtol max(|mine|, |torch|) + 256 ulps of the computation's scale, rtol and the ulp
those of the lowest precision the computation ran in (the coefficients', the output's, autocast's). The scale is first
the largest entry compared (cheap: nearly every check ends there); an entry beyond that is judged again with the
largest magnitude any op of a rerun of the model read or wrote (the cancellation of large values to a small output is
rounding; a small stale entry next to large ones is not). Below float64, an entry still beyond it is judged against
the model run in float64 (a float64 copy of the model, never the model itself, at the point in float64): only an
expansion that also disagrees with that run, beyond the low precision's rounding and 16 times torch's own error there,
is a mismatch (an ill-conditioned float32 model, layer norm at x ~ 1000, is not).

Both agree up to rounding whenever the traced graph computes what the model computes near x0, so a stale graph, an
op whose torch semantics the engine does not follow, randomness or batch coupling raise ``VerificationError`` instead
of returning a number. Where torch's autograd cannot run the model (an op without a derivative), the value check runs
alone; ``TaylorPolynomial.checks`` says which ran. The model is run as tracing runs it (``trace.running``) and left as
it was: parameters, buffers and tensor attributes its forward writes into (the trace records whether it does) get
their values back. The residual risk: a wrong graph that still matches the value and the first derivatives at x0
(only higher orders differ); the guard (``capture.guard``) covers stale state there.
"""

from __future__ import annotations

import copy
import math
import types
import weakref

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from hope_engine.algebra.polynomial import TaylorPolynomial, select_output
from hope_engine.caches import memoize
from hope_engine.capture import batch_axis, sessions, trace
from hope_engine.errors import VerificationError

# relative tolerance by dtype (the graph's decomposed ops and the model's fused kernels round differently; torch's
# own backward of a few kernels rounds constants to float32), and the floor: 256 ulps of the computation's scale
_RTOL = {torch.float64: 1e-6, torch.float32: 5e-4}
_RTOL_LOW = 5e-2  # half, bfloat16
_ATOL_ULPS = 256
_TORCH_ERROR = 16  # below float64: how many times torch's own error the expansion may be off the float64 run


def verify(model, x0: torch.Tensor, poly: TaylorPolynomial, output=None, gradient: bool = True,
           rows_interact: bool = False, traced=None) -> tuple[str, ...]:
    """The checks that ran (``("value", "gradient")`` or ``("value",)``); raises ``VerificationError`` on a mismatch.

    model: the one-tensor function the expansion traced (``PreparedCall.model``); output: the selection applied to
    the polynomial (None: the whole output). gradient: False where the point sits on a kink (one-sided: autograd's
    convention there need not be the branch the expansion took). rows_interact: the batch's rows read each other
    (expanded row by row): each row's gradient is taken in its own input alone. traced: the graph the expansion ran
    (``trace.TracedModel``: whether the forward writes into the model's state, which output axis holds the points);
    None (the paper's rule): every state tensor is kept, and the sizes decide."""
    check = _Check(model, x0, poly, output, rows_interact, traced)
    if not torch.is_inference_mode_enabled():
        return check.run(gradient)
    with torch.inference_mode(False):  # (under a caller's inference_mode autograd would record nothing to check)
        return check.run(gradient)


class _Check:
    """One self-check: the model's run at the point, and the rescues of an entry beyond the cheap tolerance."""

    def __init__(self, model, x0: torch.Tensor, poly: TaylorPolynomial, output, rows_interact: bool, traced):
        self.model, self.x0, self.poly, self.output, self.traced = model, x0, poly, output, traced
        self.rows_interact = rows_interact
        self.lead = 1 if poly.batched else 0
        self.per_row = False
        self.weights: torch.Tensor | None = None
        self.tolerance: _Tolerance | None = None

    def run(self, gradient: bool) -> tuple[str, ...]:
        poly, x0 = self.poly, self.x0
        p0 = poly.coefficients[0]
        want = gradient and x0.is_floating_point() and poly.order >= 1
        y, x = self._forward(self.model, x0, want, own=True)
        if y is None or y.shape != p0.shape:
            return ()  # (no floating output, or a reshaped one: nothing to compare element by element)
        self.tolerance = _tolerance(x0.device.type, p0.dtype, y.dtype)
        self._judge("value", p0, y.detach())
        if not (want and x.requires_grad and y.requires_grad):
            return ("value",)
        # row b's derivatives in row b's input, or (an output without the batch axis) variable i seeded in every row
        self.per_row = poly.batched and (self.rows_interact or (
            y.dim() >= 1 and y.shape[0] == x0.shape[0] and batch_axis.rows_are_points(self.traced, self.output)))
        self.weights = _weights(tuple(y.shape))
        try:
            theirs = self._gradient(y, x)
        except RuntimeError:  # an op torch cannot differentiate: the value check stands alone
            return ("value",)
        self._judge("gradient", self._mine(), theirs)
        return ("value", "gradient")

    # -- the model's run
    def _forward(self, model, x0: torch.Tensor, want: bool, own: bool) -> tuple:
        """(the selected output, the point as run): ``own`` is the user's model (its state kept), else a copy."""
        x = (x0.detach() if x0.requires_grad else x0).clone()
        if want:
            x.requires_grad_()
        with _model_modes(model, self.traced if own else False):
            try:
                with torch.enable_grad() if want else torch.no_grad():
                    y = model(x.clone() if want else x)  # (a clone: the model may write into its input)
            except RuntimeError:  # the model does not run under autograd (inference tensors saved for backward...)
                if not want:
                    raise
                x.requires_grad_(False)
                with torch.no_grad():
                    y = model(x.clone())
        y = _one_tensor(y)
        if y is None or not y.is_floating_point():
            return None, x
        return select_output(y, self.output, self.lead), x

    def _gradient(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Autograd's side of the gradient check: (B, n) per row, else (n,)."""
        w = self.weights.to(dtype=y.dtype, device=y.device)
        g = _row_gradients(y, x, w) if self.rows_interact else _gradient(y, x, w)
        var = self.poly.variables.to(g.device)
        if not self.poly.batched:
            return g.reshape(-1)[var]
        g = g.reshape(g.shape[0], -1)[:, var]
        return g if self.per_row else g.sum(0)

    def _mine(self) -> torch.Tensor:
        """The polynomial's side: sum_o w_o dP_o/dx_i at x0 ((B, n) per row; coefficients 1..n are degree 1)."""
        poly = self.poly
        first = poly.coefficients[1:1 + poly.n]
        w = self.weights.to(dtype=first.dtype, device=first.device)
        if self.per_row:
            return (first * w.unsqueeze(0)).reshape(poly.n, first.shape[1], -1).sum(-1).T
        return (first * w).reshape(poly.n, -1).sum(-1)

    def _measure(self, model, x0: torch.Tensor, check: str, own: bool):
        """torch's side of ``check`` from a run of ``model`` at ``x0`` (None where it cannot be had)."""
        want = check == "gradient"
        y, x = self._forward(model, x0, want, own)
        if y is None:
            return None
        if not want:
            return y.detach()
        return self._gradient(y, x) if x.requires_grad and y.requires_grad else None

    # -- the judgement
    def _judge(self, check: str, mine: torch.Tensor, theirs: torch.Tensor) -> None:
        tol = self.tolerance
        bad = _beyond(mine, theirs, tol)
        if bad is None:
            return
        scale = self._scale(check)
        if scale is not None:
            bad = _beyond(mine, theirs, tol, scale) or None
            if bad is None:
                return
        if tol.low:
            reference = self._float64(check)
            if reference is not None:
                exact, scale64 = reference
                if exact.shape == theirs.shape and _beyond(
                        mine, exact, tol, scale64 if scale is None else np.maximum(scale, scale64),
                        extra=_TORCH_ERROR * (theirs.double() - exact.to(theirs.device)).abs()) is None:
                    return
        raise VerificationError(_message(check, *bad, self.poly.batched), check)

    def _scale(self, check: str) -> np.ndarray | None:
        """The magnitudes that went into each entry compared, from a rerun of the model (``_Magnitudes``): per entry
        for the value, the largest of the whole run (forward and backward) for the gradient."""
        magnitudes = _Magnitudes()
        try:
            with magnitudes:
                theirs = self._measure(self.model, self.x0, check, own=True)
        except Exception:  # noqa: BLE001 (a run that cannot be recorded: the cheap tolerance stands)
            return None
        return magnitudes.scale(theirs if check == "value" else None)

    def _float64(self, check: str):
        """(torch's side of ``check`` from the model run in float64, that run's scale), or None where no float64
        copy of the model can be made or run."""
        model64 = _float64_copy(self.model)
        if model64 is None:
            return None
        magnitudes = _Magnitudes()
        try:
            with torch.autocast(self.x0.device.type, enabled=False), magnitudes:
                exact = self._measure(model64, self.x0.detach().to(torch.float64), check, own=False)
        except Exception:  # noqa: BLE001 (the model does not run in float64: no rescue)
            return None
        return None if exact is None else (exact, magnitudes.scale(exact if check == "value" else None))


class _Tolerance:
    """rtol and the ulp of the lowest precision among the dtypes given."""

    def __init__(self, *dtypes: torch.dtype):
        low = max((d for d in dtypes if d.is_floating_point), key=lambda d: torch.finfo(d).eps)
        self.rtol = _RTOL.get(low, _RTOL_LOW)
        self.eps = torch.finfo(low).eps
        self.low = torch.finfo(low).eps > torch.finfo(torch.float64).eps


@memoize("self-check tolerances", max_entries=32)
def _tolerance_of(*dtypes: torch.dtype) -> _Tolerance:
    return _Tolerance(*dtypes)


def _tolerance(device_type: str, *dtypes: torch.dtype) -> _Tolerance:
    """The ``_Tolerance`` of the dtypes given and of autocast's (when it is on for the device)."""
    try:
        if torch.is_autocast_enabled(device_type):
            dtypes = (*dtypes, torch.get_autocast_dtype(device_type))
    except (RuntimeError, TypeError, AttributeError):  # (a device type autocast does not know)
        pass
    return _tolerance_of(*dtypes)


def _beyond(mine: torch.Tensor, theirs: torch.Tensor, tol: _Tolerance, scale: np.ndarray | None = None,
            extra: torch.Tensor | None = None):
    """(mine, theirs, how many, of how many) at the first entry with |mine - theirs| > rtol max(|mine|, |theirs|) +
    256 ulps of ``scale`` (per entry, or one for all; + ``extra``, entrywise), or None. ``scale`` None: no floor (the
    cheap first test: an entry it flags is judged again with the computation's scale). Entries not finite on either
    side are not compared: the engine keeps a constant where autograd's chain rule gives 0 * inf (a singular point
    that does not move), and a NaN is the polynomial's own to report."""
    if scale is None and extra is None and mine.numel() <= 64:  # (plain floats: faster than any array library)
        rtol = tol.rtol
        bad = [(u, v) for u, v in zip(_floats(mine), _floats(theirs))
               if abs(u - v) > rtol * max(abs(u), abs(v)) and math.isfinite(u) and math.isfinite(v)]
        return (bad[0][0], bad[0][1], len(bad), mine.numel()) if bad else None
    a = mine.detach().cpu().double().numpy().reshape(-1)
    b = theirs.detach().cpu().double().numpy().reshape(-1)
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(a) & np.isfinite(b)
        if not finite.any():
            return None
        if scale is None:
            scale = 0.0
        tolerance = tol.rtol * np.maximum(np.abs(a), np.abs(b)) + _ATOL_ULPS * tol.eps * np.broadcast_to(
            scale, a.shape)
        if extra is not None:
            tolerance = tolerance + extra.detach().cpu().double().numpy().reshape(-1)
        bad = finite & (np.abs(a - b) > tolerance)
    if not bad.any():
        return None
    where = int(np.flatnonzero(bad)[0])
    return float(a[where]), float(b[where]), int(bad.sum()), bad.size


def _magnitude(t: torch.Tensor) -> torch.Tensor:
    a = t.detach().abs()
    return a.masked_fill(~torch.isfinite(a), 0)


def _floating(t) -> bool:
    return (isinstance(t, torch.Tensor) and t.is_floating_point() and t.layout is torch.strided
            and t.device.type != "meta")


def _floats(t: torch.Tensor) -> list:
    """The entries of a small tensor as a flat list of Python numbers."""
    if t.dim() == 0:
        return [t.item()]
    return t.tolist() if t.dim() == 1 else t.reshape(-1).tolist()


class _Magnitudes(TorchDispatchMode):
    """The magnitudes that went into a computation: the largest finite magnitude of every floating tensor an op reads
    or writes (forward and backward), and per entry of each result a bound on the magnitudes its entries were
    computed from (a shadow run: elementwise ops take the largest of their arguments' entries, ops that move entries
    move the bounds the same way, any other op the largest of everything it read)."""

    def __init__(self):
        super().__init__()
        self._amax: list[torch.Tensor] = []
        self._bounds: dict[int, tuple] = {}  # id(tensor) -> (tensor, per-entry bound)

    def _bound(self, t: torch.Tensor) -> torch.Tensor:
        hit = self._bounds.get(id(t))
        return hit[1] if hit is not None and hit[0] is t else _magnitude(t)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        reads = [t for t in pytree.tree_leaves((args, kwargs)) if _floating(t)]
        writes = [t for t in pytree.tree_leaves(out) if _floating(t)]
        for t in reads + writes:
            if t.numel():
                self._amax.append(_magnitude(t).amax().to(device="cpu", dtype=torch.float64))
        if writes:
            try:
                bounds = self._shadow(func, args, kwargs, reads, writes)
            except Exception:  # noqa: BLE001 (an op the shadow cannot take: the largest of what it read)
                bounds = None
            if bounds is None or len(bounds) != len(writes):
                top = max((float(self._bound(t).amax()) for t in reads if t.numel()), default=0.0)
                bounds = [torch.full_like(w, top, dtype=w.dtype) for w in writes]
            for w, b in zip(writes, bounds):
                self._bounds[id(w)] = (w, torch.maximum(b.to(w.dtype), _magnitude(w)))
        return out

    def _shadow(self, func, args, kwargs, reads, writes) -> list | None:
        packet = getattr(func, "overloadpacket", None)
        if torch.Tag.pointwise in func.tags and len(writes) == 1:
            bound = _magnitude(writes[0])
            for t in reads:
                bound = torch.maximum(bound, self._bound(t).to(bound.dtype))
            return [bound]
        if packet in _MOVES:
            moved = func(*pytree.tree_map(lambda a: self._bound(a) if _floating(a) else a, args),
                         **pytree.tree_map(lambda a: self._bound(a) if _floating(a) else a, kwargs))
            return [t for t in pytree.tree_leaves(moved) if isinstance(t, torch.Tensor)]
        return None

    def scale(self, t: torch.Tensor | None) -> np.ndarray:
        """Per entry of ``t`` (a result of the run) where its bounds were followed, else the largest of the run."""
        if t is not None and id(t) in self._bounds and self._bounds[id(t)][0] is t:
            return self._bounds[id(t)][1].detach().cpu().double().numpy().reshape(-1)
        return np.asarray(float(torch.stack(self._amax).max()) if self._amax else 0.0)


aten = torch.ops.aten
# ops that only move, copy, pick or zero entries: the same op moves the entries' magnitude bounds
_MOVES = {aten.view, aten._unsafe_view, aten.reshape, aten.expand, aten.permute, aten.transpose, aten.t,
          aten.squeeze, aten.unsqueeze, aten.select, aten.slice, aten.cat, aten.stack, aten.clone, aten._to_copy,
          aten.alias, aten.detach, aten.index, aten.gather, aten.flip, aten.roll, aten.repeat, aten.narrow,
          aten.split, aten.split_with_sizes, aten.unbind, aten.chunk, aten.diagonal, aten.constant_pad_nd,
          aten.unfold, aten.movedim, aten.lift_fresh_copy, aten.contiguous, aten.select_scatter,
          aten.slice_scatter, aten.index_select, aten._reshape_alias, aten.as_strided}


def _float64_copy(model):
    """A copy of the model computing in float64 (its modules, parameters, buffers and tensor attributes), or None
    where one cannot be made without sharing a module with the user's model (which must not change)."""
    originals = {id(m) for m in trace.modules_of(model)}
    memo: dict = {}
    try:
        copied = _copy_function(model, memo) if isinstance(model, types.FunctionType) else copy.deepcopy(model, memo)
        modules = trace.modules_of(copied)
    except Exception:  # noqa: BLE001 (an object that cannot be copied: no float64 run)
        return None
    if any(id(m) in originals for m in modules):
        return None
    for m in modules:
        m.to(torch.float64)
        for k, v in list(vars(m).items()):
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                vars(m)[k] = v.detach().to(torch.float64)
    return copied


def _copy_function(f: types.FunctionType, memo: dict) -> types.FunctionType:
    """f with deep copies of what its closure holds and of the modules its globals name."""
    cells = None
    if f.__closure__:
        cells = []
        for cell in f.__closure__:
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                cells.append(types.CellType())
                continue
            cells.append(types.CellType(copy.deepcopy(contents, memo)))
        cells = tuple(cells)
    namespace = dict(f.__globals__)
    for name in set(f.__code__.co_names) & namespace.keys():
        if isinstance(namespace[name], nn.Module):
            namespace[name] = copy.deepcopy(namespace[name], memo)
    g = types.FunctionType(f.__code__, namespace, f.__name__, copy.deepcopy(f.__defaults__, memo), cells)
    g.__kwdefaults__ = copy.deepcopy(f.__kwdefaults__, memo)
    return g


class _Plan:
    """What running the model for a self-check needs: its modules and their locks, and its parameters, buffers and
    tensor attributes. Kept per traced graph (used only while the model's guard stamp is unchanged: the same modules
    and tensors), each module and tensor held weakly (a cached graph must not keep the model alive)."""

    def __init__(self, model):
        modules = trace.modules_of(model)
        self._modules = [weakref.ref(m) for m in modules]
        self._tensors = [weakref.ref(t) for t in _state_tensors(modules)]
        self.locks = sessions.locks_of(modules)

    def live(self) -> tuple | None:
        """(modules, tensors), or None where one of them is gone."""
        modules = [r() for r in self._modules]
        tensors = [r() for r in self._tensors]
        return None if any(v is None for v in modules) or any(v is None for v in tensors) else (modules, tensors)


def _plan(model, traced) -> tuple:
    """(modules, locks, state tensors) of the model, from the traced graph's plan where there is one."""
    if not isinstance(traced, trace.TracedModel):
        plan = _Plan(model)
        return (*plan.live(), plan.locks)
    cache = traced.__dict__.setdefault("_derived", {})
    plan = cache.get("self-check plan")
    live = plan.live() if plan is not None else None
    if live is None:
        plan = cache["self-check plan"] = _Plan(model)
        live = plan.live()
    return (*live, plan.locks)


class _model_modes:  # noqa: N801 (a context manager, used as one)
    """The modes the expansion ran the model in (``trace.running``: one ``sessions.Run``), TorchScript unoptimized,
    and the model's state kept (``traced`` False: a copy of the model, nothing to keep). Module attributes are
    snapshot unless the trace saw the forward assign none (``TracedModel.assigns_attributes``: the same code under
    the same guard stamp)."""

    __slots__ = ("run", "state")

    def __init__(self, model, traced):
        modules, tensors, locks = _plan(model, traced)
        keep = traced is None or (traced is not False and traced.assigns_attributes is not False)
        self.run = sessions.Run(modules, locks, keep, trace.CHECK_SETTINGS)
        self.state = None if traced is False else _StateKept(tensors, traced)

    def __enter__(self):
        self.run.__enter__()
        if self.state is not None:
            try:
                self.state.enter()
            except BaseException:
                self.run.__exit__(None, None, None)
                raise

    def __exit__(self, *exc) -> None:
        try:
            if self.state is not None:
                self.state.leave()
        finally:
            self.run.__exit__(None, None, None)


def _state_tensors(modules: list) -> list:
    """The parameters, buffers and tensor attributes of the modules (each once)."""
    found = {}
    for m in modules:
        for t in (*m._parameters.values(), *m._buffers.values(), *vars(m).values()):
            if isinstance(t, torch.Tensor):
                found[id(t)] = t
    return list(found.values())


def _stamp(t: torch.Tensor) -> tuple:
    try:
        return t._version, t.data_ptr()
    except RuntimeError:  # an inference tensor (no version counter), a tensor without storage
        return None, None


class _StateKept:
    """Parameters, buffers and tensor attributes a forward writes into (a counter, running statistics, a weight
    rescaled under no_grad) get their values back afterwards: checking an expansion must not change the user's model.
    Copies are kept only where the trace saw the forward write into the model's state (``traced.writes_state``; every
    tensor without a trace); otherwise the version counters tell a write the trace did not see, and the next check
    keeps copies."""

    __slots__ = ("tensors", "traced", "saved")

    def __init__(self, tensors: list, traced):
        self.tensors, self.traced, self.saved = tensors, traced, None

    def enter(self) -> None:
        if self.traced is None or self.traced.writes_state:
            self.saved = [(t, _stamp(t), t.detach().clone()) for t in self.tensors]
        else:
            self.saved = [(t, _stamp(t), None) for t in self.tensors]

    def leave(self) -> None:
        unseen = False
        with torch.no_grad():
            for t, stamp, value in self.saved:
                if value is not None:
                    if _stamp(t) != stamp or not torch.equal(t, value):
                        t.copy_(value)
                elif _stamp(t) != stamp:
                    unseen = True
        if unseen and self.traced is not None:
            self.traced.writes_state = True


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
    """Row b of the result: d(sum_o w_bo y_bo)/dx_b, the other rows' outputs left out: one batched backward pass
    (``is_grads_batched``), or one pass per row where an op has no batching rule."""
    rows = x.shape[0]
    eye = torch.eye(rows, dtype=w.dtype, device=w.device).reshape(rows, rows, *([1] * (w.dim() - 1)))
    try:
        (g,) = torch.autograd.grad(y, x, grad_outputs=eye * w.unsqueeze(0), allow_unused=True, retain_graph=True,
                                   is_grads_batched=True)
        if g is not None:
            return torch.diagonal(g, dim1=0, dim2=1).movedim(-1, 0)
        return torch.zeros_like(x)
    except RuntimeError:
        pass
    out = []
    for b in range(rows):
        wb = torch.zeros_like(w)
        wb[b] = w[b]
        out.append(_gradient(y, x, wb, retain=b + 1 < rows)[b])
    return torch.stack(out)


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
