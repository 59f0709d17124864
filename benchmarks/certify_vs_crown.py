"""certify against auto_LiRPA's IBP, CROWN and alpha-CROWN, both run for real on the same nets and boxes (a benchmark
that prints measured numbers, not a test).

Output ranges: for each net, radius r and 5 centres, the width of the certified enclosure of the output over the
L-inf box |x - x0| <= r divided by the true range (inner bound: 2*10^4 samples, a quarter at vertices, plus 50 steps
of projected sign-gradient ascent on +f and -f from the 8 best; every value found is f at a point of the box), median
over the centres, and the median seconds per box. certify runs in float64 on the same float32 weights (order 4 for
the 2-input MLPs, 2 for the 64-input conv net): "interval" is certify's enclosure with the output's range bounded
by the interval form alone (what ``bounds()`` gave before the monotonicity / Bernstein range bound), "certify" is
``bounds()``, "certify + split" ``bounds(split=...)`` (branch and bound; its budget is printed under the table);
the seconds of "split" include certify's. auto_LiRPA in float32 (its tanh relaxations need
it), alpha-CROWN with use_shared_alpha on conv nets. Nets: tanh 2-32-32-1 at its seeded init and trained on
sin(3x) cos(3y) over [-1, 1]^2; conv 8x8 1-4-8 tanh, average pooling, at init.

Verified accuracy: a small smooth CNN (conv 1->8 3x3, tanh, average pooling, 72-32-10 with tanh) trained on
scikit-learn's 8x8 digits; over held-out images, the fraction whose label provably keeps the largest logit over the
eps-ball (hope: ``verify_margin`` with its defaults: order 1, then order 2 on the whole ball, then up to 8 sub-boxes;
auto_LiRPA: lower bounds of z_label - z_j with a specification matrix C).

auto_LiRPA runs in its own environment (its 0.3 release pins torch < 1.13 and imports numpy.lib.arraysetops, gone in
NumPy 2): Python 3.11, torch 1.13.1 (the oldest release with Python 3.11 wheels), numpy 1.26, auto_LiRPA 0.3 installed
without its pins. ``--setup`` builds it (downloads about 1.8 GB: torch 1.13.1's CUDA wheels, the only ones on PyPI).
Nets travel between the two as state dicts in a temporary folder.

    python benchmarks/certify_vs_crown.py [--setup] [--lirpa-python PATH] [--images 50] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hope_engine import certify
from hope_engine.analysis import load_digits, verify_margin
from hope_engine.api.sampling import sampled_range
from hope_engine.certified import ranges
from hope_engine.certified.split import Split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lirpa_worker import build  # noqa: E402 - the architectures both sides share

VENV = Path(os.environ.get("HOPE_LIRPA_VENV", "/work/peers/lirpa-venv"))
REQUIREMENTS = (["torch==1.13.1", "numpy<2"], ["--no-deps", "auto_LiRPA==0.3"],
                ["appdirs", "pyyaml", "tqdm", "packaging", "scikit-learn", "numpy<2"])
RADII = (0.1, 0.15, 0.3)
CENTRES = 5
EPS = (0.005, 0.01, 0.02, 0.05)  # the three, and one wider ball where the methods part


def setup(venv: Path) -> None:
    """Build auto_LiRPA's environment: a Python 3.11 venv, torch 1.13.1, numpy < 2, auto_LiRPA 0.3 without its pins
    (it asks for torch < 1.13, which has no Python 3.11 wheel) and the modules it imports."""
    subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)
    for args in REQUIREMENTS:
        subprocess.run([str(venv / "bin" / "pip"), "install", *args], check=True)


def lirpa_python(path: str | None) -> tuple[str | None, str]:
    """(the Python of auto_LiRPA's environment, a note) or (None, why it cannot be used)."""
    python = path or str(VENV / "bin" / "python")
    if not Path(python).exists():
        return None, f"no auto_LiRPA environment at {python} (run with --setup to build it)"
    probe = subprocess.run([python, "-c", "import auto_LiRPA, torch, numpy; print(auto_LiRPA.__version__, "
                            "torch.__version__, numpy.__version__)"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, f"auto_LiRPA does not import in {python}: {probe.stderr.strip().splitlines()[-1]}"
    lirpa, torch_version, numpy_version = probe.stdout.split()
    return python, f"auto_LiRPA {lirpa} (torch {torch_version}, numpy {numpy_version}, float32)"


# ------------------------------------------------------------------------------------------------------ the nets
def trained_mlp(steps: int) -> torch.nn.Module:
    """tanh 2-32-32-1 fitted to sin(3x) cos(3y) on 2048 points of [-1, 1]^2 (Adam, float32, seeded)."""
    net = build("tanh-mlp")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2048, 2, generator=gen) * 2 - 1
    y = torch.sin(3 * x[:, :1]) * torch.cos(3 * x[:, 1:])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        opt.step()
    return net.eval()


def digits_cnn(epochs: int):
    """The digits CNN trained on 1400 images (Adam, float32, seeded); returns it and the held-out split."""
    images, labels = load_digits(torch.float32)
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(images), generator=gen)
    train, test = perm[:1400], perm[1400:]
    net = build("digits-cnn")
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        order = train[torch.randperm(len(train), generator=gen)]
        for i in range(0, len(order), 50):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(images[order[i:i + 50]]), labels[order[i:i + 50]]).backward()
            opt.step()
    return net.eval(), images[test], labels[test]


