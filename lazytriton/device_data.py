"""Data on the backend device: a buffer, or the promise of one that the async runtime keeps.

A graph's outputs are promises until it has run; reading one waits, and a graph that failed
raises its error where its result is read.
"""
from __future__ import annotations

import threading

import torch


class LazyExecutionError(RuntimeError):
    """A graph failed while executing; raised where its result is read."""


class DeviceData:
    """A buffer on the backend device, or the promise of one from the async runtime."""

    __slots__ = ("_tensor", "_error", "_ready", "__weakref__")

    def __init__(self, tensor: torch.Tensor | None = None):
        self._tensor = tensor
        self._error: BaseException | None = None
        self._ready = None if tensor is not None else threading.Event()

    def set(self, tensor: torch.Tensor) -> None:
        self._tensor = tensor
        self._ready.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._ready.set()

    @property
    def is_ready(self) -> bool:
        return self._ready is None or self._ready.is_set()

    def get(self) -> torch.Tensor:
        if self._ready is not None:
            self._ready.wait()
        if self._error is not None:
            raise LazyExecutionError(f"lazy graph execution failed: {self._error}") from self._error
        return self._tensor
