"""The bundled demo: expand a small Sine network at a point and print its polynomial and accuracy.

Run with ``python -m hope_engine.io.demo`` (``make demo`` opens the quickstart notebook instead when JupyterLab is
set up).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from hope_engine.api.expand import expand
from hope_engine.models import Sine


def default_model(seed: int = 0) -> nn.Module:
    """A 2-input Sine MLP 2-32-32-1 in float64 with fixed random weights."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 32), Sine(), nn.Linear(32, 32), Sine(), nn.Linear(32, 1)).double().eval()


def main() -> None:
    model = default_model()
    x0 = torch.tensor([[0.5, -0.25]], dtype=torch.float64)
    start = time.perf_counter()
    p = expand(model, x0, order=6, names=["x", "y"])
    elapsed = time.perf_counter() - start
    print(p)
    print(f"expanded in {elapsed * 1e3:.1f} ms: {p.basis.size} coefficients (every mixed partial up to order 6)\n")
    print("largest terms:")
    for t in p.terms(top=8):
        print(f"  {t.coefficient:+.6f}  {t.monomial}")
    print("\nLaTeX (|c| > 1e-3):")
    print(" ", p.latex(threshold=1e-3))
    x = x0 + torch.tensor([[0.1, 0.05]], dtype=torch.float64)
    print(f"\nat x = {x.tolist()[0]}: network {model(x).item():.8f}, polynomial {p(x).item():.8f}")


if __name__ == "__main__":
    main()
