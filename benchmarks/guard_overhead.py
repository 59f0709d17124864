"""What the guard stamp costs one warm ``expand`` call (the graph cached, the model unchanged between calls).

    python benchmarks/guard_overhead.py                  # both nets, 15 interleaved rounds
    python benchmarks/guard_overhead.py --rounds 5 --threads 2
    git show <rev>:hope_engine/capture/guard.py > /tmp/guard_old.py
    python benchmarks/guard_overhead.py --old-guard /tmp/guard_old.py   # also time another version's stamp

Variants, timed in interleaved rounds (one block of calls per variant per round, the order rotated each round, so
drift and position hit all alike); each round's per-call time is its block's median, the table shows the median over
rounds:
  walk   ``guard.walked_stamp``: the full walk of everything the model's code reads, at every call
  check  ``guard.stamp``: the check the last walk wrote, and its stamp while the check holds (what every call does)
  old    with --old-guard: the ``stamp`` of that file (e.g. the version with the separate ``_Witness`` re-check)
  free   the stamp taken once, before timing, returned at no cost: the floor any faster check could reach
Nets: 2-16-1 tanh MLP at order 6 and 2-64-64-64-1 tanh MLP at order 8, float64, one point (benchmarks/run.py's
``tanh_mlp``); one torch thread unless --threads.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import tanh_mlp  # noqa: E402

from hope_engine import expand  # noqa: E402
from hope_engine.capture import guard  # noqa: E402

STAMP = guard.stamp


def _load(path: str):
    spec = importlib.util.spec_from_file_location("guard_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _block(net, x0, order: int, calls: int) -> float:
    for _ in range(3):  # the first call after a switch of variant re-traces (another stamp): not timed
        expand(net, x0, order)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        expand(net, x0, order)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(net, x0, order: int, rounds: int, calls: int, old=None) -> dict[str, float]:
    fixed = guard.walked_stamp(net)
    variants = {"walk": guard.walked_stamp, "check": STAMP}
    if old is not None:
        variants["old"] = old.stamp
    variants["free"] = lambda model: fixed if model is net else guard.walked_stamp(model)
    per: dict[str, list[float]] = {name: [] for name in variants}
    order_of = list(variants)
    try:
        for r in range(rounds):
            for name in order_of[r % len(order_of):] + order_of[:r % len(order_of)]:  # (each goes first in turn)
                guard.stamp = variants[name]
                per[name].append(_block(net, x0, order, calls))
    finally:
        guard.stamp = STAMP
    return {name: statistics.median(v) for name, v in per.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--old-guard", help="a guard.py of another version, timed as the variant 'old'")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    old = _load(args.old_guard) if args.old_guard else None
    x0 = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.rounds} interleaved rounds; "
          "median per-call time in microseconds (change against walk)")
    for label, net, order, calls in (("2-16-1 tanh, order 6", tanh_mlp(2, 16, 1), 6, 200),
                                     ("2-64-64-64-1 tanh, order 8", tanh_mlp(2, 64, 3), 8, 40)):
        got = measure(net, x0, order, args.rounds, calls, old)
        walk = got["walk"]
        cells = [f"{name} {t * 1e6:6.1f}" + ("" if name == "walk" else f" ({(t - walk) / walk:+.1%})")
                 for name, t in got.items()]
        print(f"{label:28s} " + ", ".join(cells))


if __name__ == "__main__":
    main()
