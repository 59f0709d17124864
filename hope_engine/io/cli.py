"""The ``hope`` command: expansions, function discovery and heat maps of saved models.

    hope expand MODEL --point 0,0 --order 8 [--terms pure] [--format latex|json|text]
    hope discover MODEL --center 0,0 --order 4 --radius 0.5 [--figure terms.png]
    hope heatmap MODEL --digit 0 --output 3 --method taylor,occlusion,integrated_gradients [--figure maps.png]
    hope heatmap MODEL --images DIR_OR_PNG [--index 0] [--size 28,28] --output 3
    hope heatmap MODEL --images DIR --all [--chunk-size 64] --output 3 [--format json]   (every image: mean AUCs)

MODEL is a TorchScript archive or an exported program (``torch.export.save``); a pickled module is read only with
--trust-pickle, because loading it executes code stored in the file. Errors print one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from hope_engine.errors import ExpansionError, describe
from hope_engine.io.loading import LoadedModel, ModelLoadError, load_model
from hope_engine.options import METHODS, TERMS


class CLIError(ValueError):
    """A bad command-line value."""


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise CLIError(f"{what} must be comma-separated numbers, got {text!r}") from None


def _ints(text: str, what: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise CLIError(f"{what} must be comma-separated integers, got {text!r}") from None


def _point(values: list[float], shape: str | None, model: LoadedModel) -> torch.Tensor:
    x = torch.tensor(values, dtype=model.dtype)
    if shape is None:
        return x.reshape(1, -1)
    dims = _ints(shape, "--shape")
    if int(np.prod(dims)) != x.numel():
        raise CLIError(f"--shape {shape} holds {int(np.prod(dims))} values but {x.numel()} were given")
    return x.reshape(dims)


def _output(text: str | None):
    if text is None:
        return None
    ints = _ints(text, "--output")
    return ints[0] if len(ints) == 1 else tuple(ints)


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [s.strip() for s in text.split(",")]


def _terms_json(p, top, threshold) -> list[dict]:
    return [dict(alpha=list(t.alpha), monomial=t.monomial, coefficient=t.coefficient, derivative=t.derivative)
            for t in p.terms(top=top, threshold=threshold)]


def cmd_expand(args) -> str:
    from hope_engine.api.expand import expand

    model = load_model(args.model, args.trust_pickle)
    x0 = _point(_floats(args.point, "--point"), args.shape, model)
    p = expand(model, x0, args.order, terms=args.terms, output=_output(args.output), names=_names(args.names),
               method=args.method)
    lead = 2 if p.batched else 1
    if int(np.prod(p.coefficients.shape[lead:])) != 1:
        raise CLIError(f"the model has {int(np.prod(p.coefficients.shape[lead:]))} outputs; pick one with --output")
    if args.format == "latex":
        return p.latex(threshold=args.threshold, top=args.top)
    if args.format == "json":
        return json.dumps(dict(order=p.order, terms_kind=p.terms_kind, method=p.method, names=p.names,
                               point=p.center_values.reshape(-1).tolist(), value=float(p.value.reshape(-1)[0]),
                               terms=_terms_json(p, args.top, args.threshold)), indent=1)
    lines = [repr(p)] + [f"{t.coefficient:+.10g}  {t.monomial}" for t in p.terms(top=args.top,
                                                                                  threshold=args.threshold)]
    return "\n".join(lines)


def cmd_discover(args) -> str:
    import sympy as sp

    from hope_engine.analysis import discover

    model = load_model(args.model, args.trust_pickle)
    center = _point(_floats(args.center, "--center"), args.shape, model)
    d = discover(model, center, args.order, radius=args.radius, points=args.points, output=_output(args.output),
                 names=_names(args.names), terms=args.terms, seed=args.seed, method=args.method)
    formula = d.formula(top=args.top, threshold=args.threshold, digits=args.digits)
    if args.figure:
        d.figure(top=args.top or 12, threshold=args.threshold).savefig(args.figure)
    if args.format == "latex":
        return sp.latex(formula)
    table = d.table(top=args.top, threshold=args.threshold)
    comparison = d.compare() if args.compare else None
    if args.format == "json":
        extra = {} if comparison is None else dict(r2_taylor=comparison.r2_taylor, r2_fit=comparison.r2_fit,
                                                   better=comparison.better)
        return json.dumps(dict(formula=str(formula), method=d.method, heldout_r2=d.heldout_r2, terms=table.to_dicts(),
                               **extra), indent=1)
    return f"{table}\n\nformula: {formula}" + ("" if comparison is None else f"\n\n{comparison}")


def _index(args) -> int | None:
    """--index as an image index, or None for every image (--index all, or --all)."""
    text = str(args.index).strip().lower()
    if args.all or text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise CLIError(f"--index must be an integer or 'all', got {args.index!r}") from None


def _heatmap_input(args, model: LoadedModel) -> tuple[torch.Tensor, str]:
    sources = [s for s in (args.input, args.digit, args.mnist, args.images) if s is not None]
    if len(sources) != 1:
        raise CLIError("give exactly one of --input FILE, --digit INDEX, --mnist DIR, --images PATH")
    index = _index(args)
    if index is None and args.images is None and args.mnist is None:
        raise CLIError("--all / --index all need --images PATH or --mnist DIR")
    if args.input is not None:
        path = Path(args.input)
        if path.suffix == ".npy":
            x = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            x = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(x, torch.Tensor):
                raise CLIError(f"{path} holds a {type(x).__name__}, not a tensor")
        label = path.name
    elif args.digit is not None:
        from hope_engine.analysis import load_digits

        images, labels = load_digits()
        if not 0 <= args.digit < len(images):
            raise CLIError(f"--digit must be in [0, {len(images)}), got {args.digit}")
        x, label = images[args.digit: args.digit + 1], f"digit #{args.digit} (label {int(labels[args.digit])})"
    else:
        from hope_engine.analysis import load_images, load_mnist

        if args.images is not None:
            size = None if args.size is None else tuple(_ints(args.size, "--size"))
            if size is not None and len(size) != 2:
                raise CLIError(f"--size must be H,W, got {args.size!r}")
            images, labels = load_images(args.images, args.split, size)
            name = Path(args.images).name
        else:
            images, labels = load_mnist(args.mnist, args.split)
            name = f"MNIST {args.split}"
        if index is None:
            x, label = images, f"{name}, all {len(images)} images"
        else:
            if not 0 <= index < len(images):
                raise CLIError(f"--index must be in [0, {len(images)}), got {index}")
            x = images[index: index + 1]
            label = f"{name} #{index} (label {int(labels[index])})"
    x = x.to(model.dtype)
    if args.shape is not None:
        if index is None:
            dims = _ints(args.shape, "--shape")
            if int(np.prod(dims[1:])) != x[0].numel():
                raise CLIError(f"--shape {args.shape}: one image has {x[0].numel()} values")
            x = x.reshape(x.shape[0], *dims[1:])
        else:
            x = _point(x.reshape(-1).tolist(), args.shape, model)
    return x, label


def _methods(args) -> list[str]:
    return [m.strip() for m in args.method.split(",") if m.strip()]


def cmd_heatmap(args) -> str:
    from hope_engine.analysis import attribution, deletion_curve, deletion_figure, heatmap_figure, insertion_curve

    model = load_model(args.model, args.trust_pickle)
    x, label = _heatmap_input(args, model)
    if _index(args) is None:
        return _heatmap_all(args, model, x, label)
    output = _output(args.output)
    methods = _methods(args)
    dx = None if args.dx is None else float(args.dx)
    maps, curves, inserted = {}, [], {}
    for m in methods:
        kwargs = {"steps": args.ig_steps} if m == "integrated_gradients" else {}
        maps[m] = attribution(model, x, output=output, method=m, order=args.order, dx=dx, **kwargs)
        curves.append(deletion_curve(model, x, maps[m], output=output, steps=args.steps, label=m))
        inserted[m] = insertion_curve(model, x, maps[m], output=output, steps=args.steps, label=m).auc
    if args.figure:
        heatmap_figure(x, maps, titles=[label]).savefig(args.figure)
    if args.deletion_figure:
        deletion_figure(curves).savefig(args.deletion_figure)
    if args.format == "json":
        return json.dumps(dict(input=label, shape=list(x.shape), deletion_auc={c.label: c.auc for c in curves},
                               insertion_auc=inserted, maps={k: v.reshape(-1).tolist() for k, v in maps.items()}),
                          indent=1)
    lines = [f"{label}, input shape {tuple(x.shape)}; deletion AUC: lower = better, insertion AUC: higher = better"]
    for c, (m, a) in zip(curves, maps.items()):
        top = torch.argsort(a.reshape(-1), descending=True)[:5].tolist()
        lines.append(f"{m:>11}: AUC {c.auc:.5g}   insertion AUC {inserted[m]:.5g}   top elements {top}")
    return "\n".join(lines)


def _progress_bar(total: int, enabled: bool):
    """A tqdm bar over images on stderr, or None (disabled, or tqdm not installed)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="heatmap", unit="image", file=sys.stderr)


