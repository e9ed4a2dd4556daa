"""Lazy IR: the nodes tracing records. Values are immutable; aliasing lives in tensor.py.

A Node is one aten op call with its inputs (Values) and its non-tensor arguments encoded as
constants. Leaves are DataNode (a buffer on the backend device) and ScalarNode (a Python number
lifted to a graph input so that, e.g., a learning rate that changes every step does not change
the graph). Each node's signature is interned to an int when it is created, so cutting a graph
only has to combine small ints with the wiring.
"""
from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .device_data import DeviceData
from .sizevars import contiguous_strides


@dataclass(frozen=True, slots=True, eq=False)
class TensorMeta:
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    storage_offset: int = 0
    # the tracer hashes layouts for every op (plans.py): computed once per object
    _hash: int | None = field(default=None, init=False, repr=False, compare=False)
    # contiguous from offset 0, so that the sizes alone give the strides: set by `interned`,
    # for LazyTensor to make its wrapper with fewer arguments (False: not known)
    plain: bool = field(default=False, init=False, repr=False, compare=False)
    _whole: bool | None = field(default=None, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        h = self._hash
        if h is None:
            h = hash((self.shape, self.stride, self.dtype, self.storage_offset))
            object.__setattr__(self, "_hash", h)
        return h

    def __eq__(self, other) -> bool:
        # the tracer compares a view's layout with its storage's on every op: no tuples built
        if self is other:
            return True
        if type(other) is not TensorMeta:
            return NotImplemented
        return (self.shape == other.shape and self.stride == other.stride
                and self.dtype == other.dtype and self.storage_offset == other.storage_offset)

    @staticmethod
    def of(t: torch.Tensor) -> "TensorMeta":
        return interned(TensorMeta(tuple(t.shape), tuple(t.stride()), t.dtype, t.storage_offset()))

    @property
    def is_whole_buffer(self) -> bool:
        """From offset 0, spanning exactly its elements (any order): a buffer of its own.
        Computed once per object: the tracer asks for every output it wraps."""
        whole = self._whole
        if whole is None:
            whole = self.storage_offset == 0 and self.storage_numel == math.prod(self.shape)
            object.__setattr__(self, "_whole", whole)
        return whole

    @property
    def storage_numel(self) -> int:
        """Elements the layout spans (0 for an empty tensor)."""
        if any(s == 0 for s in self.shape):
            return 0
        return self.storage_offset + 1 + sum((s - 1) * st for s, st in zip(self.shape, self.stride))

    def __str__(self) -> str:
        dt = str(self.dtype).replace("torch.", "")
        text = f"{dt}{list(self.shape)}"
        if list(self.stride) != contiguous_strides(self.shape):
            text += f"{{stride={list(self.stride)}}}"
        if self.storage_offset:
            text += f"{{offset={self.storage_offset}}}"
        return text


_interned: dict[TensorMeta, TensorMeta] = {}


def interned(meta: TensorMeta) -> TensorMeta:
    """The one TensorMeta object with these fields: a plan's output layouts and the layouts of
    tensors made from them are then the same object, so the trace's plan lookups and layout
    comparisons stop at identity."""
    found = _interned.get(meta)
    if found is None:
        if len(_interned) >= 1 << 16:  # layouts of many batch sizes: start afresh, stay small
            _interned.clear()
        found = _interned[meta] = meta
        plain = not meta.storage_offset and meta.stride == tuple(contiguous_strides(meta.shape))
        object.__setattr__(meta, "plain", plain)
    return found


@dataclass(frozen=True, slots=True)
class InputRef:
    """Marks where a node's argument is its `index`-th input Value."""
    index: int


@dataclass(frozen=True, slots=True)
class SeedRef:
    """A random op's generator: the executor seeds a fresh one from input `index`."""
    index: int


class _LazyDevice:
    """Stands for the lazy device in recorded arguments; the executor puts its own device here."""

    def __repr__(self) -> str:
        return "LAZY_DEVICE"


LAZY_DEVICE = _LazyDevice()

_signatures: dict[tuple, int] = {}


def intern_signature(sig: tuple) -> int:
    """Small int per distinct node signature: graph keys combine these instead of rehashing."""
    found = _signatures.get(sig)
    if found is None:
        found = _signatures.setdefault(sig, len(_signatures))
    return found


class Value:
    __slots__ = ("node", "index", "meta", "__weakref__")

    def __init__(self, node: "Node", index: int, meta: TensorMeta | None):
        self.node = node
        self.index = index
        self.meta = meta

    def __repr__(self) -> str:
        return f"Value({self.node.op_name}#{self.index}: {self.meta})"


class Node:
    """One op call. `args` holds the encoded arguments: (name, encoded value) pairs.

    A node holds its outputs weakly: a Value refers to its node, and a node referring back
    would make every node a reference cycle, kept alive (with the buffers its leaves hold)
    until the cyclic garbage collector runs, so a training loop's memory would grow between
    collections. `outputs` hands out the same Value object for as long as anything holds it.
    """

    __slots__ = ("op", "inputs", "args", "out_metas", "sig", "_out_refs", "_kept", "__weakref__")

    def __init__(self, op: Callable[..., Any], inputs: tuple[Value, ...], args: tuple,
                 out_metas: tuple[TensorMeta | None, ...], sig: int | None = None):
        self.op = op
        self.inputs = inputs
        self.args = args
        self.out_metas = out_metas
        self._out_refs: weakref.ref | list | None = None  # one output's, or a list
        self._kept: list[Value] | None = None
        # a caller that knows the signature's number (a cached trace plan) passes it
        self.sig = intern_signature((op, args, out_metas)) if sig is None else sig

    @property
    def outputs(self) -> tuple[Value, ...]:
        refs = self._out_refs
        if refs is None:  # first use: the tracer takes the values into tensors
            if len(self.out_metas) == 1:
                value = Value(self, 0, self.out_metas[0])
                self._out_refs = weakref.ref(value)  # one output (most ops): no list around it
                return (value,)
            values = tuple([Value(self, i, m) for i, m in enumerate(self.out_metas)])
            self._out_refs = [weakref.ref(v) for v in values]
            return values
        if type(refs) is weakref.ref:
            values = (refs(),)
        else:
            values = tuple([ref() for ref in refs])
        if None in values:
            values = self._revive(values)
        return values

    def first_output(self) -> Value:
        """`outputs[0]` of a node just made with one output (the tracer's common case), made
        without the property's checks."""
        value = Value(self, 0, self.out_metas[0])
        self._out_refs = weakref.ref(value)
        return value

    def _revive(self, values: tuple) -> tuple[Value, ...]:
        """Outputs nobody held any more (a compiler asks for all of them): made again and kept
        by the node from now on, so their identity holds while the compiler works."""
        revived = list(values)
        refs = self._out_refs if type(self._out_refs) is list else [self._out_refs]
        for i, v in enumerate(values):
            if v is None:
                revived[i] = Value(self, i, self.out_metas[i])
                refs[i] = weakref.ref(revived[i])
                self._kept = (self._kept or []) + [revived[i]]
        self._out_refs = refs if len(refs) > 1 else refs[0]
        return tuple(revived)

    is_leaf = False  # a class attribute, not a property: read for every storage update

    @property
    def op_name(self) -> str:
        return getattr(self.op, "__name__", str(self.op))


class DataNode(Node):
    """A leaf holding a buffer that already exists (or is being computed by an earlier step)."""

    __slots__ = ("data", "on_cpu")

    def __init__(self, data: DeviceData, meta: TensorMeta, on_cpu: bool = False):
        self.data = data
        self.on_cpu = on_cpu  # a CPU scalar tensor mixed into device ops, as eager allows
        super().__init__("data", (), ("cpu" if on_cpu else "device",), (meta,),
                         _leaf_signature(on_cpu, meta))

    is_leaf = True


class ScalarNode(Node):
    """A leaf holding a Python number passed to an op: a graph input, not a constant."""

    __slots__ = ("value",)

    def __init__(self, value: int | float | complex):
        self.value = value
        args, sig = _scalar_leaves.get(type(value)) or _scalar_leaf(type(value))
        Node.__init__(self, "scalar", (), args, _NO_META, sig)

    is_leaf = True


_NO_META = (None,)
# Python type -> (args, signature) of its scalar leaves: optimizers make a few per parameter
_scalar_leaves: dict[type, tuple[tuple, int]] = {}


def _scalar_leaf(kind: type) -> tuple[tuple, int]:
    found = _scalar_leaves[kind] = ((kind.__name__,), _leaf_signature(kind, None))
    return found


_leaf_signatures: dict[tuple, int] = {}


def _leaf_signature(kind, meta: TensorMeta | None) -> int:
    """Leaves are made every step (a learning rate, each step's outputs): one lookup each."""
    found = _leaf_signatures.get((kind, meta))
    if found is None:
        if meta is None:  # a scalar of Python type `kind`
            sig = ("scalar", (kind.__name__,), (None,))
        else:
            sig = ("data", ("cpu" if kind else "device",), (meta,))
        found = _leaf_signatures[(kind, meta)] = intern_signature(sig)
    return found


def device_leaf(data: DeviceData, meta: TensorMeta) -> Value:
    """`DataNode(data, meta).outputs[0]` for a device buffer, built field by field: mark_step
    makes one per output of every step."""
    node = DataNode.__new__(DataNode)
    node.data, node.on_cpu = data, False
    node.op, node.inputs, node.args, node.out_metas = "data", (), _DEVICE_ARGS, (meta,)
    node._kept = None
    node.sig = _leaf_signatures.get((False, meta)) or _leaf_signature(False, meta)
    value = Value(node, 0, meta)
    node._out_refs = weakref.ref(value)
    return value


_DEVICE_ARGS = ("device",)


def data_value(tensor: torch.Tensor, meta: TensorMeta | None = None, on_cpu: bool = False) -> Value:
    return DataNode(DeviceData(tensor), meta or TensorMeta.of(tensor), on_cpu).outputs[0]


def scalar_value(value: int | float | complex) -> Value:
    """`ScalarNode(value).outputs[0]`, built field by field as `device_leaf`: the tracer makes
    one per number an op is passed (optimizers: a few per parameter)."""
    node = ScalarNode.__new__(ScalarNode)
    node.value = value
    node.args, node.sig = _scalar_leaves.get(type(value)) or _scalar_leaf(type(value))
    node.op, node.inputs, node.out_metas, node._kept = "scalar", (), _NO_META, None
    out = Value(node, 0, None)
    node._out_refs = weakref.ref(out)
    return out
