"""Smoke test of benchmarks/run.py: the quick mode runs and writes the JSON structure (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--repeats", "1", "--no-scaling",
         "--case", "paper-mlp-2d", "--case", "paper-conv", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "== paper-mlp-2d" in proc.stdout and "exact/hope" in proc.stdout
    doc = json.loads(out.read_text())
    assert set(doc) >= {"meta", "cases", "scaling", "targets"}
    assert doc["meta"]["quick"] is True
    names = [c["name"] for c in doc["cases"]]
    assert names == ["paper-conv-2d", "paper-mlp-2d"]
    for case in doc["cases"]:
        methods = {r["method"] for r in case["rows"]}
        assert methods == {"exact", "hope", "autograd", "floor"}
        for r in case["rows"]:
            assert r["time_ms"] > 0 and r["M"] >= 1 and r["order"] >= 1
            if r["method"] == "exact":
                assert r["max_rel_err"] < 1e-10
                assert set(r["ratios"]) == {"exact/hope", "exact/autograd", "exact/floor"}
    assert all({"target", "value", "met"} <= set(t) for t in doc["targets"])


def test_quick_operators_benchmark_checks_and_writes_json(tmp_path):
    """benchmarks/operators.py --quick without the torch-jet peer (no download): every method is checked against
    torch.func before it is timed, and the rows land in the JSON."""
    out = tmp_path / "operators.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "operators.py"), "--quick", "--no-torch-jet", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hope/torch.func" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["meta"]["quick"] is True and doc["meta"]["torch_jet"] is False
    assert {r["op"] for r in doc["rows"]} == {"laplacian", "bilaplacian"}
    for row in doc["rows"]:
        assert max(row["errors"]["hope"].values()) < 1e-9
        assert set(row["times"]) == {f"{m}|{mode}" for m in ("hope", "torch.func")
                                     for mode in ("forward", "forward+backward")}
