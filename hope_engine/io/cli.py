"""The ``hope`` command: expansions, function discovery and heat maps of saved models.

    hope expand MODEL --point 0,0 --order 8 [--terms pure] [--format latex|json|text]
    hope discover MODEL --center 0,0 --order 4 --radius 0.5 [--figure terms.png]
    hope heatmap MODEL --digit 0 --output 3 --method taylor,occlusion,integrated_gradients [--figure maps.png]
    hope heatmap MODEL --images DIR_OR_PNG [--index 0] [--size 28,28] --output 3
    hope heatmap MODEL --images DIR --all [--chunk-size 64] --output 3 [--format json]   (every image: mean AUCs)

MODEL is a TorchScript archive or an exported program (``torch.export.save``); a pickled module is read only with
--trust-pickle, because loading it executes code stored in the file. Errors print one line and exit with status 1.
Negative values work as written (``--point -0.5,1``). ``--verbose`` prints where the time went, on stderr.

This module imports neither torch nor numpy at import time (each command imports them when it runs), so
``hope --help`` and ``hope <command> --help`` start in a fraction of torch's import time.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from hope_engine.errors import ExpansionError, ModelLoadError, describe
from hope_engine.options import METHODS, TERMS

if TYPE_CHECKING:
    import torch

    from hope_engine.io.loading import LoadedModel


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
    import torch

    x = torch.tensor(values, dtype=model.dtype)
    if shape is None:
        return x.reshape(1, -1)
    dims = _ints(shape, "--shape")
    if math.prod(dims) != x.numel():
        raise CLIError(f"--shape {shape} holds {math.prod(dims)} values but {x.numel()} were given")
    return x.reshape(dims)


def _element_names(x: torch.Tensor, names: str | None) -> list[str] | None:
    """--names, or for an image-shaped point (a batch axis and at least two more) the pixel names ``p[r][c]``
    (``p[k][r][c]`` with several channels), as the panel names them; None: the engine's x1, x2, ..."""
    from hope_engine.algebra.polynomial import pixel_names

    if names is not None:
        return _names(names)
    return pixel_names(tuple(x.shape[1:])) if x.dim() >= 3 else None


