"""Every number the README, the docs and the notebooks state about accuracy, speed-ups and coverage of the applications
and the paper's rule, recomputed: measured beside stated, and exit status 1 when one drifts beyond its stated
tolerance or its sentence is no longer in its file (a benchmark that prints measured numbers; tests/test_claims.py
runs it in the slow leg).

Each claim names its file and the sentence it checks; the line is found at run time and printed as file:line, so a
claim whose text was edited fails until this registry follows it. Timing tables that are a record of one run (the
engine's benchmarks/run.py and operators tables, the self-check overhead, the memory estimates) are reproduced by
their own commands, listed in docs/benchmarks.md, and are not re-timed here; the speed claims below are directions
and orders of magnitude (faster / slower, "tens to hundreds of times"), which survive a loaded machine.

    python benchmarks/claims.py [--only SUBSTRING] [--list] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _bench(name: str):
    """A module of benchmarks/ by path (the folder is not a package)."""
    key = f"_claims_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[key]


@dataclass
class Claim:
    name: str
    file: str
    text: str  # the stated words, as written (whitespace-normalised when searched; for notebooks, inside a JSON line)
    stated: str
    check: Callable[[], tuple[str, bool]]  # -> (measured, within the tolerance)
    tolerance: str

    def locate(self) -> int | None:
        """The line where the sentence starts, or None when the file no longer says it (the sentence may wrap; in a
        notebook it is searched in the cells' text)."""
        raw = (ROOT / self.file).read_text(encoding="utf-8")
        lines = raw.splitlines()
        if self.file.endswith(".ipynb"):
            import json

            text = "\n".join("".join(c["source"]) for c in json.loads(raw)["cells"])
        else:
            text = raw
        want = " ".join(self.text.split())
        if want not in " ".join(text.split()):
            return None
        words = want.split()
        for head in (" ".join(words[:k]) for k in (6, 3, 1)):
            for i, line in enumerate(lines, 1):
                if head in " ".join(line.split()):
                    return i
        return 1


# --------------------------------------------------------------------------------------------- measurements
def exact_vs_autograd() -> float:
    """Max over degrees of the normwise relative error of expand against nested float64 autograd, over three nets."""
    from torch import nn

    from hope_engine import expand
    from hope_engine.methods.baselines import nested_autograd
    from hope_engine.models import sine_mlp

    torch.manual_seed(0)
    tanh = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 1)).double().eval()
    conv = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 1)).double().eval()
    cases = [(sine_mlp([2, 64, 64, 64, 1], seed=0), torch.tensor([[0.3, -0.2]], dtype=torch.float64), 6, None),
             (tanh, torch.tensor([[0.1, 0.4]], dtype=torch.float64), 6, None),
             (conv, torch.rand(1, 1, 6, 6, dtype=torch.float64), 4, [7, 14])]
    worst = 0.0
    for model, x0, order, variables in cases:
        basis, ref = nested_autograd(model, x0, order, variables=variables)
        ref = ref.reshape(-1).double()  # (M, 1) for a batch of one point
        p = expand(model, x0, order, variables=variables)
        got = p.derivatives().reshape(-1).double()
        deg = basis.degrees
        for d in deg.unique().tolist():
            rows = deg == d
            scale = float(ref[rows].abs().max())
            worst = max(worst, float((got[rows] - ref[rows]).abs().max()) / (scale if scale > 0 else 1.0))
    return worst


def claim_autograd(limit: float) -> Callable[[], tuple[str, bool]]:
    def check():
        e = exact_vs_autograd()
        return f"max relative error {e:.1e} (3 nets, orders 4-6)", e <= limit
    return check


@cache
def paper_rule_errors(net: str) -> dict[int, tuple[float, float]]:
    """{K: (error of the K-th derivative, max error over degrees <= K)} of the paper's rule on a 1->1024 Sine net."""
    from hope_engine.models import reference_sine_mlp, sine_mlp

    model = reference_sine_mlp() if net == "reference" else sine_mlp([1] + [1024] * 5 + [1], seed=0)
    pr = _bench("paper_rule")
    out = {}
    for k in (2, 4, 6, 8, 10):
        rule, _ = pr.rule_errors(model, torch.zeros(1, 1, dtype=torch.float64), k)
        out[k] = (rule[k], max(rule[1:]))
    return out


