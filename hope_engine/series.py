"""Arithmetic on jet tensors: truncated multivariate Taylor series with a leading coefficient axis.

A ``Jet`` holds ``c`` of shape (M, *shape): ``c[m]`` is the coefficient of t^{a_m} (t = x - x0) of every element,
with a_m the m-th multi-index of its ``basis``. Sums are coefficient-wise; a product keeps
(ab)_k = sum_{a_i + a_j = a_k} a_i b_j, restricted to the basis (exact, the basis being downward closed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import _native
from .basis import Basis, make_basis, product_table, product_table_size, product_tables
from .caches import BoundedCache


class Jet:
    """A tensor-valued truncated Taylor series: ``c[0]`` is the value, ``c[m]`` the coefficient of monomial m."""

    __slots__ = ("c", "basis")

    def __init__(self, c: torch.Tensor, basis: Basis):
        self.c = c
        self.basis = basis

    @property
    def value(self) -> torch.Tensor:
        return self.c[0]

    @property
    def shape(self) -> torch.Size:
        return self.c.shape[1:]

    @property
    def ndim(self) -> int:
        return self.c.dim() - 1

    @property
    def dtype(self) -> torch.dtype:
        return self.c.dtype

    @property
    def device(self) -> torch.device:
        return self.c.device

    def with_coefficients(self, c: torch.Tensor) -> Jet:
        return Jet(c, self.basis)

    def __repr__(self) -> str:
        return f"Jet(shape={tuple(self.shape)}, basis={self.basis.kind}/n={self.basis.n}/K={self.basis.order})"


def constant_jet(value: torch.Tensor, basis: Basis) -> Jet:
    """A series with the given value and zero higher coefficients."""
    c = value.new_zeros((basis.size, *value.shape))
    c[0] = value
    return Jet(c, basis)


def as_jet(x, basis: Basis, like: torch.Tensor | None = None) -> Jet:
    if isinstance(x, Jet):
        return x
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x, dtype=like.dtype if like is not None else None,
                            device=like.device if like is not None else None)
    return constant_jet(x, basis)


def lift(c: torch.Tensor, ndim: int) -> torch.Tensor:
    """View coefficients (M, *shape) as (M, 1, ..., 1, *shape) with ``ndim`` value dimensions (right alignment)."""
    extra = ndim - (c.dim() - 1)
    if extra <= 0:
        return c
    return c.reshape(c.shape[0], *([1] * extra), *c.shape[1:])


def aligned(a: Jet, b: Jet) -> tuple[torch.Tensor, torch.Tensor]:
    nd = max(a.ndim, b.ndim)
    return lift(a.c, nd), lift(b.c, nd)


# ---------------------------------------------------------------------------------------------- sums and scaling
def add(a: Jet, b: Jet) -> Jet:
    ca, cb = aligned(a, b)
    return a.with_coefficients(ca + cb)


def sub(a: Jet, b: Jet) -> Jet:
    ca, cb = aligned(a, b)
    return a.with_coefficients(ca - cb)


def _fits(small: torch.Size, shape: torch.Size) -> bool:
    """Whether ``small`` broadcasts to exactly ``shape``."""
    if len(small) > len(shape):
        return False
    return all(s == 1 or s == t for s, t in zip(reversed(small), reversed(shape)))


def add_constant(a: Jet, value) -> Jet:
    """a + value, the constant going to coefficient 0 only."""
    v = torch.as_tensor(value, dtype=a.dtype, device=a.device)
    if _fits(v.shape, a.c.shape[1:]):  # the common case (a bias): no broadcast of the coefficients
        out = a.c.clone()
        out[0] += v
        return a.with_coefficients(out)
    nd = max(a.ndim, v.dim())
    c = lift(a.c, nd)
    shape = torch.broadcast_shapes(c.shape[1:], v.shape)
    out = c.expand(c.shape[0], *shape).clone()
    out[0] = out[0] + v
    return a.with_coefficients(out)


def scale(a: Jet, factor) -> Jet:
    """a * factor with a constant (tensor or scalar) factor: linear, every coefficient scaled."""
    if isinstance(factor, torch.Tensor):
        return a.with_coefficients(lift(a.c, factor.dim()) * factor)
    return a.with_coefficients(a.c * factor)


# -------------------------------------------------------------------------------------------------- products
def _degree_terms(a: torch.Tensor, b: torch.Tensor, basis: Basis, d: int,
                  weights: Sequence[float] | None) -> torch.Tensor:
    """Degree-d block of the product sum_{|a_i| = p, |a_j| = d - p} w_p a_i b_j (weights by left degree p).

    Left degrees whose weight is 0 at either end of 0..d are left out, not multiplied by 0: a value factor may be
    infinite (a -inf attention mask under exp), and 0 * inf would be NaN."""
    lo, hi = 0, d
    if weights is not None:
        while lo <= hi and weights[lo] == 0:
            lo += 1
        while hi >= lo and weights[hi] == 0:
            hi -= 1
        if lo > hi:
            width = basis.offsets[d + 1] - basis.offsets[d]
            return a.new_zeros((width, *torch.broadcast_shapes(a.shape[1:], b.shape[1:])))
    if basis.n == 1:  # one variable (total = pure): a plain Cauchy product, no index tables
        prod = a[lo:hi + 1] * b[d - hi:d - lo + 1].flip(0)
        if weights is not None:
            w = torch.as_tensor(weights[lo:hi + 1], dtype=a.dtype, device=a.device)
            prod = prod * w.reshape(-1, *([1] * (prod.dim() - 1)))
        return prod.sum(0, keepdim=True)
    if basis.kind == "pure":
        return _pure_degree_terms(a, b, basis, d, weights)
    table = product_tables(basis, a.device)[d]
    if _native.usable(a, b):
        a, b = _native_pair(a, b)
        width = basis.offsets[d + 1] - basis.offsets[d]
        out = a.new_empty((width, *a.shape[1:]))
        w = None
        if weights is not None:
            w = torch.as_tensor(weights, dtype=torch.float64)[table.left_degree]
        _native.prod(a, b, out, table.left, table.right, table.out, w, 1.0)
        return out
    left, right, out_index, left_degree = table.left, table.right, table.out, table.left_degree
    if (lo, hi) != (0, d):  # the table is ordered by left degree: keep the entries of degrees lo..hi
        size = [basis.offsets[k + 1] - basis.offsets[k] for k in range(d + 1)]
        start = sum(size[p] * size[d - p] for p in range(lo))
        stop = start + sum(size[p] * size[d - p] for p in range(lo, hi + 1))
        left, right, out_index, left_degree = (t[start:stop] for t in (left, right, out_index, left_degree))
    prod = a.index_select(0, left) * b.index_select(0, right)
    if weights is not None:
        w = torch.as_tensor(weights, dtype=a.dtype, device=a.device)[left_degree]
        prod = prod * w.reshape(-1, *([1] * (prod.dim() - 1)))
    width = basis.offsets[d + 1] - basis.offsets[d]
    out = a.new_zeros((width, *prod.shape[1:]))
    return out.index_add_(0, out_index, prod)


def _pure_degree_terms(a, b, basis: Basis, d: int, weights) -> torch.Tensor:
    """Pure basis: degree block d is (n, *shape); only same-variable (or value) factors combine."""
    total = None
    for p in range(d + 1):
        w = 1.0 if weights is None else float(weights[p])
        if w == 0.0:
            continue
        term = a[basis.block(p)] * b[basis.block(d - p)]
        if w != 1.0:
            term = term * w
        total = term if total is None else total + term
    width = basis.offsets[d + 1] - basis.offsets[d]
    if total is None:
        return a.new_zeros((width, *torch.broadcast_shapes(a.shape[1:], b.shape[1:])))
    return total.expand(width, *total.shape[1:]) if total.shape[0] != width else total


def _native_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a and b broadcast to one coefficient shape, contiguous (the compiled kernels index rows of equal length)."""
    shape = torch.broadcast_shapes(a.shape[1:], b.shape[1:])
    return a.expand(a.shape[0], *shape).contiguous(), b.expand(b.shape[0], *shape).contiguous()


