"""Benchmarks: exact expansion vs the paper's rule (method="hope") vs nested autograd vs the floor.

    python benchmarks/run.py                 # every case, prints one table per case (a few minutes on 2 cores)
    python benchmarks/run.py --quick         # tiny sizes, smoke run (seconds)
    python benchmarks/run.py --json out.json # also write the results as JSON (compare across versions)
    python benchmarks/run.py --case mnist    # only the cases whose name contains "mnist"
    python benchmarks/run.py --case backends --case cold-start   # only the kernel-backend and cold-start rows
    python benchmarks/run.py --case small-nets   # per-call time on small nets (and JAX jet / jacfwd if installed)
    python benchmarks/run.py --case self-check   # the self-check's cost: expand with and without verify

Per case and order: time (median of --repeats runs after one warm-up), peak memory (growth of the process's peak
resident memory during one run), and the error of every derivative against nested autograd in float64:
"max rel err" is max over degrees d of max_a |got_a - ref_a| / max_a |ref_a| (a of degree d); "median rel err" is the
median over derivatives of degree >= 2 of |got_a - ref_a| / |ref_a|. Ratios are time ratios t_exact / t_other: below 1
the exact method is faster (0.01 = 100x faster).

Models are float64 with PyTorch's default nn.Linear/nn.Conv2d initialisation (seed 0) and sin(x) activations (w0 = 1),
the initialisation nn.Linear gives the paper's networks when they are built in PyTorch. The MNIST CNN is trained
briefly before it is measured (seeded, a few seconds, on scikit-learn's bundled 8x8 digits upscaled to 28x28, to score
one digit class) and expanded at a held-out digit image, so the paper rule's error is measured on a trained net.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from hope_engine import __version__, expand
from hope_engine.algebra import kernels
from hope_engine.algebra.basis import basis_size, make_basis
from hope_engine.methods import windows
from hope_engine.methods.baselines import autograd_tree_size, floor_inputs, nested_autograd


# ---------------------------------------------------------------------------------------------------- models
class Sine(nn.Module):
    def forward(self, x):
        return torch.sin(x)


def sine_mlp(n: int, width: int, hidden: int, seed: int = 0) -> nn.Module:
    """n -> width x hidden (Sine) -> 1."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(n, width), Sine()]
    for _ in range(hidden - 1):
        layers += [nn.Linear(width, width), Sine()]
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers).double().eval()


def sine_conv(side: int = 32, channels: int = 16, seed: int = 0) -> nn.Module:
    """Linear(2, 2*side*side), Sine, Unflatten, Conv2d(2, channels, 2), Sine, AvgPool2d(2), Sine, Flatten, Linear."""
    torch.manual_seed(seed)
    pooled = (side - 1) // 2
    return nn.Sequential(
        nn.Linear(2, 2 * side * side), Sine(), nn.Unflatten(1, (2, side, side)), nn.Conv2d(2, channels, 2), Sine(),
        nn.AvgPool2d(2), Sine(), nn.Flatten(), nn.Linear(channels * pooled * pooled, 1)).double().eval()


def mnist_cnn(seed: int = 0) -> nn.Module:
    """The paper's MNIST CNN: Conv 1->10 5x5, AvgPool, Tanh, Conv 10->20 5x5, AvgPool, Tanh, Linear 320->50, Tanh,
    Linear 50->1."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 10, 5), nn.AvgPool2d(2), nn.Tanh(), nn.Conv2d(10, 20, 5), nn.AvgPool2d(2), nn.Tanh(),
        nn.Flatten(), nn.Linear(320, 50), nn.Tanh(), nn.Linear(50, 1)).double().eval()


def digits_28(dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits (bundled with it: no download) as MNIST-like 28x28 images in [0, 1]: upscaled to
    20x20 (bilinear) and centred in a 28x28 frame with a 4-pixel border, as MNIST centres its digits."""
    from hope_engine.analysis import load_digits

    images, labels = load_digits(dtype)
    up = nn.functional.interpolate(images, size=(20, 20), mode="bilinear", align_corners=False).clamp_(0, 1)
    return nn.functional.pad(up, (4, 4, 4, 4)), labels


