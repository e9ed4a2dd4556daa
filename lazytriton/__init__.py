"""lazytriton: a lazy-tensor backend for PyTorch.

    import lazytriton
    lazytriton.init()
    model.to("lazy")
    ... train as usual, calling lazytriton.mark_step() after each optimizer step ...
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from . import accelerator_ops as _accelerator_ops  # noqa: F401  (joins the tracer's table)
from . import autotune as _autotune
from . import debug, device_module, metrics
from ._version import __version__
from .device import register_lazy_kernels
from .device_data import LazyExecutionError
from .modules import keep_shared_tensors_on_conversion
from .optim_adam import patch_adam
from .optim_defaults import default_to_foreach
from .runtime import cpp_backend as _cpp_backend  # noqa: F401  (registers "cpp")
from .runtime import reference as _reference  # noqa: F401  (registers the "aten" backend)
from .runtime import triton_backend as _triton_backend  # noqa: F401  (registers "triton")
from .runtime import session as _session
from .runtime.backend import available_backends
from .tensor import LazyTensor
from .tracing import materialize as _materialize

__all__ = ["init", "mark_step", "wait_device_ops", "sync", "sync_multi", "to_cpu", "save",
           "get_tensor_id", "add_step_closure", "run_step_closures",
           "available_backends", "backend_name", "backend_device", "cache_dir", "metrics", "debug",
           "LazyTensor",
           "LazyExecutionError"]


def init(backend: str | None = None, cache_dir: str | os.PathLike | None = None,
         device: str | torch.device | None = None, autotune: str | None = None) -> None:
    """Make the "lazy" device live. backend: "auto" (default), "triton", "cpp" or "aten";
    device: where the lazy tensors' data lives, "cuda" or "cpu" (default: CUDA for triton and
    aten when there is a GPU, else the CPU; cpp is CPU only). Env LAZYTRITON_BACKEND /
    LAZYTRITON_DEVICE / LAZYTRITON_CACHE_DIR apply when the argument is None.
    autotune: "off", "default" or "max" (lazytriton/autotune.py); None: $LAZYTRITON_AUTOTUNE,
    else "default".
    Calling init again switches backend (after the running steps finish)."""
    backend = backend or os.environ.get("LAZYTRITON_BACKEND") or "auto"
    device = device or os.environ.get("LAZYTRITON_DEVICE") or None
    autotune_mode = autotune  # checked before anything changes
    if autotune_mode is not None and autotune_mode not in _autotune.MODES:
        raise ValueError(f"autotune must be one of {_autotune.MODES}, not {autotune_mode!r}")
    _session.start(backend, Path(cache_dir) if cache_dir else None, device)
    _autotune.set_mode(autotune_mode)  # a new session: its graphs compile in this mode
    register_lazy_kernels()  # at init, not import: importing must not take the device over
    device_module.register()  # torch.lazy, for torch.utils.checkpoint and fork_rng
    keep_shared_tensors_on_conversion()
    default_to_foreach()  # optimizers over lazy parameters: one traced op per step
    patch_adam()  # Adam and AdamW: one traced op for the whole update


def backend_name() -> str:
    """The backend the lazy device runs on now."""
    return _session.current().backend.name


def backend_device() -> torch.device:
    """The real device the lazy tensors' data lives on (e.g. cpu for the "cpp" backend)."""
    return _session.current().device


def cache_dir() -> Path:
    """The folder holding the generated code and built kernels (see init's cache_dir)."""
    return _session.current().cache_dir


def mark_step(device: str = "", wait: bool = False) -> None:
    """Cut the trace: compile the step's graph (or find it in the cache) and start it.
    `device` and `wait` as in torch._lazy: wait=True also waits until it has run."""
    _check_devices([device] if device else None)
    _session.current().mark_step()
    if wait:
        wait_device_ops()


def wait_device_ops(devices: Iterable[str] | None = None) -> None:
    """Wait until every started graph has run."""
    _check_devices(devices)
    _session.current().wait()


def _check_devices(devices: Iterable[str] | None) -> None:
    """torch._lazy's calls name devices; there is one lazy device, so only it may be named."""
    for d in devices or ():
        if torch.device(d).type != "lazy":
            raise ValueError(f"lazytriton runs the 'lazy' device only, not {d!r}")


def _lazy_tensors(tensors: Iterable[torch.Tensor]) -> list[LazyTensor]:
    tensors = list(tensors)
    for t in tensors:
        if not isinstance(t, LazyTensor):
            raise TypeError(f"expected lazy tensors, got a tensor on {t.device}")
    return tensors


def sync(tensors: Iterable[torch.Tensor]) -> None:
    """Start computing just these tensors (not every pending one)."""
    tensors = _lazy_tensors(tensors)
    _session.current().sync([t._lt_storage for t in tensors])


def sync_multi(tensors: Iterable[torch.Tensor], devices: Iterable[str] | None = None) -> None:
    """torch._lazy's name for `sync`."""
    _check_devices(devices)
    sync(tensors)


def to_cpu(tensors, devices: Iterable[str] | None = None):
    """These tensors' values as CPU tensors, computed in one graph; `tensors` may be any
    nesting of lists, tuples and dicts (as in torch._lazy)."""
    _check_devices(devices)
    flat, spec = tree_flatten(tensors)
    lazy = _lazy_tensors(t for t in flat if isinstance(t, torch.Tensor))
    sync(lazy)
    flat = [_materialize(t).to("cpu", copy=True) if isinstance(t, LazyTensor) else t
            for t in flat]
    return tree_unflatten(flat, spec)


def save(tensors, *args, **kwargs) -> None:
    """torch.save of these tensors' CPU values (torch._lazy.save)."""
    torch.save(to_cpu(tensors), *args, **kwargs)


def get_tensor_id(tensor: torch.Tensor) -> int:
    """A number naming the tensor's storage: views of one storage share it."""
    return _lazy_tensors([tensor])[0]._lt_storage.id


def run_step_closures() -> None:
    """Run the step closures added so far now, instead of after the next mark_step."""
    _session.current().run_step_closures()


def add_step_closure(fn: Callable, args: tuple = (), run_async: bool = False) -> None:
    """Run fn(*args) after the next mark_step's graph has executed (where graphs run, after it,
    if run_async), e.g. to log a loss without stalling the trace."""
    _session.current().add_step_closure(fn, args, run_async)
