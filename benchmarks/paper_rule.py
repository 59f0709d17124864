"""The paper's rule (``expand(..., method="hope")``) on the reference repository's own 1-D Sine net: its error by order
against nested float64 autograd, next to the exact expansion's (a benchmark that prints measured numbers, not a test).

Net: ``hope_engine.models.reference_sine_mlp()``, i.e. the HOPE repository's ``MLP(input=1, hidden=1024, output=1,
layer=5, act='Sine', output_act=True)`` drawn after ``torch.manual_seed(42)`` with its ``sine_init`` /
``first_layer_sine_init`` (``utils/Network.py``, ``demo/a_accuracy/code/networks/net1.py``), in float64, expanded at
x0 = 0. Per order K: the relative error |got_K - ref_K| / |ref_K| of the K-th derivative (the issue's numbers), and
benchmarks/run.py's "max rel err", the max of that over degrees d <= K (one derivative per degree in 1-D). ``--ours``
adds the same table for benchmarks/run.py's 1->1024x5 net (PyTorch's default initialisation, seed 0, no output sine).

    python benchmarks/paper_rule.py [--orders 2,4,6,8,10] [--ours] [--threads 1]
"""

from __future__ import annotations

import argparse

import torch

from hope_engine import expand
from hope_engine.methods.baselines import nested_autograd
from hope_engine.models import reference_sine_mlp, sine_mlp


def rule_errors(net, x0: torch.Tensor, order: int) -> tuple[list[float], list[float]]:
    """Per degree 0..order: relative error of the paper's rule and of the exact method against nested autograd."""
    _, ref = nested_autograd(net, x0, order)
    factorials = torch.tensor([float(torch.lgamma(torch.tensor(k + 1.0)).exp()) for k in range(order + 1)],
                              dtype=torch.float64)
    out = []
    for method in ("hope", "exact"):
        p = expand(net, x0, order, method=method)
        got = p.coefficients.reshape(-1).detach().double() * factorials
        out.append([float((got[k] - ref[k]).abs() / ref[k].abs()) for k in range(order + 1)])
    return out[0], out[1]


def table(net, label: str, orders: list[int]) -> dict[int, float]:
    x0 = torch.zeros(1, 1, dtype=torch.float64)
    print(f"\n== {label}")
    print(f"{'order K':>7}  {'rule err, degree K':>18}  {'rule max err, degrees <= K':>26}  {'exact max err':>13}   "
          "rule error per degree 1..K")
    worst = {}
    for k in orders:
        rule, exact = rule_errors(net, x0, k)
        worst[k] = rule[k]
        per = " ".join(f"{e:.1e}" for e in rule[1:])
        print(f"{k:>7}  {rule[k]:>17.2%}  {max(rule[1:]):>25.2%}  {max(exact):>13.1e}   {per}")
    return worst


def main(argv=None) -> dict[int, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", default="2,4,6,8,10")
    ap.add_argument("--ours", action="store_true", help="also the benchmark's own-initialisation net")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    orders = [int(k) for k in args.orders.split(",")]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float64, x0 = 0; reference: nested "
          "autograd")
    worst = table(reference_sine_mlp(), "reference repository's net: MLP(1, 1024, 1, layer=5, Sine, "
                  "output_act=True), seed 42, its sine_init", orders)
    if args.ours:
        table(sine_mlp([1] + [1024] * 5 + [1], seed=0), "benchmarks/run.py's net: 1->1024x5 Sine, PyTorch default "
              "init (seed 0)", orders)
    return worst


if __name__ == "__main__":
    main()
