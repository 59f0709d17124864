"""Exact pure derivatives of every pixel (heat maps): dense pure expansion vs receptive-field windows vs the paper rule.

Network: the paper's MNIST CNN (Conv 1->10 5x5, AvgPool 2, Tanh, Conv 10->20 5x5, AvgPool 2, Tanh, Linear 320->50,
Tanh, Linear 50->1) trained as in ``benchmarks/run.py`` (seeded, a few seconds), expanded at a held-out image of a 3 in
all 784 pixels. Prints the median time of each method (after one warm-up), the ratios, and the largest difference
between the window and the dense coefficients (the window path is exact: it should be rounding only). Prints measured
numbers; asserts nothing about time.

    python benchmarks/heatmap.py [--order 10] [--repeats 5] [--threads 1] [--untrained]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import mnist_cnn, trained_mnist_cnn, windows_off  # noqa: E402

from hope_engine import expand  # noqa: E402


def median_ms(fn, repeats: int) -> tuple[float, object]:
    """Median wall time (ms) of ``repeats`` calls after one warm-up, and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times), out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--order", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--untrained", action="store_true", help="seeded untrained network and a uniform random image")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.untrained:
        model, x, note = mnist_cnn(), torch.rand(1, 1, 28, 28, dtype=torch.float64,
                                                 generator=torch.Generator().manual_seed(0)), "untrained, seed 0"
    else:
        model, x, note = trained_mnist_cnn()
    k = args.order
    print(f"heat maps: MNIST CNN, all 784 pixels, terms=pure, order {k}, {args.threads} thread(s), "
          f"median of {args.repeats} after 1 warm-up, torch {torch.__version__}")
    print(f"  note: {note}")
    with windows_off():
        t_dense, dense = median_ms(lambda: expand(model, x, k, terms="pure"), args.repeats)
    t_win, win = median_ms(lambda: expand(model, x, k, terms="pure"), args.repeats)  # windows: expand's own choice
    t_hope, _ = median_ms(lambda: expand(model, x, k, terms="pure", method="hope"), args.repeats)
    diff = (win.coefficients - dense.coefficients).abs().max().item()
    scale = dense.coefficients.abs().max().item()
    print(f"{'method':<28} {'time ms':>9} {'vs windows':>10}")
    print(f"{'exact dense (no windows)':<28} {t_dense:>9.1f} {t_dense / t_win:>10.2f}")
    print(f"{'exact windows (expand pure)':<28} {t_win:>9.1f} {1.0:>10.2f}")
    print(f"{'paper rule (method=hope)':<28} {t_hope:>9.1f} {t_hope / t_win:>10.2f}")
    print(f"max |windows - dense| = {diff:.1e} (max |coefficient| {scale:.1e})")


if __name__ == "__main__":
    main()
