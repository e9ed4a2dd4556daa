"""benchmarks/compile_scaling.py runs end to end (a smoke test with small graphs) and prints a
row per graph: every one compiled (FallbackGraph 0) and matched eager. Its times belong in
benchmarks/RESULTS.md, not in assertions."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import lazytriton

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compile_scaling.py"


@pytest.mark.skipif("cpp" not in lazytriton.available_backends(), reason="needs g++")
def test_each_graph_compiles_and_matches_eager():
    run = subprocess.run([sys.executable, str(SCRIPT), "--chain", "150", "--reused", "12",
                          "--layers", "3"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [line.split("|")[1:-1] for line in run.stdout.splitlines()
            if line.startswith("| ") and line.split("|")[1].split()[0] in
            ("chain", "reused", "layers")]
    assert [r[0].strip() for r in rows] == ["chain 150", "reused 12", "layers 3"]
    for name, seconds, fallback, same in rows:
        assert float(seconds) > 0 and fallback.strip() == "0" and same.strip() == "yes", name