_FLAT = BoundedCache("flat product tables", max_entries=32)


def flat_tables(basis: Basis) -> tuple[torch.Tensor, ...] | None:
    """All degrees' product triples in one table (CPU): (left, right, out row, start of each degree, basis offsets,
    degree of each right factor as float64).

    For a total basis (and any basis in one variable, where pure = total); None for a pure basis in n > 1. Cached per
    (n, order) in the bounded LRU ``_FLAT`` (left/right are views of the basis module's table)."""
    if basis.kind != "total" and basis.n != 1:
        return None
    return _FLAT.get_or_build((basis.n, basis.order), lambda: _build_flat(basis.n, basis.order),
                              flat_table_bytes(basis.n, basis.order))


def flat_cached(n: int, order: int) -> bool:
    """Whether the flat table of (n, order) is cached now."""
    return (n, order) in _FLAT


def flat_table_bytes(n: int, order: int) -> int:
    """Bytes ``flat_tables`` adds to the product table: the absolute out row (int64) and right degree (float64) of
    every triple, plus the left/right views it keeps alive (counted too: the table may be released first)."""
    return 32 * product_table_size(n, order)


def _build_flat(n: int, order: int) -> tuple[torch.Tensor, ...]:
    total = make_basis(n, order, "total")
    table = product_table(total, "cpu")
    flat = table.flat
    starts = torch.tensor(table.starts, dtype=torch.long)
    offsets = torch.tensor(total.offsets, dtype=torch.long)
    out = flat.out.clone()
    rdeg = torch.empty(out.shape, dtype=torch.float64)
    for d, (a, b) in enumerate(zip(table.starts[:-1], table.starts[1:])):  # in place: no table-sized temporaries
        out[a:b] += total.offsets[d]
        rdeg[a:b].copy_(flat.left_degree[a:b]).neg_().add_(d)  # degree of the right factor: d - |a_i|
    return flat.left, flat.right, out, starts, offsets, rdeg


