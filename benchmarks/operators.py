"""Differential operators of a network: hope vs torch-jet's collapsed Taylor mode vs torch.func's nested Hessian.

    python benchmarks/operators.py                 # main table, dim/batch grid, memory (10-15 min, 2 loaded cores)
    python benchmarks/operators.py --quick         # smoke run: a small net, one repeat, a tiny grid (~30 s)
    python benchmarks/operators.py --no-torch-jet  # hope and torch.func only (no download)
    python benchmarks/operators.py --json out.json # also write every row as JSON

The net is torch-jet's own benchmark net (its exp01: tanh MLP D-768-768-512-512-1, seed 0, float64, points
uniform in [0, 1)^D with seed 1), one torch thread. Methods, each on the whole batch:

- hope: ``hope_engine.laplacian`` / ``bilaplacian`` (defaults: the value self-check on).
- torch-jet: ``jet.laplacian`` / ``jet.bilaplacian`` (collapsed, exact), its graph captured, CSE'd and vmapped over the
  batch: the "jet_simplified" strategy of torch-jet's benchmark (setup excluded from the times, printed apart).
  Installed by ``peers.setup_torch_jet`` outside the project (pip download of the wheel, one patch for Python 3.11).
- torch.func: ``vmap`` of the trace of ``hessian`` (the bi-Laplacian: the trace of the Hessian of that), the
  baseline of torch-jet's benchmark.

"forward": the operator without autograd history (hope: create_graph=False; the others under no_grad).
"forward+backward": the operator with history (hope: create_graph=True), then the gradient of its sum with respect
to the net's weights (torch.autograd.grad). Every method's values and weight gradients are checked against
torch.func's before anything is timed; a mismatch stops the run. Times are medians of interleaved repeats (each round
calls every method once, in a rotating order) after one warm-up call; ratios are t_hope / t_other (below 1: hope is
faster); the main table also gives the ratio of the fastest calls ("best"), less sensitive to other load.
Memory: the peak resident memory of one call above the resident memory before it, in a fresh process per method
(after one warm-up call; Linux /proc VmHWM reset through /proc/self/clear_refs; glibc's mmap threshold fixed at 128 KiB
so a freed tensor leaves the resident set and the peak counts what the call holds; smaller temporaries reuse the heap
and are not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import hessian, vmap

import hope_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (the benchmarks folder's own helper)

WIDTHS = (768, 768, 512, 512)
QUICK_WIDTHS = (32, 32, 16, 16)
METHODS = ("hope", "torch-jet", "torch.func")
MODES = ("forward", "forward+backward")
TOL = 1e-9  # relative, float64: values and weight gradients against torch.func


# ----------------------------------------------------------------------------------------------------- problem
def tanh_mlp(dim: int, widths=WIDTHS, seed: int = 0) -> nn.Module:
    """torch-jet's benchmark architecture: dim -> widths (Tanh after each) -> 1, float64."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip((dim, *widths), widths):
        layers += [nn.Linear(a, b), nn.Tanh()]
    layers.append(nn.Linear(widths[-1], 1))
    return nn.Sequential(*layers).double()


