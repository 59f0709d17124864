"""Attribution maps against independent references (nested autograd, explicit forward loops, closed forms, captum
when it is installed), the deletion and insertion metrics on a trained digits classifier, the data loaders (IDX, PNG
folders), and the figures."""

from __future__ import annotations

import concurrent.futures
import gzip
import math
import struct
import warnings

import numpy as np
import pytest
import torch
from support.analysis import assert_image
from support.autograd import autograd_derivatives
from torch import nn

from hope_engine.analysis import (
    attribution,
    deletion_curve,
    deletion_figure,
    heatmap_figure,
    insertion_curve,
    load_digits,
    load_images,
    load_mnist,
    load_png_folder,
    random_scores,
    read_idx,
)
from hope_engine.models import Sine


def small_net(n: int = 6, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n, 12), nn.Tanh(), nn.Linear(12, 8), Sine(), nn.Linear(8, 3)).double().eval()


def test_taylor_matches_nested_autograd_sum():
    model = small_net()
    x = torch.randn(1, 6, dtype=torch.float64)
    dx = torch.linspace(-0.4, 0.5, 6, dtype=torch.float64).reshape(1, 6)
    got = attribution(model, x, output=1, method="taylor", order=4, dx=dx)
    assert got.shape == x.shape
    f = lambda z: model(z)[:, 1]  # noqa: E731
    expected = torch.zeros(6, dtype=torch.float64)
    for i in range(6):
        alphas = [tuple(k if j == i else 0 for j in range(6)) for k in range(1, 5)]
        d = autograd_derivatives(f, x, alphas).reshape(-1)
        h = -float(dx[0, i])
        expected[i] = -sum(float(d[k - 1]) * h ** k / math.factorial(k) for k in range(1, 5))
    assert torch.allclose(got.reshape(-1), expected, rtol=1e-10, atol=1e-12)


def test_occlusion_is_the_exact_difference_and_taylor_converges_to_it():
    model = small_net()
    x = torch.randn(2, 6, dtype=torch.float64)
    occ = attribution(model, x, output=2, method="occlusion", dx=0.1)
    for b in range(2):
        for i in range(6):
            moved = x[b:b + 1].clone()
            moved[0, i] -= 0.1
            with torch.no_grad():
                ref = model(x[b:b + 1])[0, 2] - model(moved)[0, 2]
            assert float(occ[b, i]) == pytest.approx(float(ref), rel=1e-12, abs=1e-15)
    hope8 = attribution(model, x, output=2, method="taylor", order=8, dx=0.1)
    assert torch.allclose(hope8, occ, rtol=1e-6, atol=1e-12)  # remainder ~ 0.1^9


def test_grad_input_and_first_order_term():
    model = small_net()
    x = torch.randn(1, 6, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda z: model(z)[0, 0], x)
    gi = attribution(model, x, output=0, method="grad_input")
    assert torch.allclose(gi, jac * x, rtol=1e-12)
    first = attribution(model, x, output=0, method="taylor", order=1)  # dx defaults to x: dx * df/dx
    assert torch.allclose(first, gi, rtol=1e-10, atol=1e-14)


def test_errors():
    model = small_net()
    with pytest.raises(ValueError, match="method"):
        attribution(model, torch.zeros(1, 6), output=0, method="saliency")
    with pytest.raises(ValueError, match="outputs"):
        attribution(model, torch.zeros(1, 6), method="grad_input")


def test_deletion_curve_of_a_linear_model():
    w = torch.tensor([3.0, -1.0, 2.0, 0.5], dtype=torch.float64)
    model = nn.Linear(4, 1, bias=False).double().eval()
    with torch.no_grad():
        model.weight.copy_(w[None])
    x = torch.tensor([[1.0, 2.0, -1.0, 4.0]], dtype=torch.float64)
    scores = attribution(model, x, method="occlusion")
    assert torch.allclose(scores, w * x)  # the exact contributions w_i x_i = [3, -2, -2, 2]
    curve = deletion_curve(model, x, scores, steps=4)
    # removing the largest contributions first: f(x) minus the running sum of the sorted contributions
    contributions = sorted((w * x).reshape(-1).tolist(), reverse=True)
    expected = [float((w * x).sum()) - sum(contributions[:j]) for j in range(5)]
    assert curve.values.reshape(-1).tolist() == pytest.approx(expected)
    assert curve.auc == pytest.approx(float(np.trapezoid(expected, np.linspace(0, 1, 5))))


