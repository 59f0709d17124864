"""``HopePanel``: a live view of a network's Taylor polynomial (an anywidget).

Ten synced traits are the whole contract (typed once in ``contract.schema.json``): the settings ``order``,
``point``, ``output``, ``method``, ``threshold``, ``sort``, ``direction``, ``certify_tol`` (the browser or Python sets
them), and two payloads the kernel writes: ``view`` (everything the browser renders) and ``status`` (busy, error,
notice, warning).

The expansion is computed once at ``max_order`` for the current point and method; the order slider, the threshold
and the sort are views of that one result (the browser filters the term records it already has), so they do no
kernel work. Changing the point or the method recomputes; a failure keeps the last good result and shows the error.

The panel follows its model (``live.py``): after every cell, a panel whose model changed (``guard.state_token``)
expands again, saying "updated: the model changed"; ``follow()`` does the same during a training loop, throttled.
``recompute()`` expands again at once, whatever the caches hold. Displayed, the panel is two outputs: the live widget
and a static snapshot (``snapshot.py``, kept current through its ``display_id``) that a notebook saved without
widget state, or read without a kernel, still shows.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import torch
import traitlets
from traitlets import Dict, Float, Int, List, Unicode

from hope_engine import TaylorPolynomial, expand
from hope_engine.algebra.basis import basis_size
from hope_engine.capture.arguments import normalize as normalize_inputs
from hope_engine.capture.arguments import prepare_point
from hope_engine.capture.guard import state_token
from hope_engine.errors import describe
from hope_engine.options import METHODS, TERMS

from . import contract, live, payloads, snapshot
from .certified import certified_band

STATIC = Path(__file__).parent / "static"
MAX_POINT_CONTROLS = 12  # more inputs than this (or an image-shaped input): heat map instead of point sliders
MAX_TOTAL_TERMS = 3003  # automatic basis: every mixed partial while the total basis stays this small, else unmixed
CACHE_SIZE = 8
TIME_BUDGET = 60.0  # seconds: an expansion estimated longer is refused (expand(..., time_budget=None) runs it)
SORTS = ("degree", "magnitude")
#: traits a user sets from Python: a bad value is one short error line (``PanelError``), not a traitlets traceback
PUBLIC_TRAITS = frozenset({"order", "point", "output", "method", "threshold", "sort", "direction", "radius", "title",
                           "certify_tol"})
UPDATED_NOTE = "updated: the model changed"  # heads the notice after the panel followed its model
UNCOMPARABLE_NOTE = ("this model holds something the guard cannot compare cheaply (a very large container): the panel "
                     "does not follow its changes by itself; call panel.recompute() after changing it")


class PanelError(traitlets.TraitError, ValueError):
    """A bad value for a panel setting (``panel.order = 99``): one line that names the bound.

    IPython (and so Jupyter) shows an exception through its ``_render_traceback_`` when it has one: here that is the
    single line ``PanelError: <message>``, because the frames below the user's assignment are traitlets' machinery.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


# ---------------------------------------------------------------------------------------------- tracer warm-up
# The first trace in a process imports torch.fx, functorch's functionalization and sympy (through torch's meta kernels,
# about a quarter of a second); ``%load_ext hope_widgets`` imports them in a background thread. Only imports: they are
# safe next to the user's code (Python's import locks), where a trace in a second thread would not be. The panel and
# ``%hope`` wait for the thread before their first expansion. torch._dynamo (a second more) is left out: only the
# make_fx fallback needs it (hope_engine/capture/record.py), and the first panel would wait for it.
WARM_MODULES = ("torch.fx", "torch.fx.experimental.symbolic_shapes", "torch._functorch.eager_transforms",
                "torch.func", "sympy", "hope_engine.capture.record", "hope_engine.algebra.kernels")
_warmup_lock = threading.Lock()
_warmup_thread: threading.Thread | None = None
_warmup_report: dict[str, Any] = {}
_tracer_ready = False
_unreported_loading = 0.0  # seconds spent loading the tracer (waiting, probing) not yet shown in a timing line


def _warm_imports() -> list[str]:
    """Import what the first trace would import; returns the modules that could not be imported (and are skipped)."""
    import importlib

    missing = []
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module this torch does not have: the first trace does without it too
            missing.append(name)
    return missing


def start_warmup() -> threading.Thread:
    """Load the tracing machinery in a daemon thread (once per process); returns the thread."""
    global _warmup_thread

    def run() -> None:
        global _tracer_ready
        start = time.perf_counter()
        try:
            missing = _warm_imports()
            _tracer_ready = True
            _warmup_report.update(ok=True, missing=missing)
        except Exception as e:  # noqa: BLE001 - a failed warm-up only means the first expansion pays the cost
            _warmup_report.update(ok=False, error=describe(e))
        _warmup_report["seconds"] = time.perf_counter() - start

    with _warmup_lock:
        if _warmup_thread is None:
            _warmup_thread = threading.Thread(target=run, name="hope-tracer-warmup", daemon=True)
            _warmup_thread.start()
        return _warmup_thread


