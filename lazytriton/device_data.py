"""Data on the backend device: a buffer, or the promise of one that the async runtime keeps.

A graph's outputs are promises until it has run; reading one waits, and a graph that failed
raises its error where its result is read.
"""
from __future__ import annotations

import _thread

import torch


class LazyExecutionError(RuntimeError):
    """A graph failed while executing; raised where its result is read."""


class DeviceData:
    """A buffer on the backend device, or the promise of one from the async runtime.

    A promise is a held lock that `set`/`fail` releases and a reader passes through (acquire,
    release): a C lock costs a fraction of a threading.Event, and a step makes one promise per
    graph output."""

    __slots__ = ("_tensor", "_error", "_ready", "__weakref__")

    def __init__(self, tensor: torch.Tensor | None = None):
        self._tensor = tensor
        self._error: BaseException | None = None
        self._ready = None
        if tensor is None:
            self._ready = _thread.allocate_lock()
            self._ready.acquire()

    def set(self, tensor: torch.Tensor) -> None:
        self._tensor = tensor
        self._resolve()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._resolve()

    def _resolve(self) -> None:
        lock, self._ready = self._ready, None  # the value is in place before anyone passes
        if lock is not None:
            lock.release()

    @property
    def failed(self) -> bool:
        """Known to hold an error now (without waiting for a computation still running)."""
        return self._error is not None and self.is_ready

    @property
    def is_ready(self) -> bool:
        lock = self._ready
        return lock is None or not lock.locked()

    def get(self) -> torch.Tensor:
        lock = self._ready
        if lock is not None:  # wait for the runtime, then let the next reader through
            with lock:
                pass
        error = self._error
        if error is not None:
            if isinstance(error, LazyExecutionError):  # a graph that read a failed input:
                raise LazyExecutionError(*error.args) from error.__cause__  # one prefix, root cause
            raise LazyExecutionError(f"lazy graph execution failed: {error}") from error
        return self._tensor
