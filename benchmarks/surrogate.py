"""Surrogates of trained networks whose output varies over the box: accuracy relative to the output range, the order
needed, the valid radius, and speed against the network (a benchmark that prints measured numbers, not a test).

Networks (float64, seeded, trained in seconds):
  sin:  1-64-64-64-1 tanh MLP fit to sin(4 pi u) on u in [0, 1] (two periods), expanded at u0 = 0.5;
  disc: the 2-64-64-64-1 Sine MLP of the function-discovery example, fit to (x1^2 + x2)/2 on [-1, 1]^2, at 0.
Errors are max |P_K - f| over sampled points at each radius (1-D: both ends; 2-D: 64 directions), divided by the
network's output range over the whole domain. "valid radius" = largest radius where that relative error stays below
the tolerance, given as a fraction of the domain's half-width h. Speed: network and surrogate both in float32 under
torch.inference_mode, best of 5 runs on 10^5 points inside the surrogate's valid radius.

    python benchmarks/surrogate.py [--threads 1] [--points 100000]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

from hope_engine import expand
from hope_engine.analysis import convergence, estimate_radius, surrogate
from hope_engine.models import fit, sine_mlp

TOLS = (1e-3, 1e-2)


def sin_net() -> tuple[nn.Module, torch.Tensor, float, str]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                        nn.Linear(64, 1)).double()
    u = torch.linspace(0, 1, 256, dtype=torch.float64)[:, None]
    loss = fit(net, u, torch.sin(4 * torch.pi * u), steps=60)
    return net, torch.tensor([[0.5]], dtype=torch.float64), 0.5, f"1-64x3-1 tanh fit to sin(4 pi u), u in [0, 1] " \
        f"(training MSE {loss:.1e}), x0 = 0.5, h = 0.5"


def discovery_net() -> tuple[nn.Module, torch.Tensor, float, str]:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(512, 2, generator=gen, dtype=torch.float64) * 2 - 1
    net = sine_mlp([2, 64, 64, 64, 1], seed=0)
    loss = fit(net, x, (x[:, 0] ** 2 + x[:, 1]) / 2, steps=8)
    return net, torch.zeros(1, 2, dtype=torch.float64), 1.0, f"2-64x3-1 Sine fit to (x1^2 + x2)/2 on [-1, 1]^2 " \
        f"(training MSE {loss:.1e}), x0 = 0, h = 1"


def best_time(fn, x, repeat: int = 5) -> float:
    with torch.inference_mode():
        fn(x)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    return min(times)


def output_range(net, x0, h) -> float:
    n = x0.shape[1]
    g = torch.linspace(-h, h, 401 if n == 1 else 101, dtype=torch.float64)
    pts = g[:, None] if n == 1 else torch.cartesian_prod(g, g)
    with torch.no_grad():
        y = net(x0 + pts)
    return float(y.max() - y.min())


def run_case(name, builder, max_order, orders, points, gen) -> None:
    t0 = time.perf_counter()
    net, x0, h, desc = builder()
    print(f"\n== {name}: {desc} (trained in {time.perf_counter() - t0:.1f} s)")
    span = output_range(net, x0, h)
    p = expand(net, x0, max_order)
    est = estimate_radius(p).radius
    n = x0.shape[1]
    radii = torch.linspace(h / 20, h, 20, dtype=torch.float64)
    conv = convergence(net, p, radii=radii, direction=[1.0] if n == 1 else None, samples=64)
    print(f"output range over the domain {span:.4g}; radius of convergence estimated from the coefficients {est:.3g} "
          f"({est / h:.2f} h)")
    print(f"{'order':>5} {'monomials':>9} {'max rel err at h/4':>18} {'at h/2':>9} {'at h':>9} "
          f"{'valid r (0.1%)':>14} {'valid r (1%)':>12}")
    j4, j2 = int((radii <= h / 4 + 1e-12).nonzero().max()), int((radii <= h / 2 + 1e-12).nonzero().max())
    for k in orders:
        i = conv.orders.index(k)
        rel = conv.max_error[i] / span
        valid = [conv.valid_radius(tol * span, order=k) / h for tol in TOLS]
        print(f"{k:>5} {p.truncate(k).basis.size:>9} {float(rel[j4]):>18.2e} {float(rel[j2]):>9.2e} "
              f"{float(rel[-1]):>9.2e} {valid[0]:>13.2f}h {valid[1]:>11.2f}h")
    for frac in (0.25, 0.5, 1.0):
        need = [conv.best_order(tol * span, radius=frac * h) for tol in TOLS]
        print(f"lowest order for max error < 0.1% / 1% of the range within {frac:g} h: "
              f"{need[0] if need[0] is not None else f'none <= {max_order}'} / "
              f"{need[1] if need[1] is not None else f'none <= {max_order}'}")
    net32 = copy.deepcopy(net).float().eval()
    print(f"speed, float32, inference_mode, {points:,} points, {torch.get_num_threads()} thread(s):")
    t_net = None
    for tol in TOLS:
        for frac in (0.25, 0.5):
            k = conv.best_order(tol * span, radius=frac * h)
            if k is None:
                print(f"  {tol:.1%} within {frac:g} h: no order <= {max_order}")
                continue
            s = surrogate(p.truncate(k), radius=frac * h, dtype=torch.float32)
            u = torch.rand(points, n, generator=gen, dtype=torch.float64) * 2 - 1
            x = x0 + frac * h * (u if n == 1 else u / u.norm(dim=1, keepdim=True) * torch.rand(points, 1, generator=gen,
                                                                                                  dtype=torch.float64))
            x32 = x.float()
            if t_net is None:
                t_net = best_time(net32, x32)
            t_s = best_time(s, x32)
            with torch.no_grad():
                err = float((s(x32).double() - net(x)).abs().max()) / span
            print(f"  {tol:.1%} within {frac:g} h: order {k:2d}; network {t_net * 1e3:7.2f} ms, surrogate "
                  f"{t_s * 1e3:7.2f} ms, speed-up {t_net / t_s:5.1f}x; float32 max error {err:.2e} of the range")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    gen = torch.Generator().manual_seed(0)
    run_case("sin", sin_net, 24, (4, 8, 12, 16, 20, 24), args.points, gen)
    run_case("disc", discovery_net, 12, (2, 4, 6, 8, 10, 12), args.points, gen)


if __name__ == "__main__":
    main()