def trained_mnist_cnn(seed: int = 0, digit: int = 3, epochs: int = 10) -> tuple[nn.Module, torch.Tensor, str]:
    """The MNIST CNN trained briefly (seeded, float32, a few seconds) to score "is this digit ``digit``" on the
    upscaled digits (1500 train / 297 test); returned in float64 with a held-out image of that digit and a note."""
    images, labels = digits_28(torch.float32)
    model = mnist_cnn(seed).float().train()
    target = (labels == digit).float()
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(images), generator=gen)
    train, test = perm[:1500], perm[1500:]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: one thread is as fast, and does not stall behind other jobs
    try:
        for _ in range(epochs):
            order = train[torch.randperm(len(train), generator=gen)]
            for i in range(0, len(order), 50):
                idx = order[i:i + 50]
                opt.zero_grad()
                loss = loss_fn(model(images[idx]).squeeze(1), target[idx])
                loss.backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    model = model.double().eval()
    with torch.no_grad():
        pred = model(images[test].double()).squeeze(1) > 0
    acc = (pred == (target[test] > 0.5)).double().mean().item()
    point = test[labels[test] == digit][0]
    note = (f"trained {epochs} epochs ({seconds:.1f} s, seed {seed}) on sklearn's digits upscaled to 28x28 to score "
            f"'digit == {digit}' (held-out accuracy {acc:.1%}); x0 = held-out image #{int(point)} (a {digit})")
    return model, images[point:point + 1].double(), note