def centres(architecture: str) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    if architecture == "conv":
        return [torch.rand(1, 1, 8, 8, generator=gen) for _ in range(CENTRES)]
    return [torch.rand(1, 2, generator=gen) * 2 - 1 for _ in range(CENTRES)]


# ------------------------------------------------------------------------------------------------------ hope side
def hope_range(net64, x0: torch.Tensor, r: float, order: int, spec: Split, points: int) -> dict:
    start = time.perf_counter()
    cert = certify(net64, x0, order, radius=r)
    lo, hi = cert.bounds()
    t_plain = time.perf_counter() - start
    refine, ranges.MONOTONE_ELEMENTS = ranges.MONOTONE_ELEMENTS, 0  # the interval form alone, for its column
    try:
        interval = cert.with_radius(r).bounds()
    finally:
        ranges.MONOTONE_ELEMENTS = refine
    start = time.perf_counter()
    split = cert.split_bounds(spec)
    t_split = time.perf_counter() - start + t_plain
    s = sampled_range(net64, cert, points=points, steps=50, starts=8)
    for a, b in ((lo, hi), interval, (split.lower, split.upper)):  # soundness, checked on every box
        slack = 1e-12 * (1 + s.high.abs().maximum(s.low.abs()))
        if not (bool((a <= s.low + slack).all()) and bool((s.high <= b + slack).all())):
            raise AssertionError(f"an enclosure misses a value found: [{float(a):.9g}, {float(b):.9g}] vs "
                                 f"[{float(s.low):.9g}, {float(s.high):.9g}]")
    low = float(torch.minimum(s.low, split.seen_low))  # f at the sub-boxes' centres is f at points of the box too
    high = float(torch.maximum(s.high, split.seen_high))
    return {"true": (low, high), "certify": (float(lo), float(hi), t_plain),
            "interval": (float(interval[0]), float(interval[1])),
            "split": (float(split.lower), float(split.upper), t_split), "leaves": split.leaves}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="build auto_LiRPA's environment first (~1.8 GB)")
    parser.add_argument("--lirpa-python", default=None, help="the Python of an environment with auto_LiRPA")
    parser.add_argument("--images", type=int, default=50, help="held-out digits for verified accuracy")
    parser.add_argument("--quick", action="store_true", help="2 centres, 10 images, short training: a smoke run")
    args = parser.parse_args()
    global CENTRES
    if args.quick:
        CENTRES, args.images = 2, 10
    torch.set_num_threads(1)
    if args.setup:
        setup(VENV)
    python, note = lirpa_python(args.lirpa_python)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"hope: certify in float64, one thread; {note}; {CENTRES} centres; load average {load:.1f} "
          f"on {os.cpu_count()} cores")
    nets = {"tanh 2-32-32-1 (init)": ("tanh-mlp", build("tanh-mlp").eval()),
            "tanh 2-32-32-1 (trained)": ("tanh-mlp", trained_mlp(300 if args.quick else 2000)),
            "conv 8x8 1-4-8 tanh, avgpool": ("conv", build("conv").eval())}
    settings = {"tanh-mlp": (4, Split(boxes=64, tol=0.01, seconds=8.0, orders=(2, 4)), 20_000),
                "conv": (2, Split(boxes=4, tol=0.01, seconds=8.0, orders=(2,)), 5_000)}
    digits = digits_cnn(4 if args.quick else 15)
    ranges, tasks = [], []
    for name, (architecture, net) in nets.items():
        net64 = build(architecture).double().eval()
        net64.load_state_dict({k: v.double() for k, v in net.state_dict().items()})
        order, spec, points = settings[architecture]
        for r in RADII:
            for x0 in centres(architecture):
                ranges.append((name, r, hope_range(net64, x0.double(), r, order, spec, points)))
                tasks.append({"net": name, "centre": x0, "radius": r})
    images, labels = digits[1][:args.images], digits[2][:args.images]
    model64 = build("digits-cnn").double().eval()
    model64.load_state_dict({k: v.double() for k, v in digits[0].state_dict().items()})
    hope_margins = {}
    for eps in EPS:
        rows = []
        for i in range(len(images)):
            start = time.perf_counter()
            v = verify_margin(model64, images[i:i + 1].double(), int(labels[i]), eps,
                              split=Split(boxes=8, seconds=8.0))
            rows.append((v.verified, time.perf_counter() - start))
        hope_margins[eps] = rows
    accuracy = float((model64(images.double()).argmax(1) == labels).double().mean())
    lirpa = None
    if python is not None:
        with tempfile.TemporaryDirectory() as tmp:
            job = {"nets": {name: (arch, net.state_dict()) for name, (arch, net) in nets.items()},
                   "ranges": tasks,
                   "margins": {"net": "digits", "images": images, "labels": labels, "eps": list(EPS)}}
            job["nets"]["digits"] = ("digits-cnn", digits[0].state_dict())
            torch.save(job, Path(tmp) / "in.pt")
            proc = subprocess.run([python, str(Path(__file__).resolve().parent / "lirpa_worker.py"),
                                   str(Path(tmp) / "in.pt"), str(Path(tmp) / "out.json")],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                note = f"auto_LiRPA failed: {proc.stderr.strip().splitlines()[-1]}"
                print(note)
            else:
                lirpa = json.loads((Path(tmp) / "out.json").read_text())
    report(nets, ranges, lirpa, hope_margins, accuracy, len(images), settings)


def _ratio(lo: float, hi: float, true: tuple[float, float]) -> float:
    return (hi - lo) / (true[1] - true[0]) if true[1] > true[0] else math.inf


def report(nets, ranges, lirpa, hope_margins, accuracy, count, settings) -> None:
    methods = ("IBP", "CROWN", "alpha-CROWN")
    print("\nwidth / true range (median over centres); seconds per box (median)")
    head = (f"| net | r | interval | certify | certify + split | {' | '.join(methods)} | s certify | s split | "
            f"s CROWN | s alpha-CROWN |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in nets:
        for r in RADII:
            idx = [k for k, (n, rr, _) in enumerate(ranges) if n == name and rr == r]
            rows = [ranges[k][2] for k in idx]
            cert = statistics.median(_ratio(*row["certify"][:2], row["true"]) for row in rows)
            interval = statistics.median(_ratio(*row["interval"], row["true"]) for row in rows)
            split = statistics.median(_ratio(*row["split"][:2], row["true"]) for row in rows)
            t_cert = statistics.median(row["certify"][2] for row in rows)
            t_split = statistics.median(row["split"][2] for row in rows)
            cells = []
            times = []
            for m in methods:
                if lirpa is None:
                    cells.append("n/a")
                    continue
                got = [lirpa["ranges"][k][m] for k in idx]
                ratios = [_ratio(g["lower"], g["upper"], row["true"]) for g, row in zip(got, rows)]
                cells.append(f"{statistics.median(ratios):.3g}")
                if m != "IBP":
                    times.append(f"{statistics.median(g['seconds'] for g in got):.3f}")
            times = times or ["n/a", "n/a"]
            print(f"| {name} | {r} | {interval:.3g} | {cert:.3g} | {split:.3g} | {' | '.join(cells)} | "
                  f"{t_cert:.3f} | {t_split:.3f} | "
                  f"{' | '.join(times)} |")
    for architecture, (order, spec, points) in settings.items():
        print(f"  {architecture}: order {order}; split: {spec.boxes} boxes, tol {spec.tol}, {spec.seconds} s, orders "
              f"{spec.orders}; true range from {points} samples + ascent")
    print(f"\nverified accuracy on {count} held-out digits (clean accuracy {accuracy:.3f}); seconds per image (median)")
    print("| eps | hope verify_margin | CROWN | alpha-CROWN | s hope | s CROWN | s alpha-CROWN |")
    print("|---|---|---|---|---|---|---|")
    for k, eps in enumerate(EPS):
        rows = hope_margins[eps]
        ours = sum(v for v, _ in rows) / len(rows)
        t_ours = statistics.median(t for _, t in rows)
        if lirpa is None:
            peers, times = ["n/a", "n/a"], ["n/a", "n/a"]
        else:
            got = lirpa["margins"][k]
            peers = [f"{sum(got[m]['verified']) / len(got[m]['verified']):.3f}" for m in ("CROWN", "alpha-CROWN")]
            times = [f"{statistics.median([t for t in got[m]['seconds'] if t > 0] or [0]):.3f}"
                     for m in ("CROWN", "alpha-CROWN")]
        print(f"| {eps} | {ours:.3f} | {' | '.join(peers)} | {t_ours:.3f} | {' | '.join(times)} |")


if __name__ == "__main__":
    main()