def _heatmap_all(args, model: LoadedModel, x: torch.Tensor, label: str) -> str:
    """Every image: maps chunk by chunk (--chunk-size images per chunk; the taylor expansions via expand_many), the
    deletion and insertion AUC per image, and their means per method; the figures show the first 8 images' maps and
    the mean curves."""
    from hope_engine.analysis import (
        DeletionCurve,
        attribution,
        deletion_curve,
        deletion_figure,
        heatmap_figure,
        insertion_curve,
    )

    if args.chunk_size < 1:
        raise CLIError(f"--chunk-size must be a positive integer, got {args.chunk_size}")
    output = _output(args.output)
    methods = _methods(args)
    dx = None if args.dx is None else float(args.dx)
    deleted: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    inserted: dict[str, list[torch.Tensor]] = {m: [] for m in methods}
    curve_sums: dict[str, torch.Tensor] = {}
    first_maps: dict[str, torch.Tensor] = {}
    fractions = None
    bar = _progress_bar(x.shape[0], not args.no_progress)
    try:
        for xc in x.split(args.chunk_size):
            for m in methods:
                kwargs = {"steps": args.ig_steps} if m == "integrated_gradients" else {}
                a = attribution(model, xc, output=output, method=m, order=args.order, dx=dx,
                                chunk_size=args.chunk_size, progress=False, **kwargs)
                if m not in first_maps or first_maps[m].shape[0] < 8:
                    first_maps[m] = a[:8] if m not in first_maps else torch.cat([first_maps[m], a])[:8]
                c = deletion_curve(model, xc, a, output=output, steps=args.steps, label=m)
                i = insertion_curve(model, xc, a, output=output, steps=args.steps, label=m)
                fractions = c.fractions
                deleted[m].append(torch.trapezoid(c.values, c.fractions, dim=1))
                inserted[m].append(torch.trapezoid(i.values, i.fractions, dim=1))
                curve_sums[m] = curve_sums.get(m, 0) + c.values.sum(0)
            if bar is not None:
                bar.update(xc.shape[0])
    finally:
        if bar is not None:
            bar.close()
    per_image = {m: torch.cat(v).tolist() for m, v in deleted.items()}
    per_image_ins = {m: torch.cat(v).tolist() for m, v in inserted.items()}
    mean_del = {m: float(np.mean(v)) for m, v in per_image.items()}
    mean_ins = {m: float(np.mean(v)) for m, v in per_image_ins.items()}
    if args.figure:
        heatmap_figure(x[:8], first_maps, titles=[f"#{k}" for k in range(min(8, x.shape[0]))]).savefig(args.figure)
    if args.deletion_figure:
        mean_curves = [DeletionCurve(fractions, (curve_sums[m] / x.shape[0])[None], mean_del[m], m, "deletion")
                       for m in methods]
        deletion_figure(mean_curves).savefig(args.deletion_figure)
    if args.format == "json":
        return json.dumps(dict(input=label, images=x.shape[0], shape=list(x.shape[1:]), deletion_auc=mean_del,
                               insertion_auc=mean_ins, deletion_auc_per_image=per_image,
                               insertion_auc_per_image=per_image_ins), indent=1)
    lines = [f"{label}, image shape {tuple(x.shape[1:])}; mean over the {x.shape[0]} images of the deletion AUC "
             "(lower = better) and the insertion AUC (higher = better)"]
    for m in methods:
        lines.append(f"{m:>11}: mean AUC {mean_del[m]:.5g}   mean insertion AUC {mean_ins[m]:.5g}")
    return "\n".join(lines)