def wait_for_warmup() -> float:
    """Block until a running warm-up has finished; returns the seconds waited (0 when none runs)."""
    global _unreported_loading
    thread = _warmup_thread
    if thread is None or not thread.is_alive() or thread is threading.current_thread():
        return 0.0
    start = time.perf_counter()
    thread.join()
    waited = time.perf_counter() - start
    _unreported_loading += waited
    return waited


def traced_call(fn: Callable[[], Any]) -> Any:
    """Run an expansion outside a panel (``%hope``'s probe for a batch axis) after the warm-up; a first call's cost
    is remembered and shown in the next panel's timing line."""
    global _tracer_ready, _unreported_loading
    wait_for_warmup()
    first = not _tracer_ready
    start = time.perf_counter()
    try:
        return fn()
    finally:
        if first:
            _unreported_loading += time.perf_counter() - start
            _tracer_ready = True


def warmup_report() -> dict[str, Any]:
    """What the background warm-up did: ``{}`` before it ends, else ``ok``, ``seconds`` (and ``error``)."""
    return dict(_warmup_report)


class _PointTrait(List):
    """A list of floats that also accepts a tensor, an array or a number (``panel.point = torch.tensor(...)``)."""

    def validate(self, obj: Any, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            value = value.detach().reshape(-1).cpu().tolist()
        elif isinstance(value, np.ndarray):
            value = value.reshape(-1).tolist()
        elif isinstance(value, (int, float)):
            value = [value]
        elif isinstance(value, tuple):
            value = list(value)
        if isinstance(value, list):
            try:
                value = [float(v) for v in value]
            except (TypeError, ValueError) as e:
                raise traitlets.TraitError(f"point must be numbers: {e}") from None
        return super().validate(obj, value)


def _is_image_like(row_shape: tuple[int, ...]) -> bool:
    return len(row_shape) >= 2 and row_shape[-1] > 1 and row_shape[-2] > 1


def describe_failure(e: BaseException, method: str) -> str:
    """The whole message of an expansion that failed, in one block."""
    if method == "hope" and isinstance(e, ImportError):
        return f"the paper's rule (method='hope') is not available in this installation: {describe(e)}"
    text = describe(e)
    return text if text.startswith(type(e).__name__) else f"{type(e).__name__}: {text}"


class HopePanel(anywidget.AnyWidget):
    """Taylor polynomial of ``model`` around ``point``, with an order slider, point controls and plots.

    ``HopePanel(model, point, order=6, max_order=10, terms=None, output=0, names=None, method="exact", radius=1.0)``.
    ``point`` has the shape the model takes (e.g. ``(2,)`` or ``(1, 2)`` for two inputs, ``(1, 1, 28, 28)`` for an
    image); every element is a variable. For a model of several inputs, ``point`` is a tuple or dict of them and
    ``wrt`` names the ones to expand in (positions or keys; default every floating tensor), as in ``expand``.
    ``terms=None`` picks "total" (every mixed partial) while that basis has at most 3003 terms, else "pure". Public
    state: ``order`` and ``point`` (set them from Python: the view follows), ``output``, ``method``, ``threshold``,
    ``sort``, ``direction``, ``certify_tol``, ``radius``, ``title``; results: ``polynomial``, ``latex``,
    ``to_sympy()``; what the browser draws: ``view`` and ``status`` (each key also a read-only attribute:
    ``term_records``, ``line``, ``result``, ``error``, ...).
    """

    # the bundle as text, not as paths: anywidget watches a path's file and its change signal holds every panel made
    # (a panel would never be garbage-collected); the trailing newline keeps anywidget from reading the one-line CSS
    # as a file name
    _esm = (STATIC / "widget.js").read_text(encoding="utf-8") + "\n"
    _css = (STATIC / "widget.css").read_text(encoding="utf-8") + "\n"

    # ---- settings: the browser or Python sets them (synced; keys and types in contract.schema.json)
    order = Int(6).tag(sync=True)
    point = _PointTrait(Float()).tag(sync=True)
    output = Int(0).tag(sync=True)
    method = Unicode("exact").tag(sync=True)
    threshold = Float(0.0).tag(sync=True)
    sort = Unicode("degree").tag(sync=True)
    direction = Int(-1).tag(sync=True)
    certify_tol = Float(0.0).tag(sync=True)  # > 0: show the certified band |f - P| <= R and where R <= this tolerance
    # ---- what the kernel writes: everything the browser renders, and what the kernel is doing
    view = Dict().tag(sync=True)
    status = Dict({"busy": False, "error": "", "notice": "", "warning": ""}).tag(sync=True)
    # ---- Python-only settings (the view follows them)
    title = Unicode("")  # the model's name, in the header
    radius = Float(1.0)  # half-width of the point controls and of the plotted line (the browser reads bounds, line)
    terms_kind = Unicode("total")
    # ---- the displayed static snapshot (``_static_batch``): batches open, and a change inside one not sent yet
    _static_holds = 0
    _static_dirty = False

    def __init__(self, model: Callable, point: Any, *, order: int = 6, max_order: int = 10, terms: str | None = None,
                 output: int = 0, names: list[str] | None = None, method: str = "exact", radius: float = 1.0,
                 threshold: float = 0.0, sort: str = "degree", title: str = "", wrt: Any = None,
                 certify_tol: float = 0.0) -> None:
        _check_int("max_order", max_order, 0, None)
        _check_int("order", order, 0, max_order)
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
            raise ValueError(f"radius must be a positive number, got {radius!r}")
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {SORTS}, got {sort!r}")
        started = time.perf_counter()
        # several inputs (a tuple or dict point): the panel works on the model as a function of the flat variables
        model, point, names, _ = normalize_inputs(model, point, wrt=wrt, names=names)
        self._model = model
        self._template = prepare_point(model, point).clone()
        self._batched = self._template.dim() >= 2 and self._template.shape[0] == 1
        row_shape = tuple(self._template.shape[1:] if self._batched else self._template.shape)
        self._row_shape = row_shape
        n = math.prod(row_shape)
        if names is not None:
            names = [str(s) for s in names]
            if len(names) != n:
                raise ValueError(f"names has {len(names)} entries but the point has {n} values")
        elif _is_image_like(row_shape) and n == math.prod(row_shape):
            names = payloads.pixel_names(row_shape)  # p[row][col]: a pixel's term says where the pixel is
        if terms is None:
            terms = "total" if basis_size(n, max_order, "total") <= MAX_TOTAL_TERMS else "pure"
        if terms not in TERMS:
            raise ValueError(f"terms must be 'total' or 'pure', got {terms!r}")
        self._ready = False
        self._quiet = False
        self._cache: OrderedDict[tuple, tuple[TaylorPolynomial, str, dict[str, Any]]] = OrderedDict()
        # the point as the user wrote it (0.1 stays 0.1 for a float32 model, whose expansion rounds it as it runs)
        given = point.detach() if isinstance(point, torch.Tensor) else torch.as_tensor(point, dtype=torch.float64)
        values = given.reshape(-1).double().tolist()
        # the first expansion: errors here are raised (there is no last good result to fall back on)
        self._n, self._terms_kind, self._max_order, self._names = n, terms, max_order, names
        full, notice, timing = self._expand(values, method)
        n_out = payloads.output_count(full)
        if isinstance(output, bool) or not isinstance(output, (int, np.integer)) or not 0 <= output < n_out:
            raise ValueError(f"output {output!r} does not exist: the model has {n_out} output(s), 0..{n_out - 1}")
        self._n_outputs = n_out
        self._mode = "heat" if n > MAX_POINT_CONTROLS or _is_image_like(row_shape) else "line"
        self._parts: dict[str, Any] = {}  # the view's payloads, each kept as sent (a rebuilt view reuses them)
        self._names_tex = payloads.latex_names(full.names)
        self._bounds = [[v - radius, v + radius] for v in values]  # the point controls' range: follows the radius
        super().__init__(
            title=title, order=order, point=values, output=output, method=method, threshold=float(threshold),
            sort=sort, direction=-1 if n > 1 else 0, radius=float(radius), terms_kind=terms,
            certify_tol=float(certify_tol),
        )
        self._bands: OrderedDict[tuple, dict] = OrderedDict()
        self._full = full
        self._result_method = method
        self._result_timing = timing
        with self.hold_sync():
            self._set_status(notice=notice)
            self._derive()
        self._ready = True
        self._displayed = False  # by %hope, in the running cell (mark_displayed)
        self._static_id = f"hope-static-{self.model_id}"  # the display_id of the static snapshot's output
        self._static_shown = False  # displayed once: the snapshot's output follows the panel (update_display)
        self._static_html = ""
        self._uncomparable_noted = False
        self._update_seconds = time.perf_counter() - started
        live.track(self)  # after every cell: expand again if the model changed

    def __setattr__(self, name: str, value: Any) -> None:
        """A bad value for a public setting raises ``PanelError`` with one line, from here: IPython shows the user's
        line and that message, not the 30 frames of traitlets' validation machinery."""
        if name not in PUBLIC_TRAITS or not self.__dict__.get("_ready", False):
            super().__setattr__(name, value)
            return
        __tracebackhide__ = True  # noqa: F841 - read by IPython (and pytest): this frame is not shown
        try:
            super().__setattr__(name, value)
        except traitlets.TraitError as e:
            message = str(e).strip().splitlines()[0] if str(e).strip() else f"bad value for {name}"
            raise PanelError(message) from None

    # ------------------------------------------------------------------------------------------- public API
    @property
    def model(self) -> Callable:
        return self._model

    @property
    def full_polynomial(self) -> TaylorPolynomial:
        """The expansion the panel holds: ``max_order``, every output, at the last point that expanded."""
        return self._full

    @property
    def polynomial(self) -> TaylorPolynomial:
        """The ``TaylorPolynomial`` shown: truncated to ``order``, of the selected ``output`` (a free prefix)."""
        return self._full.truncate(self.order).select(self.output)

    @property
    def latex(self) -> str:
        """LaTeX of the polynomial shown (terms above ``threshold``, sorted by ``sort``), as the copy button gives."""
        return self.polynomial.latex(threshold=self.threshold, sort=self.sort)

    # the view and the status, by name (read-only: the panel writes them; ``view`` and ``status`` hold them all)
    max_order = property(lambda self: self._max_order, doc="the order the panel expanded to (the slider's maximum)")
    n_outputs = property(lambda self: self._n_outputs, doc="number of output elements of the model")
    mode = property(lambda self: self._mode, doc='"line" (point sliders, line plots) or "heat" (image-like inputs)')
    names = property(lambda self: self.view["names"], doc="the variable names")
    names_tex = property(lambda self: self.view["names_tex"], doc="the variable names in LaTeX")
    bounds = property(lambda self: self.view["bounds"], doc="[low, high] of each point control")
    term_records = property(lambda self: self.view["term_records"],
                            doc="every nonzero term of the selected output at max_order, columnar (as sent)")
    line = property(lambda self: self.view["line"], doc="the line plot's payload ({} in heat mode)")
    heat = property(lambda self: self.view["heat"], doc="the heat map's payload ({} in line mode)")
    compare = property(lambda self: self.view["compare"], doc="method='hope': the comparison with the exact expansion")
    result = property(lambda self: self.view["result"], doc="the expansion shown: point, method, timing, basis")
    band = property(lambda self: self.view["band"], doc="the certified band ({} while certify_tol is 0)")
    busy = property(lambda self: self.status["busy"], doc="an expansion is running")
    error = property(lambda self: self.status["error"], doc="why the last recompute failed, or ''")
    notice = property(lambda self: self.status["notice"], doc="the expansion's warnings, or ''")
    warning = property(lambda self: self.status["warning"], doc="which coefficients are NaN / infinite and why, or ''")

    def to_sympy(self, **kwargs: Any):
        """A sympy expression of the polynomial shown (terms with |c| <= threshold dropped, as in the view)."""
        kwargs.setdefault("threshold", self.threshold)
        return self.polynomial.to_sympy(**kwargs)

    def mark_displayed(self, displayed: bool = True) -> None:
        """Note that this panel is on screen already in the running cell (``%hope`` displays it and returns it):
        its display as the cell's value is then skipped once. ``mark_displayed(False)`` withdraws the note."""
        self._displayed = bool(displayed)

    def clear_cache(self) -> None:
        """Forget the cached expansions and certified bands: the next change computes them again (the result shown
        stays)."""
        self._cache.clear()
        self._bands.clear()

    def __repr__(self) -> str:
        point = ", ".join(f"{v:.4g}" for v in self.point[:8]) + (", ..." if len(self.point) > 8 else "")
        return (f"HopePanel({self.title or 'model'} at ({point}), order {self.order}/{self.max_order}, "
                f"{self._terms_kind} terms, method {self.method!r})")

    def static_html(self) -> str:
        """The panel as it is now as static HTML (``snapshot.render``), marked "static snapshot": the polynomial shown
        (plain HTML), its LaTeX, and the line plots or the heat map as inline SVG. A notebook saved without widget
        state, opened without a kernel, or read on GitHub or nbviewer shows it in place of the live panel."""
        return snapshot.render(self)

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict, dict] | None:
        """The widget view, the one-line text and the static snapshot (``text/html``) in one bundle, for a front end
        that takes one: one that cannot draw the widget (no widget state, a static viewer) shows the snapshot."""
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, {})
        return {**data, "text/html": self.static_html()}, metadata

    def _ipython_display_(self) -> None:
        """Two outputs: the live widget, and the static snapshot under its own ``display_id`` (kept current as the
        panel changes; a CSS rule hides it where the live panel is drawn in the same output area). Two, not one
        bundle: JupyterLab draws a bundle's widget view whenever it has one, so once the widget state is gone (a
        notebook saved without it and reopened) it would show "model not found" in place of the snapshot.

        Shown by ``%hope`` already in this cell: its return value is not displayed a second time."""
        from IPython.display import display

        if self._displayed:
            self._displayed = False
            return
        if self.comm is None:  # closed: no live view any more
            display({"text/plain": f"{self!r} (closed)"}, raw=True)
            return
        bundle = self._repr_mimebundle_()
        data, metadata = bundle if isinstance(bundle, tuple) else (bundle, None)
        data = dict(data)
        self._static_html = data.pop("text/html")
        display(data, metadata=metadata, raw=True)
        display({"text/html": self._static_html}, raw=True, display_id=self._static_id)
        self._static_shown = True

    def _update_static(self) -> None:
        """The displayed snapshot follows the panel (``update_display`` on its ``display_id``), once displayed; inside
        ``_static_batch`` once, at its end."""
        if not getattr(self, "_static_shown", False):
            return
        if self._static_holds:
            self._static_dirty = True
            return
        self._static_dirty = False
        text = self.static_html()
        if text != self._static_html:
            from IPython.display import update_display

            self._static_html = text
            update_display({"text/html": text}, raw=True, display_id=self._static_id)

    @contextlib.contextmanager
    def _static_batch(self) -> Iterator[None]:
        """Changes inside update the displayed snapshot once, when the outermost batch ends."""
        self._static_holds += 1
        try:
            yield
        finally:
            self._static_holds -= 1
            if not self._static_holds and self._static_dirty:
                self._update_static()

    # ---------------------------------------------------------------------------------------- validation
    @traitlets.validate("order")
    def _valid_order(self, proposal: dict) -> int:
        v = proposal["value"]
        if not 0 <= v <= self.max_order:
            raise traitlets.TraitError(f"order must be between 0 and max_order={self.max_order}, got {v}")
        return v

    @traitlets.validate("point")
    def _valid_point(self, proposal: dict) -> list[float]:
        v = proposal["value"]
        n = getattr(self, "_n", len(v))
        if len(v) != n:
            raise traitlets.TraitError(f"point must have {n} values (one per input), got {len(v)}")
        if not all(math.isfinite(x) for x in v):
            raise traitlets.TraitError("point must be finite")
        return v

    @traitlets.validate("output")
    def _valid_output(self, proposal: dict) -> int:
        v = proposal["value"]
        if self._ready and not 0 <= v < self.n_outputs:
            raise traitlets.TraitError(f"output must be between 0 and {self.n_outputs - 1}, got {v}")
        return v

    @traitlets.validate("method")
    def _valid_method(self, proposal: dict) -> str:
        if proposal["value"] not in METHODS:
            raise traitlets.TraitError(f"method must be one of {METHODS}, got {proposal['value']!r}")
        return proposal["value"]

    @traitlets.validate("sort")
    def _valid_sort(self, proposal: dict) -> str:
        if proposal["value"] not in SORTS:
            raise traitlets.TraitError(f"sort must be one of {SORTS}, got {proposal['value']!r}")
        return proposal["value"]

    @traitlets.validate("radius")
    def _valid_radius(self, proposal: dict) -> float:
        v = proposal["value"]
        if not (math.isfinite(v) and v > 0):
            raise traitlets.TraitError(f"radius must be a positive number, got {v!r}")
        return v

    @traitlets.validate("direction")
    def _valid_direction(self, proposal: dict) -> int:
        v = proposal["value"]
        if not -1 <= v < getattr(self, "_n", v + 1):
            raise traitlets.TraitError(f"direction must be -1 (diagonal) or an input index, got {v}")
        return v

    @traitlets.validate(*contract.PAYLOADS)
    def _valid_payload(self, proposal: dict) -> Any:
        """A ``view`` or ``status`` off contract.schema.json is refused before it is sent (``PayloadError``), while
        ``HOPE_CHECK_PAYLOADS`` is set (the test suite sets it: the check costs up to tens of ms per result)."""
        if contract.checking():
            contract.check(contract.PAYLOADS[proposal["trait"].name], proposal["value"])
        return proposal["value"]

    # ------------------------------------------------------------------------------------------ reactions
    @traitlets.observe("point", "method")
    def _on_point_or_method(self, change: dict) -> None:
        if not self._ready or self._quiet:
            return
        self._refresh()
        if change["name"] == "method" and self.method != self._result_method:
            # the method refused (the error line says why): the toggle goes back to the method actually shown
            self._quiet = True
            try:
                self.method = self._result_method
            finally:
                self._quiet = False

    @traitlets.observe("radius")
    def _on_radius(self, change: dict) -> None:
        if self._ready:
            r = self.radius
            self._bounds = [[v - r, v + r] for v in self.point]
            with self.hold_sync():
                self._derive()

    @traitlets.observe("title")
    def _on_title(self, change: dict) -> None:
        if self._ready:
            self._publish()

    @traitlets.validate("certify_tol")
    def _valid_certify_tol(self, proposal: dict) -> float:
        v = proposal["value"]
        if not (math.isfinite(v) and v >= 0):
            raise PanelError(f"certify_tol must be a non-negative number (0 turns the certified band off), got {v!r}")
        return v

    @traitlets.observe("order", "certify_tol")
    def _on_band_input(self, change: dict) -> None:
        if self._ready:
            self._update_band()

    @traitlets.observe("output", "direction")
    def _on_view_input(self, change: dict) -> None:
        if self._ready:
            with self.hold_sync():
                self._derive()

    @traitlets.observe("order", "threshold", "sort")
    def _on_shown_terms(self, change: dict) -> None:
        if self._ready:
            self._update_static()

    def recompute(self) -> None:
        """Expand the model again at ``point`` with ``method`` now, whatever the caches hold, and redraw; on failure
        keep the last good result and set ``error``.

        The panel follows its model by itself (after every cell, and in ``follow()``), by the engine's state token;
        call this after a change the token cannot see: a write through ``.data`` to a model of more than
        ``guard.VALUE_LIMIT`` numbers (read by version counters, which ``.data`` does not move), or a change to what
        the code reads that the guard does not follow (see docs/ARCHITECTURE.md, "The guard")."""
        here = (tuple(self.point), self.method)
        for key in [k for k in self._cache if k[:2] == here]:
            del self._cache[key]
        self._bands.clear()
        self._refresh()

    def follow_model(self, tokens: dict[int, Any] | None = None) -> bool:
        """Expand again and redraw if the model changed since the result shown was computed (by ``state_token``),
        saying "updated: the model changed"; returns whether it did. The after-cell hook and ``follow()`` call this;
        ``tokens`` (model id -> token) lets panels on one model share one token. Never raises: a failure is shown in
        the panel (``error``), not in the user's cell."""
        if not self._ready or self.comm is None:
            return False
        try:
            key = id(self._model)
            token = tokens[key] if tokens is not None and key in tokens else state_token(self._model)
            if tokens is not None:
                tokens[key] = token
            if token is None:  # the guard cannot compare this model cheaply: said once, and left to recompute()
                if not self._uncomparable_noted:
                    self._uncomparable_noted = True
                    self._set_status(notice=UNCOMPARABLE_NOTE)
                return False
            if token == self._seen_token:
                return False
            self._refresh(note=UPDATED_NOTE)
        except Exception as e:  # noqa: BLE001 - see above
            self._set_status(busy=False, error=f"could not follow the model: {describe_failure(e, self.method)}")
        return True

    def follow(self, optimizer: Any = None, *, every: float = 0.25, budget: float = 0.1) -> Follower:
        """Redraw the panel while a training loop runs (when the model changed), throttled so that updating costs at
        most ``budget`` (10%) of the loop's time, and updates come ``every`` seconds at the most often (``Follower``).

        ``with panel.follow(optimizer): ...`` updates after optimizer steps (a step hook, removed on exit);
        ``with panel.follow() as tick:`` (or ``tick = panel.follow()``) updates when ``tick()`` is called, e.g. once
        per epoch. Leaving the ``with`` block updates once more, so the panel ends on the trained model."""
        return Follower(self, optimizer, every=every, budget=budget)

    def _refresh(self, note: str = "") -> None:
        """Expand at ``point`` with ``method`` (cached by the model's state) and redraw; ``note`` heads the notice."""
        started = time.perf_counter()
        self._set_status(busy=True)
        try:
            full, notice, timing = self._expand(list(self.point), self.method)
        except Exception as e:  # noqa: BLE001 - any failure of the user's model is shown in the panel, not raised
            self._set_status(busy=False, error=describe_failure(e, self.method) + self._fallback_note())
            return
        with self.hold_sync(), self._static_batch():
            self._full, self._result_method, self._result_timing = full, self.method, timing
            self._derive()
            self._set_status(busy=False, error="", notice="; ".join(s for s in (note, notice) if s))
        self._update_seconds = time.perf_counter() - started

    @property
    def update_seconds(self) -> float:
        """Seconds the panel's last expansion and redraw took (``follow`` budgets its redraws by it)."""
        return self._update_seconds

    # ---------------------------------------------------------------------------------------- internals
    def _fallback_note(self) -> str:
        at = ", ".join(f"{v:.4g}" for v in self._full.center_values.reshape(-1).tolist()[:6])
        more = ", ..." if self._n > 6 else ""
        return f" (showing the last good result: method={self._result_method}, point ({at}{more}))"

    def _expand(self, values: list[float], method: str) -> tuple[TaylorPolynomial, str, dict[str, Any]]:
        """The expansion at ``values`` (cached), its warnings, and its timing (seconds, first call, warm-up wait)."""
        global _tracer_ready, _unreported_loading
        # the model's state is part of the key, by the engine's own notion of "the model changed": its guard stamp
        # (everything the code reads) plus the state of every tensor the stamp's walk met, so retraining in place
        # (of a child, a global module or a module in a plain list), new parameters, swapped submodules and any change
        # that re-traces the graph are seen (None: not comparable, never cached)
        token = state_token(self._model)
        self._seen_token = token  # the model's state the shown result is of (follow_model compares it)
        key = (tuple(values), method, token)
        if token is not None and key in self._cache:
            self._cache.move_to_end(key)
            full, notice, timing = self._cache[key]
            return full, notice, {**timing, "first_call": False, "loading": 0.0}
        x0 = self._point_tensor(values)
        wait_for_warmup()
        first_call = not _tracer_ready
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            full = expand(self._model, x0, self._max_order, terms=self._terms_kind, names=self._names,
                          method=method, batched=self._batched, time_budget=TIME_BUDGET)
        seconds = time.perf_counter() - start
        timing = {"seconds": seconds, "first_call": first_call, "loading": _unreported_loading}
        _tracer_ready, _unreported_loading = True, 0.0
        notice = "; ".join(dict.fromkeys(str(w.message) for w in caught))
        if token is not None:
            self._cache[key] = (full, notice, timing)
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return full, notice, timing

    def _set_status(self, **changes: Any) -> None:
        """Change keys of ``status`` (a new dict: the browser gets the whole status, one small object)."""
        self.status = {**self.status, **changes}
        if changes.keys() - {"busy"}:  # (the snapshot shows the error, warning and notice lines)
            self._update_static()

    def _publish(self) -> None:
        """Send the browser the view: the header and layout from the settings, the payloads as last derived."""
        self.view = {
            "title": self.title, "max_order": self._max_order, "names": self._full.names,
            "names_tex": self._names_tex, "bounds": self._bounds, "n_outputs": self._n_outputs, "mode": self._mode,
            **self._parts}
        self._update_static()

    def _derive(self) -> None:
        """Send the browser everything the current result shows, for the selected output."""
        # every payload is sanitised: NaN / infinity travel as strings the browser decodes, never as invalid JSON
        selected = self._full.select(self.output)
        parts: dict[str, Any] = {"term_records": payloads.sanitize(payloads.term_records(selected))}
        center = self._full.center_values.reshape(-1).tolist()
        timing = self._result_timing
        parts["result"] = payloads.sanitize({
            "point": center, "method": self._result_method, "seconds": round(timing["seconds"], 4),
            "timing": payloads.timing_text(timing["seconds"], timing["first_call"], timing["loading"]),
            "size": self._full.basis.size, "kind": self._full.basis.kind})
        warning = payloads.nonfinite_message(self._full, center)
        if self._mode == "heat":
            parts["heat"] = payloads.sanitize(payloads.heat_data(selected, self._row_shape, self.radius, center))
            parts["line"] = {}
        else:
            try:
                parts["line"] = payloads.sanitize(payloads.line_data(self._model, self._template, selected,
                                                                     self.output, self.direction, self.radius))
            except Exception as e:  # noqa: BLE001 - a model that cannot be evaluated on the line: no plot
                parts["line"] = {"error": f"cannot evaluate the model along the line: {describe(e)}"}
            parts["heat"] = {}
        parts["compare"] = payloads.sanitize(self._comparison(selected, parts["line"]))
        parts["band"] = self._band(parts["line"])
        self._parts = parts
        with self.hold_sync(), self._static_batch():
            self._publish()
            self._set_status(warning=warning)

    def _point_tensor(self, values: list[float]) -> torch.Tensor:
        """The point as the model takes it (the template's shape and dtype), holding ``values`` (every element)."""
        x0 = self._template.clone()
        x0.reshape(-1).copy_(torch.as_tensor(values, dtype=torch.float64))
        return x0

    def _update_band(self) -> None:
        """A new order or tolerance: the view again if its band changed (nothing is sent while the band is off)."""
        band = self._band(self._parts.get("line", {}))
        if band != self._parts.get("band"):
            self._parts = {**self._parts, "band": band}
            self._publish()

    def _band(self, line: dict[str, Any]) -> dict[str, Any]:
        """The certified band (a funnel) along the plotted ``line`` at the shown order (only while ``certify_tol`` >
        0: it costs a few certifications per order), cached per point, view and model state; the certifications of
        each order at one place are kept (under the place's key) for the next order."""
        if self.certify_tol <= 0 or self._mode != "line" or self._result_method != "exact" or "t" not in line:
            return {}
        values = self._full.center_values.reshape(-1).tolist()
        place = (tuple(values), self.output, self.direction, self.radius, state_token(self._model))
        key = (*place, self.order, self.certify_tol)
        if key not in self._bands:
            tables = self._bands.pop(place, {})
            band = certified_band(self._model, self._point_tensor(values), self._full.select(self.output),
                                  self._batched, self.order, self.output, self.direction, self.radius,
                                  self.certify_tol, line["t"], tables)
            self._bands[place] = tables
            self._bands[key] = payloads.sanitize(band)
            while len(self._bands) > CACHE_SIZE:
                self._bands.popitem(last=False)
        return self._bands[key]

    def _comparison(self, selected: TaylorPolynomial, line: dict[str, Any]) -> dict[str, Any]:
        if self._result_method == "exact":
            return {}
        try:
            exact, _, _ = self._expand(self._full.center_values.reshape(-1).tolist(), "exact")
        except Exception as e:  # noqa: BLE001
            return {"error": f"no exact expansion to compare with: {describe(e)}"}
        exact_sel = exact.select(self.output)
        out: dict[str, Any] = {"relative": payloads.relative_difference(selected, exact_sel)}
        if self._mode == "line" and "t" in line:
            d = payloads.direction_vector(self._n, self.direction, torch.float64)
            ts = torch.tensor(line["t"], dtype=torch.float64)
            out["exact_poly"] = payloads.truncations_on_line(exact_sel, d, ts)
        return out


