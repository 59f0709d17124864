"""The result of an expansion: a truncated Taylor polynomial P(x) = sum_a c_a (x - x0)^a over a basis of multi-indices.

``coefficients[m]`` is c_{a_m} = (d^{a_m} f)(x0) / a_m! for every output element (and every reference point of a
batch), so derivatives, evaluation, truncation, re-centring and printing are all cheap operations on one tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hope_engine.algebra.basis import Basis
from hope_engine.caches import BoundedCache


@dataclass(frozen=True)
class Term:
    """One monomial of a scalar polynomial: c * prod_i (x_i - x0_i)^alpha_i, with d^alpha f(x0) = c * alpha!."""

    alpha: tuple[int, ...]
    coefficient: float
    derivative: float
    monomial: str

    @property
    def degree(self) -> int:
        return sum(self.alpha)


_PARENTS = BoundedCache("monomial parents")
_SHIFTS = BoundedCache("taylor shift pairs", max_entries=32)


def monomial_parents(basis: Basis) -> tuple[torch.Tensor, torch.Tensor]:
    """For m >= 1: a_m = a_parent[m] + e_var[m] (monomials built degree by degree, one product each)."""
    return _PARENTS.get_or_build(basis, lambda: _monomial_parents(basis))


def _monomial_parents(basis: Basis) -> tuple[torch.Tensor, torch.Tensor]:
    parent, var = [0], [0]
    for a in basis.multi_indices()[1:]:
        v = max(i for i, e in enumerate(a) if e)
        b = list(a)
        b[v] -= 1
        parent.append(basis.position(b))
        var.append(v)
    return torch.tensor(parent), torch.tensor(var)


def monomial_table(t: torch.Tensor, parent: torch.Tensor, var: torch.Tensor, offsets) -> torch.Tensor:
    """(M, N) table of t^(a_m) for N points t (N, n): row m = row parent[m] * t[:, var[m]], one degree block at a time.

    Rows per monomial (not columns) make every step a contiguous row gather, about 3x faster than (N, M)."""
    rows = t.transpose(0, 1)
    out = t.new_empty((offsets[-1], t.shape[0]))
    out[0] = 1
    for start, stop in zip(offsets[1:-1], offsets[2:]):
        out[start:stop] = out[parent[start:stop]] * rows[var[start:stop]]
    return out


def _shift_pairs(basis: Basis) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs b <= a in the basis with binom(a, b) and a - b, for the Taylor shift c'_b = sum_a c_a C(a,b) s^(a-b)."""
    return _SHIFTS.get_or_build(basis, lambda: _build_shift_pairs(basis))


def _build_shift_pairs(basis: Basis) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    src, dst, binoms, diffs = [], [], [], []
    rows = basis.multi_indices()
    for ia, a in enumerate(rows):
        support = [i for i, e in enumerate(a) if e]
        ranges = [range(a[i] + 1) for i in support]
        for combo in _product(ranges):
            b = list(a)
            for i, e in zip(support, combo):
                b[i] = e
            src.append(ia)
            dst.append(basis.position(b))
            binoms.append(math.prod(math.comb(a[i], e) for i, e in zip(support, combo)))
            diffs.append([x - y for x, y in zip(a, b)])
    return (torch.tensor(src), torch.tensor(dst), torch.tensor(binoms, dtype=torch.float64),
            torch.tensor(diffs, dtype=torch.long).reshape(len(src), basis.n))


def _product(ranges):
    if not ranges:
        yield ()
        return
    first, *rest = ranges
    for x in first:
        for tail in _product(rest):
            yield (x, *tail)


def _times_integer(t: torch.Tensor, k: int) -> torch.Tensor:
    """t * k for a Python int k >= 1 of any size, returned in t's dtype.

    k = mantissa * 2**shift with mantissa < 2**1000, rounded once to a float (Python's int / int is correctly
    rounded); the product is formed in double precision and then scaled by exact powers of two. The magnitude only
    grows along the way, so an intermediate overflows only if the result does.
    """
    shift = max(0, k.bit_length() - 1000)
    out = t.to(torch.promote_types(t.dtype, torch.float64)) * (k / (1 << shift))
    while shift:
        step = min(shift, 1000)
        out = out * 2.0**step
        shift -= step
    return out.to(t.dtype)


