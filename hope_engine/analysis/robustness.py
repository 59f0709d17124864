"""Verified robustness of a classifier over an L-inf ball: ``verify_margin(model, x, label, eps)``.

The margins m_j(x) = z_label(x) - z_j(x) (z the logits, j != label) are certified as the outputs of one Taylor model
over the ball |x - x0|_inf <= eps (``certify``): where every certified lower bound is > 0 the label wins everywhere in
the ball ("verified"). Otherwise the ball is split (branch and bound on the same traced graph) until every leaf's
lower bounds are positive, or a leaf's centre is misclassified ("falsified", with that point), or the budget ends
("unknown").

    from hope_engine.analysis import verify_margin, verified_accuracy
    v = verify_margin(model, image, label=3, eps=0.01)
    v.verdict, v.lower          # "verified", certified lower bounds of z_3 - z_j for every class j
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from hope_engine.api.certify import certify
from hope_engine.certified.split import as_split
from hope_engine.errors import ExpansionError

VERDICTS = ("verified", "falsified", "unknown", "misclassified")
ESCALATE_MONOMIALS = 60_000  # the default second order only where its basis (with the extra order) is this small


class Margins(nn.Module):
    """x -> z_label(x) - z_j(x) for the classes j != label, as one constant linear map of the logits (certified
    exactly, like any linear layer)."""

    def __init__(self, model: nn.Module, label: int, classes: int, dtype: torch.dtype, device=None):
        super().__init__()
        self.model = model
        d = torch.zeros(classes - 1, classes, dtype=dtype, device=device)
        others = [j for j in range(classes) if j != label]
        d[:, label] = 1
        d[torch.arange(classes - 1), others] = -1
        self.register_buffer("difference", d)

    def forward(self, x):
        return self.model(x) @ self.difference.t()


@dataclass
class MarginCertificate:
    """verdict: "verified" (every margin's certified lower bound > 0 over the ball), "falsified" (a point of the ball,
    ``counterexample``, is classified otherwise), "misclassified" (x itself is not given ``label``) or "unknown";
    lower: per class j the certified lower bound of z_label - z_j over the ball (+inf at the label itself); boxes:
    sub-boxes certified (1 without splitting); seconds."""

    label: int
    eps: float
    verdict: str
    lower: torch.Tensor
    boxes: int
    seconds: float
    counterexample: torch.Tensor | None = None

    @property
    def verified(self) -> bool:
        return self.verdict == "verified"


def _logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        z = model(x)
    if not isinstance(z, torch.Tensor) or z.dim() == 0:
        raise ExpansionError("verify_margin needs a model that returns a tensor of logits (one per class)")
    return z


def verify_margin(model, x, label: int | None = None, eps: float = 0.01, *, order: int = 1, split=True,
                  orders: tuple[int, ...] | None = None) -> MarginCertificate:
    """Certify that ``model`` gives ``label`` (default: its prediction at x) the largest logit over the whole ball
    |x' - x|_inf <= eps. x: one input as the model takes it (a leading batch axis of size 1, or none); the logits are
    the model's last axis. order: of the Taylor models (1: linear polynomial, quadratic terms bounded). When that does
    not verify: a short projected-gradient attack on the margins (a point it finds: "falsified"), then the whole ball
    at each of ``orders`` (default: order + 1 where its basis holds at most 60000 monomials), then branch and bound
    at ``order`` with the budget ``split`` (True: ``Split()``, a number of boxes, a ``Split``, or False)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ExpansionError("verify_margin needs x as a floating-point tensor (one input of the model)")
    if not eps >= 0:
        raise ExpansionError(f"eps must be a non-negative number, got {eps!r}")
    start = time.perf_counter()
    z = _logits(model, x)
    if x.dim() >= 1 and z.dim() > 1 and z.shape[0] == x.shape[0] > 1:
        raise ExpansionError(f"verify_margin takes one input; x has a batch of {x.shape[0]}: use verified_accuracy "
                             "for many, or pass x[i:i + 1]")
    z = z.reshape(-1)
    classes = z.numel()
    if classes < 2:
        raise ExpansionError(f"verify_margin needs at least 2 logits, the model returns {classes}")
    label = int(z.argmax()) if label is None else int(label)
    if not 0 <= label < classes:
        raise ExpansionError(f"label must be a class index in 0..{classes - 1}, got {label}")
    others = [j for j in range(classes) if j != label]
    lower = torch.full((classes,), torch.inf, dtype=x.dtype)

    def done(verdict: str, margins: torch.Tensor, boxes: int, point=None) -> MarginCertificate:
        lower[others] = margins.reshape(-1).to(lower.dtype)
        return MarginCertificate(label, float(eps), verdict, lower, boxes, time.perf_counter() - start, point)

    if int(z.argmax()) != label:
        return done("misclassified", torch.full((classes - 1,), -torch.inf, dtype=x.dtype), 0, x.detach().clone())
    margin = Margins(model, label, classes, x.dtype, x.device)
    cert = certify(margin, x, order=order, radius=eps)
    low = cert.bounds()[0].reshape(-1)
    if bool((low > 0).all()) or eps == 0:
        return done("verified" if bool((low > 0).all()) else "unknown", low, 1)
    point = _attack(margin, x, eps)
    if point is not None:
        return done("falsified", low, 1, point)
    boxes = 1
    if orders is None:
        n = x.numel()
        orders = (order + 1,) if math.comb(n + order + 2, order + 2) <= ESCALATE_MONOMIALS else ()
    for k in orders:  # every certificate holds over the ball: keep the best lower bound of each margin
        low = torch.maximum(low, certify(margin, x, order=k, radius=eps).bounds()[0].reshape(-1))
        boxes += 1
        if bool((low > 0).all()):
            return done("verified", low, boxes)
    spec = as_split(split)
    if spec is None:
        return done("unknown", low, boxes)
    result = cert.split_bounds(spec, goal="positive")
    low = torch.maximum(low, result.lower.reshape(-1))
    boxes += result.leaves
    if bool((low > 0).all()):
        return done("verified", low, boxes)
    centre = _centre(x, result.witness.shift)
    if int(_logits(model, centre).reshape(-1).argmax()) != label:
        return done("falsified", low, boxes, centre)
    return done("unknown", low, boxes)


