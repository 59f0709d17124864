"""Image data without downloads: scikit-learn's bundled 8x8 digits (and an MNIST-like 28x28 version of them), MNIST
from IDX files at a user path, and folders of PNG images.

IDX format: magic 0x0000 TT DD (TT = element type, DD = number of dimensions), DD big-endian uint32 sizes, then the
elements big-endian, row-major. Files may be gzip-compressed (.gz).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

_IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def load_digits(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 8x8 digits as images (N, 1, 8, 8) scaled to [0, 1] (pixel / 16) and labels (N,)."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ImportError("load_digits needs scikit-learn: pip install scikit-learn") from None
    d = sk_load_digits()
    images = torch.tensor(d.images, dtype=dtype).div_(16.0).unsqueeze(1)
    return images, torch.tensor(d.target, dtype=torch.long)


def digits_28(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8x8 digits as MNIST-like 28x28 images: upscaled to 20x20 (bilinear, clamped to [0, 1]) and centred in a
    28x28 frame with a 4-pixel border, as MNIST centres its digits."""
    images, labels = load_digits(dtype)
    up = torch.nn.functional.interpolate(images, size=(20, 20), mode="bilinear", align_corners=False).clamp_(0, 1)
    return torch.nn.functional.pad(up, (4, 4, 4, 4)), labels


def read_idx(path) -> np.ndarray:
    """The array stored in an IDX file (optionally .gz), as a native-endian numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_TYPES:
        raise ValueError(f"{path}: unknown IDX element type 0x{type_code:02x}")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dt = _IDX_TYPES[type_code]
    count = int(np.prod(dims)) if dims else 1
    body = data[4 + 4 * ndim:]
    if len(body) != count * dt.itemsize:
        raise ValueError(f"{path}: expected {count * dt.itemsize} bytes of data for shape {dims}, found {len(body)}")
    return np.frombuffer(body, dtype=dt).reshape(dims).astype(dt.newbyteorder("="))


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(f"no {stem}[.gz] in {root}")


def _exists(root: Path, stem: str) -> bool:
    try:
        _find(root, stem)
    except FileNotFoundError:
        return False
    return True


def load_mnist(root, split: str = "train", dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST images (N, 1, 28, 28) scaled to [0, 1] and labels (N,) from the IDX files in directory ``root``."""
    if split not in MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    image_file, label_file = (_find(root, s) for s in MNIST_FILES[split])
    images = read_idx(image_file)
    labels = read_idx(label_file)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{image_file} / {label_file}: expected images (N, H, W) and labels (N,), got "
                         f"{images.shape} and {labels.shape}")
    x = torch.from_numpy(images.astype(np.float64)).to(dtype).div_(255.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def _png_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() == ".png")


def _read_png(path: Path, size) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading PNG files needs pillow: pip install pillow") from None
    with Image.open(path) as im:
        im = im.convert("L")
        if size is not None:
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(im, dtype=np.float64) / 255.0


def load_png_folder(root, size: tuple[int, int] | None = None,
                    dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey-scale images (N, 1, H, W) in [0, 1] and labels (N,) from PNG files.

    Layout: ``root/<label>/*.png`` (labels from the folder names: integers if they all are, else their sorted
    position) or a flat ``root/*.png`` (labels -1). size=(H, W) resizes (bilinear); without it all images must
    share one size. Colour images are converted to grey (ITU-R 601 luma).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and _png_files(d))
    if subdirs:
        names = [d.name for d in subdirs]
        numeric = all(n.lstrip("-").isdigit() for n in names)
        files = [(f, int(d.name) if numeric else i) for i, d in enumerate(subdirs) for f in _png_files(d)]
    else:
        files = [(f, -1) for f in _png_files(root)]
    if not files:
        raise FileNotFoundError(f"no .png files in {root} or its sub-folders")
    arrays = [_read_png(f, size) for f, _ in files]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"{root}: images of different sizes {sorted(shapes)}; pass size=(H, W) to resize them")
    x = torch.from_numpy(np.stack(arrays)).to(dtype).unsqueeze(1)
    return x, torch.tensor([label for _, label in files], dtype=torch.long)


def load_images(path, split: str = "test", size: tuple[int, int] | None = None,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels from a user path: a directory with MNIST IDX files (``split``), a folder of PNG files (see
    ``load_png_folder``) or a single .png file (label -1); ``size`` resizes to (H, W)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".png":
        return torch.from_numpy(_read_png(path, size)).to(dtype)[None, None], torch.tensor([-1])
    if path.is_dir() and any(_exists(path, s) for pair in MNIST_FILES.values() for s in pair):
        x, y = load_mnist(path, split, dtype)
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            x = torch.nn.functional.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
        return x, y
    return load_png_folder(path, size, dtype)
