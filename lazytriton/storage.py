"""LazyStorage: the IR value of one buffer on the lazy device, shared by the tensors viewing it,
and the registry of storages whose value is still an unexecuted computation (what mark_step
cuts). Below the tensor class, so the runtime finds pending work without importing it.
"""
from __future__ import annotations

import contextlib
import itertools
import weakref

from .ir import DataNode, TensorMeta, Value

_storage_ids = itertools.count()
_tracking = True  # off while a compiler re-traces a decomposition: its tensors are not the user's
# Storages whose value is still a computation, by creation order: mark_step's outputs.
_pending: dict[int, weakref.ref] = {}


class LazyStorage:
    __slots__ = ("id", "value", "views", "last_data", "__weakref__")

    def __init__(self, value: Value):
        self.id = next(_storage_ids)
        self.views: dict[tuple, Value] = {}
        self.value = value
        self.last_data = None  # weakref to the DeviceData this storage last held
        self._track()

    @property
    def meta(self) -> TensorMeta:
        return self.value.meta

    @property
    def is_pending(self) -> bool:
        return not self.value.node.is_leaf

    def set_value(self, value: Value) -> None:
        self.value = value
        self.views.clear()  # cached views read the old value
        self._track()

    @property
    def replaced_data(self):
        """The buffer this storage held before its pending value (None if gone): the one its
        next graph may write the new value into (buffer donation, runtime/session.py)."""
        return self.last_data() if self.last_data is not None else None

    def _track(self) -> None:
        if isinstance(self.value.node, DataNode) and not self.value.node.on_cpu:
            self.last_data = weakref.ref(self.value.node.data)
        if not _tracking:
            return
        if self.is_pending:
            if self.id not in _pending:
                _pending[self.id] = weakref.ref(self, _forget(self.id))
        else:
            _pending.pop(self.id, None)


def _forget(storage_id: int):
    return lambda _ref: _pending.pop(storage_id, None)


@contextlib.contextmanager
def untracked():
    """Tensors made inside are compiler scratch: mark_step must not pick them up."""
    global _tracking
    previous, _tracking = _tracking, False
    try:
        yield
    finally:
        _tracking = previous


def pending_storages() -> list[LazyStorage]:
    """Live storages with unexecuted IR, in creation order (stable across identical steps)."""
    alive = (ref() for ref in list(_pending.values()))
    return [s for s in alive if s is not None and s.is_pending]