def claim_paper_rule(net: str, column: int, stated: list[float], rel: float) -> Callable[[], tuple[str, bool]]:
    def check():
        got = [v[column] * 100 for _, v in sorted(paper_rule_errors(net).items())]
        ok = all(abs(g - s) <= rel * s + 0.05 for g, s in zip(got, stated))
        return " / ".join(f"{g:.2g}%" for g in got), ok
    return check


@cache
def discovery_ratios() -> dict[str, float]:
    disc = _bench("discovery")
    out = {}
    with contextlib.redirect_stdout(io.StringIO()):
        for name, expr in disc.FORMULAS.items():
            out[name] = disc.run_formula(name, expr, 0.01, 20, use_pykan=False)
    return out


def claim_discovery(limit: float) -> Callable[[], tuple[str, bool]]:
    def check():
        r = discovery_ratios()
        return ", ".join(f"{k} {v:.2f}" for k, v in r.items()), all(v <= limit for v in r.values())
    return check


@cache
def surrogate_validity(case: str, method: str, order: int, rtol: float, timing: bool = False):
    from hope_engine.analysis import surrogate

    net, domain, data, _, _ = _surrogate_net(case)
    center = None if data is None else data.mean(0)
    return surrogate(net, domain=domain, method=method, order=order, center=center, rtol=rtol, timing=timing).validity


@cache
def _surrogate_net(case: str):
    sb = _bench("surrogate")
    return {"sin": sb.sin_net, "disc": sb.discovery_net, "diabetes": sb.diabetes_net}[case]()


def claim_sin_surrogate() -> tuple[str, bool]:
    taylor = [surrogate_validity("sin", "taylor", k, 0.01).valid_fraction for k in (4, 8, 12, 16)]
    fit12 = surrogate_validity("sin", "fit", 12, 0.01).valid_fraction
    return (f"Taylor orders 4-16 valid on {', '.join(f'{v:.0%}' for v in taylor)}; fit order 12 on {fit12:.1%}",
            max(taylor) < 0.5 and fit12 >= 0.999)


def claim_disc_surrogate() -> tuple[str, bool]:
    fit4 = surrogate_validity("disc", "fit", 4, 0.001).valid_fraction
    taylor4 = surrogate_validity("disc", "taylor", 4, 0.001).valid_fraction
    return f"fit order 4 {fit4:.1%}, Taylor order 4 {taylor4:.1%} (0.1% of the range)", \
        fit4 >= 0.999 and abs(taylor4 - 0.75) <= 0.05


def claim_diabetes_slower() -> tuple[str, bool]:
    import copy

    from hope_engine.analysis.surrogate_fit import as_box, median_time

    net, domain, _, _, _ = _surrogate_net("diabetes")
    box = as_box(domain)
    gen = torch.Generator().manual_seed(0)
    x = (box.center + (torch.rand(100_000, box.n, generator=gen, dtype=torch.float64) * 2 - 1) * box.half).float()
    net32 = copy.deepcopy(net).float().eval()
    out, ok = [], True
    for k in (3, 4):
        from hope_engine.analysis import surrogate

        s = surrogate(net, domain=domain, method="taylor", order=k, timing=False).float()
        t_net, t_sur = median_time(net32, x, s, repeats=5)
        out.append(f"order {k}: {t_net / t_sur:.2f}x")
        ok &= t_sur > t_net
    valid = surrogate_validity("diabetes", "taylor", 2, 0.01).valid_fraction
    return ", ".join(out) + f" the network's speed; order 2 valid on {valid:.1%} of the box", ok and valid < 0.05


def claim_notebook04_speed() -> tuple[str, bool]:
    import copy

    from hope_engine.analysis.surrogate_fit import as_box, median_time

    net, domain, _, _, _ = _surrogate_net("disc")
    box = as_box(domain)
    gen = torch.Generator().manual_seed(0)
    x = (box.center + (torch.rand(100_000, 2, generator=gen, dtype=torch.float64) * 2 - 1) * box.half).float()
    net32 = copy.deepcopy(net).float().eval()
    from hope_engine.analysis import surrogate

    ups = []
    for k in (2, 6):
        s = surrogate(net, domain=domain, method="taylor", order=k, timing=False).float()
        t_net, t_sur = median_time(net32, x, s, repeats=5)
        ups.append(t_net / t_sur)
    return f"order 2 {ups[0]:.0f}x, order 6 {ups[1]:.0f}x", all(5 <= u <= 600 for u in ups)


