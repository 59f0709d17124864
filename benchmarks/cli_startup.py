"""Start-up cost of the ``hope`` command against torch's own: wall seconds of whole processes.

    python benchmarks/cli_startup.py                 # 7 interleaved rounds
    python benchmarks/cli_startup.py --rounds 15 --threads 1

Commands, each a fresh process, timed in interleaved rounds (one run of each per round, the order rotated each round,
so drift and machine load hit all alike); the table shows each command's median over the rounds, of the wall time and
of the CPU time (user + system of the process: less sensitive than wall time to other processes on a busy machine):
  hope --help                 the parser alone (no torch import)
  hope expand --help
  import torch                python -c "import torch"
  import torch + load         python -c "import torch; torch.export.load(tiny.pt2)": what torch itself needs
  hope expand tiny.pt2        --point 0.5,-0.25 --order 4 on the same file
The last lines are hope expand's cost beyond torch's import + load: the median over rounds of the paired difference
(same round) of the last two commands, in wall and in CPU time. The tiny model: a 2-8-1 tanh MLP in float64, exported
with torch.export. One ``hope expand --verbose`` run at the end prints where its time goes.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _hope() -> list[str]:
    exe = shutil.which("hope", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "hope_engine.io.cli"]


def _save_tiny(path: Path) -> None:
    script = ("import torch; from torch import nn; torch.manual_seed(0); "
              "net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double().eval(); "
              "torch.export.save(torch.export.export(net, (torch.zeros(1, 2, dtype=torch.float64),)), "
              f"{str(path)!r})")
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)


def _times(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the child) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default: 7)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for every command (default: unset, torch's own choice)")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(args.threads)
    hope = _hope()
    with tempfile.TemporaryDirectory() as tmp:
        tiny = Path(tmp) / "tiny.pt2"
        _save_tiny(tiny)
        commands = {
            "hope --help": hope + ["--help"],
            "hope expand --help": hope + ["expand", "--help"],
            "import torch": [sys.executable, "-c", "import torch"],
            "import torch + load": [sys.executable, "-c", f"import torch; torch.export.load({str(tiny)!r})"],
            "hope expand tiny.pt2": hope + ["expand", str(tiny), "--point", "0.5,-0.25", "--order", "4"],
        }
        times: dict[str, list[float]] = {k: [] for k in commands}
        cpu: dict[str, list[float]] = {k: [] for k in commands}
        names = list(commands)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                wall, used = _times(commands[name], env)
                times[name].append(wall)
                cpu[name].append(used)
        verbose = subprocess.run(commands["hope expand tiny.pt2"] + ["--verbose"], check=True, capture_output=True,
                                 text=True, env=env).stderr.strip()
    threads = env.get("OMP_NUM_THREADS", f"unset (torch's default; {os.cpu_count()} CPUs)")
    print(f"hope CLI start-up: median wall seconds of {args.rounds} interleaved rounds; OMP_NUM_THREADS {threads}; "
          f"load average at the end {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"  {'command':<22} {'wall s':>7}   {'(min, max)':<16} {'CPU s':>7}")
    for name, ts in times.items():
        print(f"  {name:<22} {statistics.median(ts):7.3f}   ({min(ts):.3f}, {max(ts):.3f})  "
              f"{statistics.median(cpu[name]):7.3f}")
    for label, t in (("wall", times), ("CPU", cpu)):
        extra = [h - b for h, b in zip(t["hope expand tiny.pt2"], t["import torch + load"])]
        print(f"  hope expand beyond torch's import + load, {label}: {statistics.median(extra):+.3f} s (median of the "
              f"paired per-round differences; min {min(extra):+.3f}, max {max(extra):+.3f})")
    print(f"one hope expand --verbose: {verbose}")


if __name__ == "__main__":
    main()