def clear_caches() -> None:
    """Release the flat product tables and the degree vectors cached here."""
    _FLAT.clear()
    _DEGREES.clear()


def _native_tables(basis: Basis, *tensors: torch.Tensor):
    """How the compiled kernels run on these tensors: "univariate" (a pure basis, or one variable), the flat product
    tables (a total basis), or None (no kernels: the torch formulation)."""
    if basis.order < 1 or not _native.usable(*tensors):
        return None
    if basis.kind == "pure" or basis.n == 1:
        return "univariate"
    return flat_tables(basis)


def mul_coefficients(ca: torch.Tensor, cb: torch.Tensor, basis: Basis) -> torch.Tensor:
    """Product of two aligned coefficient tensors in ``basis``."""
    tables = _native_tables(basis, ca, cb)
    if tables is not None:
        ca, cb = _native_pair(ca, cb)
        out = ca.new_empty(ca.shape)
        if tables == "univariate":
            _native.univariate(3, ca, out, cb, basis.n, basis.order)
        else:
            _native.prod(ca, cb, out, tables[0], tables[1], tables[2], None, 1.0)
        return out
    if basis.kind == "total":
        tables = product_tables(basis, ca.device)
        shape = torch.broadcast_shapes(ca.shape[1:], cb.shape[1:])
        out = ca.new_zeros((basis.size, *shape))
        for d in range(basis.order + 1):
            t = tables[d]
            out[basis.block(d)].index_add_(0, t.out, ca.index_select(0, t.left) * cb.index_select(0, t.right))
        return out
    return torch.cat([_pure_degree_terms(ca, cb, basis, d, None) for d in range(basis.order + 1)])


def mul(a: Jet, b: Jet) -> Jet:
    ca, cb = aligned(a, b)
    return a.with_coefficients(mul_coefficients(ca, cb, a.basis))