class _Clock:
    """Wall time per step of one command (``--verbose``): ``step(name)`` books the time since the last step."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.steps: dict[str, float] = {}

    def step(self, name: str) -> None:
        now = time.perf_counter()
        self.steps[name] = self.steps.get(name, 0.0) + now - self.last
        self.last = now

    def report(self) -> str:
        parts = ", ".join(f"{k} {v:.3f}" for k, v in self.steps.items())
        return f"hope: time (s): {parts}; total {time.perf_counter() - self.start:.3f} (after Python's own start)"


def _load(args) -> LoadedModel:
    """The model file, with import and load timed apart; a pickle whose class cannot be found here (defined in a
    notebook or a script: ``__main__``) gets the way out, ``torch.export``."""
    import torch  # noqa: F401 - imported here so that --verbose books it as "import torch"

    args.clock.step("import torch")
    from hope_engine.io.loading import load_model

    args.clock.step("import hope")
    try:
        model = load_model(args.model, args.trust_pickle)
    except ModelLoadError as e:
        raise ModelLoadError(_pickle_hint(args.model, e)) from e.__cause__
    args.clock.step("load")
    return model


_EXPORT_HINT = ('save it with torch.export where the class is defined, e.g. in the notebook: '
                'torch.export.save(torch.export.export(model, (x,)), "model.pt2") with x an example input, and run '
                'hope on model.pt2 (TorchScript also works: torch.jit.trace(model, x).save("model.pt"))')


def _pickle_hint(path, e: ModelLoadError) -> str:
    """The message of a load error; for a pickle whose class lives in ``__main__`` or in a module that cannot be
    imported here, why and the ``torch.export`` way out."""
    cause = str(e.__cause__ or "")
    found = re.search(r"Can't get attribute '([^']+)' on <module '([\w.]*\.)?__main__'", cause) or re.search(
        r"GLOBAL __main__\.([\w.]+)", cause)
    if found:
        return (f"{path} holds a pickled model of class {found.group(1)}, defined in a notebook or a script "
                "(__main__): the file does not hold the class's code, so it cannot be loaded anywhere else, with or "
                f"without --trust-pickle. {_EXPORT_HINT[0].upper()}{_EXPORT_HINT[1:]}")
    if isinstance(e.__cause__, (AttributeError, ModuleNotFoundError)):
        return (f"{path} holds a pickled model whose class cannot be found here ({describe(e.__cause__)}): run hope "
                f"where the class's module imports (PYTHONPATH), or {_EXPORT_HINT}")
    return str(e)


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


def _trace(model: LoadedModel, x0: torch.Tensor, output) -> None:
    """Trace the model at x0 into the engine's graph cache (``expand`` then finds it there), so that --verbose can
    tell tracing from expanding."""
    from hope_engine.capture.arguments import prepare_call, trace_model

    call = prepare_call(model, x0, output=output)
    trace_model(call.model, call.x0, call.stamp)


def cmd_expand(args) -> str:
    model = _load(args)
    from hope_engine.api.expand import expand

    args.clock.step("import hope")
    x0 = _point(_floats(args.point, "--point"), args.shape, model)
    output = _output(args.output)
    if args.method == "exact":
        _trace(model, x0, output)
        args.clock.step("trace")
    p = expand(model, x0, args.order, terms=args.terms, output=output, names=_element_names(x0, args.names),
               method=args.method)
    args.clock.step("expand")
    lead = 2 if p.batched else 1
    if math.prod(p.coefficients.shape[lead:]) != 1:
        raise CLIError(f"the model has {math.prod(p.coefficients.shape[lead:])} outputs; pick one with --output")
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
    model = _load(args)
    import sympy as sp

    from hope_engine.analysis import discover

    args.clock.step("import hope")
    center = _point(_floats(args.center, "--center"), args.shape, model)
    d = discover(model, center, args.order, radius=args.radius, points=args.points, output=_output(args.output),
                 names=_element_names(center, args.names), terms=args.terms, seed=args.seed, method=args.method)
    args.clock.step("discover")
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
        candidates = [dict(method=c.method, heldout_mse=c.heldout, r2=c.r2, chosen=c.chosen,
                           coefficients=c.coefficients.tolist()) for c in d.candidates]
        return json.dumps(dict(formula=str(formula), method=d.method, chosen=d.chosen, heldout_r2=d.heldout_r2,
                               terms=table.to_dicts(), candidates=candidates, **extra), indent=1)
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
    import numpy as np
    import torch

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
            if math.prod(dims[1:]) != x[0].numel():
                raise CLIError(f"--shape {args.shape}: one image has {x[0].numel()} values")
            x = x.reshape(x.shape[0], *dims[1:])
        else:
            x = _point(x.reshape(-1).tolist(), args.shape, model)
    return x, label


def _methods(args) -> list[str]:
    return [m.strip() for m in args.method.split(",") if m.strip()]


def cmd_heatmap(args) -> str:
    model = _load(args)
    import torch

    from hope_engine.analysis import attribution, deletion_curve, deletion_figure, heatmap_figure, insertion_curve

    args.clock.step("import hope")
    x, label = _heatmap_input(args, model)
    args.clock.step("read input")
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
    args.clock.step("attribution")
    if args.figure:
        heatmap_figure(x, maps, titles=[label]).savefig(args.figure)
    if args.deletion_figure:
        deletion_figure(curves).savefig(args.deletion_figure)
    args.clock.step("figures")
    names = _element_names(x, None) or [f"x{i + 1}" for i in range(x[0].numel())]
    if args.format == "json":
        return json.dumps(dict(input=label, shape=list(x.shape), deletion_auc={c.label: c.auc for c in curves},
                               insertion_auc=inserted, names=names,
                               maps={k: v.reshape(-1).tolist() for k, v in maps.items()}), indent=1)
    lines = [f"{label}, input shape {tuple(x.shape)}; deletion AUC: lower = better, insertion AUC: higher = better; "
             "the five elements with the largest attribution"]
    for c, (m, a) in zip(curves, maps.items()):
        flat = a.reshape(-1)
        top = ", ".join(f"{names[i]} {_number(float(flat[i]), 4)}"
                        for i in torch.argsort(flat, descending=True)[:5].tolist())
        lines.append(f"{m:>11}: AUC {_number(c.auc, 4)}   insertion AUC {_number(inserted[m], 4)}   top: {top}")
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
    import numpy as np
    import torch

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
    args.clock.step("attribution")
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
        lines.append(f"{m:>11}: mean AUC {_number(mean_del[m], 4)}   mean insertion AUC {_number(mean_ins[m], 4)}")
    return "\n".join(lines)


def cmd_certify(args) -> str:
    model = _load(args)
    from hope_engine.api.certify import certify

    args.clock.step("import hope")
    x0 = _point(_floats(args.point, "--point"), args.shape, model)
    radius = _floats(args.radius, "--radius")
    cert = certify(model, x0, args.order, radius=radius[0] if len(radius) == 1 else radius,
                   output=_output(args.output), names=_element_names(x0, args.names))
    args.clock.step("certify")
    lower, upper = cert.bounds()
    report = cert.radius_report(args.tol) if args.tol is not None else None
    args.clock.step("radius")
    if args.format == "json":
        extra = {} if report is None else dict(
            tol=report.tol, certified_radius=report.radius.tolist(), remainder_floor=report.floor.tolist(),
            radius_reasons=list(report.reasons), radius_fixes=[_cli_fix(f) for f in report.fixes])
        return json.dumps(dict(order=cert.order, point=cert.polynomial.center_values.reshape(-1).tolist(),
                               radius=cert.radius.tolist(), remainder=cert.remainder.tolist(),
                               lower=lower.tolist(), upper=upper.tolist(), crossings=cert.crossings, **extra),
                          indent=1)
    bounds = "; ".join(f"{_number(lo)} .. {_number(hi)}" for lo, hi in zip(lower.reshape(-1).tolist(),
                                                                         upper.reshape(-1).tolist()))
    lines = [repr(cert.polynomial), f"point x0: {_numbers(cert.polynomial.center_values)}",
             f"box: |x_i - x0_i| <= {_numbers(cert.radius)}",
             f"remainder R (sup |f - P| over the box, certified): {_numbers(cert.remainder)}",
             f"f over the box: {bounds}"]
    if cert.crossings:
        lines.append(f"the box crosses kinks: {cert.crossings}")
    if report is not None:
        lines += _radius_lines(report, cert.radius)
    return "\n".join(lines)


def _radius_lines(report, box: torch.Tensor) -> list[str]:
    """The largest radius rho with R <= tol per output element, and why it is 0 where it is, with the fix."""
    scaled = "" if bool((box == box.max()).all()) else " (the box scaled like --radius, its largest half-width rho)"
    lines = []
    rhos = report.radius.reshape(-1).tolist()
    for k, rho in enumerate(rhos):
        which = f"output {k}: " if len(rhos) > 1 else ""
        line = f"{which}largest radius with R <= {report.tol:g}: |x_i - x0_i| <= {_number(rho)}{scaled}"
        if rho == 0:
            line += f". It is 0: {report.reasons[k]}. Fix: {_cli_fix(report.fixes[k])}"
        lines.append(line)
    return lines


def _cli_fix(fix: str) -> str:
    """The engine's fix, with what ``model.double()`` means for a saved file."""
    if "double()" in fix:
        fix += " (for a saved model: export it again after model.double(), with a float64 example input)"
    return fix


