"""Per-call time of `expand` on the small benchmark nets, one thread: the best of 8 rounds per case.

    python benchmarks/per_call.py
    PYTHONPATH=/path/to/other/checkout python benchmarks/per_call.py   # the same cases on another version

Run the two versions alternately (three times each) to compare them: per-call times on a shared machine vary by tens
of percent between runs, the best of many calls much less. Cases: 2-16-1 tanh order 6, 2-64-64-64-1 tanh order 8,
1-1024x5 Sine order 10, each at a point with a batch axis (1, n) and without one (n,).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from hope_engine import expand


class Sine(nn.Module):
    def forward(self, x):
        return torch.sin(x)


def mlp(n: int, width: int, hidden: int, act) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(n, width), act()]
    for _ in range(hidden - 1):
        layers += [nn.Linear(width, width), act()]
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers).double().eval()


def main() -> None:
    torch.set_num_threads(1)
    cases = {"2-16-1 tanh o6": (mlp(2, 16, 1, nn.Tanh), [0.3, -0.2], 6, 50),
             "2-64x3 tanh o8": (mlp(2, 64, 3, nn.Tanh), [0.3, -0.2], 8, 30),
             "1-1024x5 sine o10": (mlp(1, 1024, 5, Sine), [0.3], 10, 5)}
    print(f"threads: {torch.get_num_threads()}; best of 8 rounds")
    for name, (model, point, order, reps) in cases.items():
        for shape in ("batch (1, n)", "flat (n,)"):
            x = torch.tensor([point] if shape.startswith("batch") else point, dtype=torch.float64)
            for _ in range(5):
                expand(model, x, order)
            best = float("inf")
            for _ in range(8 * reps):
                t = time.perf_counter()
                expand(model, x, order)
                best = min(best, time.perf_counter() - t)
            print(f"{name:20s} {shape:14s} {best * 1e6:9.1f} us")


if __name__ == "__main__":
    main()
