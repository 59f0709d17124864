"""Random small programs that mix smooth ops with the constructs autograd treats as constants (hypothesis).

A program is Python source, ``def f(x): ...`` of one float64 vector ``x`` of 2-3 elements, returning a scalar or a
vector; it is compiled (and registered with ``linecache``, so tracebacks and ``inspect.getsource`` show it) into a
plain function, exactly as a user would write it. Every intermediate value is a float64 scalar or an (n,) vector.

The steps are smooth ops (add, mul, sin, tanh, exp, a fixed random matrix times a vector, sum, indexing by constants)
and *constants to autograd*: ``.detach()``, a ``torch.no_grad()`` block, a ``torch.inference_mode()`` block (its result
cloned outside, or not: ``programs`` leaves it to the test to reject programs that torch itself refuses), ``.data``,
``torch.tensor(t)``, ``torch.as_tensor(t.detach())``, and casts to integer and bool dtypes used arithmetically (cast
back to float, or promoted by ``+``/``*``) and as indices (into a constant table, into a value derived from x, a bool
mask). ``Program.cast_arguments(x0)`` gives the value at x0 of every cast's argument with where its jumps are, so a
test can keep the point away from them (the derivative is undefined on a jump).
"""

from __future__ import annotations

import itertools
import linecache
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from hypothesis import strategies as st

D = torch.float64

# smooth ops (matmul, sum, index and permute take a vector operand, the others a vector or a scalar)
SMOOTH = ("add", "mul", "sin", "tanh", "exp", "matmul", "sum", "index", "permute")
UNARY_SMOOTH = ("sin", "tanh", "exp")
# constructs autograd treats as constants (wholly or through an integer/bool cast)
CONSTRUCTS = ("detach", "no_grad", "inference_mode", "data", "tensor", "as_tensor", "long_arith", "int32_arith",
              "long_add", "bool_arith", "bool_mul", "bool_cast", "table_index", "self_index", "mask_sum")
INT_CASTS = (".long()", ".to(torch.int32)")
# in-place writes autograd does not see (under no_grad, through .data or .detach(), into a view under no_grad): the
# written tensor keeps the derivatives of its old value (opt-in: ``programs(constructs=CONSTRUCTS + WRITES)``)
WRITES = ("no_grad_add", "no_grad_setitem", "no_grad_view", "no_grad_relu", "data_mul", "detach_mul")

_counter = itertools.count()


def cast_jump_distance(kind: str, t: torch.Tensor) -> float:
    """Distance of the cast argument ``t`` from the nearest jump of the cast.

    "trunc": float -> integer (rounds toward zero: jumps at the non-zero integers); "sign": ``t > 0`` or a bool cast
    (a jump at 0).
    """
    t = t.detach().to(D).reshape(-1).abs()
    if t.numel() == 0:
        return float("inf")
    if kind == "sign":
        return float(t.min())
    nearest = torch.clamp(torch.round(t), min=1.0)
    return float((t - nearest).abs().min())


@dataclass
class Program:
    """One generated program: its source, the compiled function, its constants and the point to expand at."""

    n: int
    body: list[str]
    result: str
    constants: dict[str, torch.Tensor]
    casts: list[tuple[str, str]]  # (kind, expression of the cast's argument)
    x0: torch.Tensor
    fn: Callable = field(init=False, repr=False)
    _probe: Callable = field(init=False, repr=False)

    def __post_init__(self):
        self.fn = self._compile(self.source, "f")
        probe = ["def probe(x):", *("    " + line for line in self.body),
                 "    return [" + ", ".join(f"({k!r}, {e})" for k, e in self.casts) + "]"]
        self._probe = self._compile("\n".join(probe) + "\n", "probe")

    @property
    def source(self) -> str:
        return "\n".join(["def f(x):", *("    " + line for line in self.body), f"    return {self.result}"]) + "\n"

    def _compile(self, source: str, name: str) -> Callable:
        filename = f"<hope-program-{next(_counter)}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        namespace = {"torch": torch, **self.constants}
        exec(compile(source, filename, "exec"), namespace)
        return namespace[name]

    def cast_arguments(self, x: torch.Tensor | None = None) -> list[tuple[str, torch.Tensor]]:
        """(jump kind, value of the argument) of every integer/bool cast, evaluated at x (default x0)."""
        with torch.no_grad():
            return self._probe((self.x0 if x is None else x).clone())

    def jump_distance(self, x: torch.Tensor | None = None, probes: int = 4, step: float = 1e-7) -> float:
        """How far (in the casts' arguments) the point is from the nearest jump of any cast; inf without casts.

        A cast whose argument does not move when x does (the argument is itself piecewise constant near x: a cast of
        a cast, a mask) is left out: it is computed exactly, whatever its value. Moving means changing under any of
        ``probes`` random displacements of x of size ``step``.
        """
        x = self.x0 if x is None else x
        here = self.cast_arguments(x)
        gen = torch.Generator().manual_seed(0)
        moved = [self.cast_arguments(x + step * torch.randn(x.shape, generator=gen, dtype=x.dtype))
                 for _ in range(probes)]
        distances = [cast_jump_distance(k, t) for i, (k, t) in enumerate(here)
                     if any(not torch.equal(t, m[i][1]) for m in moved)]
        return min(distances, default=float("inf"))

    def largest_cast_argument(self, x: torch.Tensor | None = None) -> float:
        return max((float(t.abs().max()) for _, t in self.cast_arguments(x) if t.numel()), default=0.0)

    def _repr_pretty_(self, printer, cycle) -> None:  # hypothesis prints a failing example with this
        printer.text(repr(self))

    def __repr__(self) -> str:
        consts = "".join(f"{k} = torch.tensor({v.tolist()}, dtype=torch.float64)\n" for k, v in self.constants.items())
        return f"\n{consts}{self.source}x0 = torch.tensor({self.x0.tolist()}, dtype=torch.float64)\n"