@pytest.fixture(scope="module")
def digits_classifier():
    images, labels = load_digits()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        opt.step()
    model.eval()
    accuracy = float((model(images).argmax(1) == labels).double().mean())
    return model, images, labels, accuracy


def test_deletion_ranks_methods_on_digits(digits_classifier, tmp_path):
    model, images, labels, accuracy = digits_classifier
    assert accuracy > 0.95
    x, cls = images[:6], 3  # explain one class logit for several images
    maps = {m: attribution(model, x, output=cls, method=m, order=3)
            for m in ("taylor", "occlusion", "grad_input", "integrated_gradients", "deeplift")}
    maps["taylor, 1st order"] = attribution(model, x, output=cls, method="taylor", order=1)
    for m in maps.values():
        assert m.shape == x.shape == (6, 1, 8, 8)
    curves = [deletion_curve(model, x, s, output=cls, label=name) for name, s in maps.items()]
    rand = deletion_curve(model, x, random_scores(x), output=cls, label="random")
    for c in curves:
        assert c.values.shape == (6, 21)
        assert c.auc < rand.auc, (c.label, c.auc, rand.auc)
    # occlusion ranks by the exact single-element effect; the order-3 estimate is close to it on this smooth net
    assert torch.corrcoef(torch.stack([maps["taylor"].reshape(-1), maps["occlusion"].reshape(-1)]))[0, 1] > 0.99
    assert_image(heatmap_figure(x[:3], {k: v[:3] for k, v in maps.items()}, titles=["a", "b", "c"]),
                 tmp_path / "maps.png")
    assert_image(deletion_figure(curves + [rand]), tmp_path / "deletion.png")
    ins = {k: insertion_curve(model, x, v, output=cls).auc for k, v in maps.items()}
    assert all(a > insertion_curve(model, x, random_scores(x), output=cls).auc for a in ins.values()), ins


def test_load_digits():
    images, labels = load_digits()
    assert images.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0


def _write_idx(path, array: np.ndarray, type_code: int, compress: bool = False) -> None:
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_loader(tmp_path, compress):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labs = rng.integers(0, 10, size=5, dtype=np.uint8)
    suffix = ".gz" if compress else ""
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", imgs, 0x08, compress)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", labs, 0x08, compress)
    x, y = load_mnist(tmp_path, "test")
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], torch.from_numpy(imgs).float() / 255)
    assert y.tolist() == labs.tolist()
    with pytest.raises(FileNotFoundError, match="train-images"):
        load_mnist(tmp_path, "train")


def test_read_idx_types_and_errors(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    _write_idx(tmp_path / "f.idx", a, 0x0D)
    assert np.array_equal(read_idx(tmp_path / "f.idx"), a)
    b = np.array([-5, 70000, 3], dtype=np.int32)
    _write_idx(tmp_path / "i.idx", b, 0x0C)
    assert read_idx(tmp_path / "i.idx").tolist() == [-5, 70000, 3]
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="magic"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "short.idx").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x00" * 3)
    with pytest.raises(ValueError, match="expected 10 bytes"):
        read_idx(tmp_path / "short.idx")


def test_hope_is_a_deprecated_alias_of_taylor():
    model = small_net()
    x = torch.randn(1, 6, dtype=torch.float64)
    with pytest.warns(DeprecationWarning, match="taylor"):
        old = attribution(model, x, output=0, method="hope", order=3)
    assert torch.equal(old, attribution(model, x, output=0, method="taylor", order=3))


def tanh_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(27, 8), nn.ReLU(),
                         nn.Linear(8, 6), nn.Sigmoid(), nn.Linear(6, 3)).double().eval()


