"""The README's main job, examples/mnist.py, trains on the lazy device."""
from __future__ import annotations

import importlib.util
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