def points(batch: int, dim: int, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.rand(batch, dim, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------------- methods
def trace_of_hessian(f):
    """x (n,) -> trace of the Hessian of f at x, per output element (torch.func)."""
    h = hessian(f)

    def lap(x):
        return h(x).diagonal(dim1=-2, dim2=-1).sum(-1)

    return lap


def func_operator(net: nn.Module, op: str):
    lap = trace_of_hessian(net)
    return vmap(lap if op == "laplacian" else trace_of_hessian(lap))


def jet_operator(jet, net: nn.Module, x1: torch.Tensor, op: str):
    """torch-jet's collapsed operator on one point, captured, CSE'd and vmapped (its benchmark's jet_simplified)."""
    transform = jet.laplacian if op == "laplacian" else jet.bilaplacian
    graph, _ = jet.capture_graph(transform(net, (x1,), collapsed=True), (x1,))
    jet.common_subexpression_elimination(graph.graph)
    graph.recompile()
    return vmap(graph)


def hope_operator(op: str):
    fn = hope_engine.laplacian if op == "laplacian" else hope_engine.bilaplacian
    return fn


def calls(method: str, op: str, net: nn.Module, x: torch.Tensor, jet) -> tuple[dict, float]:
    """{mode: zero-argument callable} of one method, and its setup time (seconds; hope's: its first call)."""
    params = [p for p in net.parameters()]
    start = time.perf_counter()
    if method == "hope":
        fn = hope_operator(op)
        fn(net, x)  # the first call traces the graph
        fwd = lambda: fn(net, x)  # noqa: E731
        differentiable = lambda: fn(net, x, create_graph=True)  # noqa: E731
    else:
        g = jet_operator(jet, net, x[0], op) if method == "torch-jet" else func_operator(net, op)

        def fwd():
            with torch.no_grad():
                return g(x)

        differentiable = lambda: g(x)  # noqa: E731
    setup = time.perf_counter() - start

    def fb():
        # the last bias does not enter a derivative: its gradient is zero (unused by torch.func)
        return torch.autograd.grad(differentiable().sum(), params, allow_unused=True, materialize_grads=True)

    return {"forward": fwd, "forward+backward": fb}, setup


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def check(fns: dict, ref: dict) -> dict:
    """Relative errors of a method's values and weight gradients against torch.func's."""
    value = rel(fns["forward"](), ref["forward"]())
    grads = max(rel(g, r) for g, r in zip(fns["forward+backward"](), ref["forward+backward"]()))
    return {"value": value, "gradients": grads}


def interleaved(fns: dict, repeats: int) -> dict:
    """Seconds of each call of each callable: one warm-up each, then rounds calling each once in a rotating order."""
    for f in fns.values():
        f()
    times: dict = {k: [] for k in fns}
    keys = list(fns)
    for r in range(repeats):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return times


# ------------------------------------------------------------------------------------------------------ memory
def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def memory_worker(spec: dict) -> dict:
    """In a fresh process: one warm-up call, then the peak resident memory of one call above the memory before it."""
    import gc

    torch.set_num_threads(1)
    jet = peers.setup_torch_jet() if spec["method"] == "torch-jet" else None
    net = tanh_mlp(spec["dim"], tuple(spec["widths"]))
    x = points(spec["batch"], spec["dim"])
    fns, _ = calls(spec["method"], spec["op"], net, x, jet)
    fn = fns[spec["mode"]]
    fn()
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    base = _status("VmRSS")
    out = fn()
    peak = _status("VmHWM")
    del out
    return {"peak_bytes": max(peak - base, 0)}


def measure_memory(spec: dict) -> float | None:
    """Peak MiB of one call in a fresh process, or None where /proc is not there (not Linux)."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--memory-worker", json.dumps(spec)], capture_output=True,
                          text=True, timeout=900, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory worker {spec} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak_bytes"] / 2**20


# -------------------------------------------------------------------------------------------------------- runs
class Bench:
    def __init__(self, args):
        self.args = args
        self.widths = QUICK_WIDTHS if args.quick else WIDTHS
        self.methods = [m for m in METHODS if not (m == "torch-jet" and args.jet is None)]
        self.rows: list[dict] = []

    def case(self, op: str, dim: int, batch: int, repeats: int, label: str, memory: bool) -> dict:
        """One (operator, dim, batch): correctness of every method, then interleaved times (and memory)."""
        net = tanh_mlp(dim, self.widths)
        x = points(batch, dim)
        fns, setups = {}, {}
        for m in self.methods:
            fns[m], setups[m] = calls(m, op, net, x, self.args.jet)
        errors = {m: check(fns[m], fns["torch.func"]) for m in self.methods if m != "torch.func"}
        for m, e in errors.items():
            if max(e.values()) > TOL:
                raise SystemExit(f"MISMATCH {label} {op} dim {dim} batch {batch}: {m} against torch.func: {e}")
        flat = {(m, mode): fns[m][mode] for m in self.methods for mode in MODES}
        times = interleaved(flat, repeats)
        mem = {}
        if memory:
            for m in self.methods:
                for mode in MODES[:1] if self.args.quick else MODES:  # quick: one mode (a smoke run of the path)
                    spec = dict(op=op, dim=dim, batch=batch, method=m, mode=mode, widths=list(self.widths))
                    mem[(m, mode)] = measure_memory(spec)
        row = dict(label=label, op=op, dim=dim, batch=batch, setup_s=setups, errors=errors,
                   times={f"{m}|{mode}": statistics.median(t) for (m, mode), t in times.items()},
                   best={f"{m}|{mode}": min(t) for (m, mode), t in times.items()},
                   memory_mib={f"{m}|{mode}": v for (m, mode), v in mem.items()})
        self.rows.append(row)
        return row


def ratio(row: dict, mode: str, other: str, kind: str = "times") -> float | None:
    """t_hope / t_other of the medians (kind "times") or of the fastest calls (kind "best")."""
    t = row[kind]
    key = f"{other}|{mode}"
    return t[f"hope|{mode}"] / t[key] if key in t else None


def fmt_ms(s: float) -> str:
    return f"{s * 1e3:9.1f}"


def print_main(row: dict, methods: list[str]) -> None:
    head = f"{row['op']} dim {row['dim']}, batch {row['batch']}"
    print(f"\n{head}  (setup s: " + ", ".join(f"{m} {row['setup_s'][m]:.2f}" for m in methods) + ")")
    for m, e in row["errors"].items():
        print(f"  {m:10s} vs torch.func: value rel err {e['value']:.1e}, weight-gradient rel err {e['gradients']:.1e}")
    print(f"  {'mode':18s}" + "".join(f"{m + ' ms':>14s}" for m in methods)
          + "".join(f"{'hope/' + m:>17s}" for m in methods if m != "hope")
          + "".join(f"{'best: hope/' + m:>23s}" for m in methods if m != "hope")
          + ("".join(f"{m + ' MiB':>15s}" for m in methods) if row["memory_mib"] else ""))
    for mode in MODES:
        line = f"  {mode:18s}" + "".join(f"{fmt_ms(row['times'][f'{m}|{mode}']):>14s}" for m in methods)
        line += "".join(f"{ratio(row, mode, m):17.2f}" for m in methods if m != "hope")
        line += "".join(f"{ratio(row, mode, m, 'best'):23.2f}" for m in methods if m != "hope")
        if row["memory_mib"]:
            line += "".join(f"{_mib(row['memory_mib'].get(f'{m}|{mode}')):>15s}" for m in methods)
        print(line)


def _mib(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}"


def print_grid(rows: list[dict], key: str, methods: list[str]) -> None:
    print(f"  {key:>6s} {'mode':18s}" + "".join(f"{m + ' ms':>14s}" for m in methods)
          + "".join(f"{'hope/' + m:>17s}" for m in methods if m != "hope"))
    for row in rows:
        for mode in MODES:
            times = "".join(f"{fmt_ms(row['times'][f'{m}|{mode}']):>14s}" for m in methods)
            ratios = "".join(f"{ratio(row, mode, m):17.2f}" for m in methods if m != "hope")
            print(f"  {row[key]:6d} {mode:18s}" + times + ratios)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small net, one repeat, tiny grid: a smoke run")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved rounds of the main table (default 9)")
    ap.add_argument("--grid-repeats", type=int, default=None, help="rounds per grid cell (default 3)")
    ap.add_argument("--no-grid", action="store_true", help="skip the dim and batch scaling grid")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    ap.add_argument("--no-torch-jet", action="store_true", help="hope and torch.func only")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write every row to this JSON file")
    ap.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_worker is not None:
        print(json.dumps(memory_worker(json.loads(args.memory_worker))))
        return 0
    repeats = args.repeats or (1 if args.quick else 9)
    grid_repeats = args.grid_repeats or (1 if args.quick else 3)
    args.jet = None
    if not args.no_torch_jet:
        try:
            args.jet = peers.setup_torch_jet()
        except peers.PeerUnavailable as exc:
            print(f"torch-jet unavailable, its columns are left out: {exc}")
    bench = Bench(args)
    widths = "-".join(str(w) for w in bench.widths)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"operators: tanh MLP D-{widths}-1, float64, torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"{platform.machine()} {os.cpu_count()} cores, load average {load}; hope {hope_engine.__version__}; "
          f"torch-jet {'1.0.0 (collapsed, captured + CSE, vmapped)' if args.jet else 'not run'}")
    print(f"times: medians of {repeats} interleaved rounds (grid: {grid_repeats}); ratios t_hope / t_other; "
          "memory: peak RSS above the pre-call RSS, one fresh process per cell (MiB)")

    b = 4 if args.quick else 16
    main_cases = [("laplacian", 3, b), ("bilaplacian", 2, b)] if args.quick else \
        [("laplacian", 10, b), ("laplacian", 50, b), ("bilaplacian", 5, b)]
    for i, (op, dim, batch) in enumerate(main_cases):
        memory = not args.no_memory and (not args.quick or i == 0)
        print_main(bench.case(op, dim, batch, repeats, "main", memory), bench.methods)

    if not args.no_grid:
        dims = (2,) if args.quick else (5, 10, 25, 50, 100)
        batches = (1,) if args.quick else (1, 16, 64, 256, 1024)
        print(f"\nLaplacian, scaling with dim (batch {b}):")
        print_grid([bench.case("laplacian", d, b, grid_repeats, "dim", False) for d in dims], "dim", bench.methods)
        dim = 2 if args.quick else 10
        print(f"\nLaplacian, scaling with batch (dim {dim}):")
        print_grid([bench.case("laplacian", dim, n, grid_repeats, "batch", False) for n in batches], "batch",
                   bench.methods)
    print(f"\nload average at the end: {os.getloadavg() if hasattr(os, 'getloadavg') else None}")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": {"quick": args.quick, "threads": torch.get_num_threads(),
                                                        "widths": bench.widths, "repeats": repeats,
                                                        "torch_jet": args.jet is not None},
                                               "rows": bench.rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
