"""Image data without downloads: scikit-learn's bundled 8x8 digits, and MNIST from IDX files at a user path.

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
