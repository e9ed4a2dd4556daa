"""lazytriton: a lazy-tensor backend for PyTorch.

    import lazytriton
    lazytriton.init()
    model.to("lazy")
    ... train as usual, calling lazytriton.mark_step() after each optimizer step ...
"""
from __future__ import annotations

__version__ = "0.1.0"

import os
from pathlib import Path
from typing import Callable, Iterable

import torch

from . import debug, metrics
from .device import register_lazy_kernels
from .ir import LazyExecutionError
from .modules import keep_shared_tensors_on_conversion
from .runtime import cpp_backend as _cpp_backend  # noqa: F401  (registers "cpp")
from .runtime import reference as _reference  # noqa: F401  (registers the "aten" backend)
from .runtime import session as _session
from .runtime.backend import available_backends
from .tensor import LazyTensor
from .tracing import materialize as _materialize

__all__ = ["init", "mark_step", "wait_device_ops", "sync", "to_cpu", "add_step_closure",
           "available_backends", "backend_name", "metrics", "debug", "LazyTensor",
           "LazyExecutionError"]


def init(backend: str | None = None, cache_dir: str | os.PathLike | None = None) -> None:
    """Make the "lazy" device live. backend: "auto" (default), "triton", "cpp" or "aten";
    env LAZYTRITON_BACKEND / LAZYTRITON_CACHE_DIR apply when the argument is None.
    Calling init again switches backend (after the running steps finish)."""
    backend = backend or os.environ.get("LAZYTRITON_BACKEND") or "auto"
    _session.start(backend, Path(cache_dir) if cache_dir else None)
    register_lazy_kernels()  # at init, not import: importing must not take the device over
    keep_shared_tensors_on_conversion()


def backend_name() -> str:
    """The backend the lazy device runs on now."""
    return _session.current().backend.name


def mark_step() -> None:
    """Cut the trace: compile the step's graph (or find it in the cache) and start it."""
    _session.current().mark_step()


def wait_device_ops() -> None:
    """Wait until every started graph has run."""
    _session.current().wait()


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


def to_cpu(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """These tensors' values as CPU tensors, computed in one graph."""
    tensors = _lazy_tensors(tensors)
    sync(tensors)
    return [_materialize(t).to("cpu", copy=True) for t in tensors]


def add_step_closure(fn: Callable, args: tuple = (), run_async: bool = False) -> None:
    """Run fn(*args) after the next mark_step's graph has executed (on the runtime's thread
    if run_async), e.g. to log a loss without stalling the trace."""
    _session.current().add_step_closure(fn, args, run_async)
