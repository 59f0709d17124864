"""Index sets of multi-indices (the monomials a polynomial keeps) and their product tables.

A basis is a downward-closed set S of multi-indices a in N^n with |a| <= K, ordered by degree, so that the order-k
truncation is a prefix. Because S is downward closed, dropping the monomials outside S is a ring homomorphism: sums
and products computed in S are exact on every coefficient kept.

- ``total``: every a with |a| <= K (all mixed partials), M = C(n + K, K).
- ``pure``: a with at most one nonzero entry (unmixed partials), M = 1 + n K. Degree block k holds k e_0 .. k e_{n-1}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations_with_replacement

import torch

KINDS = ("total", "pure")


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
        return make_basis(self.n, min(order, self.order), self.kind)

    def factorials(self, dtype=torch.float64) -> torch.Tensor:
        """alpha! = prod_i alpha_i! for every kept multi-index."""
        lg = torch.lgamma(self.indices.to(torch.float64) + 1).sum(dim=1)
        return torch.exp(lg).round().to(dtype)


@lru_cache(maxsize=64)
def make_basis(n: int, order: int, kind: str = "total") -> Basis:
    """The basis of ``kind`` for n variables up to ``order`` (cached: the same object is returned for equal args)."""
    if kind not in KINDS:
        raise ValueError(f"unknown basis kind {kind!r}; use one of {KINDS}")
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


@lru_cache(maxsize=64)
def _product_tables_cpu(n: int, order: int) -> tuple[DegreeTable, ...]:
    basis = make_basis(n, order, "total")
    rows = basis.multi_indices()
    tables = []
    for d in range(order + 1):
        left, right, out, ldeg = [], [], [], []
        base = basis.offsets[d]
        for p in range(d + 1):
            bi, bj = basis.block(p), basis.block(d - p)
            for i in range(bi.start, bi.stop):
                ai = rows[i]
                for j in range(bj.start, bj.stop):
                    aj = rows[j]
                    k = basis._position[tuple(x + y for x, y in zip(ai, aj))]
                    left.append(i)
                    right.append(j)
                    out.append(k - base)
                    ldeg.append(p)
        tables.append(
            DegreeTable(
                left=torch.tensor(left, dtype=torch.long),
                right=torch.tensor(right, dtype=torch.long),
                out=torch.tensor(out, dtype=torch.long),
                left_degree=torch.tensor(ldeg, dtype=torch.long),
            )
        )
    return tuple(tables)


_device_tables: dict = {}


def product_tables(basis: Basis, device: torch.device | str = "cpu") -> tuple[DegreeTable, ...]:
    """Per-degree product tables of a total basis, cached per (n, order, device). Size: C(2n + K, K) triples."""
    if basis.kind != "total":
        raise ValueError("product tables are defined for the total basis; the pure basis multiplies blockwise")
    device = torch.device(device)
    key = (basis.n, basis.order, device)
    if key not in _device_tables:
        cpu = _product_tables_cpu(basis.n, basis.order)
        _device_tables[key] = tuple(
            DegreeTable(*(t.to(device) for t in (tb.left, tb.right, tb.out, tb.left_degree))) for tb in cpu
        )
    return _device_tables[key]


def product_table_size(n: int, order: int) -> int:
    """Number of triples of the total-basis product table: C(2n + K, K)."""
    return math.comb(2 * n + order, order)
