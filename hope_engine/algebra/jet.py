"""Arithmetic on jet tensors: truncated multivariate Taylor series with a leading coefficient axis.

A ``Jet`` holds ``c`` of shape (M, *shape): ``c[m]`` is the coefficient of t^{a_m} (t = x - x0) of every element,
with a_m the m-th multi-index of its ``basis``. Sums are coefficient-wise; a product keeps
(ab)_k = sum_{a_i + a_j = a_k} a_i b_j, restricted to the basis (exact, the basis being downward closed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from hope_engine.algebra import kernels
from hope_engine.algebra.basis import Basis, euler, make_basis, product_tables


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


def holds(value, kinds=Jet) -> bool:
    """Whether ``value`` is an instance of ``kinds`` (default: a jet) or a container holding one (a split's outputs)."""
    if isinstance(value, kinds):
        return True
    if isinstance(value, (list, tuple)):
        return any(holds(e, kinds) for e in value)
    if isinstance(value, dict):
        return any(holds(e, kinds) for e in value.values())
    return False


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


def fits(small: torch.Size, shape: torch.Size) -> bool:
    """Whether ``small`` broadcasts to exactly ``shape``."""
    if len(small) > len(shape):
        return False
    return all(s == 1 or s == t for s, t in zip(reversed(small), reversed(shape)))


def add_constant(a: Jet, value) -> Jet:
    """a + value, the constant going to coefficient 0 only."""
    v = torch.as_tensor(value, dtype=a.dtype, device=a.device)
    if fits(v.shape, a.c.shape[1:]):  # the common case (a bias): no broadcast of the coefficients
        out = a.c.clone()
        out[0].add_(v)
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
def degree_terms(a: torch.Tensor, b: torch.Tensor, basis: Basis, d: int,
                  weights: Sequence[float] | None) -> torch.Tensor:
    """Degree-d block of the product sum_{|a_i| = p, |a_j| = d - p} w_p a_i b_j (weights by left degree p); terms
    of weight 0 are left out, not multiplied by 0 (an infinite value factor would give NaN). See kernels."""
    return kernels.degree_product(a, b, basis, d, weights)


def mul_coefficients(ca: torch.Tensor, cb: torch.Tensor, basis: Basis) -> torch.Tensor:
    """Product of two aligned coefficient tensors in ``basis``: (ab)_k = sum_{a_i + a_j = a_k} a_i b_j."""
    return kernels.product(ca, cb, basis)


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
        top = basis.kind == "collapsed" and d == basis.order
        for p in range(d + 1):
            x, y = a.c[basis.block(p)], b.c[basis.block(d - p)]
            width = max(x.shape[0], y.shape[0])
            term = g(x.expand(width, *x.shape[1:]), y.expand(width, *y.shape[1:]))
            if top and 0 < p < d:  # same-direction terms summed into the collapsed top coefficient
                term = kernels.collapse(term, basis)
            total = term if total is None else total + term
        blocks.append(total)
    return a.with_coefficients(torch.cat(blocks))


# -------------------------------------------------------------------- degree-by-degree recurrences (Euler operator)
def integrate(fprime: torch.Tensor, u: torch.Tensor, value: torch.Tensor, basis: Basis) -> torch.Tensor:
    """Coefficients of f(u) from those of f'(u) (fully known) and f(u0): [f(u)]_d = [f'(u) E u]_d / d."""
    out = u.new_empty(u.shape)
    out[0] = value
    eu = euler(u, basis)
    for d in range(1, basis.order + 1):
        out[basis.block(d)] = degree_terms(fprime, eu, basis, d, None) / d
    return out


def exp_coefficients(u: torch.Tensor, basis: Basis) -> torch.Tensor:
    """y = exp(u): y' = y, so y_d = [y E u]_d / d needs y below degree d only."""
    return kernels.exp(u, basis)


def sin_cos_coefficients(u: torch.Tensor, basis: Basis) -> tuple[torch.Tensor, torch.Tensor]:
    """s = sin(u), c = cos(u): s_d = [c E u]_d / d, c_d = -[s E u]_d / d."""
    return kernels.sin_cos(u, basis)


def riccati_coefficients(u: torch.Tensor, basis: Basis, y0: torch.Tensor, a: float, b: float,
                         q: float) -> torch.Tensor:
    """y with y' = a + b y + q y^2 (tanh: 1 - y^2; sigmoid: y - y^2), degree by degree."""
    return kernels.riccati(u, basis, y0, a, b, q)


def div_coefficients(a: torch.Tensor, b: torch.Tensor, basis: Basis) -> torch.Tensor:
    """q = a / b: q_d = (a_d - [q b]_d without q_d b_0) / b_0."""
    return kernels.div(a, b, basis)


def pow_coefficients(u: torch.Tensor, p: float, basis: Basis) -> torch.Tensor:
    """y = u^p for u0 != 0: from u E y = p y E u, d u0 y_d = sum_{|i| < d} (p (d - |i|) - |i|) y_i u_j."""
    y = torch.zeros_like(u)
    u0 = u[0]
    y[0] = torch.pow(u0, p)
    for d in range(1, basis.order + 1):
        w = [p * (d - q) - q for q in range(d)] + [0.0]
        y[basis.block(d)] = degree_terms(y, u, basis, d, w) / (d * u0)
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


# ----------------------------------------------------------------- composition along directions (collapsed basis)
def compose_by_directions(fn: Callable[[Jet], Jet], x: Jet) -> Jet:
    """f(x) for an elementwise analytic f on a jet of a collapsed basis, through f's own Taylor coefficients at the
    value: a_k = f^(k)(u0) / k! from ``fn`` on the one-variable series u0 + s, then f(x) = sum_k a_k delta^k with
    delta = x - u0. Every direction is a univariate series below the top degree, so the powers of delta are Cauchy
    products per direction, and the top coefficient is a_1 delta_top + sum_i w_i sum_{k >= 2} a_k [delta_i^k]_K
    (fewer passes than the recurrence on the collapsed basis)."""
    basis = x.basis
    order, n = basis.order, basis.n
    if order == 2:  # the Laplacian's case: one node, written in place, with a fused backward
        w = torch.as_tensor(basis.collapse, dtype=x.c.dtype, device=x.c.device)
        return x.with_coefficients(_SecondOrder.apply(x.c, fn, w))
    # one split (not several slices: under autograd each slice's backward would fill a whole-size gradient)
    value, middle, last = torch.split(x.c, [1, n * (order - 1), 1])
    a = _Univariate.apply(value[0], fn, order).unbind(0)
    lower = torch.split(middle, n)  # degrees 1..K-1, per direction (views: one cat in the backward)
    power = {d: lower[d - 1] for d in range(1, order)}  # [delta^k]_d, d >= k (degree K left out for k = 1)
    out = [a[1] * lower[d - 1] for d in range(1, order)]
    y_top = a[1] * last
    for k in range(2, order + 1):
        step = {}
        for d in range(k, order + 1):
            terms = [lower[j - 1] * power[d - j] for j in range(1, d - k + 2)]
            step[d] = terms[0] if len(terms) == 1 else torch.stack(terms).sum(0)
        for d in range(k, order):
            out[d - 1] = out[d - 1] + a[k] * step[d]
        y_top = y_top + a[k] * kernels.collapse(step[order], basis)  # (a_k is one per unit: collapse first)
        power = step
    return x.with_coefficients(torch.cat([a[0].unsqueeze(0), *out, y_top]))  # (one copy: out[d] is (n, *shape))


def univariate_coefficients(fn: Callable[[Jet], Jet], u0: torch.Tensor, order: int) -> torch.Tensor:
    """(f^(k)(u0) / k!)_{k <= order}, (order + 1, *u0.shape): ``fn`` on the one-variable series u0 + s."""
    u = u0.new_zeros((order + 1, *u0.shape))
    u[0] = u0
    u[1] = 1
    return fn(Jet(u, make_basis(1, order, "total"))).c


class _Univariate(torch.autograd.Function):
    """a_k(u0) = f^(k)(u0) / k! computed without recording the recurrence; d a_k / d u0 = (k + 1) a_{k+1}, itself
    this function one order up (so it differentiates again, to any order)."""

    @staticmethod
    def forward(ctx, u0, fn, order):
        ctx.fn, ctx.order = fn, order
        ctx.save_for_backward(u0)
        with torch.no_grad():
            return univariate_coefficients(fn, u0, order)

    @staticmethod
    def backward(ctx, grad):
        (u0,) = ctx.saved_tensors
        a = _Univariate.apply(u0, ctx.fn, ctx.order + 1)
        k = torch.arange(1, ctx.order + 2, dtype=a.dtype, device=a.device).reshape(-1, *([1] * u0.dim()))
        return (grad * k * a[1:]).sum(0), None, None


def add_to_value(c: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """c with ``bias`` added to its value row (c[0]) in place: a fresh product's coefficients, bias broadcast to the
    value's shape and of its dtype. Under autograd, without the whole-size gradient copy an in-place slice records."""
    if torch.is_grad_enabled() and (c.requires_grad or bias.requires_grad):
        return _AddToValue.apply(c, bias)
    c[0].add_(bias)
    return c


class _AddToValue(torch.autograd.Function):
    """c[0] += bias in place; d/dc is the identity, d/dbias the value row's gradient summed to the bias' shape."""

    @staticmethod
    def forward(ctx, c, bias):
        ctx.bias_shape = bias.shape
        ctx.bias_grad = bias.requires_grad
        ctx.mark_dirty(c)
        c[0].add_(bias)
        return c

    @staticmethod
    def backward(ctx, grad):
        if not ctx.bias_grad:
            return grad, None
        g = grad[0]
        lead = g.dim() - len(ctx.bias_shape)
        g = g.sum(tuple(range(lead))) if lead > 0 else g
        keep = tuple(i for i, s in enumerate(ctx.bias_shape) if s == 1 and g.shape[i] != 1)
        return grad, g.sum(keep, keepdim=True) if keep else g


class _SecondOrder(torch.autograd.Function):
    """The order-2 collapsed composition of a series c = (u0, L, T) (L the (n, ...) first coefficients, T the
    collapsed second one): (a0, a1 L, a1 T + a2 sum_i w_i L_i^2) with a_k = f^(k)(u0) / k!, written into one fresh
    tensor. Its backward is built of differentiable ops (it differentiates again) and takes three passes over L
    where separate products took six, with no split or cat of the whole series."""

    @staticmethod
    def forward(ctx, c, fn, w):
        n = c.shape[0] - 2
        with torch.no_grad():
            a = univariate_coefficients(fn, c[0], 2)
            lower = c[1:1 + n]
            flat = lower.reshape(n, -1)
            out = torch.empty_like(c)
            out[0] = a[0]
            torch.mul(a[1], lower, out=out[1:1 + n])
            torch.mul(a[1], c[-1:], out=out[-1:])
            if bool((w == w[0]).all()):  # (the Laplacian: one fused pass, no squared temporary)
                squares = w[0] * torch.linalg.vecdot(lower, lower, dim=0)
            else:
                squares = torch.mv((flat * flat).t(), w).reshape(c.shape[1:])
            out[-1:] += a[2] * squares
        ctx.fn = fn
        ctx.save_for_backward(c, w)
        return out

    @staticmethod
    def backward(ctx, grad):
        c, w = ctx.saved_tensors
        n = c.shape[0] - 2
        value, lower, last = c[0], c[1:1 + n], c[-1:]
        a = _Univariate.apply(value, ctx.fn, 3)
        g_top = grad[-1:]
        lead = (-1, *([1] * (lower.dim() - 1)))
        squares = torch.tensordot(w, lower * lower, 1).unsqueeze(0)
        g_a1 = _vecdot(grad[1:1 + n], lower) + (g_top * last)[0]
        g_a2 = (g_top * squares)[0]
        g_value = grad[0] * a[1] + 2 * g_a1 * a[2] + 3 * g_a2 * a[3]
        g_lower = torch.addcmul(grad[1:1 + n] * a[1], lower, (2 * a[2] * g_top) * w.reshape(lead))
        g_c = torch.cat([g_value.unsqueeze(0), g_lower, g_top * a[1]])
        g_w = None
        if ctx.needs_input_grad[2]:
            g_w = (lower * lower * (a[2] * g_top)).reshape(n, -1).sum(1)
        return g_c, None, g_w


def _vecdot(a: torch.Tensor, b: torch.Tensor, keep: bool = False) -> torch.Tensor:
    """sum_i a_i b_i over axis 0 (one fused pass); keep: sum over every other axis instead, one value per i."""
    if keep:
        return (a * b).reshape(a.shape[0], -1).sum(1)
    return torch.linalg.vecdot(a, b, dim=0)
