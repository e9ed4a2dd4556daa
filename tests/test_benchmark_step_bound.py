"""benchmarks/step_bound.py runs end to end (a smoke test: the MLP, a few steps) and prints one
row of positive times whose sums and ratios are consistent. Its figures are not checked against
targets here: timings belong in benchmarks/RESULTS.md, not in assertions."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import lazytriton

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "step_bound.py"


@pytest.mark.skipif("cpp" not in lazytriton.available_backends(), reason="needs g++")
def test_prints_the_parts_and_the_bound():
    env = dict(os.environ, LAZYTRITON_AUTOTUNE="off")  # compiling, not tuning, is under test
    run = subprocess.run([sys.executable, str(SCRIPT), "--models", "mlp", "--steps", "3",
                          "--warmup", "1", "--batch-size", "8"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    row = next(line.split() for line in run.stdout.splitlines() if line.startswith("mlp "))
    eager, floor, trace, execute, lazy, lazy_ratio, bound, bound_ratio = row[1:]
    eager, floor, trace, execute, lazy, bound = map(
        float, (eager, floor, trace, execute, lazy, bound))
    assert min(eager, floor, trace, execute) > 0
    assert lazy == pytest.approx(trace + execute, abs=0.011)
    assert bound == pytest.approx(floor + execute, abs=0.011)
    assert float(bound_ratio.strip("()x")) == pytest.approx(bound / eager, abs=0.011)
    assert float(lazy_ratio.strip("()x")) == pytest.approx(lazy / eager, abs=0.011)
