"""Index sets of multi-indices (the monomials a polynomial keeps) and their product tables.

A basis is a downward-closed set S of multi-indices a in N^n with |a| <= K, ordered by degree, so that the order-k
truncation is a prefix. Because S is downward closed, dropping the monomials outside S is a ring homomorphism: sums
and products computed in S are exact on every coefficient kept.

- ``total``: every a with |a| <= K (all mixed partials), M = C(n + K, K).
- ``pure``: a with at most one nonzero entry (unmixed partials), M = 1 + n K. Degree block k holds k e_0 .. k e_{n-1}.
- ``collapsed`` (internal, for differential operators): the pure basis below degree K and one weighted sum
  s = sum_i w_i c_{K e_i} in place of its degree-K block, M = 2 + n (K - 1). The top coefficients of a product enter
  only times a degree-0 factor, so the map to s is a ring homomorphism: products, recurrences and compositions carry
  s exactly ("collapsed Taylor mode"); the "variables" are directions, seeded by the caller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations_with_replacement

import torch

from hope_engine.caches import BoundedCache
from hope_engine.options import TERMS

KINDS = TERMS


def total_size(n: int, order: int) -> int:
    """Number of monomials of degree <= order in n variables: C(n + order, order)."""
    return math.comb(n + order, order)


def basis_size(n: int, order: int, kind: str) -> int:
    if kind == "total":
        return total_size(n, order)
    if kind == "pure":
        return 1 + n * order
    raise ValueError(f"unknown basis kind {kind!r}; use one of {KINDS}")


def _degree_block(n: int, k: int) -> list[tuple[int, ...]]:
    """All multi-indices of degree k in n variables, in reverse-lexicographic order (x1^k first)."""
    block = []
    for combo in combinations_with_replacement(range(n), k):
        a = [0] * n
        for v in combo:
            a[v] += 1
        block.append(tuple(a))
    return block


@dataclass(frozen=True, eq=False)
class Basis:
    """A degree-ordered, downward-closed set of multi-indices.

    ``indices[m]`` is the multi-index of coefficient m; ``offsets[k]:offsets[k + 1]`` is the block of degree k.
    """

    n: int
    order: int
    kind: str
    indices: torch.Tensor = field(repr=False)
    offsets: tuple[int, ...] = field(repr=False)
    _position: dict = field(repr=False)
    collapse: tuple[float, ...] | None = field(default=None, repr=False)  # collapsed kind: the weights w_i

    @property
    def size(self) -> int:
        return int(self.indices.shape[0])

    def __len__(self) -> int:
        return self.size

    def block(self, k: int) -> slice:
        """Slice of the coefficients of degree k."""
        return slice(self.offsets[k], self.offsets[k + 1])

    def prefix(self, order: int) -> int:
        """Number of coefficients of degree <= order (the order-``order`` truncation is a prefix)."""
        return self.offsets[min(order, self.order) + 1]

    @property
    def degrees(self) -> torch.Tensor:
        return self.indices.sum(dim=1)

    def position(self, alpha) -> int:
        """Index m of multi-index ``alpha``; KeyError with a readable message if it is not kept."""
        a = tuple(int(v) for v in alpha)
        if len(a) != self.n:
            raise KeyError(f"multi-index {a} has {len(a)} entries; this polynomial has {self.n} variables")
        if any(v < 0 for v in a):
            raise KeyError(f"multi-index {a} has a negative entry")
        try:
            return self._position[a]
        except KeyError:
            if sum(a) > self.order:
                raise KeyError(f"multi-index {a} has degree {sum(a)} > order {self.order} of this expansion") from None
            raise KeyError(
                f"multi-index {a} is a mixed term, not kept by the {self.kind!r} basis; expand with terms='total'"
            ) from None

    def __contains__(self, alpha) -> bool:
        return tuple(int(v) for v in alpha) in self._position

    def multi_indices(self) -> list[tuple[int, ...]]:
        return [tuple(int(v) for v in row) for row in self.indices.tolist()]

    def truncate(self, order: int) -> Basis:
        if self.kind == "collapsed":
            raise ValueError("a collapsed basis is not truncated: its top block is a weighted sum")
        return make_basis(self.n, min(order, self.order), self.kind)

    def factorials(self, dtype=torch.float64) -> torch.Tensor:
        """alpha! = prod_i alpha_i! for every kept multi-index: k! exact (correctly rounded past 22!) per variable,
        so a one-variable term's alpha! is the float nearest the integer (inf past 170!)."""
        top = int(self.indices.max()) if self.indices.numel() else 0
        table = torch.tensor([_float_factorial(k) for k in range(top + 1)], dtype=torch.float64)
        return table[self.indices].prod(dim=1).to(dtype)


