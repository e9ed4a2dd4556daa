"""`torch.lazy`: the runtime module torch looks up by device type (`torch.get_device_module`,
`torch.utils.checkpoint`, `torch.random.fork_rng`). Registered by `lazytriton.init()`.

The lazy device has no generator of its own: a random op draws its seed from torch's CPU
generator when it is traced (tracing._draw_seed), so `torch.manual_seed` governs it, and
forking the CPU generator's state, which fork_rng and checkpoint always do, forks the lazy
device's too. Its own rng state is therefore empty, and setting it changes nothing.
"""
from __future__ import annotations

import contextlib
import sys

import torch

_initialized = True  # checkpoint saves a device's rng state only once it is initialized


def is_available() -> bool:
    return True


def is_initialized() -> bool:
    return True


def device_count() -> int:
    return 1


def current_device() -> int:
    return 0


@contextlib.contextmanager
def device(index=None):
    """There is one lazy device: selecting it (by index, name or torch.device) does nothing."""
    _check_index(index)
    yield


def get_rng_state(device=None) -> torch.Tensor:
    _check_index(device)
    return torch.empty(0, dtype=torch.uint8)


def set_rng_state(new_state: torch.Tensor, device=None) -> None:
    _check_index(device)
    if not isinstance(new_state, torch.Tensor) or new_state.numel() != 0:
        raise ValueError("the lazy device's rng state is empty (its random ops draw their seeds "
                         "from the CPU generator: set that with torch.set_rng_state)")


def synchronize(device=None) -> None:
    """Wait until every started graph has run (as torch.cuda.synchronize waits for launched
    kernels; tensors not yet cut into a graph stay pending: lazytriton.mark_step cuts them)."""
    _check_index(device)
    from . import wait_device_ops
    wait_device_ops()


def _check_index(index) -> None:
    if index is None or index == -1:
        return
    dev = index if isinstance(index, torch.device) else \
        torch.device("lazy", index) if isinstance(index, int) else torch.device(index)
    if dev.type != "lazy" or dev.index not in (None, 0):
        raise ValueError(f"lazytriton runs one device, lazy:0, not {index!r}")


def register() -> None:
    """Idempotent; leaves a `torch.lazy` someone else registered alone."""
    if getattr(torch, "lazy", None) is None:
        torch._register_device_module("lazy", sys.modules[__name__])