def test_integrated_gradients_is_exact_on_a_quadratic_and_complete():
    a = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.0, 1.5], [-1.0, 0.7, 2.0]], dtype=torch.float64)
    model = lambda z: ((z @ a) * z).sum(1, keepdim=True)  # noqa: E731  f = z^T A z
    x = torch.tensor([[0.4, -1.1, 0.9]], dtype=torch.float64)
    b = torch.tensor([[0.1, 0.2, -0.3]], dtype=torch.float64)
    got = attribution(model, x, method="integrated_gradients", baseline=b, steps=2)  # Gauss-Legendre: exact here
    d = x - b
    sym = a + a.T
    expected = d * ((b @ sym) + 0.5 * (d @ sym))  # int_0^1 grad f(b + s d) ds = sym (b + d / 2)
    assert torch.allclose(got, expected, rtol=1e-13, atol=1e-15)
    torch.manual_seed(0)
    model2 = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 3)).double().eval()  # smooth
    x2 = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    ig = attribution(model2, x2, output=2, method="integrated_gradients", steps=32)
    with torch.no_grad():
        gap = model2(x2)[:, 2] - model2(torch.zeros_like(x2))[:, 2]
    assert torch.allclose(ig.reshape(3, -1).sum(1), gap, rtol=1e-10, atol=1e-14)


def test_deeplift_is_complete_and_linear_models_give_w_times_dx():
    model = tanh_net()
    x = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    b = torch.rand(3, 1, 8, 8, dtype=torch.float64) * 0.2
    dl = attribution(model, x, output=1, method="deeplift", baseline=b)
    with torch.no_grad():
        gap = model(x)[:, 1] - model(b)[:, 1]
    assert torch.allclose(dl.reshape(3, -1).sum(1), gap, rtol=1e-12, atol=1e-15)  # summation-to-delta, exactly
    lin = nn.Linear(4, 1).double().eval()
    z = torch.randn(2, 4, dtype=torch.float64)
    assert torch.allclose(attribution(lin, z, method="deeplift"), lin.weight * z)
    assert torch.allclose(attribution(lin, z, method="integrated_gradients"), lin.weight * z)


