"""The ``hope`` command: safe loading, the three subcommands, one-line errors, and one real subprocess run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from hope_engine import expand
from hope_engine.io.cli import main
from hope_engine.io.loading import ModelLoadError, load_model
from hope_engine.models import sine_mlp

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # saving TorchScript fixtures

X0 = torch.tensor([[0.5, -0.25]], dtype=torch.float64)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    model = sine_mlp([2, 16, 16, 1], seed=0)
    torch.jit.trace(model, X0).save(str(d / "model.ts"))
    torch.export.save(torch.export.export(model, (X0,)), str(d / "model.pt2"))
    torch.save(model, d / "model.pickle")
    torch.save(model.state_dict(), d / "weights.pt")
    torch.manual_seed(0)
    digits = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double().eval()
    torch.jit.trace(digits, torch.zeros(1, 1, 8, 8, dtype=torch.float64)).save(str(d / "digits.ts"))
    return d, model, digits


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", ["model.ts", "model.pt2"])
def test_expand_safe_formats_text_and_json(saved, capsys, name):
    d, model, _ = saved
    code, out, err = run(capsys, "expand", d / name, "--point", "0.5,-0.25", "--order", "4", "--format", "json")
    assert code == 0, err
    got = json.loads(out)
    p = expand(model, X0, 4)
    ref = {t.alpha: t.coefficient for t in p.terms()}
    assert len(got["terms"]) == len(ref)
    for t in got["terms"]:
        assert t["coefficient"] == pytest.approx(ref[tuple(t["alpha"])], rel=1e-10, abs=1e-14)
    code, out, _ = run(capsys, "expand", d / name, "--point", "0.5,-0.25", "--order", "3", "--top", "3")
    assert code == 0 and out.startswith("TaylorPolynomial(n=2, order=3") and len(out.strip().splitlines()) == 4


def test_expand_latex_pure_and_names(saved, capsys):
    d, model, _ = saved
    code, out, _ = run(capsys, "expand", d / "model.ts", "--point", "0.5,-0.25", "--order", "3", "--terms", "pure",
                       "--names", "a,b", "--format", "latex")
    assert code == 0
    p = expand(model, X0, 3, terms="pure", names=["a", "b"])
    assert out.strip() == p.latex()


def test_pickles_need_the_flag_and_state_dicts_are_refused(saved, capsys):
    d, model, _ = saved
    code, out, err = run(capsys, "expand", d / "model.pickle", "--point", "0,0")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "--trust-pickle" in err and "executes code" in err
    code, out, _ = run(capsys, "expand", d / "model.pickle", "--trust-pickle", "--point", "0,0", "--order", "2")
    assert code == 0 and "TaylorPolynomial" in out
    code, _, err = run(capsys, "expand", d / "weights.pt", "--point", "0,0")
    assert code == 1 and "state dict" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model(d / "missing.pt")
    assert load_model(d / "model.ts").kind == "torchscript"
    assert load_model(d / "model.pt2").kind == "exported program"


@pytest.mark.parametrize("argv, message", [
    (["--point", "0,0,0"], "cannot be run on a point of shape (1, 3)"),
    (["--point", "0,x"], "comma-separated numbers"),
    (["--point", "0,0", "--shape", "1,3"], "holds 3 values"),
    (["--point", "0,0", "--order", "-1"], "non-negative"),
])
def test_errors_are_one_line(saved, capsys, argv, message):
    d, _, _ = saved
    code, out, err = run(capsys, "expand", d / "model.ts", *argv)
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hope: error:") and message in lines[0], err


def test_discover(saved, capsys, tmp_path):
    d, model, _ = saved
    fig = tmp_path / "terms.png"
    code, out, err = run(capsys, "discover", d / "model.ts", "--center", "0,0", "--order", "3", "--points", "8",
                         "--radius", "0.3", "--top", "4", "--format", "json", "--figure", fig)
    assert code == 0, err
    got = json.loads(out)
    assert len(got["terms"]) == 4 and "x1" in got["formula"]
    from hope_engine.analysis import discover

    ref = discover(model, [0.0, 0.0], 3, radius=0.3, points=8)
    assert got["terms"][0]["mean"] == pytest.approx(ref.table(top=1)[0].mean, rel=1e-10)
    assert fig.stat().st_size > 2000


def test_heatmap(saved, capsys, tmp_path):
    d, _, digits = saved
    fig, curves = tmp_path / "maps.png", tmp_path / "deletion.png"
    code, out, err = run(capsys, "heatmap", d / "digits.ts", "--digit", "5", "--output", "3", "--order", "2",
                         "--format", "json", "--figure", fig, "--deletion-figure", curves)
    assert code == 0, err
    got = json.loads(out)
    assert set(got["maps"]) == {"taylor", "occlusion", "grad_input"} and got["shape"] == [1, 1, 8, 8]
    from hope_engine.analysis import load_digits

    x = load_digits()[0][5:6]
    w = digits[1].weight[3].detach()
    # a linear model: every method gives w_i x_i exactly
    for m in got["maps"].values():
        assert np.allclose(m, (w * x.reshape(-1)).numpy(), atol=1e-12)
    assert fig.stat().st_size > 2000 and curves.stat().st_size > 2000
    npy = tmp_path / "x.npy"
    np.save(npy, x.numpy())
    code, out, _ = run(capsys, "heatmap", d / "digits.ts", "--input", npy, "--output", "3", "--method", "occlusion")
    assert code == 0 and "occlusion: AUC" in out
    code, _, err = run(capsys, "heatmap", d / "digits.ts", "--output", "3")
    assert code == 1 and "exactly one of" in err


def test_console_script_subprocess(saved):
    d, _, _ = saved
    exe = shutil.which("hope", path=str(__import__("pathlib").Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "hope_engine.io.cli"]
    ok = subprocess.run(cmd + ["expand", str(d / "model.ts"), "--point", "0.5,-0.25", "--order", "2", "--format",
                               "latex"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() and "x_{1}" in ok.stdout
    bad = subprocess.run(cmd + ["expand", str(d / "weights.pt"), "--point", "0,0"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "state dict" in bad.stderr


@pytest.mark.parametrize("shapes", ["static", "dynamic"])
def test_discover_and_heatmap_on_static_and_dynamic_exports(tmp_path, capsys, shapes):
    """torch.export fixes the batch size by default: commands that batch points must still work on such files."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double().eval()
    example = torch.zeros(1 if shapes == "static" else 4, 2, dtype=torch.float64)
    dynamic = None if shapes == "static" else ({0: torch.export.Dim("batch", min=1, max=4096)},)
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (example,), dynamic_shapes=dynamic), str(path))
    code = main(["discover", str(path), "--center", "0,0", "--order", "2", "--format", "json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double().eval()
    image = torch.rand(1 if shapes == "static" else 2, 1, 6, 6, dtype=torch.float64)
    dynamic = None if shapes == "static" else ({0: torch.export.Dim("batch", min=1, max=4096)},)
    torch.export.save(torch.export.export(conv, (image,), dynamic_shapes=dynamic), str(tmp_path / "conv.pt2"))
    np.save(tmp_path / "image.npy", np.random.default_rng(0).random((1, 1, 6, 6)))
    code = main(["heatmap", str(tmp_path / "conv.pt2"), "--input", str(tmp_path / "image.npy"), "--method",
                 "taylor,occlusion,integrated_gradients", "--order", "2", "--output", "1", "--format", "json"])
    out = capsys.readouterr()
    assert code == 0, out.err


def _png_folder(root, count: int = 5) -> None:
    """A tiny labelled PNG folder: <label>/<k>.png, 8x8 grey images."""
    image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(2)
    for k in range(count):
        (root / str(k % 2)).mkdir(parents=True, exist_ok=True)
        image.fromarray(rng.integers(0, 256, size=(8, 8), dtype=np.uint8), mode="L").save(root / str(k % 2) /
                                                                                          f"{k}.png")


@pytest.mark.parametrize("flag", [["--all"], ["--index", "all"]])
def test_heatmap_all_images_of_a_png_folder(saved, capsys, tmp_path, flag):
    pytest.importorskip("tqdm")
    d, _, _ = saved
    _png_folder(tmp_path / "pngs")
    methods = "taylor,occlusion,grad_input"
    fig, curves = tmp_path / "maps.png", tmp_path / "deletion.png"
    code, out, err = run(capsys, "heatmap", d / "digits.ts", "--images", tmp_path / "pngs", *flag, "--output", "3",
                         "--order", "2", "--method", methods, "--chunk-size", "2", "--format", "json",
                         "--figure", fig, "--deletion-figure", curves)
    assert code == 0, err
    assert "5/5" in err  # the progress bar, on stderr
    got = json.loads(out)
    assert got["images"] == 5 and got["shape"] == [1, 8, 8] and "all 5 images" in got["input"]
    singles = []
    for k in range(5):  # the per-image AUCs are those of one image at a time
        code, single, err = run(capsys, "heatmap", d / "digits.ts", "--images", tmp_path / "pngs", "--index", k,
                                "--output", "3", "--order", "2", "--method", methods, "--format", "json")
        assert code == 0, err
        singles.append(json.loads(single))
    for m in methods.split(","):
        for key in ("deletion_auc", "insertion_auc"):
            per_image = [s[key][m] for s in singles]
            assert got[f"{key}_per_image"][m] == pytest.approx(per_image, rel=1e-10, abs=1e-12)
            assert got[key][m] == pytest.approx(float(np.mean(per_image)), rel=1e-10, abs=1e-12)
    assert fig.stat().st_size > 2000 and curves.stat().st_size > 2000
    code, out, err = run(capsys, "heatmap", d / "digits.ts", "--images", tmp_path / "pngs", *flag, "--output", "3",
                         "--method", "taylor", "--no-progress")
    assert code == 0 and err == "" and "mean AUC" in out and "5 images" in out


def test_heatmap_all_errors(saved, capsys, tmp_path):
    d, _, _ = saved
    _png_folder(tmp_path / "pngs", 2)
    code, _, err = run(capsys, "heatmap", d / "digits.ts", "--digit", "1", "--all", "--output", "3")
    assert code == 1 and "--images" in err
    code, _, err = run(capsys, "heatmap", d / "digits.ts", "--images", tmp_path / "pngs", "--index", "x")
    assert code == 1 and "'all'" in err
    code, _, err = run(capsys, "heatmap", d / "digits.ts", "--images", tmp_path / "pngs", "--all", "--chunk-size", "0",
                       "--output", "3")
    assert code == 1 and "chunk-size" in err


COMMANDS = ("expand", "discover", "heatmap", "certify")


def _python(script: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, **kwargs)


def _hope_command() -> list[str]:
    exe = shutil.which("hope", path=str(__import__("pathlib").Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "hope_engine.io.cli"]


def test_help_imports_neither_torch_nor_numpy():
    """hope --help and hope <command> --help run the parser alone: torch is not imported (its import is what made
    the help take seconds)."""
    script = f"""
import sys
from hope_engine.io.cli import main
for argv in [["--help"]] + [[c, "--help"] for c in {COMMANDS!r}]:
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
heavy = sorted(m for m in ("torch", "numpy", "sympy") if m in sys.modules)
print("HEAVY", heavy)
"""
    done = _python(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []"
    for argv in (["--help"], ["certify", "--help"]):  # the installed console script (or python -m) too
        ok = subprocess.run(_hope_command() + argv, capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0 and ok.stdout.startswith("usage: hope"), ok.stderr


def test_package_names_resolve_lazily():
    """Importing hope_engine does not import torch; every public name still resolves, to the object its defining
    module holds, and so do submodules reached as attributes (hope_engine.api.expand) as before."""
    script = """
import importlib, sys
import hope_engine
assert "torch" not in sys.modules
from hope_engine import ExpansionError  # torch-free names are there at once
assert "torch" not in sys.modules
for name in hope_engine.__all__:
    obj = getattr(hope_engine, name)
    assert getattr(importlib.import_module(obj.__module__), name) is obj, name
assert hope_engine.api.expand.expand is hope_engine.expand and hope_engine.capture.guard.stamp
namespace = {}
exec("from hope_engine import *", namespace)
assert set(hope_engine.__all__) <= set(namespace) and set(hope_engine.__all__) <= set(dir(hope_engine))
try:
    hope_engine.no_such_name
except AttributeError:
    print("OK")
"""
    done = _python(script)
    assert done.returncode == 0 and done.stdout.strip() == "OK", done.stderr


def test_every_option_has_help_and_shows_its_default():
    from hope_engine.io.cli import build_parser, option_help

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)
    for name, command in sub.choices.items():
        text = " ".join(command.format_help().split())
        for action in command._actions:
            if action.dest == "help":
                continue
            assert action.help, (name, action.dest)
            if not action.option_strings or action.required:
                continue
            assert "default" in option_help(action), (name, action.dest)
            if action.default is not None:  # the value itself is shown, a flag as "off"
                shown = "off" if action.default is False else action.default
                assert f"(default: {shown})" in text, (name, action.dest)


def test_negative_values_as_in_percent_hope(saved, capsys):
    """--point -0.5,1 (as %hope takes it) and --point=-0.5,1 give the expansion at (-0.5, 1)."""
    from hope_engine.io.cli import attach_negative_values

    d, model, _ = saved
    outs = []
    for argv in (["--point", "-0.5,1"], ["--point=-0.5,1"]):
        code, out, err = run(capsys, "expand", d / "model.pt2", *argv, "--order", "3", "--format", "json")
        assert code == 0, err
        outs.append(json.loads(out))
    assert outs[0] == outs[1] and outs[0]["point"] == [-0.5, 1.0]
    ref = {t.alpha: t.coefficient for t in expand(model, torch.tensor([[-0.5, 1.0]], dtype=torch.float64), 3).terms()}
    for t in outs[0]["terms"]:
        assert t["coefficient"] == pytest.approx(ref[tuple(t["alpha"])], rel=1e-10, abs=1e-14)
    code, out, err = run(capsys, "certify", d / "model.ts", "--point", "-0.5,-1", "--radius", "0.05")
    assert code == 0 and "point x0: -0.500000, -1.00000" in out, err
    assert attach_negative_values(["--center", "-.2,1", "--shape", "1,2", "--output", "-1,0", "--point", "--order"]) \
        == ["--center=-.2,1", "--shape", "1,2", "--output=-1,0", "--point", "--order"]


def test_verbose_prints_where_the_time_goes(saved, capsys):
    d, _, _ = saved
    argv = ["expand", d / "model.pt2", "--point", "0.5,-0.25", "--order", "3"]
    code, plain, _ = run(capsys, *argv)
    code, out, err = run(capsys, *argv, "--verbose")
    assert code == 0 and out == plain
    line = err.strip()
    assert line.startswith("hope: time (s): ") and "\n" not in line
    steps = dict(part.rsplit(" ", 1) for part in line.split(": ", 2)[2].split("; ")[0].split(", "))
    assert list(steps) == ["import torch", "import hope", "load", "trace", "expand", "print"]
    assert all(float(v) >= 0 for v in steps.values())
    assert float(line.rsplit("total ", 1)[1].split()[0]) >= sum(map(float, steps.values())) - 0.01


def test_image_inputs_are_named_by_pixel(saved, capsys):
    """The digits model is linear: its first-order coefficient of pixel (r, c) is w[3, 8 r + c], and every
    attribution method gives w_i x_i; the text names the five largest as p[r][c]."""
    d, _, digits = saved
    w = digits[1].weight[3].detach()
    x = torch.rand(1, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    point = ",".join(repr(v) for v in x.reshape(-1).tolist())
    code, out, err = run(capsys, "expand", d / "digits.ts", f"--point={point}", "--shape", "1,1,8,8", "--output", "3",
                         "--order", "1", "--format", "json")
    assert code == 0, err
    got = json.loads(out)
    assert got["names"] == [f"p[{i // 8}][{i % 8}]" for i in range(64)]
    for t in got["terms"]:
        if sum(t["alpha"]) == 1:
            i = t["alpha"].index(1)
            assert t["monomial"].startswith(f"(p[{i // 8}][{i % 8}] - ")
            assert t["coefficient"] == pytest.approx(float(w[i]), rel=1e-12)
    npy = d / "image.npy"
    np.save(npy, x.numpy())
    code, out, err = run(capsys, "heatmap", d / "digits.ts", "--input", npy, "--output", "3", "--method", "occlusion")
    assert code == 0, err
    scores = (w * x.reshape(-1)).numpy()
    top = np.argsort(-scores)[:5]
    expected = ", ".join(f"p[{i // 8}][{i % 8}] {scores[i]:#.4g}" for i in top)
    assert f"top: {expected}" in out


def _numbers_in(text: str) -> list[str]:
    return re.findall(r"-?\d+\.\d+(?:e[-+]\d+)?", text)


def test_certify_prints_plain_numbers_and_the_certified_radius(saved, capsys):
    d, model, _ = saved
    code, out, err = run(capsys, "certify", d / "model.ts", "--point", "0.5,-0.25", "--radius", "0.1", "--tol", "1e-6")
    assert code == 0, err
    lines = {line.split(":")[0]: line for line in out.splitlines()}
    bounds = lines["f over the box"]
    assert "[" not in bounds and "[" not in lines["remainder R (sup |f - P| over the box, certified)"]
    lo, hi = (float(v) for v in _numbers_in(bounds))
    assert all(len(v.lstrip("-").split("e")[0].replace(".", "").lstrip("0")) == 6 for v in _numbers_in(bounds))
    box = X0 + 0.1 * (2 * torch.rand(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 1)
    with torch.no_grad():
        f = model(box).reshape(-1)
    assert lo <= float(f.min()) and float(f.max()) <= hi  # the stated bounds hold f over the box
    radius_line = next(line for line in out.splitlines() if line.startswith("largest radius with R <= 1e-06"))
    rho = float(radius_line.rsplit("<= ", 1)[1])
    assert rho > 0
    from hope_engine import certify

    assert float(certify(model, X0, 4, radius=rho).remainder) <= 1e-6          # certified at the stated radius
    assert float(certify(model, X0, 4, radius=1.05 * rho).remainder) > 1e-6    # and it is the largest (to 5 %)


def test_certify_says_why_the_radius_is_zero(tmp_path, capsys):
    """float32 (PyTorch's default) has a rounding floor far above 1e-9; the same weights in float64 certify a box.
    A point on a ReLU kink: the error grows like |x1 + x2| on every box, so below the smallest box's bound (~1e-10
    here) no radius holds."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).eval()
    x = torch.tensor([[0.5, -0.25]])
    torch.export.save(torch.export.export(net, (x,)), str(tmp_path / "f32.pt2"))
    torch.export.save(torch.export.export(net.double(), (x.double(),)), str(tmp_path / "f64.pt2"))
    argv = ["--point", "0.5,-0.25", "--radius", "0.1", "--tol", "1e-9"]
    code, out, err = run(capsys, "certify", tmp_path / "f32.pt2", *argv)
    assert code == 0, err
    line = out.strip().splitlines()[-1]
    assert line.startswith("largest radius with R <= 1e-09: |x_i - x0_i| <= 0. It is 0: the rounding floor of float32")
    assert "model.double()" in line and "export it again" in line
    code, out, err = run(capsys, "certify", tmp_path / "f32.pt2", *argv, "--format", "json")
    got = json.loads(out)
    assert np.ravel(got["certified_radius"]).tolist() == [0.0] and "float32" in got["radius_reasons"][0]
    assert np.ravel(got["remainder_floor"])[0] > 1e-9
    code, out, err = run(capsys, "certify", tmp_path / "f64.pt2", *argv)
    assert code == 0 and float(out.strip().splitlines()[-1].rsplit("<= ", 1)[1]) > 0, err
    kink = nn.Sequential(nn.Linear(2, 1), nn.ReLU()).double().eval()
    with torch.no_grad():
        kink[0].weight.copy_(torch.tensor([[1.0, 1.0]]))
        kink[0].bias.zero_()
    torch.export.save(torch.export.export(kink, (torch.zeros(1, 2, dtype=torch.float64),)), str(tmp_path / "k.pt2"))
    code, out, err = run(capsys, "certify", tmp_path / "k.pt2", "--point", "0.5,-0.5", "--radius", "0.1",
                         "--tol", "1e-13")
    assert code == 0, err
    assert "It is 0: every box around x0 crosses a kink" in out.strip().splitlines()[-1]


NOTEBOOK_CLASS = """
import sys, torch
from torch import nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
    def forward(self, x):
        return torch.tanh(self.lin(x))
torch.save(Net(), sys.argv[1])
"""


def test_pickle_of_a_notebook_class_points_to_torch_export(tmp_path, capsys):
    """A class defined in __main__ (a notebook) is not in the pickle: with or without --trust-pickle, one line that
    says so and how to save the model instead; a class from a module not importable here, likewise."""
    path = tmp_path / "net.pt"
    done = subprocess.run([sys.executable, "-c", NOTEBOOK_CLASS, str(path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    for flags in ([], ["--trust-pickle"]):
        code, out, err = run(capsys, "expand", path, "--point", "0,0", *flags)
        assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, err
        assert "class Net, defined in a notebook or a script (__main__)" in err
        assert 'torch.export.save(torch.export.export(model, (x,)), "model.pt2")' in err
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "mynets.py").write_text(NOTEBOOK_CLASS.split("torch.save")[0])
    saver = "import sys, torch, mynets; torch.save(mynets.Net(), sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", saver, str(tmp_path / "mod.pt")], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path / "elsewhere")
    assert done.returncode == 0, done.stderr
    code, _, err = run(capsys, "expand", tmp_path / "mod.pt", "--point", "0,0", "--trust-pickle")
    assert code == 1 and len(err.strip().splitlines()) == 1 and "mynets" in err and "torch.export.save(" in err