class Follower:
    """What ``HopePanel.follow(...)`` returns: updates the panel while a training loop runs, throttled.

    Calling it (``tick()``) updates the panel if the model changed and an update is due: ``every`` seconds after the
    last one at the soonest, and only while the time spent updating, plus twice what an update is expected to cost
    (this one and the last, made on leaving ``with``; the expected cost is the panel's last update's time), stays
    within ``budget`` times the time since the loop began (the first call, or entering ``with``). So updating takes
    at most about ``budget`` of the loop's time, whatever the model costs to expand; a call that is not due costs a
    clock read. With an optimizer, inside ``with``, a step hook calls it after every ``optimizer.step()``. Leaving
    the ``with`` block updates once more, so the panel ends on the trained model (the update the after-cell hook
    would otherwise make when the cell ends; for a loop shorter than about ``2 s / budget``, with ``s`` one update's
    time, it is the only one).
    ``updates`` and ``seconds`` count the updates made and the time they took."""

    def __init__(self, panel: HopePanel, optimizer: Any = None, *, every: float = 0.25, budget: float = 0.1) -> None:
        if not (isinstance(every, (int, float)) and math.isfinite(every) and every >= 0):
            raise ValueError(f"every must be a number of seconds >= 0, got {every!r}")
        if not (isinstance(budget, (int, float)) and 0 < budget <= 1):
            raise ValueError(f"budget must be a share of the training time in (0, 1], got {budget!r}")
        if optimizer is not None and not hasattr(optimizer, "register_step_post_hook"):
            raise ValueError(f"follow(optimizer) needs a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.panel, self.optimizer, self.every, self.budget = panel, optimizer, float(every), float(budget)
        self.updates = 0
        self.seconds = 0.0
        self._start: float | None = None  # time.perf_counter() when the loop began
        self._last = -math.inf  # when the last update ended
        self._cost = panel.update_seconds  # what the next update is expected to take
        self._hook: Any = None

    def __call__(self, *_: Any) -> bool:
        """Update the panel if it is due and the model changed; returns whether it updated."""
        now = time.perf_counter()
        if self._start is None:
            self._start = now
        # (room for this update and the one leaving the block makes)
        if now - self._last < self.every or self.seconds + 2 * self._cost > self.budget * (now - self._start):
            return False
        return self._update(now)

    def _update(self, start: float) -> bool:
        changed = self.panel.follow_model()
        end = time.perf_counter()
        self.seconds += end - start
        self._last = end
        if changed:
            self.updates += 1
            self._cost = end - start
        return changed

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self()

    def __enter__(self) -> Follower:
        self._start = time.perf_counter()
        if self.optimizer is not None:
            self._hook = self.optimizer.register_step_post_hook(self._after_step)
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if kind is None:  # the loop ended: show the trained model
            self._update(time.perf_counter())


def _check_int(name: str, value: Any, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")
