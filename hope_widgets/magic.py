"""``%hope`` and ``%%hope``: one line from a model in the namespace to a live ``HopePanel``.

Every user error (unknown variable, a point of the wrong length, a bad order, a model that fails) is one readable
``UsageError`` line, never a traceback.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display
from torch import nn

from hope_engine import expand
from hope_engine.errors import describe
from hope_engine.options import METHODS, TERMS

from .panel import HopePanel, traced_call

#: names a ``%%hope`` cell can use without importing them (the user's namespace wins on a clash)
CELL_FUNCTIONS = ("sin", "cos", "tan", "exp", "log", "log1p", "expm1", "sqrt", "tanh", "sigmoid", "sinh", "cosh",
                  "atan", "asin", "acos", "erf", "abs", "relu")


def _options(f: Callable) -> Callable:
    """The options %hope and %%hope share."""
    decorators = [
        argument("--point", default=None, metavar="X1,X2,...",
                 help="reference point, comma-separated; negative values are fine (--point -0.5,1). Default: zeros, "
                      "one per input of the first Linear layer. Shaped as the model takes it: 1-d, or (1, n) when "
                      "the model needs a batch axis, or as --shape says"),
        argument("--shape", default=None, metavar="D1,D2,...",
                 help="shape of the --point values as the model takes them, e.g. 1,2 or 1,1,28,28"),
        argument("--point-from", dest="point_from", default=None, metavar="VAR",
                 help="take the reference point (any shape the model takes, e.g. an image) from variable VAR"),
        argument("--order", default=None,
                 help="order shown first (default 6, or max-order if lower); the slider goes 0..max-order"),
        argument("--max-order", dest="max_order", default="10",
                 help="order of the one expansion the slider truncates (default 10)"),
        argument("--terms", default=None, choices=TERMS,
                 help="total: every mixed partial; pure: unmixed only (default: total unless it is large)"),
        argument("--output", default="0", help="output element to show, for models with several outputs (default 0)"),
        argument("--names", default=None, metavar="X,Y,...", help="names of the inputs, comma-separated"),
        argument("--method", default="exact", choices=METHODS,
                 help="exact (default) or hope, the paper's unmixed rule (exact for one hidden layer only)"),
        argument("--radius", default="1.0", help="half-width of the point controls and of the plotted line (1.0)"),
        argument("--certify", default=None, metavar="TOL",
                 help="show the certified band |f - P| <= R along the plotted line and the radius within which "
                      "R <= TOL (a guaranteed bound, not an estimate)"),
        argument("--wrt", default=None, metavar="NAME,...",
                 help="for a model of several inputs (--point-from a tuple or dict): the inputs to expand in, by "
                      "position or key (default: every floating tensor)"),
    ]
    for decorate in reversed(decorators):
        f = decorate(f)
    return f


def parse_point(text: str) -> list[float]:
    """'0,0.5,-1' -> [0.0, 0.5, -1.0] (brackets and spaces allowed)."""
    body = text.strip().strip("[]()").replace(" ", "")
    if not body:
        raise UsageError("--point is empty: give numbers separated by commas, e.g. --point 0,0")
    try:
        values = [float(v) for v in body.split(",")]
    except ValueError:
        raise UsageError(f"--point {text!r} is not a list of numbers: write e.g. --point 0,0.5") from None
    if not all(math.isfinite(v) for v in values):
        raise UsageError(f"--point {text!r} must be finite numbers")
    return values


def _int_option(name: str, text: str, low: int, high: int | None = None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--{name} must be an integer, got {text!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise UsageError(f"--{name} must be {bound}, got {value}")
    return value


def first_linear(model: Any) -> nn.Linear | None:
    if not isinstance(model, nn.Module):
        return None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            return m
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)):
            return None
    return None


def resolve_point(model: Any, args: Any, names: list[str] | None, namespace: dict[str, Any]) -> Any:
    """The reference point from --point, --point-from or the model's first layer; checked against the model."""
    if args.point is not None and args.point_from is not None:
        raise UsageError("give either --point or --point-from, not both")
    linear = first_linear(model)
    if args.point_from is not None:
        if args.point_from not in namespace:
            raise UsageError(f"--point-from: no variable named {args.point_from!r} in the notebook")
        return namespace[args.point_from]
    shape = _parse_shape(args.shape) if getattr(args, "shape", None) is not None else None
    if args.point is not None:
        values = parse_point(args.point)
        if linear is not None and len(values) != linear.in_features and shape is None:
            raise UsageError(f"--point has {len(values)} value(s) but the model's first layer takes "
                             f"{linear.in_features} input(s)")
        if names is not None and len(values) != len(names):
            raise UsageError(f"--point has {len(values)} value(s) but --names gives {len(names)}")
        point = torch.tensor(values, dtype=torch.float64)  # as typed: 0.1 stays 0.1
    elif linear is not None:
        point = torch.zeros(linear.in_features, dtype=torch.float64)
    elif names is not None:
        point = torch.zeros(len(names), dtype=torch.float64)
    else:
        point = None
    if point is None and shape is not None:
        point = torch.zeros(shape, dtype=torch.float64)
    if point is not None:
        if shape is not None:
            if math.prod(shape) != point.numel():
                raise UsageError(f"--shape {args.shape} holds {math.prod(shape)} values but --point gives "
                                 f"{point.numel()}")
            return point.reshape(shape)
        return _batched_if_needed(model, point)
    if isinstance(model, nn.Module):
        raise UsageError("cannot tell how many inputs the model takes: give --point 0,0 or --point-from VAR")
    return torch.zeros(1)


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.strip().strip("[]()").replace(" ", "").split(",") if v)
    except ValueError:
        raise UsageError(f"--shape {text!r} must be integers separated by commas, e.g. --shape 1,2") from None
    if not shape or any(d <= 0 for d in shape):
        raise UsageError(f"--shape {text!r} must be positive integers, e.g. --shape 1,2")
    return shape