@pytest.mark.parametrize("method", ["integrated_gradients", "deeplift"])
def test_path_methods_match_captum(method):
    captum_attr = pytest.importorskip("captum.attr")
    model = tanh_net(1)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    b = torch.rand(4, 1, 8, 8, dtype=torch.float64) * 0.3
    ours = attribution(model, x, output=1, method=method, baseline=b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum's notes about hooks and requires_grad
        if method == "integrated_gradients":
            ref = captum_attr.IntegratedGradients(model).attribute(x, baselines=b, target=1, n_steps=50)
        else:
            ref = captum_attr.DeepLift(model).attribute(x, baselines=b, target=1)
    assert torch.allclose(ours, ref.detach(), rtol=1e-9, atol=1e-14)


def test_insertion_curve_of_a_linear_model():
    w = torch.tensor([3.0, -1.0, 2.0, 0.5], dtype=torch.float64)
    model = nn.Linear(4, 1, bias=False).double().eval()
    with torch.no_grad():
        model.weight.copy_(w[None])
    x = torch.tensor([[1.0, 2.0, -1.0, 4.0]], dtype=torch.float64)
    scores = w * x
    curve = insertion_curve(model, x, scores, steps=4)
    contributions = sorted(scores.reshape(-1).tolist(), reverse=True)  # [3, 2, -2, -2]
    assert curve.values.reshape(-1).tolist() == pytest.approx([sum(contributions[:j]) for j in range(5)])
    assert curve.kind == "insertion"


def test_png_folder_loader(tmp_path):
    image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    pixels = {}
    for label in (3, 7):
        (tmp_path / "set" / str(label)).mkdir(parents=True)
        for k in range(2):
            a = rng.integers(0, 256, size=(28, 28), dtype=np.uint8)
            pixels[(label, k)] = a
            image.fromarray(a, mode="L").save(tmp_path / "set" / str(label) / f"{k}.png")
    x, y = load_png_folder(tmp_path / "set")
    assert x.shape == (4, 1, 28, 28) and y.tolist() == [3, 3, 7, 7]
    assert torch.equal(x[2, 0], torch.from_numpy(pixels[(7, 0)]).float() / 255)
    rgb = np.stack([pixels[(3, 0)]] * 3, axis=-1)
    (tmp_path / "flat").mkdir()
    image.fromarray(rgb, mode="RGB").save(tmp_path / "flat" / "a.png")
    image.fromarray(pixels[(3, 1)][:20, :20], mode="L").save(tmp_path / "flat" / "b.png")
    with pytest.raises(ValueError, match="size"):
        load_png_folder(tmp_path / "flat")
    x, y = load_images(tmp_path / "flat", size=(28, 28))
    assert x.shape == (2, 1, 28, 28) and y.tolist() == [-1, -1]
    assert torch.allclose(x[0, 0], torch.from_numpy(pixels[(3, 0)]).float() / 255, atol=1 / 255)  # grey of grey
    one, _ = load_images(tmp_path / "set" / "7" / "1.png")
    assert one.shape == (1, 1, 28, 28)
    with pytest.raises(FileNotFoundError):
        load_png_folder(tmp_path / "set" / "missing")


def test_cli_heatmap_reads_a_png_folder(tmp_path, capsys):
    image = pytest.importorskip("PIL.Image")
    import json

    from hope_engine.io.cli import main

    rng = np.random.default_rng(1)
    (tmp_path / "pngs" / "4").mkdir(parents=True)
    a = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
    image.fromarray(a, mode="L").save(tmp_path / "pngs" / "4" / "x.png")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).double().eval()
    torch.jit.trace(model, torch.zeros(1, 1, 8, 8, dtype=torch.float64)).save(str(tmp_path / "m.ts"))
    code = main(["heatmap", str(tmp_path / "m.ts"), "--images", str(tmp_path / "pngs"), "--output", "1",
                 "--method", "taylor,integrated_gradients,grad_input", "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    got = json.loads(out)
    assert code == 0 and got["shape"] == [1, 1, 8, 8] and "label 4" in got["input"]
    expected = (model[1].weight[1].detach() * torch.from_numpy(a).double().reshape(-1) / 255).numpy()
    for m in got["maps"].values():  # a linear model: every method gives w_i x_i
        assert np.allclose(m, expected, atol=1e-12)
    assert set(got["insertion_auc"]) == {"taylor", "integrated_gradients", "grad_input"}
    assert main(["heatmap", str(tmp_path / "m.ts"), "--images", str(tmp_path / "pngs"), "--size", "8"]) == 1
    assert main(["heatmap", str(tmp_path / "m.ts"), "--images", str(tmp_path / "pngs"), "--output", "1",
                 "--method", "deeplift"]) == 1
    assert "eager nn.Module" in capsys.readouterr().err


class InlineExecutor(concurrent.futures.Executor):
    """Runs each submitted call at once, in this thread (expand's tracing is not thread-safe: no ThreadPoolExecutor;
    tests/test_many.py covers process pools)."""

    def submit(self, fn, /, *args, **kwargs):
        future = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future


@pytest.mark.parametrize("method", ["taylor", "occlusion", "grad_input", "integrated_gradients", "deeplift"])
def test_a_batch_of_images_in_chunks_equals_a_loop_over_single_images(method):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double().eval()
    x = torch.rand(5, 1, 6, 6, dtype=torch.float64)
    kwargs = {"steps": 8} if method == "integrated_gradients" else {}
    loop = torch.cat([attribution(model, x[i:i + 1], output=2, method=method, order=3, **kwargs) for i in range(5)])
    chunked = attribution(model, x, output=2, method=method, order=3, chunk_size=2, executor=InlineExecutor(),
                          progress=False, **kwargs)
    whole = attribution(model, x, output=2, method=method, order=3, **kwargs)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(5)), batch_size=2)
    batches = attribution(model, loader, output=2, method=method, order=3, **kwargs)
    assert chunked.shape == whole.shape == batches.shape == x.shape
    for got in (chunked, whole, batches):
        assert torch.allclose(got, loop, rtol=1e-12, atol=1e-14)


def test_attribution_chunks_go_through_expand_many(monkeypatch):
    import importlib

    module = importlib.import_module("hope_engine.analysis.attribution")  # the package exports a function of that name

    calls = []
    real = module.expand_many

    def spy(model, points, order, **kw):
        calls.append((points.shape[0] if isinstance(points, torch.Tensor) else len(points), kw["chunk_size"],
                      kw["progress"]))
        return real(model, points, order, **kw)

    monkeypatch.setattr(module, "expand_many", spy)
    model = small_net()
    x = torch.randn(7, 6, dtype=torch.float64)
    got = attribution(model, x, output=0, order=2, chunk_size=3)
    assert calls == [(7, 3, False)]
    assert torch.allclose(got[4:5], attribution(model, x[4:5], output=0, order=2), rtol=1e-12, atol=1e-14)
    attribution(model, [x[:4], x[4:]], output=0, order=2)  # a list of batches: its batches are the chunks
    assert calls[-1] == (2, None, False)
    with pytest.raises(ValueError, match="chunk_size"):
        attribution(model, x, output=0, chunk_size=0)
