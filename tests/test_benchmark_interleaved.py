"""benchmarks/interleaved.py runs end to end (a smoke test: the MLP, eager and lazytriton, a few
rounds) and prints a row per system with a step time and a ratio to eager. Its figures are not
checked here: timings belong in benchmarks/RESULTS.md, not in assertions."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import lazytriton

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "interleaved.py"


@pytest.mark.skipif("cpp" not in lazytriton.available_backends(), reason="needs g++")
def test_eager_and_lazytriton_take_turns():
    env = dict(os.environ)
    env.pop("LAZYTRITON_AUTOTUNE", None)
    run = subprocess.run([sys.executable, str(SCRIPT), "--models", "mlp", "--systems",
                          "eager,lazytriton", "--rounds", "3", "--warmup", "1", "--batch-size",
                          "8", "--markdown"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = {line.split()[1]: line.split() for line in run.stdout.splitlines()
            if line.startswith("mlp ")}
    assert set(rows) == {"eager", "lazytriton"}
    assert rows["eager"][3] == "1.00x"
    assert float(rows["lazytriton"][2]) > 0 and rows["lazytriton"][3].endswith("x")
    assert "| mlp | lazytriton |" in run.stdout


def test_an_unknown_system_is_refused():
    run = subprocess.run([sys.executable, str(SCRIPT), "--systems", "eager,jax"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "unknown systems ['jax']" in run.stderr
