"""Every test runs on the reference executor with a private cache dir, so tests never touch
the user's ~/.cache/lazytriton and can inspect what was written."""
from __future__ import annotations

import pytest
import torch

import lazytriton


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lazytriton-cache")


@pytest.fixture(autouse=True)
def lazy_device(cache_dir):
    lazytriton.init("aten", cache_dir=cache_dir)
    lazytriton.metrics.reset()
    torch.manual_seed(0)
    yield
    lazytriton.wait_device_ops()


def to_lazy(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.to("lazy") for t in tensors]
