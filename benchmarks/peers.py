"""Peers the benchmarks compare against, installed outside the project (never a dependency of hope).

torch-jet (``jet-for-pytorch`` 1.0.0, the code of "Collapsing Taylor Mode Automatic Differentiation", NeurIPS 2025)
declares Python >= 3.12 only for one ``type PyTree[Leaf] = ...`` statement in ``jet/utils.py``; its core needs torch
and nothing else. ``setup_torch_jet`` downloads the wheel with pip (``--no-deps --ignore-requires-python``), unpacks it
into ``<peers>/torchjet``, replaces that statement by a plain subscriptable class on Python < 3.12, and puts the folder
on ``sys.path``. ``<peers>`` is ``$HOPE_PEERS``, or ``~/.cache/hope/peers``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

TORCH_JET = "jet-for-pytorch==1.0.0"

# the one statement Python 3.11 cannot parse, and what stands in for it (a type alias has no runtime meaning)
_ALIAS = re.compile(r"^type PyTree\[Leaf\] = \(\n.*?^\)\n", re.MULTILINE | re.DOTALL)
_STAND_IN = '''class PyTree:
    """Stand-in for the Python 3.12 type alias (subscriptable, no runtime meaning): patched by hope's benchmarks."""

    def __class_getitem__(cls, item):
        return cls
'''


class PeerUnavailable(RuntimeError):
    """A peer could not be installed or imported; the message says why and what to do."""


def peers_dir() -> Path:
    """Where peers are installed: ``$HOPE_PEERS`` or ``~/.cache/hope/peers``."""
    return Path(os.environ.get("HOPE_PEERS") or Path.home() / ".cache" / "hope" / "peers")


def setup_torch_jet(root: Path | None = None):
    """Import torch-jet's ``jet`` package, installing it under ``root`` (default ``peers_dir()``) first if needed.

    Raises PeerUnavailable with the reason (no network, a wheel that changed, an import error)."""
    root = Path(root) if root is not None else peers_dir()
    target = root / "torchjet"
    if not (target / "jet" / "__init__.py").exists():
        _install_torch_jet(root, target)
    if str(target) not in sys.path:
        sys.path.insert(0, str(target))
    try:
        import jet
    except Exception as exc:  # noqa: BLE001 - any import failure makes the peer unavailable, with its reason
        raise PeerUnavailable(f"torch-jet is unpacked in {target} but does not import: {type(exc).__name__}: {exc}. "
                              f"Delete {target} to reinstall it.") from exc
    if not str(Path(jet.__file__).resolve()).startswith(str(target.resolve())):
        raise PeerUnavailable(f"'import jet' found another package named jet ({jet.__file__}), not torch-jet in "
                              f"{target}; run the benchmark in a fresh process without it on the path.")
    return jet


def _install_torch_jet(root: Path, target: Path) -> None:
    download = root / "dl"
    download.mkdir(parents=True, exist_ok=True)
    wheels = sorted(download.glob("jet_for_pytorch-1.0.0-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--ignore-requires-python", TORCH_JET,
               "-d", str(download)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PeerUnavailable(f"could not run pip to download torch-jet ({exc}).") from exc
        wheels = sorted(download.glob("jet_for_pytorch-1.0.0-*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise PeerUnavailable(
                f"could not download {TORCH_JET} (no network or no package index?): {' | '.join(tail)}. To install it "
                f"offline, put the wheel jet_for_pytorch-1.0.0-py3-none-any.whl in {download} and run again.")
    tmp = Path(tempfile.mkdtemp(prefix="torchjet-", dir=root))
    try:
        with zipfile.ZipFile(wheels[0]) as whl:
            whl.extractall(tmp)
        utils = tmp / "jet" / "utils.py"
        if sys.version_info < (3, 12):
            text = utils.read_text()
            text, count = _ALIAS.subn(_STAND_IN, text)
            if count != 1:
                raise PeerUnavailable(f"torch-jet's jet/utils.py no longer has the one 'type PyTree[Leaf] = (...)' "
                                      f"statement this patch replaces (found {count}); torch-jet needs Python >= 3.12 "
                                      f"then.")
            utils.write_text(text)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