def cmd_certify(args) -> str:
    from hope_engine.api.certify import certify

    model = load_model(args.model, args.trust_pickle)
    x0 = _point(_floats(args.point, "--point"), args.shape, model)
    radius = _floats(args.radius, "--radius")
    cert = certify(model, x0, args.order, radius=radius[0] if len(radius) == 1 else radius,
                   output=_output(args.output), names=_names(args.names))
    lower, upper = cert.bounds()
    rho = cert.certified_radius(args.tol) if args.tol is not None else None
    if args.format == "json":
        return json.dumps(dict(order=cert.order, radius=cert.radius.tolist(), remainder=cert.remainder.tolist(),
                               lower=lower.tolist(), upper=upper.tolist(), crossings=cert.crossings,
                               certified_radius=None if rho is None else rho.tolist()), indent=1)
    lines = [repr(cert.polynomial), f"box: |x_i - x0_i| <= {', '.join(f'{v:.6g}' for v in cert.radius.tolist())}",
             f"remainder (sup |f - P| over the box, certified): {_numbers(cert.remainder)}",
             f"bounds of f over the box: [{_numbers(lower)}] .. [{_numbers(upper)}]"]
    if cert.crossings:
        lines.append(f"the box crosses kinks: {cert.crossings}")
    if rho is not None:
        lines.append(f"largest radius with remainder <= {args.tol:g}: {_numbers(rho)}")
    return "\n".join(lines)