def _batched_if_needed(model: Any, point: torch.Tensor) -> torch.Tensor:
    """The 1-d point, or (1, n) when the model runs only with a batch axis (BatchNorm1d, x[:, :1], Flatten)."""
    if point.dim() != 1:
        return point
    try:
        traced_call(lambda: expand(model, point, 0))
        return point
    except Exception:  # noqa: BLE001 - any failure: try with a batch axis, else let the panel report the 1-d error
        pass
    try:
        traced_call(lambda: expand(model, point.unsqueeze(0), 0))
        return point.unsqueeze(0)
    except Exception:  # noqa: BLE001
        return point


def cell_function(body: str, names: list[str] | None, namespace: dict[str, Any]) -> Callable:
    """A function of one tensor x from a cell: statements, then an expression of x (or of the --names)."""
    try:
        tree = ast.parse(body, mode="exec")
    except SyntaxError as e:
        raise UsageError(f"%%hope: the cell is not valid Python: {e.msg} (line {e.lineno})") from None
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        raise UsageError("%%hope: the cell must end with an expression of x, e.g. sin(x[0]) * exp(x[1])")
    last = tree.body[-1]
    statements = [*tree.body[:-1], ast.Return(value=last.value)]
    unpack = [ast.parse(f"{name} = x[{i}]").body[0] for i, name in enumerate(names or [])]
    module = ast.parse("def cell_function(x):\n    pass\n")
    module.body[0].body = [*unpack, *statements]
    ast.fix_missing_locations(module)
    scope: dict[str, Any] = {name: getattr(torch, name) for name in CELL_FUNCTIONS}
    scope["torch"] = torch
    scope.update(namespace)
    exec(compile(module, "<%%hope cell>", "exec"), scope)  # noqa: S102 - the user's own cell, like any cell
    return scope["cell_function"]


