"""benchmarks/claims.py in the slow leg: every registered claim of the README, docs and notebooks is found in its file
and recomputed within its stated tolerance. The registry itself is checked in the default run (each sentence is still
where it says; a claim edited in the docs without its check fails here)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _claims_module():
    spec = importlib.util.spec_from_file_location("_test_claims", ROOT / "benchmarks" / "claims.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["_test_claims"] = module
    spec.loader.exec_module(module)
    return module


def test_every_registered_claim_is_still_in_its_file():
    claims = _claims_module().CLAIMS
    assert len(claims) >= 10
    missing = [f"{c.file}: {c.text!r}" for c in claims if c.locate() is None]
    assert not missing, "claims no longer in their files (update benchmarks/claims.py with the docs):\n" + \
        "\n".join(missing)


@pytest.mark.slow
def test_claims_hold():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "claims.py"), "--threads", "1"],
                          capture_output=True, text=True, timeout=3600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "claims hold" in proc.stdout