def make_collapsed_basis(n: int, order: int, weights) -> Basis:
    """The collapsed basis of n directions up to ``order`` >= 1 whose top block is sum_i w_i c_{K e_i} (see the
    module docstring). Its top row's multi-index is recorded as K e_0 (for degrees and factorials only); built per
    call (no cache: the weights vary)."""
    w = tuple(float(v) for v in weights)
    if len(w) != n or order < 1:
        raise ValueError(f"a collapsed basis needs one weight per direction ({n}) and order >= 1")
    rows: list[tuple[int, ...]] = [(0,) * n]
    offsets = [0, 1]
    for k in range(1, order):
        rows.extend(tuple(k if v == i else 0 for v in range(n)) for i in range(n))
        offsets.append(len(rows))
    rows.append(tuple(order if v == 0 else 0 for v in range(n)))
    offsets.append(len(rows))
    indices = torch.tensor(rows, dtype=torch.long).reshape(len(rows), n)
    position = {r: m for m, r in enumerate(rows[:-1])}
    return Basis(n=n, order=order, kind="collapsed", indices=indices, offsets=tuple(offsets), _position=position,
                 collapse=w)


def _float_factorial(k: int) -> float:
    try:
        return float(math.factorial(k))
    except OverflowError:
        return math.inf


_BASES = BoundedCache("bases", max_entries=64)


def basis_nbytes(n: int, order: int, kind: str = "total") -> int:
    """Approximate bytes of one cached basis: its (M, n) int64 index table plus the multi-index -> position dict
    (a tuple of n small ints and a dict slot per row, about 8 n + 120 bytes)."""
    m = basis_size(n, order, kind)
    return m * (16 * n + 120)


def make_basis(n: int, order: int, kind: str = "total") -> Basis:
    """The basis of ``kind`` for n variables up to ``order``.

    Cached (bounded LRU ``_BASES``): while cached, equal arguments return the same object."""
    if kind not in KINDS:
        raise ValueError(f"unknown basis kind {kind!r}; use one of {KINDS}")
    return _BASES.get_or_build((n, order, kind), lambda: _build_basis(n, order, kind), basis_nbytes(n, order, kind))


def _build_basis(n: int, order: int, kind: str) -> Basis:
    rows: list[tuple[int, ...]] = []
    offsets = [0]
    for k in range(order + 1):
        if kind == "total" or k == 0:
            block = _degree_block(n, k)
        else:
            block = [tuple(k if v == i else 0 for v in range(n)) for i in range(n)]
        rows.extend(block)
        offsets.append(len(rows))
    indices = torch.tensor(rows, dtype=torch.long).reshape(len(rows), n)
    position = {r: m for m, r in enumerate(rows)}
    return Basis(n=n, order=order, kind=kind, indices=indices, offsets=tuple(offsets), _position=position)


@dataclass(frozen=True)
class DegreeTable:
    """Triples (i, j, k) with a_i + a_j = a_k, for output degree d of a total basis.

    ``left``/``right`` index the full coefficient axis; ``out`` indexes within the degree-d block;
    ``left_degree`` is |a_i| (so |a_j| = d - |a_i|).
    """

    left: torch.Tensor
    right: torch.Tensor
    out: torch.Tensor
    left_degree: torch.Tensor


_TABLES = BoundedCache("product tables", max_entries=32)
_CHUNK = 1 << 20  # elements of the (pairs, n) index temporaries while building a table


def _degree_ranks(n: int, order: int) -> torch.Tensor:
    """G[v, r] = C(n - 1 - v + r, r) - C(n - v + r, r) [v > 0] (v < n, r <= order), flattened: the rank of a
    multi-index of degree k in its block is C(n + k - 1, k) - sum_v G[v, R_v], with R_v = a_v + ... + a_{n-1}.

    (The block lists the multisets of k variables in lexicographic order; the sum telescopes the hockey-stick counts
    of the combinatorial number system.)"""
    def f(v: int, r: int) -> int:
        return math.comb(n - 1 - v + r, r) if v >= 0 else 0

    return torch.tensor([f(v, r) - f(v - 1, r) for v in range(n) for r in range(order + 1)], dtype=torch.long)


@dataclass(frozen=True)
class ProductTable:
    """All degrees' triples in flat int64 arrays (``flat.out`` relative to the output's degree block), ordered by
    output degree then left degree; degree d is ``starts[d]:starts[d + 1]``, and ``degrees[d]`` is its view."""

    flat: DegreeTable
    starts: tuple[int, ...]
    degrees: tuple[DegreeTable, ...]