@magics_class
class HopeMagics(Magics):
    """``%hope MODEL [options]`` and ``%%hope [options]`` (the cell is an expression of x)."""

    @line_magic
    @magic_arguments()
    @argument("model", nargs="?", default=None, help="a torch.nn.Module or a function of one tensor, by name")
    @_options
    def hope(self, line: str) -> HopePanel | None:
        """Show the Taylor polynomial of MODEL around a point in a live panel, and return the panel.

        An order slider truncates one expansion (no recomputation), point sliders recompute, plots compare the
        network with the polynomial. Examples::

            %hope net
            %hope net --point 0.5,-1 --order 4 --names x,y
            panel = %hope cnn --point-from image --terms pure
        """
        if _wants_help(line):
            print(self.hope.__doc__)
            return None
        with _one_line_errors():
            return self._line(line)

    def _line(self, line: str) -> HopePanel:
        args = parse_argstring(self.hope, attach_negative_values(line))
        if args.model is None:
            raise UsageError("%hope needs a model: %hope MODEL [--point 0,0] (see %hope --help)")
        ns = self.shell.user_ns
        if args.model not in ns:
            raise UsageError(f"%hope: no variable named {args.model!r} in the notebook")
        model = ns[args.model]
        if not (isinstance(model, nn.Module) or callable(model)):
            raise UsageError(f"%hope: {args.model!r} is a {type(model).__name__}, not a torch.nn.Module or a function")
        return self._show(model, args, title=args.model)

    @cell_magic("hope")
    @magic_arguments()
    @_options
    def hope_cell(self, line: str, cell: str) -> HopePanel | None:
        """Expand the function of x the cell computes, e.g. ``%%hope --point 0.5,1`` then ``sin(x[0]) * exp(x[1])``.

        x is the point as a 1-d tensor; with --names a,b the names a and b are x[0] and x[1]. Earlier lines may be
        statements; torch and sin, cos, exp, log, sqrt, tanh, sigmoid, ... are available without imports.
        """
        if _wants_help(line):
            print(self.hope_cell.__doc__)
            return None
        with _one_line_errors():
            args = parse_argstring(self.hope_cell, attach_negative_values(line))
            model = cell_function(cell, _split_names(args.names), self.shell.user_ns)
            return self._show(model, args, title="%%hope cell")

    def _show(self, model: Callable, args: Any, title: str) -> HopePanel:
        names = _split_names(args.names)
        max_order = _int_option("max-order", args.max_order, 0)
        order = min(6, max_order) if args.order is None else _int_option("order", args.order, 0, max_order)
        output = _int_option("output", args.output, 0)
        try:
            radius = float(args.radius)
        except ValueError:
            raise UsageError(f"--radius must be a number, got {args.radius!r}") from None
        if not (math.isfinite(radius) and radius > 0):
            raise UsageError(f"--radius must be a positive number, got {args.radius!r}")
        point = resolve_point(model, args, names, self.shell.user_ns)
        try:
            panel = HopePanel(model, point, order=order, max_order=max_order, terms=args.terms, output=output,
                              names=names, method=args.method, radius=radius, title=title, wrt=_parse_wrt(args.wrt),
                              certify_tol=_certify_tol(args.certify))
        except Exception as e:  # noqa: BLE001 - any failure becomes one readable line
            raise UsageError(f"%hope: {describe(e)}") from None
        display(panel)
        # the panel is also the magic's return value: keep IPython from showing it a second time as Out[n]
        panel.mark_displayed()
        shell = self.shell

        def forget(*_: Any) -> None:
            panel.mark_displayed(False)
            shell.events.unregister("post_run_cell", forget)

        shell.events.register("post_run_cell", forget)
        return panel


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Every UsageError reads '%hope: ...' (IPython prints it as one line, without a traceback)."""
    try:
        yield
    except UsageError as e:
        text = str(e)
        raise UsageError(text if text.startswith(("%hope", "%%hope")) else f"%hope: {text}") from None


def _certify_tol(text: str | None) -> float:
    """--certify 1e-3 -> 0.001 (0 when absent: no band)."""
    if text is None:
        return 0.0
    try:
        tol = float(text)
    except ValueError:
        raise UsageError(f"--certify must be a tolerance (a positive number), got {text!r}") from None
    if not (math.isfinite(tol) and tol > 0):
        raise UsageError(f"--certify must be a positive number, got {text!r}")
    return tol


def _parse_wrt(text: str | None) -> list | None:
    """'x,t' -> ['x', 't']; '0,1' -> [0, 1]."""
    if text is None:
        return None
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise UsageError("--wrt is empty: name the inputs to expand in, e.g. --wrt x,t or --wrt 0")
    return [int(s) if s.lstrip("-").isdigit() else s for s in items]


_VALUE_OPTIONS = ("--point", "--radius", "--shape")


def attach_negative_values(line: str) -> str:
    """'--point -0.5,1' -> '--point=-0.5,1': argparse reads a value starting with '-' as an option otherwise."""
    pattern = "(" + "|".join(re.escape(o) for o in _VALUE_OPTIONS) + r")\s+(-[\d.])"
    return re.sub(pattern, r"\1=\2", line)


def _wants_help(line: str) -> bool:
    return any(tok in ("-h", "--help") for tok in line.split())


def _split_names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise UsageError("--names is empty: write e.g. --names x,y")
    bad = [s for s in names if not s.isidentifier()]
    if bad:
        raise UsageError(f"--names must be identifiers, got {', '.join(map(repr, bad))}")
    return names