def shortest_repr(v: float, dtype: torch.dtype) -> str:
    """The shortest decimal that rounds to ``v`` in ``dtype``: a float32 value as the user typed it (0.1, not
    0.100000001490116); Python's repr (the same rule in float64) for float64 and non-finite values."""
    if dtype == torch.float64 or not dtype.is_floating_point or not math.isfinite(v):
        return repr(v)
    for digits in range(1, 18):
        s = f"{v:.{digits}g}"
        if torch.tensor(float(s), dtype=dtype).item() == v:
            return s
    return repr(v)


def latex_number(v: float, digits: int) -> str:
    """v to ``digits`` significant digits, exponents as LaTeX (1.5 \\cdot 10^{-7}): the panel shares this format."""
    s = f"{v:.{digits}g}"
    if "e" in s:
        mant, exp = s.split("e")
        return rf"{mant} \cdot 10^{{{int(exp)}}}"
    return s


class TaylorPolynomial:
    """Taylor polynomial of a model at a reference point (or one per point of a batch).

    Attributes: ``basis`` (multi-indices, degree-ordered), ``coefficients`` (M, *output_shape), ``center`` (the
    reference input as given to the model), ``variables`` (flat indices, within one input row, of the expansion
    variables), ``batched`` (whether axis 0 of the input and output indexes reference points), ``names``.
    """

    def __init__(self, basis: Basis, coefficients: torch.Tensor, center: torch.Tensor, variables: torch.Tensor,
                 batched: bool, names: list[str] | None = None, method: str = "exact", checks: tuple = ()):
        if coefficients.shape[0] != basis.size:
            raise ValueError(f"coefficients have {coefficients.shape[0]} rows, basis has {basis.size}")
        self.basis = basis
        self.coefficients = coefficients
        self.center = center
        self.variables = variables
        self.batched = batched
        self.names = list(names) if names is not None else [f"x{i + 1}" for i in range(basis.n)]
        self.method = method
        self.checks = tuple(checks)  # what was checked against the model's own torch run: "value", "gradient"

    # ------------------------------------------------------------------------------------------- shape facts
    @property
    def order(self) -> int:
        return self.basis.order

    @property
    def n(self) -> int:
        return self.basis.n

    @property
    def terms_kind(self) -> str:
        return self.basis.kind

    @property
    def output_shape(self) -> torch.Size:
        """Shape of the model output this polynomial stands for (including the batch axis when batched)."""
        return self.coefficients.shape[1:]

    @property
    def batch_size(self) -> int | None:
        return int(self.center.shape[0]) if self.batched else None

    @property
    def row_shape(self) -> torch.Size:
        return self.center.shape[1:] if self.batched else self.center.shape

    @property
    def center_values(self) -> torch.Tensor:
        """Values of the expansion variables at the centre: (B, n) when batched, else (n,)."""
        flat = self.center.reshape(self.center.shape[0], -1) if self.batched else self.center.reshape(-1)
        return flat[..., self.variables]

    @property
    def outputs_per_point(self) -> int:
        """Number of output elements per reference point."""
        lead = 2 if self.batched else 1
        return math.prod(self.coefficients.shape[lead:])

    def replace(self, **changes) -> TaylorPolynomial:
        """A copy with some fields changed (basis, coefficients, center, variables, batched, names, method, checks)."""
        fields = dict(basis=self.basis, coefficients=self.coefficients, center=self.center,
                      variables=self.variables, batched=self.batched, names=self.names, method=self.method,
                      checks=self.checks)
        fields.update(changes)
        return TaylorPolynomial(**fields)


    # ------------------------------------------------------------------------------------------ coefficients
    def _alpha(self, alpha) -> tuple[int, ...]:
        if isinstance(alpha, dict):
            a = [0] * self.n
            for k, v in alpha.items():
                a[self.names.index(k) if isinstance(k, str) else int(k)] += int(v)
            return tuple(a)
        if isinstance(alpha, int):
            alpha = (alpha,)
        return tuple(int(v) for v in alpha)

    def coefficient(self, alpha) -> torch.Tensor:
        """Taylor coefficient c_alpha = d^alpha f(x0) / alpha!, shaped like the model output."""
        return self.coefficients[self.basis.position(self._alpha(alpha))]

    def derivative(self, alpha) -> torch.Tensor:
        """Partial derivative d^|alpha| f / dx^alpha at x0 = c_alpha * alpha!, shaped like the model output.

        alpha! is an exact integer of any size (past 2**64 at order 21, past the float64 range at order 171); it is
        applied without ever becoming one float, so no order overflows unless the derivative itself does.
        """
        a = self._alpha(alpha)
        return _times_integer(self.coefficient(a), math.prod(math.factorial(v) for v in a))

    def derivatives(self) -> torch.Tensor:
        """All kept derivatives, (M, *output_shape): coefficients times alpha!."""
        f = self.basis.factorials(self.coefficients.dtype).to(self.coefficients.device)
        return self.coefficients * f.reshape(-1, *([1] * (self.coefficients.dim() - 1)))

    @property
    def value(self) -> torch.Tensor:
        return self.coefficients[0]

    # ------------------------------------------------------------------------------------------- evaluation
    def monomials(self, t: torch.Tensor) -> torch.Tensor:
        """All basis monomials t^a_m for displacements t (..., n): (..., M), built degree by degree."""
        parent, var = (v.to(t.device) for v in monomial_parents(self.basis))
        table = monomial_table(t.reshape(-1, self.n), parent, var, self.basis.offsets)
        return table.transpose(0, 1).reshape(*t.shape[:-1], self.basis.size)

    def displacement(self, x: torch.Tensor) -> torch.Tensor:
        """t = x - x0 over the expansion variables, for points x shaped (..., *row_shape) or (..., n)."""
        x = torch.as_tensor(x, dtype=self.coefficients.dtype, device=self.coefficients.device)
        row = self.row_shape
        if len(row) and tuple(x.shape[x.dim() - len(row):]) == tuple(row):
            flat = x.reshape(*x.shape[:x.dim() - len(row)], -1)[..., self.variables]
        elif x.dim() >= 1 and x.shape[-1] == self.n:
            flat = x
        elif self.n == 1 and x.dim() >= 0 and len(row) <= 1:
            flat = x.reshape(*x.shape, 1) if not len(row) or x.dim() == 0 or x.shape[-1] != 1 else x
        else:
            raise ValueError(
                f"points of shape {tuple(x.shape)} do not fit this polynomial: "
                f"expected (..., {', '.join(map(str, row))})"
                f" like the model input rows, or (..., {self.n}) for the {self.n} expansion variables"
            )
        return flat - self.center_values

    def __call__(self, x) -> torch.Tensor:
        """Evaluate at points x shaped like model inputs (..., *row_shape): returns (..., *output row shape).

        For a batch of B polynomials, the second-to-last point axis must be B (or 1): point i uses polynomial i.
        """
        return self._evaluate(self.monomials(self.displacement(x)))

    def _evaluate(self, mono: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """sum_m c_m mono_m over the basis rows ``rows``, for monomial values (..., M)."""
        c = self.coefficients[rows]
        mono = mono[..., rows]
        if self.batched:
            b = c.shape[1]
            rest = c.shape[2:]
            cf = c.reshape(c.shape[0], b, -1)
            if b == 1:
                out = mono @ cf[:, 0]
            else:
                if mono.dim() < 2 or mono.shape[-2] not in (1, b):
                    raise ValueError(f"points for a batch of {b} polynomials need shape (..., {b}, *row_shape)")
                out = torch.einsum("...bm,mbr->...br", mono, cf)
            return out.reshape(tuple(out.shape[:-1]) + tuple(rest))
        cf = c.reshape(c.shape[0], -1)
        out = mono @ cf
        return out.reshape(tuple(out.shape[:-1]) + tuple(c.shape[1:]))

    # ----------------------------------------------------------------------------------------- restructuring
    def truncate(self, order: int) -> TaylorPolynomial:
        """The same expansion to a lower order (a prefix of the coefficients: no recomputation)."""
        if order < 0:
            raise ValueError("order must be >= 0")
        basis = self.basis.truncate(order)
        return self.replace(basis=basis, coefficients=self.coefficients[: basis.size])

    def select(self, output) -> TaylorPolynomial:
        """One output element (an int into the flattened per-point output, or an index tuple)."""
        lead = 2 if self.batched else 1
        return self.replace(coefficients=select_output(self.coefficients, output, lead))

    def point(self, i: int) -> TaylorPolynomial:
        """The polynomial of reference point i of a batch (kept batched with batch size 1)."""
        if not self.batched:
            raise ValueError("this polynomial has a single reference point")
        return self.replace(coefficients=self.coefficients[:, i: i + 1], center=self.center[i: i + 1])

    def recenter(self, x1) -> TaylorPolynomial:
        """Taylor shift: the same polynomial written around x1, c'_b = sum_{a >= b} c_a binom(a, b) (x1 - x0)^(a - b).

        Exact for the polynomial (not for the network beyond it); used to compare expansions taken at different points.
        """
        x1 = torch.as_tensor(x1, dtype=self.center.dtype, device=self.center.device)
        if x1.shape != self.center.shape:
            x1 = x1.reshape(self.center.shape)
        s = self.displacement(x1)  # (B, n) or (n,)
        src, dst, binom, diff = (v.to(s.device) for v in _shift_pairs(self.basis))
        powers = torch.stack([s ** p for p in range(self.order + 1)], dim=-1)  # (..., n, K+1)
        gathered = powers[..., torch.arange(self.n, device=s.device), diff]  # (..., P, n)
        weight = gathered.prod(-1) * binom.to(s.dtype)  # (..., P)
        c = self.coefficients
        if self.batched:
            w = weight.transpose(0, 1).reshape(len(src), c.shape[1], *([1] * (c.dim() - 2)))
        else:
            w = weight.reshape(len(src), *([1] * (c.dim() - 1)))
        new = torch.zeros_like(c).index_add_(0, dst, c[src] * w)
        center = self.center.clone()
        flat = center.reshape(center.shape[0], -1) if self.batched else center.reshape(-1)
        x1flat = x1.reshape(flat.shape)
        flat[..., self.variables] = x1flat[..., self.variables]
        return self.replace(coefficients=new, center=center)

    # ----------------------------------------------------------------------------------------------- terms
    def scalar(self, output=None, point: int | None = None) -> TaylorPolynomial:
        """The polynomial of one output element (``output``: flat int or index tuple; may be omitted when there is
        one) at one reference point (``point``: index into a batch, returned unbatched; None keeps the batch)."""
        p = self.select(output) if output is not None else self
        if p.outputs_per_point != 1:
            raise ValueError(f"this polynomial has {p.outputs_per_point} outputs per point; pick one with output=i "
                             "(or p.select(i))")
        if point is not None and p.batched:
            if not -p.coefficients.shape[1] <= point < p.coefficients.shape[1]:
                raise IndexError(f"point {point} out of range: the batch has {p.coefficients.shape[1]} points")
            p = p.replace(coefficients=p.coefficients[:, point], center=p.center[point], batched=False)
        return p

    def scalar_coefficients(self, output=None, point: int = 0) -> torch.Tensor:
        """(M,) coefficients of one output element at one reference point."""
        c = self.scalar(output, point).coefficients
        return c.reshape(c.shape[0])


    def partial_sums(self, x) -> torch.Tensor:
        """Values of the truncations P_0, P_1, ..., P_K at points x: (K + 1, *P(x).shape); P_k keeps degrees <= k."""
        mono = self.monomials(self.displacement(x))
        return torch.stack([self._evaluate(mono, self.basis.block(k)) for k in range(self.order + 1)]).cumsum(0)

    def term_latex(self, alpha, coefficient: float, digits: int = 4, point: int = 0) -> str:
        """The LaTeX body of one term, |c| times its monomial, without the sign (as ``latex`` writes it)."""
        mag = latex_number(abs(coefficient), digits)
        mono = self.monomial_text(alpha, style="latex", point=point)
        return mag if mono == "1" else (mono if mag == "1" else f"{mag}\\, {mono}")

    def monomial_text(self, alpha, style: str = "text", centered: bool = True, point: int = 0) -> str:
        """The monomial prod_i (x_i - x0_i)^a_i as text or LaTeX (just x_i where x0_i = 0 or centered=False)."""
        x0 = self.center_values
        if self.batched:
            x0 = x0[point]
        parts = []
        for i, e in enumerate(alpha):
            if not e:
                continue
            name = self.names[i]
            if style == "latex":
                name = latex_name(name)
            c0 = float(x0[i]) if centered else 0.0
            base = name if c0 == 0 else (f"({name} - {c0:.4g})" if c0 > 0 else f"({name} + {-c0:.4g})")
            if e == 1:
                parts.append(base)
            else:
                parts.append(f"{base}^{{{e}}}" if style == "latex" else f"{base}^{e}")
        return (" " if style == "latex" else "*").join(parts) if parts else "1"

    def terms(self, top: int | None = None, threshold: float = 0.0, output=None, point: int = 0,
              sort: str = "magnitude") -> list[Term]:
        """Terms of a scalar output, largest |coefficient| first (or by degree), dropping |c| <= threshold."""
        c = self.scalar_coefficients(output, point).detach().cpu().double()
        f = self.basis.factorials()
        items = []
        for m, alpha in enumerate(self.basis.multi_indices()):
            v = float(c[m])
            if abs(v) <= threshold or v == 0.0:
                continue
            items.append(Term(alpha, v, v * float(f[m]), self.monomial_text(alpha, point=point)))
        if sort == "magnitude":
            items.sort(key=lambda t: -abs(t.coefficient))
        elif sort == "degree":
            items.sort(key=lambda t: (t.degree, -abs(t.coefficient)))
        else:
            raise ValueError("sort must be 'magnitude' or 'degree'")
        return items[:top] if top is not None else items

    def to_sympy(self, names=None, output=None, point: int = 0, threshold: float = 0.0, top: int | None = None,
                 in_x: bool = False, digits: int | None = None):
        """A sympy expression in the variable symbols: sum c_a prod (x_i - x0_i)^a_i (expanded in x if in_x)."""
        import sympy as sp

        names = list(names) if names is not None else self.names
        symbols = sp.symbols(names, real=True) if len(names) > 1 else (sp.Symbol(names[0], real=True),)
        x0 = self.center_values
        if self.batched:
            x0 = x0[point]
        # a float32 point as the user typed it (x - 0.1, not x - 0.100000001490116)
        x0 = [shortest_repr(float(v), self.center.dtype) for v in x0]
        expr = sp.Integer(0)
        for term in self.terms(top=top, threshold=threshold, output=output, point=point):
            coef = sp.Float(term.coefficient, digits) if digits else sp.Float(term.coefficient)
            mono = sp.Integer(1)
            for i, e in enumerate(term.alpha):
                if e:
                    base = symbols[i] - sp.Float(x0[i]) if float(x0[i]) != 0 else symbols[i]
                    mono *= base ** e
            expr += sp.Mul(coef, mono, evaluate=False)  # keep c (x - x0)^a: sympy would distribute c
        if in_x:
            expr = sp.expand(expr)
            # multiplying out (x - x0)^a leaves rounding residue (1e-17 x^2): drop it relative to the largest term
            scale = max((abs(float(c)) for c in expr.as_coefficients_dict().values()), default=0.0)
            expr = expr.xreplace({c: 0 for c in expr.atoms(sp.Float) if abs(float(c)) <= 1e-12 * scale})
        if digits:
            expr = expr.xreplace({c: sp.Float(float(c), digits) for c in expr.atoms(sp.Float)})
        return expr

    def latex(self, output=None, point: int = 0, threshold: float = 0.0, top: int | None = None,
              digits: int = 4, sort: str = "degree") -> str:
        """LaTeX of a scalar polynomial, terms by degree (or magnitude), small ones (|c| <= threshold) hidden."""
        terms = self.terms(top=top, threshold=threshold, output=output, point=point, sort=sort)
        if not terms:
            return "0"
        out = []
        for i, t in enumerate(terms):
            body = self.term_latex(t.alpha, t.coefficient, digits, point)
            sign = "-" if t.coefficient < 0 else ("" if i == 0 else "+")
            out.append(f"{sign} {body}" if sign else body)
        return " ".join(out)

    def _repr_latex_(self) -> str | None:
        try:
            return "$" + self.latex(top=30) + "$"
        except ValueError:
            return None

    def __repr__(self) -> str:
        batch = f", batch={self.batch_size}" if self.batched else ""
        return (f"TaylorPolynomial(n={self.n}, order={self.order}, terms={self.basis.kind!r}, "
                f"M={self.basis.size}, output_shape={tuple(self.output_shape)}{batch}, method={self.method!r})")

    def to(self, *args, **kwargs) -> TaylorPolynomial:
        return self.replace(coefficients=self.coefficients.to(*args, **kwargs),
                             center=self.center.to(*args, **kwargs))


def latex_name(name: str) -> str:
    """x1 -> x_{1}; names already in LaTeX are kept."""
    head = name.rstrip("0123456789")
    tail = name[len(head):]
    if head and tail and "\\" not in name and "_" not in name:
        return f"{head}_{{{tail}}}"
    return name


def pixel_names(row_shape: tuple[int, ...]) -> list[str]:
    """Variable names of an image input by position, 0-based as the tensor is indexed: ``p[row][col]``, or
    ``p[channel][row][col]`` for several channels (brackets, not commas, so sympy reads each name as one symbol)."""
    rows, cols = int(row_shape[-2]), int(row_shape[-1])
    channels = math.prod(row_shape[:-2]) if len(row_shape) > 2 else 1
    if channels == 1:
        return [f"p[{r}][{c}]" for r in range(rows) for c in range(cols)]
    return [f"p[{k}][{r}][{c}]" for k in range(channels) for r in range(rows) for c in range(cols)]


def output_index(per_point_shape, output) -> int:
    """The flat index into one point's output of ``output``: an int into the flattened output (negative from the end)
    or an index tuple; the one way every entry point reads ``output=`` (IndexError when it names no element)."""
    per_point = tuple(per_point_shape)
    numel = math.prod(per_point)
    if isinstance(output, int) and not isinstance(output, bool):
        if not -numel <= output < numel:
            raise IndexError(f"output {output} out of range: the model has {numel} outputs per point")
        return output % numel
    index = tuple(output) if isinstance(output, (tuple, list)) else None
    if index is None or len(index) != len(per_point) or not all(
            isinstance(i, int) and -s <= i < s for i, s in zip(index, per_point)):
        raise IndexError(f"output {output!r} does not name one element of the per-point output of shape "
                         f"{per_point}: give an index tuple of {len(per_point)} ints in range, or a flat int")
    flat = 0
    for i, s in zip(index, per_point):
        flat = flat * s + i % s
    return flat


def select_output(t, output, lead: int):
    """``t`` at the output element ``output`` (``output_index``) of the per-point output after its first ``lead``
    axes (coefficients, batch, samples); ``t`` itself when ``output`` is None."""
    if output is None:
        return t
    return t.reshape(*t.shape[:lead], -1)[..., output_index(t.shape[lead:], output)]
