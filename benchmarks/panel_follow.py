"""What following the model costs: the after-cell check with 10 live panels, and ``panel.follow`` during training.

    python benchmarks/panel_follow.py                 # 10 panels per model size, 15 interleaved rounds
    python benchmarks/panel_follow.py --rounds 5 --panels 4 --threads 2

1. Per cell, nothing changed. Ten live panels (one model each); the after-cell hook (``live.after_cell``, what IPython
   runs after every cell) finds no model changed. Timed two ways: the hook alone, and a trivial cell (``x = 1``) run by
   IPython's InteractiveShell with the hook registered and without it (the difference is what a user pays per cell).
   Three model sizes: 2-16-16-1 and 2-64-64-1 tanh MLPs (read by value: at most ``guard.VALUE_LIMIT`` numbers) and
   2-256-256-1 (read by version counters).
2. During training. A 2-32-32-1 tanh MLP fit to sin(3x) cos(y) with Adam, batch 256: the same steps plain and inside
   ``with panel.follow(optimizer):`` (the panel expands to order 8 and redraws when an update is due), each run on a
   copy of the same starting model with a panel on it; the ratio of their times is the slow-down (``follow``
   throttles updates to at most ``budget`` = 10% of the loop's time). The plain run ends with the one update the
   after-cell hook makes when the cell ends; the followed one with the update leaving ``with`` makes (after which the
   hook finds nothing to do): both are shown, with and without that last update.

Rounds are interleaved (one block of each variant per round, the order rotated each round); in part 1 a block's value
is the median of its calls, each timed alone, and the table shows the median over rounds. One torch thread unless
--threads.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
from torch import nn


def mlp(widths: list[int], seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).double()


def per_cell(panels_per_size: int, rounds: int, calls: int) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    from hope_widgets import HopePanel, live

    shell = InteractiveShell.instance()
    sizes = {"2-16-16-1": [2, 16, 16, 1], "2-64-64-1": [2, 64, 64, 1], "2-256-256-1": [2, 256, 256, 1]}
    print(f"1. per cell, nothing changed: {panels_per_size} live panels, median over {rounds} rounds of {calls} calls")
    print(f"{'models':>12} {'numbers':>8} {'hook (us)':>10} {'per panel':>10} {'cell, hook':>11} "
          f"{'cell, none':>11} {'overhead':>9}")
    for label, widths in sizes.items():
        live.unregister()
        for p in live.live_panels():
            p.close()
        nets = [mlp(widths, seed) for seed in range(panels_per_size)]
        panels = [HopePanel(net, [0.1, -0.2], order=4, max_order=6) for net in nets]
        numbers = sum(p.numel() for p in nets[0].parameters())
        live.after_cell()  # (the guard writes its check on a second look)
        live.after_cell()
        assert live.after_cell() == [], "a model changed while nothing touched it"

        def hook() -> None:
            live.after_cell()

        def cell() -> None:
            shell.run_cell("x = 1", store_history=False)  # (silent=True would skip post_run_cell)

        hook_t, with_t, without_t = [], [], []
        for r in range(rounds):
            variants = [("hook", hook, hook_t), ("with", cell, with_t), ("without", cell, without_t)]
            shift = r % len(variants)
            for name, fn, out in variants[shift:] + variants[:shift]:
                if name == "without":
                    live.unregister()
                else:
                    live.register(shell)
                block = []
                for _ in range(calls):  # each call timed: a block's median is robust to a preempted call
                    start = time.perf_counter()
                    fn()
                    block.append(time.perf_counter() - start)
                out.append(statistics.median(block) * 1e6)
        live.unregister()
        h, w, wo = statistics.median(hook_t), statistics.median(with_t), statistics.median(without_t)
        print(f"{label:>12} {numbers:>8} {h:>10.1f} {h / len(panels):>10.1f} {w:>11.1f} {wo:>11.1f} "
              f"{w - wo:>9.1f}")
        for p in panels:
            p.close()
    print("   (us per cell; 'cell, hook' / 'cell, none': IPython running `x = 1` with the hook registered / without)")


def training(rounds: int, steps: int, budget: float) -> None:
    from hope_widgets import HopePanel

    base = mlp([2, 32, 32, 1], seed=0)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(256, 2, generator=gen, dtype=torch.float64) * 2 - 1
    y = (torch.sin(3 * x[:, 0]) * torch.cos(x[:, 1])).unsqueeze(-1)

    def run(follow: bool) -> dict[str, float]:
        """Wall and CPU seconds of the cell (the loop and the panel's last update) and of the loop alone; the updates
        made and their seconds. Plain: the loop, then the one update the after-cell hook makes when the cell ends."""
        net = copy.deepcopy(base)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        panel = HopePanel(net, [0.1, -0.2], order=6, max_order=8)
        follower = panel.follow(opt, budget=budget)
        wall, cpu = time.perf_counter(), time.process_time()
        with follower if follow else _nothing():
            for _ in range(steps):
                opt.zero_grad()
                ((net(x) - y) ** 2).mean().backward()
                opt.step()
            loop = time.perf_counter() - wall
        if not follow:
            assert panel.follow_model()
        out = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "loop": loop,
               "updates": follower.updates, "spent": follower.seconds}
        assert not panel.follow_model()  # both end on the trained model
        panel.close()
        return out

    run(True)  # warm: the tracer loaded, the first expansion's one-time costs paid
    pairs = []
    for r in range(rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        got = {follow: run(follow) for follow in order}
        pairs.append((got[False], got[True]))

    def slowdown(key: str) -> str:  # median over rounds of followed / plain (each pair ran back to back)
        ratios = sorted(f[key] / p[key] for p, f in pairs)
        return f"{statistics.median(ratios) - 1:+.1%} (rounds {ratios[0] - 1:+.1%} .. {ratios[-1] - 1:+.1%})"

    def ms(key: str, followed: bool) -> float:
        return statistics.median(pair[followed][key] for pair in pairs) * 1e3

    share = statistics.median(f["spent"] / f["loop"] for _, f in pairs)
    print(f"\n2. training with panel.follow(optimizer) (budget {budget:.0%}): {steps} Adam steps of a 2-32-32-1 MLP, "
          f"batch 256, {rounds} rounds; slow-down = median over rounds of followed / plain")
    print(f"   the cell, wall time: plain {ms('wall', False):.0f} ms, followed {ms('wall', True):.0f} ms, slow-down "
          f"{slowdown('wall')}")
    print(f"   the cell, CPU time:  plain {ms('cpu', False):.0f} ms, followed {ms('cpu', True):.0f} ms, slow-down "
          f"{slowdown('cpu')}")
    print(f"   the loop alone, wall time: slow-down {slowdown('loop')}; "
          f"{statistics.median(f['updates'] for _, f in pairs):.0f} panel updates taking {ms('spent', True):.0f} ms, "
          f"{share:.1%} of the followed loop (the throttle's own count)")
    print("   (the cell: the loop and the panel's last update; CPU time: this process's, less disturbed by other load)")


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--panels", type=int, default=10, help="live panels per model size (default 10)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--calls", type=int, default=50, help="calls per block in part 1 (default 50)")
    parser.add_argument("--steps", type=int, default=600, help="training steps per run in part 2 (default 600)")
    parser.add_argument("--train-rounds", dest="train_rounds", type=int, default=9,
                        help="interleaved rounds in part 2 (default 9)")
    parser.add_argument("--budget", type=float, default=0.1, help="follow()'s share of the loop's time (0.1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    per_cell(args.panels, args.rounds, args.calls)
    training(args.train_rounds, args.steps, args.budget)


if __name__ == "__main__":
    main()