# ------------------------------------------------------------------------------------------------ attribution
@cache
def digits():
    from hope_engine.analysis.digits_cnn import train_digits_cnn

    with contextlib.redirect_stdout(io.StringIO()):
        net = train_digits_cnn(epochs=8)
    idx = net.test[:100]
    return net.model, net.images[idx], net.labels[idx]


@cache
def _maps(method: str, count: int, order: int | None = None) -> torch.Tensor:
    """The maps of the first ``count`` held-out digits, each for its own label (as benchmarks/attribution.py)."""
    from hope_engine.analysis import attribution

    model, x, y = digits()
    kw = {} if order is None else dict(order=order)
    return torch.cat([attribution(model, x[i:i + 1], output=int(y[i]), method=method, **kw) for i in range(count)])


@cache
def taylor_vs_occlusion() -> dict[str, float]:
    n = 100
    occ = _maps("occlusion", n).reshape(n, -1)
    out = {}
    for k in (1, 4, 10):
        t = _maps("taylor", n, order=k).reshape(n, -1)
        out[f"occ{k}"] = float((t - occ).abs().max() / occ.abs().max())
    gi = _maps("grad_input", n).reshape(n, -1)
    t1 = _maps("taylor", n, order=1).reshape(n, -1)
    out["gi"] = float((t1 - gi).abs().max() / gi.abs().max())
    return out


def claim_taylor_is_occlusion() -> tuple[str, bool]:
    r = taylor_vs_occlusion()
    ok = r["gi"] < 1e-10 and 0.33 <= r["occ4"] / 1.9e-3 <= 3 and 0.33 <= r["occ10"] / 3.9e-6 <= 3
    return (f"order 1 vs gradient x input {r['gi']:.1e}; order 4 / 10 vs occlusion {r['occ4']:.1e} / {r['occ10']:.1e}"
            " of the largest value (100 images)"), ok


@cache
def deletion_aucs() -> dict[str, float]:
    from hope_engine.analysis import deletion_curve

    model, x, y = digits()
    out = {}
    for name, order in (("occlusion", None), ("taylor4", 4), ("integrated_gradients", None), ("deeplift", None),
                        ("grad_input", None)):
        method = "taylor" if name.startswith("taylor") else name
        m = _maps(method, len(x), order)
        out[name] = statistics.fmean(deletion_curve(model, x[i:i + 1], m[i:i + 1], output=int(y[i])).auc
                                     for i in range(len(x)))
    return out


def claim_deletion() -> tuple[str, bool]:
    a = deletion_aucs()
    ok = (abs(a["integrated_gradients"] + 2.7) <= 0.2 and abs(a["deeplift"] + 2.7) <= 0.2
          and abs(a["occlusion"] + 0.72) <= 0.1 and abs(a["taylor4"] - a["occlusion"]) <= 0.02)
    return (f"IG {a['integrated_gradients']:.2f}, DeepLift {a['deeplift']:.2f}, occlusion {a['occlusion']:.2f}, "
            f"Taylor order 4 {a['taylor4']:.2f}, gradient x input {a['grad_input']:.2f}"), ok


@cache
def decomposition_unexplained() -> dict[int, float]:
    from hope_engine.analysis import decompose

    model, x, y = digits()
    return {m: statistics.median(decompose(model, x[i:i + 1], output=int(y[i]), patch=4, order=2, segments=m)
                                 .unexplained for i in range(10)) for m in (4, 16)}


def claim_decompose(stated4: float, stated16: float) -> Callable[[], tuple[str, bool]]:
    def check():
        u = decomposition_unexplained()
        ok = abs(u[4] - stated4) <= 0.25 * stated4 and abs(u[16] - stated16) <= 0.5 * stated16 + 1e-3
        return f"4 segments {u[4]:.1%}, 16 segments {u[16]:.2%} (median over 10 images)", ok
    return check


@cache
def pair_errors() -> dict[str, float]:
    """Relative error |Taylor I - exact I| / |exact I| over the pairs of the interaction maps of 10 images: top 10
    pixels at order 3, and top 8 4x4 patches at order 3."""
    from hope_engine.analysis import interactions

    model, x, y = digits()
    out = {}
    for key, kw in (("pixels", dict(top=10, order=3)), ("patches", dict(top=8, order=3, patch=4))):
        rel = []
        for i in range(10):
            imap = interactions(model, x[i:i + 1], output=int(y[i]), **kw)
            rel += [abs(p.taylor - p.exact) / abs(p.exact) for p in imap.pairs if p.exact]
        rel_t = torch.tensor(rel)
        out[f"{key} median"] = float(rel_t.median())
        out[f"{key} p90"] = float(torch.quantile(rel_t, 0.9))
    return out