def _number(v: float, digits: int = 6) -> str:
    """A plain number, always with ``digits`` significant digits: -0.162600, 1.23457e-05, 12.0000 (0 as 0)."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    return f"{v:#.{digits}g}".rstrip(".")


def _numbers(t: torch.Tensor) -> str:
    return ", ".join(_number(v) for v in t.reshape(-1).tolist())


def option_help(action: argparse.Action) -> str:
    """The help text ``hope <command> --help`` shows for an option: its own text, then its default, "(default: X)",
    or "(default: off)" for a flag, unless the text states the default itself or the option is required."""
    text = action.help or ""
    if not action.option_strings or action.required or action.default is argparse.SUPPRESS or "default" in text:
        return text
    if action.nargs == 0:
        return f"{text} (default: off)"
    return text if action.default is None else f"{text} (default: %(default)s)"


class _HelpFormatter(argparse.HelpFormatter):
    """Help with every option's default shown (``option_help``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return option_help(action)


_FORMATS = "text: the polynomial's terms, one a line; latex: one LaTeX formula; json: every number, for scripts"


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-parser per command. Builds without torch (``hope --help`` does not import it)."""
    parser = argparse.ArgumentParser(prog="hope", formatter_class=_HelpFormatter,
                                     description="Exact Taylor expansions of saved PyTorch models.",
                                     epilog="hope <command> --help lists a command's options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{expand,discover,heatmap,certify}")

    def add(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, formatter_class=_HelpFormatter)
        p.add_argument("model", help="TorchScript archive (torch.jit.save) or exported program "
                                     "(torch.export.save), e.g. model.pt2")
        p.add_argument("--shape", metavar="D1,D2,...",
                       help="shape of the point as the model takes it, e.g. 1,1,8,8 for one 8x8 image; an "
                            "image-shaped point names its variables p[row][col] (default: 1,n, one point of n values)")
        p.add_argument("--output", metavar="INDEX",
                       help="output element to explain: a flat index, or an index tuple such as 0,3 (default: the "
                            "model's only output; a model with several needs it)")
        p.add_argument("--trust-pickle", action="store_true",
                       help="also load fully pickled modules (torch.save(model)): this EXECUTES CODE stored in the "
                            "file")
        p.add_argument("--verbose", action="store_true",
                       help="print on stderr the seconds each step took: import torch, import hope, load, trace, "
                            "expand (or the command's own work), print")
        return p

    e = add("expand", "Taylor polynomial of the model at a point")
    e.add_argument("--point", required=True, metavar="X1,X2,...",
                   help="reference point, comma-separated; negative values are fine (--point -0.5,1)")
    e.add_argument("--order", type=int, default=6, help="highest total degree of the terms")
    e.add_argument("--terms", choices=TERMS, default="total",
                   help="total: every mixed partial; pure: the unmixed ones only")
    e.add_argument("--method", choices=METHODS, default="exact",
                   help="exact: the exact expansion; hope: the paper's unmixed rule (exact for one hidden layer only)")
    e.add_argument("--names", metavar="X,Y,...",
                   help="variable names, comma-separated (default: x1, x2, ...; p[r][c] for an image-shaped --shape)")
    e.add_argument("--top", type=int, metavar="K", help="show only the K largest terms (default: every term)")
    e.add_argument("--threshold", type=float, default=0.0, help="hide terms whose |coefficient| is below this")
    e.add_argument("--format", choices=("text", "latex", "json"), default="text", help=_FORMATS)
    e.set_defaults(run=cmd_expand)

    d = add("discover", "a formula from expansions at many points around a centre")
    d.add_argument("--center", required=True, metavar="X1,X2,...",
                   help="centre of the sampled region, comma-separated; negative values are fine (--center -1,2)")
    d.add_argument("--order", type=int, default=4, help="highest total degree of the formula's terms")
    d.add_argument("--radius", type=float, default=0.5, help="half-width of the sampled box around the centre")
    d.add_argument("--points", type=int, default=64, help="points sampled in the box")
    d.add_argument("--terms", choices=TERMS, default="total",
                   help="total: every mixed partial; pure: the unmixed ones only")
    d.add_argument("--names", metavar="X,Y,...",
                   help="variable names, comma-separated (default: x1, x2, ...; p[r][c] for an image-shaped --shape)")
    d.add_argument("--top", type=int, metavar="K", help="keep only the K largest terms (default: every term)")
    d.add_argument("--threshold", type=float, default=0.0, help="drop terms whose |mean coefficient| is below this")
    d.add_argument("--digits", type=int, default=4, help="significant digits of the formula's coefficients")
    d.add_argument("--seed", type=int, default=0, help="seed of the sampled points")
    d.add_argument("--method", choices=("auto", "local", "taylor", "fit", "constrained"), default="auto",
                   help="auto: every estimate scored on held-out network samples, the best kept (the table prints "
                        "them all); local: the expansion at the centre; taylor: mean of re-centred expansions; fit: "
                        "least squares on network samples; constrained: fit with the lower degrees held at the "
                        "network's derivatives")
    d.add_argument("--compare", action="store_true", help="also run the other method and compare held-out R^2")
    d.add_argument("--figure", metavar="FILE",
                   help="save the per-term box plot here, .png, .pdf or .svg (default: no figure)")
    d.add_argument("--format", choices=("text", "latex", "json"), default="text",
                   help="text: a table of the terms and the formula; latex: the formula; json: every number")
    d.set_defaults(run=cmd_discover)

    h = add("heatmap", "per-element attribution of one output")
    h.add_argument("--input", metavar="FILE", help=".npy or .pt tensor file (default: none; give exactly one of "
                                                   "--input, --digit, --mnist, --images)")
    h.add_argument("--digit", type=int, metavar="INDEX",
                   help="index into scikit-learn's bundled 8x8 digits (default: none)")
    h.add_argument("--mnist", metavar="DIR", help="directory with the MNIST IDX files (default: none)")
    h.add_argument("--images", metavar="PATH",
                   help="MNIST IDX directory, folder of PNG files (<label>/*.png or *.png), or one .png "
                        "(default: none)")
    h.add_argument("--size", metavar="H,W", help="resize --images to H,W, e.g. 28,28 (default: as stored)")
    h.add_argument("--index", default="0", help="image index for --mnist / --images, or 'all' (= --all)")
    h.add_argument("--all", action="store_true",
                   help="every image of --mnist / --images: chunked, a progress bar on stderr, mean AUCs per method")
    h.add_argument("--chunk-size", type=int, default=64, help="images per chunk with --all")
    h.add_argument("--no-progress", action="store_true", help="no progress bar with --all")
    h.add_argument("--split", choices=("train", "test"), default="test", help="which MNIST split to read")
    h.add_argument("--method", default="taylor,occlusion,grad_input",
                   help="comma-separated: taylor, occlusion, grad_input, integrated_gradients, deeplift")
    h.add_argument("--order", type=int, default=4, help="order of the taylor method")
    h.add_argument("--ig-steps", type=int, default=50, help="quadrature nodes for integrated_gradients")
    h.add_argument("--dx", type=float, help="displacement per element (default: the element's value)")
    h.add_argument("--steps", type=int, default=20, help="deletion-curve steps")
    h.add_argument("--figure", metavar="FILE", help="save the heat-map grid here (default: no figure)")
    h.add_argument("--deletion-figure", metavar="FILE", help="save the deletion curves here (default: no figure)")
    h.add_argument("--format", choices=("text", "json"), default="text",
                   help="text: the AUCs and each method's top elements by name; json: every number")
    h.set_defaults(run=cmd_heatmap)

    c = add("certify", "Taylor polynomial with a certified error bound over a box")
    c.add_argument("--point", required=True, metavar="X1,X2,...",
                   help="reference point, comma-separated; negative values are fine (--point -0.5,1)")
    c.add_argument("--radius", required=True, metavar="R",
                   help="box half-width: one number, or one per variable, comma-separated")
    c.add_argument("--order", type=int, default=4, help="degree of the certified polynomial")
    c.add_argument("--names", metavar="X,Y,...",
                   help="variable names, comma-separated (default: x1, x2, ...; p[r][c] for an image-shaped --shape)")
    c.add_argument("--tol", type=float,
                   help="also report the largest radius whose remainder is <= tol, and why it is 0 when it is "
                        "(default: not reported)")
    c.add_argument("--format", choices=("text", "json"), default="text",
                   help="text: the polynomial, the box, the remainder and the bounds; json: every number")
    c.set_defaults(run=cmd_certify)
    return parser


#: options whose value is a comma-separated list of numbers: a leading minus (--point -0.5,1) is a value, not an option
_NUMBER_OPTIONS = ("--point", "--center", "--radius", "--shape", "--output", "--size", "--tol", "--threshold", "--dx")
_NEGATIVE = re.compile(r"-(\d|\.\d|inf|nan)", re.IGNORECASE)


def attach_negative_values(argv: list[str]) -> list[str]:
    """['--point', '-0.5,1'] -> ['--point=-0.5,1'], as %hope reads it: argparse takes a value starting with '-' for
    an option unless it is one plain number."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _NUMBER_OPTIONS and i + 1 < len(argv) and _NEGATIVE.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status (0 ok, 1 error, 2 bad usage)."""
    clock = _Clock()
    args = build_parser().parse_args(attach_negative_values(list(sys.argv[1:] if argv is None else argv)))
    args.clock = clock
    logging.getLogger("torch._subclasses.fake_tensor").setLevel(logging.CRITICAL)  # failed traces: our one line
    try:
        print(args.run(args))
        clock.step("print")
    except (CLIError, ModelLoadError, ExpansionError, ValueError, KeyError, IndexError, OSError, RuntimeError,
            ImportError) as e:
        print(f"hope: error: {describe(e)}", file=sys.stderr)
        return 1
    finally:
        if args.verbose:
            print(clock.report(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
