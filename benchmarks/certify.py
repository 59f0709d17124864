"""Certified Taylor models: remainder vs the largest error found, cost against expand, and output enclosures against
interval bound propagation (a benchmark that prints measured numbers, not a test).

Per case and radius (L-inf box around x0, order K = 4, float64, one thread):
  remainder   certified sup |f - P| over the box (max over outputs)
  found       largest |f - P| found by 10^4 samples (a quarter at vertices) + 30 steps of projected sign-gradient
              ascent from the 32 worst (a lower bound on the true sup)
  tight       remainder / found (>= 1; 1 = the bound is attained)
  cert/exp    certify time / expand time at the same order (median of 5 after a warm-up)
  width       enclosure of f over the box: certify's bounds() (upper - lower), IBP's, and the sampled range (a lower
              bound on the true width); CROWN and alpha-CROWN: benchmarks/certify_vs_crown.py (auto_LiRPA runs in
              its own environment there)

Cases: the paper's Sine MLP 1-1024x5-1 (w0 = 30 first layer, the paper's initialisation), a 2-64x3-1 tanh MLP, a
small conv net (4 pixels of an 8x8 image vary), one attention block with layer norm (2 of 12 inputs vary), and a
1-64x3-1 tanh MLP trained for 300 Adam steps on sin(4 pi u), u in [0, 1].

    python benchmarks/certify.py [--order 4] [--cases sine,tanh,conv,attention,trained]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

from hope_engine import certify, expand
from hope_engine.api.sampling import sampled_error
from hope_engine.models import Sine, sine_mlp

RADII = (0.01, 0.1, 0.5)


# ----------------------------------------------------------------------------------------------------------- IBP
def _sin_interval(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact range of sin over [lo, hi] (elementwise): the ends, and +-1 where a crest or trough lies inside."""
    a, b = torch.sin(lo), torch.sin(hi)
    k_max = torch.ceil((lo - math.pi / 2) / (2 * math.pi))
    k_min = torch.ceil((lo + math.pi / 2) / (2 * math.pi))
    has_max = (math.pi / 2 + 2 * math.pi * k_max) <= hi
    has_min = (-math.pi / 2 + 2 * math.pi * k_min) <= hi
    return (torch.where(has_min, -torch.ones_like(a), torch.minimum(a, b)),
            torch.where(has_max, torch.ones_like(a), torch.maximum(a, b)))


def ibp(model: nn.Sequential, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval bound propagation: centre/radius through affine layers, endpoints through monotone activations."""
    for layer in model:
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
            mid = layer(mid)
            rad = (nn.functional.linear(rad, layer.weight.abs()) if isinstance(layer, nn.Linear) else
                   nn.functional.conv2d(rad, layer.weight.abs(), None, layer.stride, layer.padding))
            lo, hi = mid - rad, mid + rad
        elif isinstance(layer, Sine):
            lo, hi = _sin_interval(layer.w0 * lo, layer.w0 * hi)
        elif isinstance(layer, (nn.Tanh, nn.Sigmoid, nn.ReLU, nn.AvgPool2d, nn.MaxPool2d, nn.Flatten)):
            lo, hi = layer(lo), layer(hi)
        else:
            raise TypeError(f"no IBP rule for {type(layer).__name__}")
    return lo, hi


# ----------------------------------------------------------------------------------------------------------- cases
def _trained() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                          nn.Linear(64, 1)).double()
    u = torch.linspace(0, 1, 256, dtype=torch.float64).reshape(-1, 1)
    y = torch.sin(4 * math.pi * u)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        loss = ((model(u) - y) ** 2).mean()
        loss.backward()
        opt.step()
    return model.eval()


class Attention(nn.Module):
    """One attention block: layer norm (x + attention(x)), then a linear read-out."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.norm = nn.LayerNorm(4)
        self.out = nn.Linear(12, 1)

    def forward(self, x):
        h = self.norm(x + self.attn(x, x, x, need_weights=False)[0])
        return self.out(h.reshape(x.shape[0], -1))


def cases(selected: set[str]):
    if "sine" in selected:
        yield "Sine 1-1024x5-1", sine_mlp([1, 1024, 1024, 1024, 1024, 1024, 1], seed=0), \
            torch.tensor([[0.1]], dtype=torch.float64), None, True
    if "tanh" in selected:
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                          nn.Linear(64, 1)).double().eval()
        yield "tanh 2-64x3-1", m, torch.tensor([[0.3, -0.2]], dtype=torch.float64), None, True
    if "conv" in selected:
        torch.manual_seed(2)
        m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(4, 4, 3), nn.Tanh(),
                          nn.Flatten(), nn.Linear(16, 2)).double().eval()
        yield "conv 8x8 (4 px)", m, torch.randn(1, 1, 8, 8, dtype=torch.float64), [18, 19, 26, 27], True
    if "attention" in selected:
        yield "attention+LN", Attention().double().eval(), torch.randn(1, 3, 4, dtype=torch.float64), [0, 5], False
    if "trained" in selected:
        yield "trained tanh 1-64x3", _trained(), torch.tensor([[0.5]], dtype=torch.float64), None, True


