"""LazyStorage: the IR value of one buffer on the lazy device, shared by the tensors viewing it,
and the registry of storages whose value is still an unexecuted computation (what mark_step
cuts). Below the tensor class, so the runtime finds pending work without importing it.
"""
from __future__ import annotations

import contextlib
import itertools
import weakref

from .device_data import DeviceData
from .ir import DataNode, TensorMeta, Value, device_leaf

_storage_ids = itertools.count()
_tracking = True  # off while a compiler re-traces a decomposition: its tensors are not the user's
# Storages whose value is still a computation, by creation order: mark_step's outputs. Keyed by
# the storage's weak reference, whose callback (one function for all) drops the entry when the
# storage dies: no closure per storage, as tracing makes one storage per op.
_pending: dict[weakref.ref, None] = {}


def _drop_pending(ref: weakref.ref) -> None:
    _pending.pop(ref, None)


class LazyStorage:
    __slots__ = ("id", "value", "views", "last_data", "pending_ref", "__weakref__")

    def __init__(self, value: Value):
        self.id = next(_storage_ids)
        self.views: dict[TensorMeta, Value] | None = None  # by the view's layout; made when read
        self.value = value
        self.pending_ref = None  # its key in _pending while it is there
        if value.node.is_leaf:
            self.last_data = _data_ref(value)  # weakref to the DeviceData it last held
        else:
            self.last_data = None
            if _tracking:
                self.pending_ref = ref = weakref.ref(self, _drop_pending)
                _pending[ref] = None

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
            if self.pending_ref is not None:
                _pending.pop(self.pending_ref, None)
                self.pending_ref = None
        elif _tracking and self.pending_ref is None:
            # (inlined: this runs for every write the tracer records)
            self.pending_ref = ref = weakref.ref(self, _drop_pending)
            _pending[ref] = None


def set_computed(storages: list[LazyStorage], handles: dict[int, DeviceData]) -> None:
    """Each storage's pending value becomes a leaf of the buffer `handles[id(value)]` will
    hold once its graph has run (`set_value` with a DataNode, inlined: one per graph output
    of every step)."""
    pop = _pending.pop
    for s in storages:
        handle = handles[id(s.value)]
        s.value = device_leaf(handle, s.value.meta)
        if s.views:
            s.views.clear()
        s.last_data = weakref.ref(handle)
        if s.pending_ref is not None:
            pop(s.pending_ref, None)
            s.pending_ref = None


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
    alive = (ref() for ref in list(_pending))
    return [s for s in alive if s is not None and s.is_pending]
