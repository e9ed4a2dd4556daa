"""Every test runs on the reference executor with a private cache dir, so tests never touch
the user's ~/.cache/lazytriton and can inspect what was written."""
from __future__ import annotations

import os

import pytest
import torch

import lazytriton

# The backend the front-end tests run on; the differential suites also run on "cpp".
TEST_BACKEND = os.environ.get("LAZYTRITON_TEST_BACKEND", "aten")
os.environ.setdefault("LAZYTRITON_STRICT", "1")  # a compiler failure fails the test, loudly


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lazytriton-cache")


@pytest.fixture(autouse=True)
def lazy_device(cache_dir):
    lazytriton.init(TEST_BACKEND, cache_dir=cache_dir)
    lazytriton.metrics.reset()
    torch.manual_seed(0)
    yield
    lazytriton.wait_device_ops()


def to_lazy(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.to("lazy") for t in tensors]