def _median_time(fn, *args, repeats: int = 5, **kwargs) -> float:
    fn(*args, **kwargs)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _box(x0: torch.Tensor, variables, r: float) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = x0.clone(), x0.clone()
    flat_lo, flat_hi = lo.reshape(-1), hi.reshape(-1)
    idx = torch.arange(x0.numel()) if variables is None else torch.tensor(variables)
    flat_lo[idx] -= r
    flat_hi[idx] += r
    return lo, hi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order", type=int, default=4)
    parser.add_argument("--cases", default="sine,tanh,conv,attention,trained")
    args = parser.parse_args()
    torch.set_num_threads(1)
    crown_note = "CROWN / alpha-CROWN: see benchmarks/certify_vs_crown.py"
    print(f"order K = {args.order}; float64; one thread; {crown_note}")
    head = (f"{'case':<20} {'radius':>6} {'remainder':>10} {'found':>10} {'tight':>6} {'cert/exp':>8} "
            f"{'width':>10} {'IBP width':>10} {'sampled':>10}")
    print(head)
    print("-" * len(head))
    tightness = {r: [] for r in RADII}
    ratios = []
    for name, model, x0, variables, has_ibp in cases(set(args.cases.split(","))):
        for r in RADII:
            cert = certify(model, x0, args.order, radius=r, variables=variables)
            s = sampled_error(model, cert, points=10_000, steps=30)
            t_cert = _median_time(certify, model, x0, args.order, radius=r, variables=variables)
            t_exp = _median_time(expand, model, x0, args.order, variables=variables)
            lo, hi = cert.bounds()
            width = float((hi - lo).max())
            sampled_width = float((s.high - s.low).max())
            ibp_width = "n/a"
            if has_ibp:
                with torch.no_grad():
                    ilo, ihi = ibp(model, *_box(x0, variables, r))
                ibp_width = f"{float((ihi - ilo).max()):10.3e}"
            rem, found = float(cert.remainder.max()), float(s.error.max())
            tight = rem / found if found > 0 else float("inf")
            tightness[r].append(tight)
            ratios.append(t_cert / t_exp)
            print(f"{name:<20} {r:>6} {rem:>10.3e} {found:>10.3e} {tight:>6.2f} {t_cert / t_exp:>8.2f} "
                  f"{width:>10.3e} {ibp_width:>10} {sampled_width:>10.3e}")
    print()
    for r in RADII:
        if tightness[r]:
            print(f"median tightness at radius {r}: {statistics.median(tightness[r]):.2f}")
    if ratios:
        print(f"certify / expand time: median {statistics.median(ratios):.2f}, max {max(ratios):.2f}")


if __name__ == "__main__":
    main()
