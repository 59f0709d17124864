"""The ``hope`` command: safe loading, the three subcommands, one-line errors, and one real subprocess run."""

from __future__ import annotations

import json
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
