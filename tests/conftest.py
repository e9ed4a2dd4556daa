"""Every test runs with a private cache dir, so tests never touch the user's ~/.cache/lazytriton
and can inspect what was written.

Front-end tests run on the reference executor. The differential suites (modules marked
`differential`: values against eager) run on every backend the C++ tests cover, each test once
per backend, so one pytest run checks both; modules also marked `bounds_checked` (whole models)
run a third time on "cpp:bounds", the C++ backend with LAZYTRITON_CHECK=bounds, so every load
and store their kernels make is checked. LAZYTRITON_TEST_BACKEND=<name> runs everything on that
one backend instead."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
import torch

import lazytriton

# The backend the front-end tests run on, and those the differential suites run on.
TEST_BACKEND = os.environ.get("LAZYTRITON_TEST_BACKEND", "aten")
# every code-generating backend this machine has (triton runs under its interpreter without a GPU)
DIFFERENTIAL_BACKENDS = [TEST_BACKEND] if "LAZYTRITON_TEST_BACKEND" in os.environ else \
    [b for b in ("aten", "cpp", "triton") if b in lazytriton.available_backends()]
os.environ.setdefault("LAZYTRITON_STRICT", "1")  # a compiler failure fails the test, loudly
# No autotuning unless a test asks (test_autotune*.py do): variants would lengthen every test
# graph's C++ build and timing its first run, and a choice made by timing varies by machine and
# load, so which code a test checked would too. Each variant is checked on its own instead, by
# forcing it (autotune.forced). LAZYTRITON_AUTOTUNE=default pytest ... runs the suite tuned.
os.environ.setdefault("LAZYTRITON_AUTOTUNE", "off")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Module scope: pytest then runs a module's tests backend by backend, not interleaved.
    marker = metafunc.definition.get_closest_marker
    if "test_backend" in metafunc.fixturenames and marker("differential"):
        backends = list(DIFFERENTIAL_BACKENDS)
        if marker("bounds_checked") and "cpp" in backends:
            backends.append("cpp:bounds")
        skipped = marker("skip_backends")
        reasons = skipped.kwargs if skipped else {}
        params = [pytest.param(b, marks=pytest.mark.skip(reason=reasons[b])) if b in reasons
                  else b for b in backends]
        metafunc.parametrize("test_backend", params, scope="module")


@pytest.fixture(scope="session")
def test_backend() -> str:
    """The backend a test runs on (parametrized over DIFFERENTIAL_BACKENDS where differential)."""
    return TEST_BACKEND


@pytest.fixture(scope="session")
def cache_dirs(tmp_path_factory) -> Callable[[str], Path]:
    """cache_dirs(backend): one cache dir per backend, so tests that read what the C++ backend
    wrote do not find the differential suites' graphs."""
    dirs: dict[str, Path] = {}

    def get(backend: str) -> Path:
        if backend not in dirs:
            dirs[backend] = tmp_path_factory.mktemp(f"lazytriton-cache-{backend}")
        return dirs[backend]
    return get


@pytest.fixture(scope="session")
def cache_dir(cache_dirs) -> Path:
    return cache_dirs(TEST_BACKEND)


@pytest.fixture(autouse=True)
def lazy_device(test_backend, cache_dirs, monkeypatch):
    backend, _, check = test_backend.partition(":")
    if check:
        monkeypatch.setenv("LAZYTRITON_CHECK", check)
    lazytriton.init(backend, cache_dir=cache_dirs(test_backend))
    lazytriton.metrics.reset()
    torch.manual_seed(0)
    yield
    lazytriton.wait_device_ops()


def to_lazy(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.to("lazy") for t in tensors]