def _attack(margin: Margins, x: torch.Tensor, eps: float, steps: int = 20) -> torch.Tensor | None:
    """A point of the ball where some margin is <= 0, by projected sign-gradient descent on the least margin from x
    (step eps / 4 shrinking to eps / 50), or None."""
    t = torch.zeros_like(x)
    for k in range(steps):
        t.requires_grad_(True)
        m = margin(x.detach() + t).reshape(-1)
        if float(m.detach().min()) <= 0:
            return (x.detach() + t).detach()
        (grad,) = torch.autograd.grad(m.min(), t)
        with torch.no_grad():
            step = eps * 0.25 * (0.08 ** (k / max(steps - 1, 1)))
            t = (t - step * grad.sign()).clamp(-eps, eps)
    with torch.no_grad():
        return (x + t).detach() if float(margin(x + t).min()) <= 0 else None


def _centre(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    out = x.detach().clone()
    out.reshape(-1).add_(shift.to(x.dtype))
    return out


def verified_accuracy(model, images: torch.Tensor, labels: torch.Tensor, eps: float, **kwargs) -> tuple[float, list]:
    """The fraction of (image, label) pairs whose label is verified over the eps-ball (a misclassified image counts as
    not verified), and the certificates. images: (N, ...) with each image[i:i + 1] one input of the model."""
    certs = [verify_margin(model, images[i:i + 1], int(labels[i]), eps, **kwargs) for i in range(len(images))]
    return sum(c.verified for c in certs) / max(1, len(certs)), certs
