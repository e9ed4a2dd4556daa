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
        self.views: dict[TensorMeta, Value] = {}  # by the view's layout
        self.value = value
        self.last_data = _data_ref(value)  # weakref to the DeviceData it last held
        if _tracking and not value.node.is_leaf:
            _pending[self.id] = weakref.ref(self, _forget(self.id))

    @property
    def meta(self) -> TensorMeta:
        return self.value.meta

    @property
    def is_pending(self) -> bool:
        return not self.value.node.is_leaf

    def set_value(self, value: Value) -> None:
        self.value = value
        if self.views:
            self.views.clear()  # cached views read the old value
        if value.node.is_leaf:
            self.last_data = _data_ref(value) or self.last_data
        if not _tracking:
            return
        if not value.node.is_leaf:  # (inlined: this runs for every write the tracer records)
            if self.id not in _pending:
                _pending[self.id] = weakref.ref(self, _forget(self.id))
        else:
            _pending.pop(self.id, None)


def replaced_data(storage: LazyStorage):
    """The buffer `storage` held before its pending value (None if gone): the one its next
    graph may write the new value into (buffer donation, runtime/session.py)."""
    return storage.last_data() if storage.last_data is not None else None


def _data_ref(value: Value):
    node = value.node
    # a skeleton's leaves (graph.skeleton: a graph's structure kept for comparing lowerings)
    # hold no data; a decomposition lowered over one still makes storages of them
    if isinstance(node, DataNode) and not node.on_cpu and node.data is not None:
        return weakref.ref(node.data)
    return None


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
