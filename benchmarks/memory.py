"""Memory and time of one expansion: the engine's estimate (``estimate_cost``) against what a run measures.

    python benchmarks/memory.py                  # every case, one fresh process each (about 3 minutes on 2 cores)
    python benchmarks/memory.py --case attention # only the cases whose name contains "attention"
    python benchmarks/memory.py --json out.json  # also write the rows as JSON

Each case runs in its own subprocess with one torch thread: build the model, expand it once at order 1 (traces the
graph and loads the compiled kernels), release the engine's caches, then reset the process's peak resident memory
(Linux ``/proc/self/clear_refs``) and read the resident memory: the baseline. The expansion runs; "measured" is the peak
resident memory (``VmHWM``) minus that baseline, so it counts the expansion only (tables, basis, jets, temporaries).
"estimate" is what ``expand`` compares with ``memory_budget``; ratio = measured / estimate (the target: 0.5 to 2).
Times: "est s" is the time estimate ``time_budget`` is compared with, "run s" the measured wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Case:
    name: str
    model: str          # "mlp", "attention", "conv"
    n: int              # variables
    order: int
    terms: str
    width: int = 32
    depth: int = 2
    act: str = "sin"
    method: str = "exact"
    dtype: str = "float64"


CASES = [
    Case("mlp 4->1024x3 tanh", "mlp", 4, 12, "total", width=1024, depth=3, act="tanh"),
    Case("mlp 10->32x2 sin", "mlp", 10, 6, "total"),
    Case("mlp 10->32x2 sin", "mlp", 10, 8, "total"),
    Case("mlp 10->32x2 sin", "mlp", 10, 10, "total"),
    Case("mlp 10->32x2 sin", "mlp", 10, 11, "total"),
    Case("mlp 6->64x3 tanh", "mlp", 6, 12, "total", width=64, depth=3, act="tanh"),
    Case("mlp 8->32x2 tanh", "mlp", 8, 12, "total", act="tanh"),
    Case("mlp 10->256x2 tanh f32", "mlp", 10, 8, "total", width=256, act="tanh", dtype="float32"),
    Case("mlp 100->2048x2 tanh", "mlp", 100, 12, "pure", width=2048, act="tanh"),
    Case("mlp 1000->512x2 sin", "mlp", 1000, 8, "pure", width=512),
    Case("mlp 10->512x1 sin, hope", "mlp", 10, 6, "total", width=512, depth=1, method="hope"),
    Case("mlp 200->2048x1 sin, hope", "mlp", 200, 2, "total", width=2048, depth=1, method="hope"),
    Case("attention d64 x2, 12 tokens", "attention", 12, 3, "total", width=64),
    Case("attention d64 x2, 12 tokens", "attention", 12, 4, "total", width=64),
    Case("attention d64 x2, 48 tokens", "attention", 48, 10, "pure", width=64),
    Case("conv 32x32 c16, 4 pixels", "conv", 4, 8, "total"),
    Case("conv 32x32 c16, 64 pixels", "conv", 64, 10, "pure"),
]


# ------------------------------------------------------------------------------------------ one case (subprocess)
def _build(case: Case):
    import torch
    from torch import nn

    torch.manual_seed(0)
    dtype = getattr(torch, case.dtype)

    class Sin(nn.Module):
        def forward(self, x):
            return torch.sin(x)

    def act() -> nn.Module:
        return Sin() if case.act == "sin" else nn.Tanh()

    if case.model == "mlp":
        layers: list[nn.Module] = [nn.Linear(case.n, case.width), act()]
        for _ in range(case.depth - 1):
            layers += [nn.Linear(case.width, case.width), act()]
        model = nn.Sequential(*layers, nn.Linear(case.width, 1))
        x0 = torch.rand(1, case.n)
    elif case.model == "attention":
        class Attention(nn.Module):
            """Each input is a token: Linear(1, d) embeds it, two encoder layers, mean over tokens, Linear(d, 1)."""

            def __init__(self, d: int):
                super().__init__()
                self.embed = nn.Linear(1, d)
                layer = nn.TransformerEncoderLayer(d, 4, dim_feedforward=2 * d, dropout=0.0, batch_first=True)
                self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
                self.head = nn.Linear(d, 1)

            def forward(self, x):
                return self.head(self.encoder(self.embed(x.unsqueeze(-1))).mean(1))

        model = Attention(case.width)
        x0 = torch.rand(1, case.n)
    else:
        model = nn.Sequential(nn.Unflatten(1, (1, 32, 32)), nn.Conv2d(1, 16, 3), nn.Tanh(), nn.AvgPool2d(2),
                              nn.Conv2d(16, 16, 2), nn.Tanh(), nn.Flatten(), nn.Linear(16 * 14 * 14, 1))
        x0 = torch.rand(1, 32 * 32)
    variables = list(range(case.n)) if case.model != "conv" or case.n > 8 else [33 * (i + 1) for i in range(case.n)]
    return model.to(dtype).eval(), x0.to(dtype), variables


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def run_case(case: Case) -> dict:
    import gc
    import resource

    import torch

    torch.set_num_threads(1)
    from hope_engine import caches, expand
    from hope_engine.capture import trace
    from hope_engine.methods.paper_rule import _trace as hope_trace
    from hope_engine.run.cost import estimate_cost, estimate_hope_cost

    model, x0, variables = _build(case)
    expand(model, x0, 1, terms=case.terms, variables=variables, method=case.method)  # trace, load the kernels
    if case.method == "hope":
        cost = estimate_hope_cost(hope_trace(model, x0), len(variables), case.order, case.terms, x0.element_size())
    else:
        cost = estimate_cost(trace.trace(model, x0), len(variables), case.order, case.terms, x0.element_size(),
                             like=x0, input_numel=x0.numel())
    caches.clear_all()
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident memory
        reset = True
    except OSError:
        reset = False
    base = _status("VmRSS")
    start = time.perf_counter()
    expand(model, x0, case.order, terms=case.terms, variables=variables, method=case.method,
           memory_budget=1 << 50)
    seconds = time.perf_counter() - start
    peak = _status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"estimate": cost.memory, "parts": cost.parts, "est_seconds": cost.seconds,
            "measured": max(peak - base, 0), "seconds": seconds, "hwm_reset": reset}


# ------------------------------------------------------------------------------------------------------- driver
def _mib(b: float) -> str:
    return f"{b / 2**20:,.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", default="", help="only cases whose name contains this")
    ap.add_argument("--json", default=None, help="write the rows to this JSON file")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one case (JSON) in this process
    args = ap.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_case(Case(**json.loads(args.one)))))
        return 0
    rows = []
    header = (f"{'case':32} {'n':>5} {'K':>3} {'terms':6} {'M':>9} {'estimate MiB':>13} {'measured MiB':>13} "
              f"{'ratio':>6} {'est s':>7} {'run s':>7}")
    print(header)
    print("-" * len(header))
    for case in CASES:
        label = case.name
        if args.case not in case.name:
            continue
        done = subprocess.run([sys.executable, __file__, "--one", json.dumps(asdict(case))], capture_output=True,
                              text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            print(f"{label:32} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else '?'}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        from hope_engine.algebra.basis import basis_size

        m = basis_size(case.n, case.order, case.terms)
        ratio = r["measured"] / r["estimate"]
        print(f"{label:32} {case.n:>5} {case.order:>3} {case.terms:6} {m:>9,} {_mib(r['estimate']):>13} "
              f"{_mib(r['measured']):>13} {ratio:>6.2f} {r['est_seconds']:>7.1f} {r['seconds']:>7.1f}", flush=True)
        rows.append({**asdict(case), **r, "M": m, "ratio": ratio})
    if rows:
        ratios = [r["ratio"] for r in rows]
        print(f"\nratio measured / estimate: min {min(ratios):.2f}, max {max(ratios):.2f} over {len(rows)} cases")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
