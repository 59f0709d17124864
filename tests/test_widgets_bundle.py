"""The committed front-end bundle (hope_widgets/static/) is what js/src builds to: CI fails on a stale bundle."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bundle_is_shipped():
    for name in ("widget.js", "widget.css"):
        assert (ROOT / "hope_widgets" / "static" / name).stat().st_size > 1000
    from hope_widgets.panel import HopePanel

    assert "render" in str(HopePanel._esm) and ".hope-panel" in str(HopePanel._css)


def test_committed_bundle_is_fresh():
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed to rebuild the bundle (js/check-bundle.sh)")
    result = subprocess.run(["bash", str(ROOT / "js" / "check-bundle.sh")], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr + result.stdout


def test_the_plots_helpers():
    """js/test/plots.test.mjs: round axis ticks, a hovered pixel's name and rank, singular / plural counts, the
    funnel's marks where it leaves the plot, the NaN counts in the line plot's title."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    run = subprocess.run(["node", "--test", str(ROOT / "js" / "test" / "plots.test.mjs")], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "# pass 5" in run.stdout and "# fail 0" in run.stdout