def _numbers(t: torch.Tensor) -> str:
    return ", ".join(f"{v:.6g}" for v in t.reshape(-1).tolist())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hope", description="Exact Taylor expansions of saved PyTorch models.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("model", help="TorchScript archive or torch.export program (.pt/.pt2)")
        p.add_argument("--shape", help="model input shape for the point, e.g. 1,1,8,8 (default 1,n)")
        p.add_argument("--output", help="output element to explain (index, or comma-separated index tuple)")
        p.add_argument("--trust-pickle", action="store_true",
                       help="also load fully pickled modules: this EXECUTES CODE stored in the file")

    e = sub.add_parser("expand", help="Taylor polynomial at a point")
    common(e)
    e.add_argument("--point", required=True, help="comma-separated values (use --point=-1,2 for negatives)")
    e.add_argument("--order", type=int, default=6)
    e.add_argument("--terms", choices=TERMS, default="total")
    e.add_argument("--method", choices=METHODS, default="exact")
    e.add_argument("--names", help="comma-separated variable names")
    e.add_argument("--top", type=int)
    e.add_argument("--threshold", type=float, default=0.0)
    e.add_argument("--format", choices=("text", "latex", "json"), default="text")
    e.set_defaults(run=cmd_expand)

    d = sub.add_parser("discover", help="formula from expansions at many points around a centre")
    common(d)
    d.add_argument("--center", required=True, help="comma-separated values (use --center=-1,2 for negatives)")
    d.add_argument("--order", type=int, default=4)
    d.add_argument("--radius", type=float, default=0.5)
    d.add_argument("--points", type=int, default=64)
    d.add_argument("--terms", choices=TERMS, default="total")
    d.add_argument("--names")
    d.add_argument("--top", type=int)
    d.add_argument("--threshold", type=float, default=0.0)
    d.add_argument("--digits", type=int, default=4)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--method", choices=("taylor", "fit"), default="taylor",
                   help="taylor: mean of re-centred expansions; fit: least squares on network samples")
    d.add_argument("--compare", action="store_true", help="also run the other method and compare held-out R^2")
    d.add_argument("--figure", help="save the per-term box plot here (.png, .pdf, .svg)")
    d.add_argument("--format", choices=("text", "latex", "json"), default="text")
    d.set_defaults(run=cmd_discover)

    h = sub.add_parser("heatmap", help="per-element attribution of one output")
    common(h)
    h.add_argument("--input", help=".npy or .pt tensor file")
    h.add_argument("--digit", type=int, help="index into scikit-learn's bundled 8x8 digits")
    h.add_argument("--mnist", help="directory with the MNIST IDX files")
    h.add_argument("--images", help="MNIST IDX directory, folder of PNG files (<label>/*.png or *.png), or one .png")
    h.add_argument("--size", help="resize --images to H,W (e.g. 28,28)")
    h.add_argument("--index", default="0", help="image index for --mnist / --images, or 'all' (= --all)")
    h.add_argument("--all", action="store_true",
                   help="every image of --mnist / --images: chunked, a progress bar on stderr, mean AUCs per method")
    h.add_argument("--chunk-size", type=int, default=64, help="images per chunk with --all")
    h.add_argument("--no-progress", action="store_true", help="no progress bar with --all")
    h.add_argument("--split", choices=("train", "test"), default="test")
    h.add_argument("--method", default="taylor,occlusion,grad_input",
                   help="comma-separated: taylor, occlusion, grad_input, integrated_gradients, deeplift")
    h.add_argument("--order", type=int, default=4, help="order of the taylor method")
    h.add_argument("--ig-steps", type=int, default=50, help="quadrature nodes for integrated_gradients")
    h.add_argument("--dx", type=float, help="displacement per element (default: the element's value)")
    h.add_argument("--steps", type=int, default=20, help="deletion-curve steps")
    h.add_argument("--figure", help="save the heat-map grid here")
    h.add_argument("--deletion-figure", help="save the deletion curves here")
    h.add_argument("--format", choices=("text", "json"), default="text")
    h.set_defaults(run=cmd_heatmap)

    c = sub.add_parser("certify", help="Taylor polynomial with a certified error bound over a box")
    common(c)
    c.add_argument("--point", required=True, help="comma-separated values (use --point=-1,2 for negatives)")
    c.add_argument("--radius", required=True, help="box half-width: one number, or one per variable")
    c.add_argument("--order", type=int, default=4)
    c.add_argument("--names", help="comma-separated variable names")
    c.add_argument("--tol", type=float, help="also report the largest radius whose remainder is <= tol")
    c.add_argument("--format", choices=("text", "json"), default="text")
    c.set_defaults(run=cmd_certify)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 1 error, 2 bad usage)."""
    args = build_parser().parse_args(argv)
    logging.getLogger("torch._subclasses.fake_tensor").setLevel(logging.CRITICAL)  # failed traces: our one line
    try:
        print(args.run(args))
    except (CLIError, ModelLoadError, ExpansionError, ValueError, KeyError, IndexError, OSError, RuntimeError,
            ImportError) as e:
        print(f"hope: error: {describe(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