def claim_pairs(med_px: float, p90_px: float, med_patch: float) -> Callable[[], tuple[str, bool]]:
    def check():
        e = pair_errors()
        ok = (abs(e["pixels median"] - med_px) <= 0.3 * med_px + 0.005
              and abs(e["pixels p90"] - p90_px) <= 0.3 * p90_px + 0.01
              and abs(e["patches median"] - med_patch) <= 0.3 * med_patch)
        return (f"pixels: median {e['pixels median']:.1%}, 90th percentile {e['pixels p90']:.1%}; 4x4 patches: "
                f"median {e['patches median']:.0%}"), ok
    return check


# ----------------------------------------------------------------------------------------------------- certify
@cache
def enclosure_excess() -> dict[float, dict[str, tuple[float, float]]]:
    """{r: {case: (width / sampled - 1, IBP width / width)}} for benchmarks/certify.py's cases at r = 0.01, 0.1."""
    from hope_engine import certify
    from hope_engine.api.sampling import sampled_error

    cb = _bench("certify")
    out: dict[float, dict[str, tuple[float, float]]] = {0.01: {}, 0.1: {}}
    for name, model, x0, variables, has_ibp in cb.cases({"sine", "tanh", "conv", "attention", "trained"}):
        for r in (0.01, 0.1):
            cert = certify(model, x0, 4, radius=r, variables=variables)
            s = sampled_error(model, cert, points=10_000, steps=30)
            lo, hi = cert.bounds()
            width = float((hi - lo).max())
            ibp_ratio = math.nan
            if has_ibp:
                with torch.no_grad():
                    ilo, ihi = cb.ibp(model, *cb._box(x0, variables, r))
                ibp_ratio = float((ihi - ilo).max()) / width
            out[r][name] = (width / float((s.high - s.low).max()) - 1, ibp_ratio)
    return out


def claim_enclosures(max01: float, max1: float, ibp_min: float) -> Callable[[], tuple[str, bool]]:
    def check():
        e = enclosure_excess()
        worst = {r: max(v[0] for v in e[r].values()) for r in e}
        ibp = min(v[1] for r in e for v in e[r].values() if not math.isnan(v[1]))
        ok = (worst[0.01] <= max01 * 1.5 + 0.002 and abs(worst[0.1] - max1) <= 0.2 * max1
              and abs(ibp - ibp_min) <= 0.3 * ibp_min)
        per = "; ".join(f"r = {r}: " + ", ".join(f"{k} +{v[0]:.1%}" for k, v in e[r].items()) for r in e)
        return f"{per}; narrowest IBP ratio {ibp:.1f}x", ok
    return check


