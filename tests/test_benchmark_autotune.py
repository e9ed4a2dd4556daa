"""benchmarks/autotune.py runs end to end (a smoke test: tiny sizes, two workloads) and writes
its JSON and Markdown reports where it says; with triton installed, also under Triton's
interpreter (--interpret, the CI form of the GPU run). Its figures are not checked here:
timings belong in benchmarks/RESULTS.md, not in assertions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lazytriton

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "autotune.py"


def _run(tmp_path, *args) -> dict:
    env = dict(os.environ)
    env.pop("LAZYTRITON_AUTOTUNE", None)
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--repeat", "2", "--warmup", "1",
                          "--out", str(tmp_path / "reports"), "--cache", str(tmp_path / "cache"),
                          *args], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    paths = [line.split()[-1] for line in run.stdout.splitlines()
             if line.strip().endswith((".json", ".md"))]
    json_path, md_path = (Path(p) for p in paths)
    assert md_path.read_text().startswith("# Kernel autotuning benchmark")
    return json.loads(json_path.read_text())


@pytest.mark.skipif("cpp" not in lazytriton.available_backends(), reason="needs g++")
def test_quick_run_on_cpp(tmp_path):
    report = _run(tmp_path, "--only", "softmax,sum_dim0")
    assert report["backend"] == "cpp" and report["peaks"]["copy_bytes"] > 0
    rows = {r["workload"]: r for r in report["rows"]}
    assert set(rows) == {"softmax", "sum_dim0"}
    for row in rows.values():
        assert not row["error"] and row["best_ms"] > 0 and row["default_ms"] > 0
        assert row["configs"] >= 2 and row["best"]  # each tuned over two or more configs
    assert any("store" in label for labels in rows["softmax"]["tried"].values()
               for label in labels)


@pytest.mark.skipif("triton" not in lazytriton.available_backends(), reason="needs triton")
def test_quick_run_under_the_triton_interpreter(tmp_path):
    # a pointwise chain: the interpreter runs tl.reduce's combine function element by element
    # in Python, so a quick-size reduction costs minutes once tuning times its candidates
    report = _run(tmp_path, "--interpret", "--only", "pointwise_chain", "--repeat", "1")
    assert report["backend"] == "triton" and report["device"] == "cpu"
    (row,) = report["rows"]
    assert not row["error"] and row["best_ms"] > 0
