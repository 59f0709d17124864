"""Function discovery by the two methods on the paper's two formulas: coefficient error against the true formula,
held-out R^2 against the network, time, and how far the network is from its data (a benchmark that prints measured
numbers, not a test).

    python benchmarks/discovery.py [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from hope_engine.analysis import discover
from hope_engine.models import fit, sine_mlp


def half_case():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(512, 2, generator=gen, dtype=torch.float64) * 2 - 1
    y = (x[:, 0] ** 2 + x[:, 1]) / 2
    net = sine_mlp([2, 64, 64, 64, 1], seed=0)
    loss = fit(net, x, y, steps=8)
    truth = {(0, 1): 0.5, (2, 0): 0.5}
    return "(x1^2 + x2)/2, 2-64x3-1 Sine", net, x, y, loss, torch.zeros(2), 4, truth


def five_case():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1024, 5, generator=gen, dtype=torch.float64) * 2 - 1
    x1, x2, x3, x4, x5 = x.T
    y = 0.5 + x1 + 0.6 * x2 * x3 - 0.8 * x2 * x4 + x1 * x2 * x3 - x3 * x5
    net = sine_mlp([5, 32, 32, 1], seed=0)
    loss = fit(net, x, y, steps=20)
    truth = {(0, 0, 0, 0, 0): 0.5, (1, 0, 0, 0, 0): 1.0, (0, 1, 1, 0, 0): 0.6, (0, 1, 0, 1, 0): -0.8,
             (1, 1, 1, 0, 0): 1.0, (0, 0, 1, 0, 1): -1.0}
    return "5-input formula, 5-32x2-1 Sine", net, x, y, loss, torch.zeros(5), 3, truth


def coefficient_error(d, truth) -> float:
    """max over all monomials of |estimate - true coefficient| (0 for monomials the formula does not have)."""
    alphas = d.basis.multi_indices()
    return max(abs(float(d.mean[m]) - truth.get(a, 0.0)) for m, a in enumerate(alphas))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--radius", type=float, default=0.5)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); box [-{args.radius}, {args.radius}]^n "
          "around 0; taylor: 64 reference points; fit: max(4 M, 256) samples; held-out: 512 fresh points")
    print(f"\n{'case':<32} {'method':<7} {'max coef err':>12} {'held-out R2':>12} {'1 - R2':>9} {'ms':>7}"
          f"   network <-> data")
    for case in (half_case, five_case):
        name, net, x, y, loss, c, order, truth = case()
        local_err = None
        for method in ("taylor", "fit"):
            discover(net, c, order, radius=args.radius, method=method, heldout=0)  # warm-up (tracing)
            t0 = time.perf_counter()
            d = discover(net, c, order, radius=args.radius, method=method, heldout=0)
            ms = (time.perf_counter() - t0) * 1e3
            d = discover(net, c, order, radius=args.radius, method=method, data=(x, y))
            local_err = max(abs(float(d.local[m]) - truth.get(a, 0.0)) for m, a in enumerate(d.basis.multi_indices()))
            print(f"{name:<32} {method:<7} {coefficient_error(d, truth):>12.4f} {d.heldout_r2:>12.7f} "
                  f"{1 - d.heldout_r2:>9.2e} {ms:>7.1f}   RMS {d.data.rms:.2e}, max {d.data.max:.2e} "
                  f"(training MSE {loss:.1e})")
        print(f"{name:<32} {'local':<7} {local_err:>12.4f} {d.heldout_r2_local:>12.7f} {1 - d.heldout_r2_local:>9.2e}"
              f" {'':>7}   (the exact expansion at the centre alone)")
        print(f"  -> {d.compare()}")


if __name__ == "__main__":
    main()