# ---------------------------------------------------------------------------------------------- measurement
def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def peak_memory(fn) -> float | None:
    """MiB by which the process's peak resident memory grows during one call (Linux); None where unavailable."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current resident size
    except OSError:
        return None
    before = _status("VmRSS")
    fn()
    return max(0, _status("VmHWM") - before) / 2**20


def timed(fn, repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def errors(got: torch.Tensor, ref: torch.Tensor, degrees: list[int]) -> tuple[float, float]:
    """(max over degrees of the per-degree normwise relative error, median elementwise relative error, degree >= 2)."""
    got = got.reshape(len(degrees), -1).double()
    ref = ref.reshape(len(degrees), -1).double()
    deg = torch.tensor(degrees)
    worst = 0.0
    for d in deg.unique().tolist():
        rows = deg == d
        scale = ref[rows].abs().max().item()
        err = (got[rows] - ref[rows]).abs().max().item()
        worst = max(worst, err / scale if scale > 0 else err)
    high = deg >= 2
    med = float("nan")
    if high.any():
        r, g = ref[high].reshape(-1), got[high].reshape(-1)
        keep = r.abs() > 1e-12 * max(r.abs().max().item(), 1e-300)
        if keep.any():
            med = ((g[keep] - r[keep]).abs() / r[keep].abs()).median().item()
    return worst, med


@dataclass
class Case:
    name: str
    title: str
    model: nn.Module
    x0: torch.Tensor
    orders: list[int]
    terms: str = "total"
    ref_variables: list[int] | None = None       # nested autograd on these variables only (None: all)
    methods: tuple[str, ...] = ("exact", "hope", "autograd", "floor")
    notes: list[str] = field(default_factory=list)
    paper: bool = False


@contextlib.contextmanager
def windows_off():
    """expand(terms="pure") without the receptive-field windows (the dense path, for comparison)."""
    applies = windows.applies
    windows.applies = lambda *a: False
    try:
        yield
    finally:
        windows.applies = applies


def run_case(case: Case, repeats: int, log) -> dict:
    rows = []
    n = case.x0[0].numel()
    for order in case.orders:
        M = basis_size(n, order, case.terms)
        ref_basis = make_basis(len(case.ref_variables) if case.ref_variables else n, order, case.terms)
        alphas_ref = ref_basis.multi_indices()
        degrees = [sum(a) for a in alphas_ref]
        ref = None
        row_group = {}

        if "autograd" in case.methods:
            def run_autograd(order=order):
                return nested_autograd(case.model, case.x0, order, terms=case.terms, variables=case.ref_variables)

            start = time.perf_counter()
            _, ref = run_autograd()  # the warm-up run is the reference
            first = time.perf_counter() - start
            reps = repeats
            t, _ = timed(run_autograd, reps, warmup=0)
            mem = peak_memory(run_autograd)
            row_group["autograd"] = dict(time_ms=t * 1e3, peak_mib=mem, max_rel_err=0.0, median_rel_err=0.0,
                                         grad_calls=autograd_tree_size(ref_basis), first_ms=first * 1e3)
            if case.ref_variables:
                # the reference covers a few variables; its cost grows linearly with their number (one chain of
                # grads per variable for the pure basis): the ratio uses the estimate for all n variables
                row_group["autograd"]["time_ms_measured"] = t * 1e3
                row_group["autograd"]["time_ms"] = t * 1e3 * n / len(case.ref_variables)
                row_group["autograd"]["estimated"] = True

        def full_alpha(a):
            if not case.ref_variables:
                return a
            out = [0] * n
            for v, e in zip(case.ref_variables, a):
                out[v] = e
            return tuple(out)

        for method in ("exact", "dense", "hope"):
            if method not in case.methods:
                continue

            def run(method=method, order=order):
                if method == "dense":  # the pure expansion without the receptive-field windows
                    with windows_off():
                        return expand(case.model, case.x0, order, terms=case.terms)
                return expand(case.model, case.x0, order, terms=case.terms, method=method)

            t, _ = timed(run, repeats)
            mem = peak_memory(run)
            p = run()
            row = dict(time_ms=t * 1e3, peak_mib=mem)
            if ref is not None:
                got = torch.stack([p.derivative(full_alpha(a)).reshape(-1) for a in alphas_ref])
                row["max_rel_err"], row["median_rel_err"] = errors(got, ref, degrees)
            row_group[method] = row

        if "floor" in case.methods:
            xs = floor_inputs(case.x0, M)

            def run_floor(xs=xs):
                with torch.no_grad():
                    return case.model(xs)

            t, _ = timed(run_floor, repeats)
            row_group["floor"] = dict(time_ms=t * 1e3, peak_mib=peak_memory(run_floor))

        for method, row in row_group.items():
            rows.append(dict(order=order, M=M, method=method, **row))
        ex = row_group.get("exact")
        if ex:
            ratios = {f"exact/{m}": ex["time_ms"] / r["time_ms"] for m, r in row_group.items() if m != "exact"}
            ex["ratios"] = ratios
            rows[-len(row_group) + list(row_group).index("exact")]["ratios"] = ratios
        log(_format_rows(case, [r for r in rows if r["order"] == order], header=(order == case.orders[0])))
    return dict(name=case.name, title=case.title, n=n, terms=case.terms, paper=case.paper,
                ref_variables=case.ref_variables, notes=case.notes, rows=rows)


def _fmt(v, spec, empty="-"):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return empty
    return format(v, spec)


def _format_rows(case: Case, rows: list[dict], header: bool) -> str:
    lines = []
    if header:
        lines.append("")
        lines.append(f"== {case.name}: {case.title}")
        for note in case.notes:
            lines.append(f"   note: {note}")
        lines.append(f"{'order':>5} {'M':>6} {'method':<9} {'time ms':>10} {'peak MiB':>9} {'max rel err':>11} "
                     f"{'median rel':>10}   {'exact/hope':>10} {'exact/autograd':>14} {'exact/floor':>11}")
    for r in rows:
        ratios = r.get("ratios", {})
        method = r["method"] + ("*" if r.get("estimated") else "")
        lines.append(
            f"{r['order']:>5} {r['M']:>6} {method:<9} {_fmt(r['time_ms'], '10.2f')} "
            f"{_fmt(r.get('peak_mib'), '9.1f')} {_fmt(r.get('max_rel_err'), '11.1e')} "
            f"{_fmt(r.get('median_rel_err'), '10.1e')}   {_fmt(ratios.get('exact/hope'), '10.3f', ''):>10} "
            f"{_fmt(ratios.get('exact/autograd'), '14.5f', ''):>14} {_fmt(ratios.get('exact/floor'), '11.2f', ''):>11}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- cases
def cases(quick: bool) -> list[Case]:
    d = torch.float64
    out = []
    width, hidden = (32, 5) if quick else (1024, 5)
    out.append(Case(
        "paper-mlp-1d", f"1 input, MLP 1->{width}x{hidden} Sine ({hidden} hidden layers), x0 = 0, terms=total",
        sine_mlp(1, width, hidden), torch.zeros(1, 1, dtype=d), [2, 4] if quick else [2, 4, 6, 8, 10], paper=True,
        notes=["issue 2's case at order 10 (exact vs nested autograd vs floor)"]))
    side, ch = (8, 4) if quick else (32, 16)
    out.append(Case(
        "paper-conv-2d", f"2 inputs, Linear 2->2*{side}*{side}, Sine, Unflatten, Conv2d(2,{ch},2), Sine, AvgPool2d(2), "
        "Sine, Flatten, Linear->1, terms=total", sine_conv(side, ch), torch.tensor([[0.3, -0.2]], dtype=d),
        [2] if quick else [8], paper=True))
    out.append(Case(
        "paper-mlp-2d", "2 inputs, MLP 2->64x3 Sine (function-discovery net), terms=total",
        sine_mlp(2, 64 if not quick else 16, 3), torch.tensor([[0.3, -0.2]], dtype=d),
        [2, 4] if quick else [2, 3, 4, 5, 6, 7, 8], paper=True,
        notes=["issue 2's 2-input case at order 8"]))
    torch.manual_seed(1)
    out.append(Case(
        "mlp-5d", "5 inputs, MLP 5->64x3 Sine, terms=total", sine_mlp(5, 64 if not quick else 16, 3),
        torch.rand(1, 5, dtype=d) - 0.5, [3]))
    cnn, img, trained = trained_mnist_cnn(epochs=1 if quick else 10)
    pixels = [14 * 28 + 14, 10 * 28 + 12, 16 * 28 + 9, 20 * 28 + 17]
    out.append(Case(
        "mnist-cnn-pure", "784 inputs, MNIST CNN (Conv 1->10 5x5, AvgPool, Tanh, Conv 10->20 5x5, AvgPool, Tanh, "
        "Linear 320->50, Tanh, Linear 50->1), terms=pure (heat maps)", cnn, img,
        [1, 2] if quick else [1, 2, 4, 10], terms="pure", ref_variables=pixels,
        methods=("exact", "dense", "hope", "autograd", "floor"),
        notes=[trained,
               "exact = expand(terms='pure'), which runs the conv/pool/tanh stack on receptive-field windows; "
               "dense = the same expansion with every pixel's coefficients carried through every unit",
               f"expansions cover all 784 pixels; the nested-autograd reference covers the pure derivatives of "
               f"{len(pixels)} pixels only {pixels} (flat indices), errors are measured there; autograd* time = "
               f"measured time x 784/{len(pixels)} (an estimate for all pixels; the JSON keeps the measured one)",
               "floor = one forward pass over M = 1 + 784 K images"]))
    return out


def scaling(quick: bool, repeats: int, log) -> list[dict]:
    d = torch.float64
    results = []
    log("")
    log("== scaling: time (ms) vs order, n = 2 (MLP 2->64x3 Sine, total) and vs n, order 3 (MLP n->64x3 Sine)")
    log(f"{'sweep':<6} {'n':>3} {'order':>5} {'M':>6} {'exact':>9} {'hope':>9} {'floor':>9} {'exact/hope':>10} "
        f"{'exact/floor':>11}")
    width = 16 if quick else 64
    sweeps = [("order", 2, k) for k in ([1, 2, 3] if quick else [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])]
    sweeps += [("n", n, 3) for n in ([1, 2, 3] if quick else [1, 2, 4, 8, 16])]
    models = {}
    for sweep, n, order in sweeps:
        if n not in models:
            models[n] = sine_mlp(n, width, 3)
        model = models[n]
        torch.manual_seed(3)
        x0 = torch.rand(1, n, dtype=d) - 0.5
        M = basis_size(n, order, "total")
        te, _ = timed(lambda m=model, x=x0, k=order: expand(m, x, k), repeats)
        th, _ = timed(lambda m=model, x=x0, k=order: expand(m, x, k, method="hope"), repeats)
        xs = floor_inputs(x0, M)
        with torch.no_grad():
            tf, _ = timed(lambda m=model, x=xs: m(x), repeats)
        row = dict(sweep=sweep, n=n, order=order, M=M, exact_ms=te * 1e3, hope_ms=th * 1e3, floor_ms=tf * 1e3)
        results.append(row)
        log(f"{sweep:<6} {n:>3} {order:>5} {M:>6} {te * 1e3:9.2f} {th * 1e3:9.2f} {tf * 1e3:9.3f} {te / th:10.3f} "
            f"{te / tf:11.2f}")
    return results


def backends(quick: bool, repeats: int, log) -> list[dict]:
    """The compiled kernels against the torch formulation (what runs with no compiler at install time, or with
    HOPE_NATIVE=0), same process, interleaved: each repeat times one native and one torch expansion."""
    d = torch.float64
    x = torch.tensor([[0.3, -0.2]], dtype=d)
    side, ch, width = (8, 4, 16) if quick else (32, 16, 64)
    rows_in = [("paper-conv-2d", sine_conv(side, ch), x, 2 if quick else 8),
               ("paper-mlp-2d", sine_mlp(2, width, 3), x, 4 if quick else 8),
               ("paper-mlp-1d", sine_mlp(1, 32 if quick else 1024, 5), torch.zeros(1, 1, dtype=d), 4 if quick else 10)]
    log("")
    log(f"== backends: compiled kernels vs torch formulation (no compiler / HOPE_NATIVE=0), "
        f"median of {repeats} interleaved runs after 1 warm-up")
    if not kernels.native_available():
        log(f"   compiled kernels unavailable ({kernels.native.error()}): torch rows only")
    log(f"{'case':<15} {'order':>5} {'native ms':>10} {'torch ms':>10} {'torch/native':>12}")
    out = []
    for name, model, x0, order in rows_in:
        times: dict[str, list[float]] = {"native": [], "torch": []}
        modes = ["native", "torch"] if kernels.native_available() else ["torch"]
        for rep in range(repeats + 1):
            for mode in modes:
                with kernels.use_backend(mode):
                    start = time.perf_counter()
                    expand(model, x0, order)
                    if rep:  # the first round is the warm-up
                        times[mode].append(time.perf_counter() - start)
        med = {m: statistics.median(t) * 1e3 for m, t in times.items() if t}
        ratio = med["torch"] / med["native"] if "native" in med else None
        out.append(dict(case=name, order=order, native_ms=med.get("native"), torch_ms=med["torch"],
                        torch_over_native=ratio))
        log(f"{name:<15} {order:>5} {_fmt(med.get('native'), '10.2f')} {med['torch']:10.2f} "
            f"{_fmt(ratio, '12.2f')}")
    return out


_COLD = r"""
import sys, time
t0 = time.perf_counter()
import torch
from torch import nn
t1 = time.perf_counter()
import hope_engine
t2 = time.perf_counter()
torch.manual_seed(0)
m = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1)).double().eval()
hope_engine.expand(m, torch.tensor([0.1, 0.2], dtype=torch.float64), 4)
t3 = time.perf_counter()
hope_engine.expand(m, torch.tensor([0.2, 0.1], dtype=torch.float64), 4)
t4 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3, int("torch._dynamo" in sys.modules))
"""


def cold_start(quick: bool, log) -> list[dict]:
    """A fresh process: import torch, import hope_engine, the first and second expansion of a 2->16->1 tanh MLP
    (order 4), with the compiled kernels and with HOPE_NATIVE=0; medians over fresh processes, interleaved."""
    runs = 1 if quick else 3
    samples: dict[str, list[list[float]]] = {"native": [], "torch": []}
    for _ in range(runs):
        for mode in samples:
            env = dict(os.environ, HOPE_NATIVE="0" if mode == "torch" else "1",
                       OMP_NUM_THREADS=str(torch.get_num_threads()))
            proc = subprocess.run([sys.executable, "-c", _COLD], capture_output=True, text=True, env=env,
                                  timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-2000:])
            samples[mode].append([float(v) for v in proc.stdout.split()])
    log("")
    log(f"== cold start: fresh process, 2->16->1 tanh MLP, order 4, seconds (median of {runs} processes)")
    log(f"{'kernels':<8} {'import torch':>12} {'import hope':>11} {'1st expand':>10} {'2nd expand':>10} "
        f"{'dynamo loaded':>13}")
    out = []
    for mode, rows in samples.items():
        med = [statistics.median(r[i] for r in rows) for i in range(4)]
        out.append(dict(kernels=mode, import_torch_s=med[0], import_hope_s=med[1], first_expand_s=med[2],
                        second_expand_s=med[3], dynamo_loaded=bool(rows[0][4])))
        loaded = "yes" if rows[0][4] else "no"
        log(f"{mode:<8} {med[0]:12.3f} {med[1]:11.3f} {med[2]:10.3f} {med[3]:10.4f} {loaded:>13}")
    return out


def targets(results: list[dict], small: list[dict] = (), cold: list[dict] = (),
            backend_rows: list[dict] = ()) -> list[dict]:
    """The performance targets, checked against the measured numbers (reported, never asserted)."""
    out = []
    goals = {"2->16->1 tanh": (3.0, "within 3x of"), "2->64x3 tanh": (1.0, "no slower than"),
             "1->1024x5 sine": (1.0, "ahead of")}
    for net, (limit, words) in goals.items():
        ours = [r["seconds"] for r in small if r["net"] == net and r["method"] == "hope expand"]
        jax_rows = [r for r in small if r["net"] == net and r["method"].startswith("jax")]
        if ours and jax_rows:
            best = min(jax_rows, key=lambda r: r["seconds"])
            ratio = ours[0] / best["seconds"]
            out.append(dict(target=f"small nets {net} order {best['order']}: {words} the best jit JAX way "
                                   f"({best['method']}; ratio t_hope / t_jax <= {limit:g})", value=ratio,
                            met=ratio < limit if words == "ahead of" else ratio <= limit))
    for row in cold:
        out.append(dict(target=f"cold start ({row['kernels']} kernels): first expand <= 0.5 s after import torch "
                               "(import hope + 1st expand, seconds)",
                        value=row["import_hope_s"] + row["first_expand_s"],
                        met=row["import_hope_s"] + row["first_expand_s"] <= 0.5))
    for row in backend_rows:
        if row.get("torch_over_native") is not None:
            out.append(dict(target=f"no compiler: torch kernels within 1.5x of native on {row['case']} order "
                                   f"{row['order']}", value=row["torch_over_native"],
                            met=row["torch_over_native"] <= 1.5))
    by_name = {c["name"]: c for c in results}

    def rows(name, method=None, order=None):
        c = by_name.get(name)
        if not c:
            return []
        return [r for r in c["rows"]
                if (method is None or r["method"] == method) and (order is None or r["order"] == order)]

    errs = [r.get("max_rel_err") for c in results for r in c["rows"] if r["method"] == "exact"]
    errs = [e for e in errs if e is not None]
    if errs:
        out.append(dict(target="exact max rel err <= 1e-10 in every case", value=max(errs), met=max(errs) <= 1e-10))
    for name in ("paper-mlp-1d", "paper-conv-2d", "paper-mlp-2d"):
        c = by_name.get(name)
        if not c:
            continue
        top = max(r["order"] for r in c["rows"])
        ex = rows(name, "exact", top)
        if ex and "ratios" in ex[0]:
            rh = ex[0]["ratios"].get("exact/hope")
            if rh is not None:
                out.append(dict(target=f"{name} order {top}: exact >= 2x faster than hope (ratio <= 0.5)", value=rh,
                                met=rh <= 0.5))
            ra = ex[0]["ratios"].get("exact/autograd")
            if ra is not None and top >= 8:
                out.append(dict(target=f"{name} order {top}: exact >= 100x faster than autograd (ratio <= 0.01)",
                                value=ra, met=ra <= 0.01))
    for name in ("paper-mlp-1d", "paper-mlp-2d", "mlp-5d"):
        for r in rows(name, "exact"):
            rf = r.get("ratios", {}).get("exact/floor")
            if rf is not None:
                out.append(dict(target=f"{name} order {r['order']}: exact within 3x of the floor", value=rf,
                                met=rf <= 3.0))
    ex = rows("paper-mlp-1d", "exact", 10)
    if ex:
        out.append(dict(target="paper-mlp-1d order 10: exact <= ~10 ms (float64)", value=ex[0]["time_ms"],
                        met=ex[0]["time_ms"] <= 10.0))
    ex = rows("mnist-cnn-pure", "exact", 10)
    if ex:
        out.append(dict(target="mnist-cnn-pure order 10, all 784 pixels: exact <= 2000 ms", value=ex[0]["time_ms"],
                        met=ex[0]["time_ms"] <= 2000.0))
        rh = ex[0].get("ratios", {}).get("exact/hope")
        if rh is not None:
            out.append(dict(target="mnist-cnn-pure order 10: exact heat map within 3x of the paper rule's time "
                                   "(exact/hope <= 3)", value=rh, met=rh <= 3.0))
    return out


def tanh_mlp(n: int, width: int, hidden: int, seed: int = 0) -> nn.Module:
    """n -> width x hidden (Tanh) -> 1, float64."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(n, width), nn.Tanh()]
    for _ in range(hidden - 1):
        layers += [nn.Linear(width, width), nn.Tanh()]
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers).double().eval()