class _Builder:
    """Appends steps to a program body; each step defines one new value v<k>, a scalar ("s") or a vector ("v")."""

    def __init__(self, n: int, gen: torch.Generator):
        self.n, self.gen = n, gen
        self.values: list[tuple[str, str]] = [("x", "v")]
        self.used: set[str] = set()
        self.body: list[str] = []
        self.constants: dict[str, torch.Tensor] = {}
        self.casts: list[tuple[str, str]] = []

    def new(self, kind: str) -> str:
        name = f"v{len(self.values)}"
        self.values.append((name, kind))
        return name

    def use(self, *names: str) -> None:
        self.used.update(names)

    def constant(self, prefix: str, shape: tuple[int, ...], scale: float) -> str:
        name = f"{prefix}{sum(k.startswith(prefix) for k in self.constants)}"
        self.constants[name] = (torch.randn(shape, generator=self.gen, dtype=D) * scale).round(decimals=3)
        return name

    def kind(self, name: str) -> str:
        return dict(self.values)[name]


def _smooth_expr(draw, b: _Builder, op: str) -> tuple[str, str]:
    """(expression, kind of its value) of one smooth op on operands drawn from b's values."""
    names = [v for v, _ in b.values]
    vectors = [v for v, k in b.values if k == "v"]
    if op in ("add", "mul"):
        a, c = draw(st.sampled_from(names)), draw(st.sampled_from(names))
        b.use(a, c)
        return f"{a} {'+' if op == 'add' else '*'} {c}", "v" if "v" in (b.kind(a), b.kind(c)) else "s"
    if op in UNARY_SMOOTH:
        a = draw(st.sampled_from(names))
        b.use(a)
        return {"sin": f"torch.sin({a})", "tanh": f"torch.tanh({a})", "exp": f"torch.exp(0.5 * {a})"}[op], b.kind(a)
    a = draw(st.sampled_from(vectors))
    b.use(a)
    if op == "matmul":
        return f"{b.constant('W', (b.n, b.n), 0.8)} @ {a}", "v"
    if op == "sum":
        return f"{a}.sum()", "s"
    if op == "index":
        return f"{a}[{draw(st.integers(0, b.n - 1))}]", "s"
    if op == "permute":
        return f"{a}[{draw(st.permutations(range(b.n)))}]", "v"
    raise AssertionError(op)


