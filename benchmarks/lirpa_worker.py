"""The auto_LiRPA side of benchmarks/certify_vs_crown.py, run by the Python of auto_LiRPA's own environment (torch
1.13, numpy < 2; it imports nothing of hope). Also the nets' architectures, shared by both sides (torch only).

    <lirpa python> benchmarks/lirpa_worker.py IN.pt OUT.json

IN.pt (torch.save): {"nets": {name: (architecture, state_dict)}, "ranges": [{"net", "centre", "radius"}],
"margins": {"net", "images", "labels", "eps": [...]}}. OUT.json: per range task the IBP, CROWN and alpha-CROWN bounds
of the output over the L-inf box and the seconds each took; per eps, which images each method verifies (all
margins z_label - z_j > 0 over the ball) and the seconds per image. Float32, one thread.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from torch import nn


def build(architecture: str) -> nn.Module:
    """The benchmark's networks (seeded initialisation; the trained ones get their weights from a state dict)."""
    torch.manual_seed(0)
    if architecture == "tanh-mlp":  # 2-32-32-1
        return nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1))
    if architecture == "conv":  # 8x8 image, conv 1->4, conv 4->8, tanh, average pooling, 1 output
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Tanh(), nn.Conv2d(4, 8, 3), nn.Tanh(), nn.AvgPool2d(2),
                             nn.Flatten(), nn.Linear(32, 1))
    if architecture == "digits-cnn":  # 8x8 digits, 10 classes
        return nn.Sequential(nn.Conv2d(1, 8, 3), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(72, 32),
                             nn.Tanh(), nn.Linear(32, 10))
    raise ValueError(f"unknown architecture {architecture!r}")


METHODS = ("IBP", "CROWN", "alpha-CROWN")


def _bounded(net: nn.Module, architecture: str, x: torch.Tensor):
    from auto_LiRPA import BoundedModule

    opts = {"optimize_bound_args": {"use_shared_alpha": True}} if architecture != "tanh-mlp" else {}
    return BoundedModule(net, torch.zeros_like(x), bound_opts=opts, verbose=False)


def _bounds(module, x: torch.Tensor, eps: float, method: str, c=None) -> tuple[torch.Tensor, torch.Tensor, float]:
    from auto_LiRPA import BoundedTensor, PerturbationLpNorm

    bx = BoundedTensor(x, PerturbationLpNorm(norm=float("inf"), eps=eps))
    start = time.perf_counter()
    lower, upper = module.compute_bounds(x=(bx,), method=method, C=c)
    return lower.detach(), upper.detach(), time.perf_counter() - start


def main(path_in: str, path_out: str) -> None:
    import auto_LiRPA

    torch.set_num_threads(1)
    job = torch.load(path_in)
    nets = {}
    for name, (architecture, state) in job["nets"].items():
        net = build(architecture)
        net.load_state_dict(state)
        nets[name] = (net.float().eval(), architecture)
    out = {"auto_LiRPA": auto_LiRPA.__version__, "torch": torch.__version__, "ranges": [], "margins": []}
    modules = {}
    for task in job["ranges"]:
        net, architecture = nets[task["net"]]
        x = torch.as_tensor(task["centre"], dtype=torch.float32)
        if task["net"] not in modules:
            modules[task["net"]] = _bounded(net, architecture, x)
        row = {}
        for method in METHODS:
            lower, upper, seconds = _bounds(modules[task["net"]], x, float(task["radius"]), method)
            row[method] = {"lower": float(lower.reshape(-1)[0]), "upper": float(upper.reshape(-1)[0]),
                           "seconds": seconds}
        out["ranges"].append(row)
    margins = job.get("margins")
    if margins:
        net, architecture = nets[margins["net"]]
        images, labels = margins["images"].float(), margins["labels"]
        module = _bounded(net, architecture, images[:1])
        classes = 10
        with torch.no_grad():
            predicted = net(images).argmax(1)
        for eps in margins["eps"]:
            row = {"eps": eps}
            for method in ("CROWN", "alpha-CROWN"):
                verified, seconds = [], []
                for i in range(len(images)):
                    y = int(labels[i])
                    if int(predicted[i]) != y:
                        verified.append(False)
                        seconds.append(0.0)
                        continue
                    c = torch.zeros(1, classes - 1, classes)
                    others = [j for j in range(classes) if j != y]
                    c[0, :, y] = 1
                    c[0, torch.arange(classes - 1), others] = -1
                    lower, _, took = _bounds(module, images[i:i + 1], float(eps), method, c)
                    verified.append(bool((lower > 0).all()))
                    seconds.append(took)
                row[method] = {"verified": verified, "seconds": seconds}
            out["margins"].append(row)
    with open(path_out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