def _jax_small_net(net: nn.Module, order: int, n: int):
    """(jet, nested jacfwd) jitted JAX functions of the same MLP (weights and activation copied), or None when JAX is
    missing.

    jet: Taylor-mode along order + 1 directions at once (vmap; one direction for n = 1), enough to recover every mixed
    partial of each degree of a function of 1 or 2 variables (a fixed linear solve per degree, included), returned
    as Taylor coefficients per degree; nested jacfwd: the full derivative tensors of every order up to ``order``."""
    try:
        import jax
        import jax.numpy as jnp
        from jax.experimental.jet import jet
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    jax.config.update("jax_enable_x64", True)
    weights = [(jnp.asarray(m.weight.detach().numpy()), jnp.asarray(m.bias.detach().numpy()))
               for m in net if isinstance(m, nn.Linear)]
    act = jnp.sin if any(isinstance(m, Sine) for m in net) else jnp.tanh

    def f(x):
        for i, (w, b) in enumerate(weights):
            x = w @ x + b
            if i < len(weights) - 1:
                x = act(x)
        return x[0]

    if n == 1:
        dirs = jnp.ones((1, 1))
        solves = [jnp.full((1, 1), 1.0 / math.factorial(d)) for d in range(1, order + 1)]
    else:
        angles = jnp.linspace(0.0, math.pi, order + 1, endpoint=False)
        dirs = jnp.stack([jnp.cos(angles), jnp.sin(angles)], 1)          # (K + 1, 2)
        # degree d: D^d f[v] = d! sum_j c_(d-j, j) v0^(d-j) v1^j; the solve gives the c of that degree
        solves = [jnp.linalg.pinv(jnp.stack([dirs[:, 0] ** (d - j) * dirs[:, 1] ** j for j in range(d + 1)], 1)
                                  * math.factorial(d)) for d in range(1, order + 1)]

    def by_jet(x0):
        def along(v):
            y0, ys = jet(f, (x0,), ([v] + [jnp.zeros_like(v)] * (order - 1),))
            return jnp.stack([y0, *ys])
        terms = jax.vmap(along)(dirs)                                     # (directions, K + 1 degrees)
        return [terms[0, 0]] + [solves[d - 1] @ terms[:, d] for d in range(1, order + 1)]

    def by_jacfwd(x0):
        out, g = [f(x0)], f
        for _ in range(order):
            g = jax.jacfwd(g)
            out.append(g(x0))
        return out

    return jax.jit(by_jet), jax.jit(by_jacfwd), jnp


