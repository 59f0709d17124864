"""Test helpers for the analysis figures."""

from __future__ import annotations

from pathlib import Path


def assert_image(fig, path: Path) -> None:
    """Save ``fig`` (a matplotlib Figure) and check the file is a non-empty PNG with real pixel content."""
    import matplotlib.image as mpimg

    fig.savefig(path, dpi=60)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, f"{path}: {len(data)} bytes"
    pixels = mpimg.imread(str(path))
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert float(pixels[..., :3].std()) > 0.01, "the image is blank"