def bilinear(op: Callable, a: Jet, b: Jet) -> Jet:
    """g(a, b) for g bilinear (matmul, bmm, einsum...): (g(a, b))_k = sum_{a_i + a_j = a_k} g(a_i, b_j)."""
    basis = a.basis
    g = torch.vmap(op)
    if basis.kind == "total":
        blocks = []
        for d, t in enumerate(product_tables(basis, a.c.device)):
            prod = g(a.c.index_select(0, t.left), b.c.index_select(0, t.right))
            width = basis.offsets[d + 1] - basis.offsets[d]
            blocks.append(prod.new_zeros((width, *prod.shape[1:])).index_add_(0, t.out, prod))
        return a.with_coefficients(torch.cat(blocks))
    blocks = []
    for d in range(basis.order + 1):
        total = None
        for p in range(d + 1):
            x, y = a.c[basis.block(p)], b.c[basis.block(d - p)]
            width = max(x.shape[0], y.shape[0])
            term = g(x.expand(width, *x.shape[1:]), y.expand(width, *y.shape[1:]))
            total = term if total is None else total + term
        blocks.append(total)
    return a.with_coefficients(torch.cat(blocks))


# -------------------------------------------------------------------- degree-by-degree recurrences (Euler operator)
def euler_weights(d: int) -> list[float]:
    """Weights for [f'(u) E u]_d / d, indexed by the degree p of the f'(u) factor: (d - p) / d."""
    return [(d - p) / d for p in range(d + 1)]


_DEGREES = BoundedCache("degree vectors", max_entries=64)


def euler(u: torch.Tensor, basis: Basis) -> torch.Tensor:
    """E u: every coefficient times the degree of its monomial. Then [f'(u) E u]_d / d = [f'(u) (E u)]_d / d needs
    no per-term weights (E u has no constant term, so f'(u)'s degree-d part never enters)."""
    key = (basis.n, basis.order, basis.kind, u.dtype, u.device)
    deg = _DEGREES.get_or_build(key, lambda: basis.degrees.to(dtype=u.dtype, device=u.device))
    eu = u * deg.reshape(-1, *([1] * (u.dim() - 1)))
    eu[0] = 0  # exactly: an infinite value (a -inf attention mask) times degree 0 would be NaN
    return eu


def integrate(fprime: torch.Tensor, u: torch.Tensor, value: torch.Tensor, basis: Basis) -> torch.Tensor:
    """Coefficients of f(u) from those of f'(u) (fully known) and f(u0): [f(u)]_d = [f'(u) E u]_d / d."""
    out = u.new_empty(u.shape)
    out[0] = value
    eu = euler(u, basis)
    for d in range(1, basis.order + 1):
        out[basis.block(d)] = _degree_terms(fprime, eu, basis, d, None) / d
    return out


def _native_recurrence(kind: int, u, y, g, tables, basis: Basis, p1: float = 0.0, p2: float = 0.0) -> None:
    if tables == "univariate":
        _native.univariate(kind, u.contiguous(), y, g, basis.n, basis.order, p1, p2)
    else:
        _native.recurrence(kind, u.contiguous(), y, g, tables, basis.order, p1, p2)


def exp_coefficients(u: torch.Tensor, basis: Basis) -> torch.Tensor:
    """y = exp(u): y' = y, so y_d = [y E u]_d / d needs y below degree d only."""
    tables = _native_tables(basis, u)
    if tables is not None:
        y = u.new_empty(u.shape)
        y[0] = torch.exp(u[0])
        _native_recurrence(0, u, y, None, tables, basis)
        return y
    y = torch.zeros_like(u)
    y[0] = torch.exp(u[0])
    eu = euler(u, basis)
    for d in range(1, basis.order + 1):
        y[basis.block(d)] = _degree_terms(y, eu, basis, d, None) / d
    return y