def _construct(draw, b: _Builder, op: str) -> None:
    """Append the lines of one construct that autograd treats as a constant (wholly, or through a cast)."""
    names = [v for v, _ in b.values]
    vectors = [v for v, k in b.values if k == "v"]
    if op in ("detach", "data", "tensor", "as_tensor"):
        a = draw(st.sampled_from(names))
        b.use(a)
        v = b.new(b.kind(a))
        b.body.append(f"{v} = " + {"detach": f"{a}.detach()", "data": f"{a}.data", "tensor": f"torch.tensor({a})",
                                   "as_tensor": f"torch.as_tensor({a}.detach())"}[op])
    elif op in ("no_grad", "inference_mode"):
        expr, kind = _smooth_expr(draw, b, draw(st.sampled_from(SMOOTH)))
        v = b.new(kind)
        clone = op == "inference_mode" and draw(st.booleans())
        b.body += [f"with torch.{op}():", f"    {v}{'_inf' if clone else ''} = {expr}"]
        if clone:
            b.body.append(f"{v} = {v}_inf.clone()")
    elif op in ("long_arith", "int32_arith", "long_add"):
        a = draw(st.sampled_from(names))
        b.use(a)
        scale = draw(st.sampled_from([3, 10]))
        arg = f"({scale} * {a})"
        b.casts.append(("trunc", arg))
        if op == "long_add":
            c = draw(st.sampled_from(names))
            b.use(c)
            v = b.new("v" if "v" in (b.kind(a), b.kind(c)) else "s")
            b.body.append(f"{v} = {c} + {arg}.long()")  # type promotion: long + float64 -> float64
        else:
            v = b.new(b.kind(a))
            b.body.append(f"{v} = {arg}{'.long()' if op == 'long_arith' else '.to(torch.int32)'}.to(torch.float64)")
    elif op in ("bool_arith", "bool_mul", "bool_cast"):
        a = draw(st.sampled_from(names))
        b.use(a)
        b.casts.append(("sign", a))
        if op == "bool_mul":
            c = draw(st.sampled_from(names))
            b.use(c)
            v = b.new("v" if "v" in (b.kind(a), b.kind(c)) else "s")
            b.body.append(f"{v} = ({a} > 0) * {c}")  # bool * float64 -> float64
        else:
            v = b.new(b.kind(a))
            b.body.append(f"{v} = ({a} > 0).to(torch.float64)" if op == "bool_arith"
                          else f"{v} = {a}.to(torch.bool).to(torch.float64)")
    elif op == "table_index":
        a = draw(st.sampled_from(names))
        b.use(a)
        cast = draw(st.sampled_from(INT_CASTS))
        b.casts.append(("trunc", f"(3 * {a})"))
        v = b.new(b.kind(a))
        b.body.append(f"{v} = {b.constant('T', (5,), 1.0)}[(3 * {a}){cast}.clamp(0, 4)]")
    elif op == "self_index":
        a, y = draw(st.sampled_from(names)), draw(st.sampled_from(vectors))
        b.use(a, y)
        cast = draw(st.sampled_from(INT_CASTS))
        b.casts.append(("trunc", f"(3 * {a})"))
        v = b.new(b.kind(a))
        b.body.append(f"{v} = {y}[(3 * {a}){cast}.clamp(0, {b.n - 1})]")
    elif op in WRITES:
        a, c = draw(st.sampled_from(vectors)), draw(st.sampled_from(names))
        b.use(a, c)
        v = b.new("v")
        b.body.append(f"{v} = {a} * 1.0")  # a fresh tensor (never a write into x)
        i = draw(st.integers(0, b.n - 1))
        part = f"{c}[{i}]" if b.kind(c) == "v" else c
        b.body += {"no_grad_add": ["with torch.no_grad():", f"    {v}.add_(torch.sin({c}))"],
                   "no_grad_setitem": ["with torch.no_grad():", f"    {v}[{i}] = 2 * {part}"],
                   "no_grad_view": ["with torch.no_grad():", f"    {v}[{i}:].mul_(torch.tanh({part}))"],
                   "no_grad_relu": ["with torch.no_grad():", f"    torch.relu_({v})"],
                   "data_mul": [f"{v}.data.mul_(1.5 + torch.tanh({c}.detach()))"],
                   "detach_mul": [f"{v}.detach()[{i}:].mul_(torch.exp(0.5 * {part}.detach()))"]}[op]
    elif op == "mask_sum":
        a, y = draw(st.sampled_from(vectors)), draw(st.sampled_from(vectors))
        b.use(a, y)
        b.casts.append(("sign", a))
        v = b.new("s")
        b.body.append(f"{v} = {y}[{a} > 0].sum()")
    else:
        raise AssertionError(op)


@st.composite
def programs(draw, min_steps: int = 2, max_steps: int = 6, constructs: tuple = CONSTRUCTS) -> Program:
    """A random program with at least one construct, and a point x0 in [-1, 1]^n (on a 1e-3 grid, shifted off it so
    that 3 x and 10 x are not integers; casts of derived values can still sit near a jump: see ``jump_distance``)."""
    n = draw(st.integers(2, 3))
    b = _Builder(n, torch.Generator().manual_seed(draw(st.integers(0, 2**16))))
    steps = draw(st.integers(min_steps, max_steps))
    forced = draw(st.integers(0, steps - 1))
    for i in range(steps):
        if i == forced or draw(st.booleans()):
            _construct(draw, b, draw(st.sampled_from(constructs)))
        else:
            expr, kind = _smooth_expr(draw, b, draw(st.sampled_from(SMOOTH)))
            b.body.append(f"{b.new(kind)} = {expr}")
    # the result adds up x and every value no later step used, so every step contributes
    leaves = ["x"] + [v for v, _ in b.values[1:] if v not in b.used]
    total = " + ".join(leaves)
    result = total if draw(st.sampled_from(["vector", "scalar"])) == "vector" else f"({total}).sum()"
    x0 = torch.tensor([draw(st.integers(-999, 999)) / 1000 + 0.000371 for _ in range(n)], dtype=D)
    return Program(n, b.body, result, b.constants, b.casts, x0)
