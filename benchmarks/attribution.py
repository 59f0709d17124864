"""Attribution methods on a trained CNN: deletion / insertion AUC and time per image, and how much of f(x) - f(0) the
main effects + pairwise interactions explain (a benchmark that prints measured numbers, not a test).

Network: the LeNet-like CNN of ``hope_engine.analysis.digits_cnn`` trained (seeded, a few seconds) on scikit-learn's
8x8 digits upscaled to 28x28 (no download). Each of the first N held-out images is explained for the logit of its own
label, baseline 0 (black). Deletion AUC: lower is better; insertion AUC: higher is better. captum's
IntegratedGradients (50 Gauss-Legendre steps) and DeepLift run in the same process when captum is installed.

    python benchmarks/attribution.py [--images 100] [--orders 1,4,10] [--decompose 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from hope_engine.analysis import attribution, decompose, deletion_curve, insertion_curve, interactions, random_scores
from hope_engine.analysis.digits_cnn import train_digits_cnn


def by_class(x: torch.Tensor, y: torch.Tensor, fn) -> torch.Tensor:
    """fn(images of one class, class) for every class present, reassembled in the original order."""
    out = torch.empty_like(x)
    for c in y.unique().tolist():
        idx = (y == c).nonzero().reshape(-1)
        out[idx] = fn(x[idx], int(c)).to(x.dtype)
    return out


def explainer(model, method: str, **kwargs):
    """(images, class) -> maps of that class's logit ("taylor": one image per expansion, to bound memory)."""
    if method == "taylor":
        return lambda xc, c: torch.cat([attribution(model, xc[i:i + 1], output=c, method=method, **kwargs)
                                        for i in range(len(xc))])
    return lambda xc, c: attribution(model, xc, output=c, method=method, **kwargs)


def captum_methods(model) -> dict:
    try:
        from captum.attr import DeepLift, IntegratedGradients
    except ImportError as e:
        print(f"captum not installed ({e}): its rows are left out")
        return {}
    ig, dl = IntegratedGradients(model), DeepLift(model)

    def run(method):
        def fn(x, c):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if method is ig:
                    return ig.attribute(x, baselines=torch.zeros_like(x), target=c, n_steps=50).detach()
                return dl.attribute(x, baselines=torch.zeros_like(x), target=c).detach()
        return fn

    return {"captum IntegratedGradients": run(ig), "captum DeepLift": run(dl)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--orders", default="1,4,10", help="orders of the taylor method")
    ap.add_argument("--decompose", type=int, default=10, help="images for the main + pairwise decomposition")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    net = train_digits_cnn(epochs=args.epochs)
    model = net.model
    idx = net.test[: args.images]
    x, y = net.images[idx], net.labels[idx]
    print(f"LeNet-like CNN on 28x28 digits: trained in {time.perf_counter() - start:.1f} s, held-out accuracy "
          f"{net.accuracy:.1%}; {len(idx)} held-out images, each for its own label's logit, baseline 0; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")

    methods = {f"taylor, order {k}": explainer(model, "taylor", order=int(k)) for k in args.orders.split(",")}
    for m in ("occlusion", "grad_input", "integrated_gradients", "deeplift"):
        methods[m] = explainer(model, m)
    methods.update(captum_methods(model))
    methods["random"] = lambda xc, c: random_scores(xc, seed=c)

    print(f"\n{'method':<28} {'deletion AUC':>12} {'insertion AUC':>13} {'ms / image':>11}")
    maps = {}
    for name, fn in methods.items():
        by_class(x[:2], y[:2], fn)  # warm-up (tracing, compiled kernels)
        t0 = time.perf_counter()
        maps[name] = by_class(x, y, fn)
        ms = (time.perf_counter() - t0) / len(x) * 1e3
        dele = [deletion_curve(model, x[y == c], maps[name][y == c], output=c).auc * int((y == c).sum())
                for c in y.unique().tolist()]
        ins = [insertion_curve(model, x[y == c], maps[name][y == c], output=c).auc * int((y == c).sum())
               for c in y.unique().tolist()]
        print(f"{name:<28} {sum(dele) / len(x):>12.3f} {sum(ins) / len(x):>13.3f} {ms:>11.2f}")

    occ = maps["occlusion"].reshape(len(x), -1)
    for name in (n for n in maps if n.startswith("taylor")):
        same = sum(bool(torch.equal(torch.argsort(maps[name][i].reshape(-1), descending=True, stable=True),
                                    torch.argsort(occ[i], descending=True, stable=True))) for i in range(len(x)))
        print(f"{name}: same pixel ranking as occlusion on {same}/{len(x)} images; max |taylor - occlusion| / "
              f"max |occlusion| = {float((maps[name].reshape(len(x), -1) - occ).abs().max() / occ.abs().max()):.2e}")

    k = min(args.decompose, len(x))
    if k:
        print(f"\nmain effects + pairwise interactions of 4x4 patches (49 groups, order 2), first {k} images:")
        print(f"{'split':<40} {'explained (median)':>18} {'|unexplained| med':>18} {'s / image':>10}")
        for seg in (1, 4, 16):
            t0 = time.perf_counter()
            ds = [decompose(model, x[i:i + 1], output=int(y[i]), patch=4, order=2, segments=seg) for i in range(k)]
            sec = (time.perf_counter() - t0) / k
            pair_share = statistics.median(float(d.pairs.sum()) / d.total for d in ds)
            print(f"{'taylor, ' + str(seg) + ' segment(s)':<40} {statistics.median(d.explained for d in ds):>18.3f} "
                  f"{statistics.median(d.unexplained for d in ds):>18.3g} {sec:>10.2f}   (pairs' share "
                  f"{pair_share:+.3f})")
        with torch.no_grad():
            gaps = []
            for i in range(k):
                total = float(model(x[i:i + 1])[0, y[i]] - model(torch.zeros_like(x[i:i + 1]))[0, y[i]])
                gaps.append(abs(total - float(maps["integrated_gradients"][i].sum())) / abs(total))
        print(f"{'integrated gradients (50 steps), pixels':<40} {'(complete)':>18} {statistics.median(gaps):>18.3g}")
        t0 = time.perf_counter()
        agree = []
        for i in range(k):
            imap = interactions(model, x[i:i + 1], output=int(y[i]), top=10, order=3)
            ex = torch.tensor([p.exact for p in imap.pairs])
            agree.append(float(torch.corrcoef(torch.stack([torch.tensor([p.taylor for p in imap.pairs]), ex]))[0, 1]))
        print(f"\ninteraction maps (top 10 pixels, order 3): {(time.perf_counter() - t0) / k:.2f} s / image; "
              f"correlation of the Taylor pair terms with the exact removal interactions (4 forward passes per pair): "
              f"median {statistics.median(agree):.3f}, min {min(agree):.3f}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