def _build_tables(n: int, order: int, device: torch.device) -> ProductTable:
    """Every degree's triples (i, j, k) with a_i + a_j = a_k, computed with tensor ops (no Python loop per triple)."""
    basis = make_basis(n, order, "total")
    sizes = [math.comb(n + k - 1, k) for k in range(order + 1)]
    starts = [0]
    for d in range(order + 1):
        starts.append(starts[-1] + sum(sizes[p] * sizes[d - p] for p in range(d + 1)))
    total = starts[-1]
    left, right, out, ldeg = (torch.empty(total, dtype=torch.long, device=device) for _ in range(4))
    # R_v = a_v + ... + a_{n-1} of every row, and the same offset by v (K + 1): the flat index of G[v, R_v]
    plain = basis.indices.flip(1).cumsum(1).flip(1).to(device)
    indexed = plain + torch.arange(n, device=device) * (order + 1)
    ranks = _degree_ranks(n, order).to(device)
    pos = 0
    for d in range(order + 1):
        block_count = math.comb(n + d - 1, d)
        for p in range(d + 1):
            bi, bj = basis.block(p), basis.block(d - p)
            si, sj = bi.stop - bi.start, bj.stop - bj.start
            rj = plain[bj]
            step = max(1, _CHUNK // max(1, sj * n))
            for i0 in range(0, si, step):
                ci = min(step, si - i0)
                r = indexed[bi.start + i0:bi.start + i0 + ci, None, :] + rj[None]  # R of a_i + a_j, indexed
                s = ranks[r].sum(-1)
                end = pos + ci * sj
                out[pos:end] = (block_count - s).reshape(-1)
                left[pos:end] = torch.arange(bi.start + i0, bi.start + i0 + ci, device=device).repeat_interleave(sj)
                right[pos:end] = torch.arange(bj.start, bj.stop, device=device).repeat(ci)
                ldeg[pos:end] = p
                pos = end
    views = tuple(DegreeTable(left[a:b], right[a:b], out[a:b], ldeg[a:b]) for a, b in zip(starts[:-1], starts[1:]))
    return ProductTable(DegreeTable(left, right, out, ldeg), tuple(starts), views)


def product_tables(basis: Basis, device: torch.device | str = "cpu") -> tuple[DegreeTable, ...]:
    """Per-degree product tables of a total basis, cached per (n, order, device) in the bounded LRU ``_TABLES``.

    Size: C(2n + K, K) triples of four int64 (``product_table_bytes``); a table larger than the cache's bound is
    built for the call and not kept."""
    return product_table(basis, device).degrees


def product_table(basis: Basis, device: torch.device | str = "cpu") -> ProductTable:
    """The flat product table of a total basis (every degree), cached as ``product_tables``."""
    if basis.kind != "total":
        raise ValueError("product tables are defined for the total basis; the pure basis multiplies blockwise")
    device = torch.device(device)
    return _TABLES.get_or_build((basis.n, basis.order, device), lambda: _build_tables(basis.n, basis.order, device),
                                product_table_bytes(basis.n, basis.order))


def product_table_size(n: int, order: int) -> int:
    """Number of triples of the total-basis product table: C(2n + K, K)."""
    return math.comb(2 * n + order, order)


def product_table_bytes(n: int, order: int) -> int:
    """Bytes of the total-basis product table: four int64 per triple (left, right, out row, left degree)."""
    return 32 * product_table_size(n, order)


def largest_degree_triples(n: int, order: int) -> int:
    """Triples of the largest degree block of the table (degree K): C(2n + K - 1, K)."""
    return math.comb(2 * n + order - 1, order) if order else 1


def tables_cached(n: int, order: int, device: torch.device | str = "cpu") -> bool:
    """Whether the product table of (n, order) on ``device`` is cached now."""
    return (n, order, torch.device(device)) in _TABLES


def cached_basis(n: int, order: int, kind: str = "total") -> bool:
    """Whether the basis of (n, order, kind) is cached now."""
    return (n, order, kind) in _BASES


# ------------------------------------------------------ all degrees' triples in one table, degree vectors
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


def clear_caches() -> None:
    """Release the cached bases, product tables, flat tables and degree vectors (see ``hope_engine.caches.clear_all``
    for every engine cache)."""
    _BASES.clear()
    _TABLES.clear()
    _FLAT.clear()
    _DEGREES.clear()
