"""Surrogates of trained networks: the Taylor polynomial at a point against the least-squares polynomial over the
domain (``surrogate(model, domain=..., method=...)``), where each is valid and how fast it is next to the network, in
the same run (a benchmark that prints measured numbers, not a test).

Networks (float64, seeded, trained in seconds):
  sin:      1-64-64-64-1 tanh MLP fit to sin(4 pi u) on u in [0, 1] (two periods); Taylor at u0 = 0.5;
  disc:     the 2-64x3-1 Sine MLP of the function-discovery example, fit to (x1^2 + x2)/2 on [-1, 1]^2; Taylor at 0;
  diabetes: a 10-64-64-1 tanh MLP fit (5 L-BFGS steps) to scikit-learn's bundled diabetes data (442 patients, 10
            standardised inputs);
            Taylor at the mean patient; the domain is the data's bounding box and validity is measured on the 442 real
            patients too.
"valid" = the fraction of points where |surrogate - network| <= tol x the network's output range there (tol 1% and
0.1%), on 4096 fresh uniform points of the domain (and, for diabetes, on the real data); "box" = the largest centred
sub-box, as a fraction of the half-widths, on which every point is valid at 1%. Speed: network and surrogate both in
float32 under torch.inference_mode, median of 7 interleaved runs on 10^5 uniform points of the domain. "auto" is
``surrogate(model, domain=...)`` with its defaults: both methods at orders 2, 4, 6, 8, 12, 16 (at most 5000
monomials), the cheapest valid everywhere at 1% (else the most valid) on a separate selection sample.

    python benchmarks/surrogate.py [--threads 1] [--points 100000]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

from hope_engine.analysis import surrogate
from hope_engine.analysis.surrogate_fit import as_box, median_time
from hope_engine.models import fit, sine_mlp


def sin_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(),
                        nn.Linear(64, 1)).double()
    u = torch.linspace(0, 1, 256, dtype=torch.float64)[:, None]
    loss = fit(net, u, torch.sin(4 * torch.pi * u), steps=60)
    return net, ([0.0], [1.0]), None, [4, 8, 12, 16], f"1-64x3-1 tanh fit to sin(4 pi u) (training MSE {loss:.1e})"


def discovery_net():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(512, 2, generator=gen, dtype=torch.float64) * 2 - 1
    net = sine_mlp([2, 64, 64, 64, 1], seed=0)
    loss = fit(net, x, (x[:, 0] ** 2 + x[:, 1]) / 2, steps=8)
    return net, ([-1.0, -1.0], [1.0, 1.0]), None, [2, 4, 6, 8], \
        f"2-64x3-1 Sine fit to (x1^2 + x2)/2 (training MSE {loss:.1e})"


def diabetes_net():
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    x = torch.tensor(data.data, dtype=torch.float64)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(data.target, dtype=torch.float64)
    y = (y - y.mean()) / y.std()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1)).double()
    loss = fit(net, x, y, steps=5)  # a few steps: more memorises the 442 patients (training MSE -> 0)
    return net, (x.amin(0).tolist(), x.amax(0).tolist()), x, [1, 2, 3, 4], \
        f"10-64-64-1 tanh on sklearn's diabetes data, standardised (training MSE {loss:.3f} of variance 1)"


def run_case(name, builder, points: int, gen) -> None:
    t0 = time.perf_counter()
    net, domain, data, orders, desc = builder()
    print(f"\n== {name}: {desc}, trained in {time.perf_counter() - t0:.1f} s")
    box = as_box(domain)
    net32 = copy.deepcopy(net).float().eval()
    u = torch.rand(points, box.n, generator=gen, dtype=torch.float64) * 2 - 1
    x_speed = (box.center + u * box.half).float()
    center = None if data is None else data.mean(0)
    head = (f"{'method':<10} {'order':>5} {'monomials':>9} {'valid 1%':>9} {'valid 0.1%':>10} {'box 1%':>7} "
            f"{'max err':>9}")
    if data is not None:
        head += f" {'data 1%':>8} {'data max':>9}"
    print(head + f" {'net ms':>8} {'surr ms':>8} {'speed-up':>9}")
    rows = [(m, k) for m in ("taylor", "fit") for k in orders] + [("auto", None)]
    for method, k in rows:
        if method == "fit" and k is not None and box.n == 10 and k > 3:
            continue  # 1001 monomials x 4 samples: minutes of float64 least squares on these cores
        kw = dict(domain=domain, method=method, order=k, center=center, timing=False)
        s = surrogate(net, **kw)
        fine = surrogate(net, **{**kw, "rtol": 1e-3}) if method != "auto" else None
        v = s.validity
        fine_text = f"{fine.validity.valid_fraction:>10.1%}" if fine else f"{'-':>10}"
        line = (f"{method if method != 'auto' else 'auto->' + v.method:<10} {v.order:>5} {v.monomials:>9} "
                f"{v.valid_fraction:>9.1%} {fine_text} "
                f"{v.valid_box:>7.2f} {v.max_error:>9.2e}")
        if data is not None:
            on_data = surrogate(net, **{**kw, "points": data}).validity
            line += f" {on_data.valid_fraction:>8.1%} {on_data.max_error:>9.2e}"
        s32 = copy.deepcopy(s).float()
        t_net, t_sur = median_time(net32, x_speed, s32, repeats=7)
        print(line + f" {t_net * 1e3:>8.2f} {t_sur * 1e3:>8.2f} {t_net / t_sur:>8.2f}x"
              + ("" if t_net >= t_sur else "  (slower than the network)"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--case", action="append", help="sin, disc, diabetes (default all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); validity on 4096 fresh uniform points of "
          f"the domain; speed on {args.points:,} points, float32, median of 7 interleaved runs")
    gen = torch.Generator().manual_seed(0)
    cases = {"sin": sin_net, "disc": discovery_net, "diabetes": diabetes_net}
    for name in args.case or cases:
        run_case(name, cases[name], args.points, gen)


if __name__ == "__main__":
    main()
