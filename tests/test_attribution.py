"""Attribution maps against independent references (nested autograd, explicit forward loops, closed forms), the
deletion metric on a trained digits classifier, the data loaders, and the figures."""

from __future__ import annotations

import gzip
import math
import struct

import numpy as np
import pytest
import torch
from analysis_helpers import assert_image
from conftest import autograd_derivatives
from torch import nn

from hope_engine.analysis import (
    attribution,
    deletion_curve,
    deletion_figure,
    heatmap_figure,
    load_digits,
    load_mnist,
    random_scores,
    read_idx,
)
from hope_engine.models import Sine


def small_net(n: int = 6, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(n, 12), nn.Tanh(), nn.Linear(12, 8), Sine(), nn.Linear(8, 3)).double().eval()


def test_hope_matches_nested_autograd_sum():
    model = small_net()
    x = torch.randn(1, 6, dtype=torch.float64)
    dx = torch.linspace(-0.4, 0.5, 6, dtype=torch.float64).reshape(1, 6)
    got = attribution(model, x, output=1, method="hope", order=4, dx=dx)
    assert got.shape == x.shape
    f = lambda z: model(z)[:, 1]  # noqa: E731
    expected = torch.zeros(6, dtype=torch.float64)
    for i in range(6):
        alphas = [tuple(k if j == i else 0 for j in range(6)) for k in range(1, 5)]
        d = autograd_derivatives(f, x, alphas).reshape(-1)
        h = -float(dx[0, i])
        expected[i] = -sum(float(d[k - 1]) * h ** k / math.factorial(k) for k in range(1, 5))
    assert torch.allclose(got.reshape(-1), expected, rtol=1e-10, atol=1e-12)


def test_occlusion_is_the_exact_difference_and_hope_converges_to_it():
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
    hope8 = attribution(model, x, output=2, method="hope", order=8, dx=0.1)
    assert torch.allclose(hope8, occ, rtol=1e-6, atol=1e-12)  # remainder ~ 0.1^9


def test_grad_input_and_first_order_term():
    model = small_net()
    x = torch.randn(1, 6, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda z: model(z)[0, 0], x)
    gi = attribution(model, x, output=0, method="grad_input")
    assert torch.allclose(gi, jac * x, rtol=1e-12)
    first = attribution(model, x, output=0, method="hope", order=1)  # dx defaults to x: dx * df/dx
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
    maps = {m: attribution(model, x, output=cls, method=m, order=3) for m in ("hope", "occlusion", "grad_input")}
    maps["hope, 1st order"] = attribution(model, x, output=cls, method="hope", order=1)
    for m in maps.values():
        assert m.shape == x.shape == (6, 1, 8, 8)
    curves = [deletion_curve(model, x, s, output=cls, label=name) for name, s in maps.items()]
    rand = deletion_curve(model, x, random_scores(x), output=cls, label="random")
    for c in curves:
        assert c.values.shape == (6, 21)
        assert c.auc < rand.auc, (c.label, c.auc, rand.auc)
    # occlusion ranks by the exact single-element effect; the order-3 estimate is close to it on this smooth net
    assert torch.corrcoef(torch.stack([maps["hope"].reshape(-1), maps["occlusion"].reshape(-1)]))[0, 1] > 0.99
    assert_image(heatmap_figure(x[:3], {k: v[:3] for k, v in maps.items()}, titles=["a", "b", "c"]),
                 tmp_path / "maps.png")
    assert_image(deletion_figure(curves + [rand]), tmp_path / "deletion.png")


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