def sin_cos_coefficients(u: torch.Tensor, basis: Basis) -> tuple[torch.Tensor, torch.Tensor]:
    """s = sin(u), c = cos(u): s_d = [c E u]_d / d, c_d = -[s E u]_d / d.

    c and s are kept side by side in one tensor g = (c, s) (axis 1), so each degree is one product [g E u]_d.
    """
    tables = _native_tables(basis, u)
    if tables is not None:  # s and c in separate tensors, both filled by one call
        s = u.new_empty(u.shape)
        c = torch.empty_like(s)
        s[0], c[0] = torch.sin(u[0]), torch.cos(u[0])
        _native_recurrence(1, u, s, c, tables, basis)
        return s, c
    g = u.new_zeros((u.shape[0], 2, *u.shape[1:]))
    g[0, 0], g[0, 1] = torch.cos(u[0]), torch.sin(u[0])
    eu = euler(u, basis).unsqueeze(1)
    for d in range(1, basis.order + 1):
        t = _degree_terms(g, eu, basis, d, None) / d      # ([c E u]_d, [s E u]_d) / d = (s_d, -c_d)
        blk = basis.block(d)
        g[blk, 0] = -t[:, 1]
        g[blk, 1] = t[:, 0]
    return g[:, 1], g[:, 0]


def riccati_coefficients(u: torch.Tensor, basis: Basis, y0: torch.Tensor, a: float, b: float,
                         q: float) -> torch.Tensor:
    """y with y' = a + b y + q y^2 (tanh: 1 - y^2; sigmoid: y - y^2), degree by degree."""
    tables = _native_tables(basis, u)
    if tables is not None:
        y = u.new_empty(u.shape)
        g = torch.empty_like(y)
        y[0] = y0
        g[0] = a + b * y0 + q * y0 * y0
        _native_recurrence(2, u, y, g, tables, basis, b, q)
        return y
    y = torch.zeros_like(u)
    y[0] = y0
    g = torch.zeros_like(u)  # g = y'(u) = a + b y + q y^2, kept one degree behind y
    g[0] = a + b * y0 + q * y0 * y0
    eu = euler(u, basis)
    for d in range(1, basis.order + 1):
        y[basis.block(d)] = _degree_terms(g, eu, basis, d, None) / d
        if d < basis.order:
            g[basis.block(d)] = b * y[basis.block(d)] + q * _degree_terms(y, y, basis, d, None)
    return y


def div_coefficients(a: torch.Tensor, b: torch.Tensor, basis: Basis) -> torch.Tensor:
    """q = a / b: q_d = (a_d - [q b]_d without q_d b_0) / b_0."""
    shape = torch.broadcast_shapes(a.shape[1:], b.shape[1:])
    q = a.new_zeros((basis.size, *shape))
    b0 = b[0]
    q[0] = a[0] / b0
    for d in range(1, basis.order + 1):
        w = [1.0] * d + [0.0]
        q[basis.block(d)] = (a[basis.block(d)] - _degree_terms(q, b, basis, d, w)) / b0
    return q


def pow_coefficients(u: torch.Tensor, p: float, basis: Basis) -> torch.Tensor:
    """y = u^p for u0 != 0: from u E y = p y E u, d u0 y_d = sum_{|i| < d} (p (d - |i|) - |i|) y_i u_j."""
    y = torch.zeros_like(u)
    u0 = u[0]
    y[0] = torch.pow(u0, p)
    for d in range(1, basis.order + 1):
        w = [p * (d - q) - q for q in range(d)] + [0.0]
        y[basis.block(d)] = _degree_terms(y, u, basis, d, w) / (d * u0)
    return y


def int_pow_coefficients(u: torch.Tensor, p: int, basis: Basis) -> torch.Tensor:
    """u^p for a non-negative integer p by repeated squaring (valid at u0 = 0 too)."""
    result = None
    base = u
    while p:
        if p & 1:
            result = base if result is None else mul_coefficients(result, base, basis)
        p >>= 1
        if p:
            base = mul_coefficients(base, base, basis)
    if result is None:
        result = torch.zeros_like(u)
        result[0] = 1
    return result