# ------------------------------------------------------------------------------------------------------ registry
CLAIMS = [
    Claim("exact = nested autograd (README)", "README.md", "float64 agrees with nested autograd to 1e-10",
          "<= 1e-10", claim_autograd(1e-10), "the stated bound"),
    Claim("exact = nested autograd (benchmarks)", "docs/benchmarks.md",
          "The exact method agrees with nested autograd to ~1e-15 relative in every case", "~1e-15",
          claim_autograd(1e-13), "<= 1e-13"),
    Claim("paper rule, reference init, degree-K error", "docs/benchmarks.md",
          "rule's error of the order-K derivative at x = 0 is 0.57% / 0.61% / 2.9% / 18% / 63%",
          "0.57 / 0.61 / 2.9 / 18 / 63 %", claim_paper_rule("reference", 0, [0.57, 0.61, 2.9, 18, 63], 0.05),
          "5% of each value"),
    Claim("paper rule, reference init, max over degrees", "docs/benchmarks.md",
          "(the largest over all degrees up to K: 0.57% / 0.94% / 9.0% / 41% / 78%)", "0.57 / 0.94 / 9.0 / 41 / 78 %",
          claim_paper_rule("reference", 1, [0.57, 0.94, 9.0, 41, 78], 0.05), "5% of each value"),
    Claim("paper rule, default init", "docs/benchmarks.md",
          "where the rule is far worse: 6.9% / 46% / 87% / 99% / 100%", "6.9 / 46 / 87 / 99 / 100 %",
          claim_paper_rule("default", 1, [6.9, 46, 87, 99, 100], 0.05), "5% of each value"),
    Claim("discover's default within 1.5x of the best candidate", "docs/benchmarks.md",
          "the default is within 1.5x of the best candidate's coefficient error on each of the three formulas",
          "<= 1.5 on each", claim_discovery(1.5), "the stated bound"),
    Claim("sin surrogate: Taylor under half, fit everywhere", "docs/benchmarks.md",
          "no Taylor order up to 16 is valid on half of [0, 1]; the least-squares fit of order 12 is valid on "
          "all of it",
          "< 50% / 100%", claim_sin_surrogate, "the stated bounds"),
    Claim("disc surrogate at 0.1%", "docs/benchmarks.md",
          "the fit of order 4 is within 0.1% of the range on the whole box, the Taylor polynomial of order 4 on "
          "75% of it",
          "100% / 75%", claim_disc_surrogate, "+-5 points"),
    Claim("diabetes surrogate slower", "docs/benchmarks.md",
          "the Taylor surrogate is slower than the network from order 3 on", "slower at orders 3, 4",
          claim_diabetes_slower, "direction"),
    Claim("notebook 04 speed-up", "notebooks/04_fast_inference.ipynb", "is 10 to 300 times faster than the network",
          "10x-300x, load-dependent", claim_notebook04_speed, "5x-600x (the stated range, halved and doubled)"),
    Claim("Taylor maps: order 1 = gradient x input, high order = occlusion", "docs/benchmarks.md",
          "orders 4 and 10 differ from occlusion by 1.9e-3 and 3.9e-6 of the largest value",
          "1.9e-3 / 3.9e-6", claim_taylor_is_occlusion, "within 3x"),
    Claim("deletion AUC: path methods ahead", "docs/benchmarks.md",
          "deletion AUC -2.7 (integrated gradients, DeepLift) against -0.72 (occlusion, Taylor order >= 4)",
          "-2.7 / -0.72", claim_deletion, "+-0.2 / +-0.1"),
    Claim("decompose unexplained share", "docs/benchmarks.md",
          "with 4 segments 16% is unexplained, with 16 segments 0.6%", "16% / 0.6%", claim_decompose(0.158, 0.006),
          "25% / 50% of the value"),
    Claim("Taylor pair terms vs exact pairs (notebook 05)", "notebooks/05_feature_selection.ipynb",
          "differs from the exact one by a median 5% (90th percentile 27%)", "5% / 27%; 4x4 patches 197%",
          claim_pairs(0.053, 0.27, 1.97), "30% of each value"),
    Claim("Taylor pair terms vs exact pairs (benchmarks)", "docs/benchmarks.md",
          "differ from the exact ones by a median 5% (90th percentile 27%)", "5% / 27%; 4x4 patches 197%",
          claim_pairs(0.053, 0.27, 1.97), "30% of each value"),
    Claim("certified enclosures vs sampled range and IBP", "docs/certify.md",
          "exceed the sampled range by at most 0.1 % at radius 0.01 and by up to 43 % at radius 0.1",
          "<= 0.1% / 43%; IBP >= 6x wider", claim_enclosures(0.001, 0.43, 5.8), "20-30% of each value"),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", help="run the claims whose name contains this (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the claims with file:line and exit")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    claims = [c for c in CLAIMS if not args.only or any(o.lower() in c.name.lower() for o in args.only)]
    failed = 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {len(claims)} claim(s)")
    for c in claims:
        line = c.locate()
        where = f"{c.file}:{line}" if line else f"{c.file}:?"
        if args.list:
            print(f"{where:<42} {c.name}: {c.text!r}")
            continue
        if line is None:
            failed += 1
            print(f"FAIL  {where:<42} {c.name}: the sentence {c.text!r} is not in the file (update the registry)")
            continue
        t0 = time.perf_counter()
        try:
            measured, ok = c.check()
        except Exception as e:  # a claim that cannot be measured fails, with the reason
            measured, ok = f"{type(e).__name__}: {e}", False
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'}  {where:<42} {c.name}: stated {c.stated}; measured {measured} "
              f"(tolerance: {c.tolerance}; {time.perf_counter() - t0:.0f} s)", flush=True)
    if not args.list:
        print(f"\n{len(claims) - failed} of {len(claims)} claims hold" + (f"; {failed} drifted" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
