"""Interactions between inputs, from exact mixed Taylor terms of the path model g(z) (see ``groups``).

Interaction map (at the image, z = 1, in the top-k groups): the mixed coefficients c_{e_p + e_q} = d^2 g/dz_p dz_q
(and c_{e_p + e_q + e_r} at order 3), and per pair the Taylor estimate of the removal interaction
I_pq = f(x) - f(x - d_p) - f(x - d_q) + f(x - d_p - d_q) = sum over the terms a supported on exactly {p, q} of
c_a (-1)^|a|, checked against those four forward passes (``exact``).

Decomposition of f(x) - f(b) along the straight path, cut into m segments [s_j, s_j + 1/m]: g is expanded at each
s_j 1 (one batched call) and each segment's increment is split by support: main effects (terms in one group),
pairwise interactions (terms in exactly two groups), higher interactions (three or more), and the remainder that the
order-K polynomials do not reach. m = 1 is the expansion at the baseline (an anchored ANOVA split); as m grows the
main effects tend to integrated gradients and the interactions to zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hope_engine.analysis._points import flat_output_index, prepare_rows, scalar_outputs
from hope_engine.analysis.groups import PathModel, group_names, patch_groups
from hope_engine.api.expand import expand


@dataclass(frozen=True)
class Pair:
    """One interaction: group indices, names, the mixed coefficient, its Taylor removal estimate and the exact one."""

    groups: tuple[int, ...]
    names: tuple[str, ...]
    mixed: float
    taylor: float
    exact: float | None = None


class InteractionMap:
    """Mixed terms among the top-k groups of one image; ``pairs`` (and ``triples``) ranked by |mixed|, largest first."""

    def __init__(self, x, masks, top_groups, names, main, pairs, triples, matrix, order, f_x):
        self.x, self.masks, self.top_groups, self.names = x, masks, top_groups, names
        self.main, self.pairs, self.triples = main, pairs, triples
        self.matrix, self.order, self.f_x = matrix, order, f_x

    def table(self, top: int = 10) -> str:
        """The ranked pairs as text: mixed term, Taylor estimate of the removal interaction, exact value."""
        lines = [f"{'pair':<28} {'mixed d2g':>11} {'taylor I':>11} {'exact I':>11}"]
        for p in self.pairs[:top]:
            ex = "" if p.exact is None else f"{p.exact:+11.4g}"
            lines.append(f"{' x '.join(p.names):<28} {p.mixed:+11.4g} {p.taylor:+11.4g} {ex:>11}")
        return "\n".join(lines)

    def figure(self, image_shape=None, pairs: int = 8):
        """The image with the top pairs drawn as lines (red: positive, blue: negative) beside the k x k matrix."""
        from hope_engine.analysis.figures import interaction_figure

        return interaction_figure(self, image_shape=image_shape, pairs=pairs)

    def __repr__(self) -> str:
        top = self.pairs[0] if self.pairs else None
        return (f"InteractionMap(groups={len(self.top_groups)}, order={self.order}, "
                f"top pair={None if top is None else top.names} {0.0 if top is None else top.mixed:+.3g})")


def _setup(model, x, output, baseline, patch):
    x = prepare_rows(model, x)
    if x.shape[0] != 1:
        raise ValueError(f"explain one input at a time; got a batch of {x.shape[0]}")
    b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x).clone()
    masks = patch_groups(tuple(x.shape[1:]), patch).to(x.dtype)
    with torch.no_grad():
        y = model(x)
    idx = flat_output_index(y.reshape(1, -1).shape[1:], output)
    return x, b, masks, PathModel(model, x, b, masks, idx).eval()


def group_occlusion(g: PathModel, count: int) -> torch.Tensor:
    """g(1) - g(1 - e_p) for every group p: the exact effect of removing one group alone."""
    z = torch.ones(count + 1, count, dtype=g.steps.dtype)
    z[1:] -= torch.eye(count, dtype=z.dtype)
    with torch.no_grad():
        v = g(z).reshape(-1)
    return v[0] - v[1:]


def interactions(model, x, output=None, *, top: int = 8, order: int = 2, patch=None, baseline=0.0, scores=None,
                 exact: bool = True) -> InteractionMap:
    """Exact mixed terms (order 2, or 3 for triples) among the ``top`` groups with the largest |scores| (default: the
    exact single-group removal effect), at the image x, for one output. ``patch``: None (pixels) or a patch size."""
    if order not in (2, 3):
        raise ValueError(f"order must be 2 or 3, got {order}")
    x, b, masks, g = _setup(model, x, output, baseline, patch)
    count = masks.shape[0]
    names_all = group_names(tuple(x.shape[1:]), patch)
    alone = group_occlusion(g, count)
    key = alone.abs() if scores is None else (masks @ scores.reshape(-1).to(masks.dtype)).abs()
    if scores is not None and key.shape[0] != count:
        raise ValueError("scores must be shaped like x")
    k = min(top, count)
    chosen = torch.argsort(key, descending=True, stable=True)[:k]
    p = expand(g, torch.ones(1, count, dtype=x.dtype), order, variables=chosen, batched=True)
    c = p.coefficients.reshape(p.coefficients.shape[0]).detach()
    alphas = p.basis.indices
    names = [names_all[int(i)] for i in chosen]
    support = (alphas > 0).sum(1)
    degree = alphas.sum(1)
    sign = torch.where(degree % 2 == 0, 1.0, -1.0).to(c.dtype)
    matrix = torch.zeros(k, k, dtype=c.dtype)
    pairs = []
    for i in range(k):
        for j in range(i + 1, k):
            on = (support == 2) & (alphas[:, i] > 0) & (alphas[:, j] > 0)
            mixed = float(c[p.basis.position(tuple(int(a == i or a == j) for a in range(k)))])
            matrix[i, j] = matrix[j, i] = mixed
            a, z = sorted((i, j), key=lambda v: int(chosen[v]))
            pairs.append(Pair((int(chosen[a]), int(chosen[z])), (names[a], names[z]), mixed,
                              float((c[on] * sign[on]).sum())))
    pairs.sort(key=lambda q: -abs(q.mixed))
    if exact:
        pairs = [_with_exact(g, count, q) for q in pairs]
    triples = []
    if order == 3:
        for m in ((support == 3) & (degree == 3)).nonzero().reshape(-1).tolist():
            idx = tuple(int(v) for v in alphas[m].nonzero().reshape(-1))
            triples.append(Pair(tuple(int(chosen[v]) for v in idx), tuple(names[v] for v in idx), float(c[m]),
                                -float(c[m])))
        triples.sort(key=lambda q: -abs(q.mixed))
    main = {int(chosen[i]): float(alone[chosen[i]]) for i in range(k)}
    return InteractionMap(x, masks, chosen, names, main, pairs, triples, matrix, order, float(c[0]))


def _with_exact(g: PathModel, count: int, q: Pair) -> Pair:
    z = torch.ones(4, count, dtype=g.steps.dtype)
    i, j = q.groups
    z[1, i] = 0
    z[2, j] = 0
    z[3, [i, j]] = 0
    with torch.no_grad():
        v = g(z).reshape(-1)
    return Pair(q.groups, q.names, q.mixed, q.taylor, float(v[0] - v[1] - v[2] + v[3]))


@dataclass(frozen=True)
class Decomposition:
    """f(x) - f(b) = sum(main) + sum(pairs) + higher + remainder, per group / pair (group indices into ``names``)."""

    total: float
    main: torch.Tensor  # (P,)
    pairs: torch.Tensor  # (P, P), upper triangle
    higher: float
    remainder: float
    names: list[str]
    order: int
    segments: int

    @property
    def explained(self) -> float:
        """(sum of main effects + pairwise terms) / (f(x) - f(b))."""
        return float(self.main.sum() + self.pairs.sum()) / self.total if self.total else math.nan

    @property
    def unexplained(self) -> float:
        """|f(x) - f(b) - main - pairs| / |f(x) - f(b)|: what main effects and pairs leave out."""
        return abs(self.total - float(self.main.sum() + self.pairs.sum())) / abs(self.total) if self.total else 0.0

    def top_pairs(self, top: int = 10) -> list[tuple[str, str, float]]:
        """The ``top`` pairwise terms by magnitude: (name, name, value)."""
        iu = torch.triu_indices(*self.pairs.shape, offset=1)
        vals = self.pairs[iu[0], iu[1]]
        order = torch.argsort(vals.abs(), descending=True)[:top]
        return [(self.names[int(iu[0, m])], self.names[int(iu[1, m])], float(vals[m])) for m in order]

    def __str__(self) -> str:
        mp = float(self.main.sum())
        pp = float(self.pairs.sum())
        return (f"f(x) - f(b) = {self.total:+.5g}: main effects {mp:+.5g}, pairwise {pp:+.5g}, higher interactions "
                f"{self.higher:+.5g}, remainder (beyond order {self.order}) {self.remainder:+.5g}; main + pairs "
                f"explain {self.explained:.1%} ({self.segments} segment{'s' if self.segments > 1 else ''})")


def decompose(model, x, output=None, *, patch=None, baseline=0.0, order: int = 2, segments: int = 1) -> Decomposition:
    """Split f(x) - f(b) into main effects and pairwise interactions of the groups (pixels or patches), summing the
    order-``order`` expansions of the path model at the ``segments`` points s_j = j/m over their segments."""
    if order < 2:
        raise ValueError("order must be >= 2 to see pairwise interactions")
    x, b, masks, g = _setup(model, x, output, baseline, patch)
    count = masks.shape[0]
    s = torch.arange(segments, dtype=x.dtype) / segments
    p = expand(g, s[:, None].expand(segments, count).contiguous(), order, batched=True)
    c = p.coefficients.reshape(p.coefficients.shape[0], segments).detach()
    alphas = p.basis.indices
    degree = alphas.sum(1)
    support = (alphas > 0).sum(1)
    step = (c * (1.0 / segments) ** degree.to(c.dtype)[:, None]).sum(1)  # each term summed over the segments
    main = torch.zeros(count, dtype=c.dtype)
    pairs = torch.zeros(count, count, dtype=c.dtype)
    one = (support == 1).nonzero().reshape(-1)
    main.index_add_(0, alphas[one].argmax(1), step[one])
    two = (support == 2).nonzero().reshape(-1)
    if len(two):
        nz = (alphas[two] > 0).to(torch.int64)
        first = nz.argmax(1)
        second = count - 1 - nz.flip(1).argmax(1)
        pairs.index_put_((first, second), step[two], accumulate=True)
    higher = float(step[support >= 3].sum())
    with torch.no_grad():
        total = float(scalar_outputs(g, torch.ones(1, count, dtype=x.dtype), None)[0]
                      - scalar_outputs(g, torch.zeros(1, count, dtype=x.dtype), None)[0])
    remainder = total - float(step[1:].sum())
    return Decomposition(total, main, pairs, higher, remainder, group_names(tuple(x.shape[1:]), patch), order,
                         segments)
