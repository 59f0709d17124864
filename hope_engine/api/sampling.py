"""Empirical checks of a certified Taylor model: the largest |f(x) - P(x)| found by sampling the box and by projected
gradient ascent from the worst samples, and the range of f seen on the way.

A certified remainder must be >= every error found here (up to the rounding of evaluating f and P in floating
point); the ratio remainder / found error measures the bound's tightness (>= 1, and the found error is itself a lower
bound on the true maximum).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hope_engine.algebra.polynomial import select_output
from hope_engine.api.certify import CertifiedTaylorModel


@dataclass
class SampledError:
    """error: the largest |f - P| found per output (shaped like the remainder); low / high: the smallest and largest
    f seen; evaluated: how many points were evaluated."""

    error: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor
    evaluated: int


def _model_on(model, x: torch.Tensor, batched: bool) -> torch.Tensor:
    """model on points x (N, *point shape): along the batch axis when batched, else through vmap."""
    if batched:
        n, b = x.shape[:2]
        out = model(x.reshape(n * b, *x.shape[2:]))
        return out.reshape(n, b, *out.shape[1:])
    return torch.func.vmap(model)(x)


@dataclass
class SampledRange:
    """low / high: the least and largest f found per output (shaped like the remainder), inner bounds of f's range
    over the box; evaluated: how many points were evaluated."""

    low: torch.Tensor
    high: torch.Tensor
    evaluated: int


def sampled_range(model, cert: CertifiedTaylorModel, points: int = 10_000, steps: int = 50, starts: int = 8,
                  seed: int = 0, output=None) -> SampledRange:
    """The range of f over the certificate's box as found by sampling ``points`` displacements (a quarter at random
    vertices) and, per output element and side, ``steps`` of projected sign-gradient ascent on +-f from the ``starts``
    best samples (f's extremes over a box sit at or near vertices in many dimensions, where sampling alone rarely
    lands). Every value returned is f at a point of the box: a certified enclosure must contain [low, high]."""
    poly, r, batched, x0, lead, t, var = _box_samples(cert, points, seed)

    def values(t: torch.Tensor) -> torch.Tensor:
        x = x0.expand(t.shape[0], *x0.shape).clone()
        flat = x.reshape(t.shape[0], *lead, -1)
        flat[..., var] = flat[..., var] + t
        return select_output(_model_on(model, x, batched), output, 2 if batched else 1)

    with torch.no_grad():
        f = values(t)
    low, high = f.amin(0), f.amax(0)
    evaluated = points
    width = f.shape[1 + int(batched):].numel() if f.dim() > 1 + int(batched) else 1
    flat_f = f.reshape(points, *lead, width)
    for e in range(width if steps and starts else 0):
        for sign in (1.0, -1.0):
            score = (sign * flat_f[..., e]).reshape(points, -1).sum(1)
            s = t[score.topk(min(starts, points)).indices].clone()
            for k in range(steps):
                s.requires_grad_(True)
                v = values(s).reshape(s.shape[0], *lead, width)[..., e]
                (grad,) = torch.autograd.grad(sign * v.sum(), s)
                with torch.no_grad():
                    step = 0.5 * (0.01 / 0.5) ** (k / max(steps - 1, 1))
                    s = torch.maximum(torch.minimum(s + step * r * grad.sign(), r), -r).detach()
                evaluated += s.shape[0]
            with torch.no_grad():
                f = values(s)
            low, high = torch.minimum(low, f.amin(0)), torch.maximum(high, f.amax(0))
            evaluated += s.shape[0]
    return SampledRange(low.detach(), high.detach(), evaluated)


def sampled_error(model, cert: CertifiedTaylorModel, points: int = 10_000, steps: int = 30, starts: int = 32,
                  seed: int = 0, output=None) -> SampledError:
    """Sample ``points`` displacements in the box (a quarter of them at random vertices), then run ``steps`` of
    projected sign-gradient ascent on |f - P| / R from the ``starts`` worst ones. ``output``: the selection the
    certificate was made with (None for all outputs)."""
    poly, r, batched, x0, lead, t, var = _box_samples(cert, points, seed)
    scale = cert.remainder.abs() + 1e-300

    def errors(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x0.expand(t.shape[0], *x0.shape).clone()
        flat = x.reshape(t.shape[0], *lead, -1)
        flat[..., var] = flat[..., var] + t
        f = select_output(_model_on(model, x, batched), output, 2 if batched else 1)  # samples (, batch) first
        return (f - poly(x)).abs(), f

    with torch.no_grad():
        err, f = errors(t)
    best, low, high = err.amax(0), f.amin(0), f.amax(0)
    evaluated = points
    if steps and starts:
        score = (err / scale).reshape(points, -1).sum(1)
        worst = score.topk(min(starts, points)).indices
        t = t[worst].clone()
        for k in range(steps):
            t.requires_grad_(True)
            e, f = errors(t)
            (grad,) = torch.autograd.grad((e / scale).sum(), t)
            with torch.no_grad():
                best = torch.maximum(best, e.amax(0))
                low, high = torch.minimum(low, f.amin(0)), torch.maximum(high, f.amax(0))
                step = 0.25 * (0.02 / 0.25) ** (k / max(steps - 1, 1))
                t = torch.maximum(torch.minimum(t + step * r * grad.sign(), r), -r).detach()
            evaluated += t.shape[0]
        with torch.no_grad():
            e, f = errors(t)
            best = torch.maximum(best, e.amax(0))
            low, high = torch.minimum(low, f.amin(0)), torch.maximum(high, f.amax(0))
    return SampledError(best.detach(), low.detach(), high.detach(), evaluated)


def _box_samples(cert, points: int, seed: int) -> tuple:
    """(polynomial, radius, batched, x0, batch shape, displacements t, variables): ``points`` uniform displacements in
    the certificate's box, the first quarter moved to random vertices."""
    poly = cert.polynomial
    x0 = poly.center
    lead = (x0.shape[0],) if poly.batched else ()
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand((points, *lead, poly.n), generator=gen, dtype=x0.dtype) * 2 - 1
    corners = points // 4
    u[:corners] = u[:corners].sign()
    return (poly, cert.radius, poly.batched, x0, lead, u.to(x0.device) * cert.radius,
            poly.variables.to(x0.device))
