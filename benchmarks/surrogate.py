"""Surrogate speed and accuracy against the network it replaces (a benchmark, not a test).

The paper's Sine MLP 1 -> 1024 -> 1024 -> 1024 -> 1024 -> 1 (5 linear layers, W ~ U(-w0/m, w0/m), m = fan-in) is
expanded at x0 in float64; the radius r comes from the coefficient-growth estimate (half of it, so the points are well
inside); the order is the lowest whose max error on [x0 - r, x0 + r] is below the tolerance. Then the network and the
surrogate are timed on 10^5 points in that interval, and the surrogate's max/RMS error there is printed.

    python benchmarks/surrogate.py [--width 1024] [--w0 1.0] [--points 100000] [--tol 1e-3] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from hope_engine import expand
from hope_engine.analysis import convergence, estimate_radius, surrogate
from hope_engine.models import sine_mlp


def best_time(fn, x, repeat: int) -> float:
    """Fastest of ``repeat`` timed calls (after one warm-up), in seconds."""
    with torch.no_grad():
        fn(x)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=5, help="linear layers (hidden layers + 1)")
    ap.add_argument("--w0", type=float, default=None, help="paper init scale (default: torch's nn.Linear init)")
    ap.add_argument("--x0", type=float, default=0.0)
    ap.add_argument("--max-order", type=int, default=24)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the surrogate")
    args = ap.parse_args(argv)

    widths = [1] + [args.width] * (args.layers - 1) + [1]
    net64 = sine_mlp(widths, w0=args.w0, seed=0)
    net32 = copy.deepcopy(net64).float()
    x0 = torch.tensor([[args.x0]], dtype=torch.float64)
    init = "torch default init" if args.w0 is None else f"W ~ U(-w0/m, w0/m), w0 = {args.w0}"
    print(f"network: Sine MLP {'-'.join(map(str, widths))}, {init}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")

    start = time.perf_counter()
    p = expand(net64, x0, args.max_order)
    print(f"expansion to order {args.max_order}: {time.perf_counter() - start:.2f} s")
    est = estimate_radius(p).radius
    r = min(0.5 * est, 1.0)
    conv = convergence(net64, p, radii=torch.linspace(r / 10, r, 10, dtype=torch.float64))
    order = conv.best_order(args.tol)
    if order is None:
        raise SystemExit(f"no order up to {args.max_order} reaches max error {args.tol} within r = {r:.3g}")
    print(f"radius estimate (root test) {est:.3g}; points drawn in |x - x0| <= r = {r:.3g}; "
          f"lowest order with max error < {args.tol:g} there: {order}")

    gen = torch.Generator().manual_seed(0)
    x64 = args.x0 + (torch.rand(args.points, 1, generator=gen, dtype=torch.float64) * 2 - 1) * r
    x32 = x64.float()
    with torch.no_grad():
        truth = net64(x64)
    print(f"network output range on those points: {float(truth.min()):.4g} .. {float(truth.max()):.4g}")
    for dtype, x, net in ((torch.float32, x32, net32), (torch.float64, x64, net64)):
        s = surrogate(p.truncate(order), radius=r, dtype=dtype)
        with torch.no_grad():
            err = (s(x).double() - truth).abs()
        t_net = best_time(net, x, 1)
        t_sur = best_time(s, x, 10 * args.repeat)
        name = str(dtype).replace("torch.", "")
        print(f"{name}: network {t_net * 1e3:9.2f} ms  surrogate {t_sur * 1e3:7.3f} ms  speed-up {t_net / t_sur:7.0f}x"
              f"   max error {float(err.max()):.2e}   RMS error {float(err.pow(2).mean().sqrt()):.2e}")
        if args.compile:
            sc = surrogate(p.truncate(order), radius=r, dtype=dtype, compile=True)
            t_c = best_time(sc, x, 10 * args.repeat)
            print(f"{name}: torch.compile surrogate {t_c * 1e3:7.3f} ms   speed-up {t_net / t_c:8.0f}x")


if __name__ == "__main__":
    main()
