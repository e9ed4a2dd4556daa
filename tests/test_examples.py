"""The README's main job, examples/mnist.py, trains on the lazy device."""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

import lazytriton

MNIST = Path(__file__).resolve().parents[1] / "examples" / "mnist.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("mnist_example", MNIST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", ["aten", "cpp"])
def test_mnist_example_learns_digits(monkeypatch, cache_dir, backend):
    monkeypatch.setenv("LAZYTRITON_CACHE_DIR", str(cache_dir))  # train() calls init() itself
    mnist = _load_example()
    logged: list[str] = []
    result = mnist.train(mnist.parse_args(["--backend", backend, "--epochs", "2",
                                           "--log-every", "5"]), log=logged.append)
    assert result["accuracy"] > 0.85  # 10 classes: chance is 0.1
    assert result["steps"] == 46
    assert any("loss" in line for line in logged)
    assert lazytriton.metrics.counter_value("CachedCompile") >= 40  # steps reuse the graph


def _quick_args(*extra: str) -> list[str]:
    """One epoch on a small subset on the reference executor: seconds, not minutes."""
    return ["--backend", "aten", "--epochs", "1", "--limit", "256", "--log-every", "2", *extra]


def test_mnist_main_says_what_it_runs_on_and_ends_with_a_summary(monkeypatch, cache_dir,
                                                                 capsys):
    monkeypatch.setenv("LAZYTRITON_CACHE_DIR", str(cache_dir))
    _load_example().main(_quick_args("--metrics"))
    out = capsys.readouterr().out  # captured: not a terminal, so plain lines
    lines = out.splitlines()
    head = "\n".join(lines[:6])
    assert "backend    aten" in head and str(cache_dir.resolve()) in head
    assert "data on cpu" in head and "256 train / 256 test images" in head
    for row in ("final training loss", "test accuracy (%)", "training steps ", "training steps/s",
                "training wall time (s)", "compile time (s)", "graphs compiled / found in cache",
                "kernels compiled / loaded from disk cache", "(FallbackGraph)",
                "fell back to eager (aten::*)"):
        assert any(row in line for line in lines), row
    assert any(line.strip().startswith("training steps ") and line.endswith(" 4")
               for line in lines)
    assert "\r" not in out  # no progress-bar redraws in a log
    progress = [line for line in lines if line.startswith(("epoch 1/1", "test"))]
    assert len(progress) <= 6, progress  # loss of steps 1 and 2, an end line per loop
    assert "epoch 1/1 step 1/4: loss " in out and "epoch 1/1 step 2/4: loss " in out
    assert "UncachedCompile" in out and "graphs compiled" in out  # --metrics: the report


def test_mnist_bar_shows_loss_and_graphs_compiled(monkeypatch, cache_dir, capsys):
    monkeypatch.setenv("LAZYTRITON_CACHE_DIR", str(cache_dir))
    mnist = _load_example()
    mnist.train(mnist.parse_args(_quick_args()), bar=True)
    out = capsys.readouterr().out
    assert "\r" in out and "epoch 1/1" in out and "4/4" in out
    assert "loss " in out and "graphs compiled" in out


def test_mnist_progress_reports_a_compile_while_it_runs(monkeypatch):
    mnist = _load_example()
    report = sys.modules["training_report"]
    monkeypatch.setattr(report, "NOTICE_AFTER_S", 0.0)
    monkeypatch.setattr(report, "POLL_S", 0.01)
    logged: list[str] = []
    progress = mnist.open_progress("epoch 1/1", 3, logged.append, bar=False)
    with mnist.watch_compiles(progress):
        with lazytriton.metrics.timed("compile"):  # as Session._program times a compile
            time.sleep(0.2)
        lazytriton.metrics.counter_inc("UncachedCompile")
        progress.step()
    assert logged[0] == "epoch 1/1 step 1/3: compiling a new graph..."
    assert logged[1].startswith("epoch 1/1 step 1/3: compiled 1 graph in 0.")
    assert len(logged) == 2  # the notice is printed once per compile


def test_mnist_help_explains_the_counters(capsys):
    with pytest.raises(SystemExit):
        _load_example().parse_args(["--help"])
    out = capsys.readouterr().out
    for name in ("MarkStep", "UncachedCompile", "CachedCompile", "KernelCompile",
                 "KernelCacheLoad", "FallbackGraph", "aten::<op>"):
        assert f"  {name} " in out, name