def _jet_agreement(poly, jet_terms) -> float:
    """Largest relative difference between our Taylor coefficients and JAX jet's (c_(d-j, j) per degree d)."""
    ours = {tuple(a): c for a, c in zip(poly.basis.multi_indices(), poly.coefficients.reshape(-1).tolist())}
    worst, scale = 0.0, max(abs(v) for v in ours.values())
    for d, block in enumerate(jet_terms):
        vals = [float(block)] if d == 0 else [float(v) for v in block]
        for j, v in enumerate(vals):
            alpha = (d,) if len(next(iter(ours))) == 1 else (d - j, j)
            worst = max(worst, abs(ours[alpha] - v) / scale)
    return worst


def interleaved_times(fns: dict, rounds: int, seconds: float, max_calls: int) -> dict:
    """{key: per-call seconds of each round}: each fn warmed up once, then called about ``seconds`` worth of times
    (at most ``max_calls``) per round, the fns interleaved round by round."""
    calls = {}
    for k, fn in fns.items():
        fn()
        t = time.perf_counter()
        fn()
        calls[k] = max(1, min(max_calls, int(seconds / max(time.perf_counter() - t, 1e-7))))
    times: dict = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            for _ in range(calls[k]):
                fn()
            times[k].append((time.perf_counter() - t) / calls[k])
    return times


def small_nets(quick: bool, repeats: int, log) -> list[dict]:
    """Per-call time of ``expand`` on small nets (fixed per-call cost: graph walk, guard, checks), 1 torch thread,
    medians of interleaved repeats; JAX jet and nested jacfwd (jit, x64, CPU) on the same nets when JAX imports."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    if "jax" not in sys.modules:  # JAX on one thread too: XLA's CPU client reads this when it starts
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    rows = []
    log("\n== small-nets: per-call time of expand (all mixed partials, float64, 1 thread, median of interleaved "
        f"repeats; JAX: jit, warm, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r})")
    configs = [("2->16->1 tanh", tanh_mlp(2, 16, 1), 6), ("2->64x3 tanh", tanh_mlp(2, 64, 3), 8),
               ("1->1024x5 sine" if not quick else "1->32x5 sine", sine_mlp(1, 32 if quick else 1024, 5), 10)]
    inner = 20 if quick else 200
    rounds = max(3, repeats) if quick else max(15, repeats)
    try:
        for name, net, order in configs:
            n = net[0].in_features
            x0 = torch.tensor([0.3, -0.2][:n], dtype=torch.float64)
            fns = {"hope expand": lambda net=net, x0=x0, order=order: expand(net, x0, order)}
            jx = _jax_small_net(net, order, n)
            agree = None
            if jx is not None:
                by_jet, by_jacfwd, jnp = jx
                xj = jnp.asarray(x0.numpy())
                fns["jax jet (jit)"] = lambda f=by_jet, xj=xj: [a.block_until_ready() for a in f(xj)]
                if n > 1:  # nested jacfwd of a 1-input net is the same jet-like chain: not repeated
                    fns["jax nested jacfwd (jit)"] = lambda f=by_jacfwd, xj=xj: [a.block_until_ready()
                                                                                for a in f(xj)]
                agree = _jet_agreement(expand(net, x0, order), by_jet(xj))
            times = interleaved_times(fns, rounds, 0.02, inner)  # warm-up (jit compile) included
            ours = statistics.median(times["hope expand"])
            for k, ts in times.items():
                med = statistics.median(ts)
                ratio = "" if k == "hope expand" else f"   ratio t_hope / t_jax = {ours / med:.2f}"
                log(f"  {name:14s} order {order}  {k:24s} {med * 1e6:8.1f} us/call{ratio}")
                rows.append(dict(net=name, order=order, method=k, seconds=med))
            if agree is not None:
                log(f"  {name:14s} order {order}  coefficients: hope vs JAX jet agree to {agree:.1e} (relative)")
            if jx is None:
                log("  JAX is unavailable (import jax failed): no JAX rows")
    finally:
        torch.set_num_threads(threads)
    return rows


def self_check(quick: bool, repeats: int, log) -> list[dict]:
    """The cost of the self-check (``verify``: one forward and one backward of the model at the point): expand with
    and without it, medians of interleaved repeats, on the paper's nets, a heat map and the panel's small nets."""
    cnn, img, _ = trained_mnist_cnn(epochs=1)
    width = 32 if quick else 1024
    configs = [(f"paper 1->{width}x5 sine", sine_mlp(1, width, 5), torch.zeros(1, 1, dtype=torch.float64), 10,
                "total"),
               ("paper 2->64x3 sine", sine_mlp(2, 64, 3), torch.tensor([[0.3, -0.2]], dtype=torch.float64), 8,
                "total"),
               ("paper conv 2d", sine_conv(8 if quick else 32, 4 if quick else 16),
                torch.tensor([[0.3, -0.2]], dtype=torch.float64), 2 if quick else 8, "total"),
               ("MNIST CNN heat map", cnn, img, 2, "pure"),
               ("panel 2->16x16->1 tanh", tanh_mlp(2, 16, 2), torch.tensor([0.3, -0.2], dtype=torch.float64), 6,
                "total"),
               ("tiny 2->16->1 tanh", tanh_mlp(2, 16, 1), torch.tensor([0.3, -0.2], dtype=torch.float64), 6,
                "total")]
    rounds = 3 if quick else max(7, repeats)
    log(f"\n== self-check: expand with verify=True (default) vs verify=False, float64, {torch.get_num_threads()} "
        f"threads, median of {rounds} interleaved rounds")
    rows = []
    for name, net, x0, order, terms in configs:
        fns = {flag: (lambda flag=flag, net=net, x0=x0, order=order, terms=terms:
                      expand(net, x0, order, terms=terms, verify=flag)) for flag in (True, False)}
        times = interleaved_times(fns, rounds, 0.05, 200)
        on, off = statistics.median(times[True]), statistics.median(times[False])
        log(f"  {name:24s} order {order:2d} {terms:5s}  verify {on * 1e3:9.3f} ms   no verify {off * 1e3:9.3f} ms   "
            f"overhead {100 * (on / off - 1):5.1f} %")
        rows.append(dict(net=name, order=order, terms=terms, verify=on, no_verify=off, overhead=on / off - 1))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and low orders (a smoke run)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 5; quick 2)")
    parser.add_argument("--case", action="append", default=None, help="run only cases whose name contains this")
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling sweeps")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 5)

    def log(s=""):
        print(s, flush=True)

    log(f"hope {__version__} benchmarks: torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"kernels {kernels.backend_name()}, "
        f"{platform.processor() or platform.machine()}, float64, median of {repeats} runs after 1 warm-up"
        + (" [QUICK: tiny sizes]" if args.quick else ""))
    log("ratios are time ratios t_exact / t_other: < 1 means the exact method is faster (0.01 = 100x faster)")
    start = time.perf_counter()
    results = []
    for case in cases(args.quick):
        if args.case and not any(s in case.name for s in args.case):
            continue
        results.append(run_case(case, repeats, log))
    sweep = [] if args.no_scaling or args.case else scaling(args.quick, repeats, log)
    backend_rows = backends(args.quick, repeats, log) if not args.case or "backends" in args.case else []
    cold = cold_start(args.quick, log) if not args.case or "cold-start" in args.case else []
    small = small_nets(args.quick, repeats, log) if not args.case or "small-nets" in args.case else []
    verify_rows = self_check(args.quick, repeats, log) if not args.case or "self-check" in args.case else []
    checks = targets(results, small, cold, backend_rows)
    if checks:
        log("")
        log("== targets (measured, not asserted)")
        for c in checks:
            log(f"  [{'met ' if c['met'] else 'MISS'}] {c['target']}: {c['value']:.3g}")
    log(f"\ntotal benchmark time {time.perf_counter() - start:.0f} s")
    if args.json:
        doc = dict(meta=dict(version=__version__, torch=torch.__version__, threads=torch.get_num_threads(),
                             platform=platform.platform(), python=sys.version.split()[0], quick=args.quick,
                             repeats=repeats, dtype="float64",
                             date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                             cpu_count=os.cpu_count()),
                   cases=results, scaling=sweep, targets=checks, backends=backend_rows, cold_start=cold,
                   small_nets=small, self_check=verify_rows)
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        log(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
