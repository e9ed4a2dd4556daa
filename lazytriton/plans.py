"""Trace plans: what tracing one op decides, decided once per (op, argument signature).

Everything about recording an op that does not depend on the values of its arguments — which
arguments become graph inputs and how, the encoded constants, the output metadata (from the
meta kernel), aliasing, the functional twin, the node's interned signature and how the result
is returned — depends only on the op and its arguments' *signature*: each lazy tensor's layout
and its storage's layout, the type of each Python number, and the constants themselves.
`tracing.py` builds a Plan the first time a signature is seen; every later call with that
signature runs the Plan: compute the input values, make one node, hand the outputs back.

The signature must capture everything a Plan depends on, or a cached Plan would record the
wrong program: tests/test_trace_plans.py checks the distinctions (dtypes, shapes, views of the
same storage, in-place against functional, a Python number against a tensor).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from . import ir
from .ir import Node, TensorMeta, Value
from .opschema import ArgKind, OpInfo
from .tensor import LazyTensor, fresh_tensor

# getter: (args, kwargs) -> something; finisher: (args, kwargs, node outputs) -> the op's result
Getter = Callable[[tuple, dict], Any]
Finisher = Callable[[tuple, dict, tuple], Any]


MISSING = object()  # an optional argument the call did not pass


class Uncacheable(Exception):
    """An argument whose handling depends on more than its signature: plan afresh each call."""


class Plan:
    """Record one node (or none, for a view) and return the op's result."""

    __slots__ = ("op", "encoded", "out_metas", "sig", "inputs", "finish")

    def __init__(self, op, encoded: tuple, out_metas: tuple[TensorMeta | None, ...],
                 inputs: tuple[Getter, ...], finish: Finisher | None):
        self.op = op  # None: nothing to record (views, ops run eagerly)
        self.encoded = encoded
        self.out_metas = out_metas
        self.sig = None if op is None else ir.intern_signature((op, encoded, out_metas))
        self.inputs = inputs
        self.finish = finish  # None: the one output is a whole buffer, returned as a new tensor

    def run(self, args: tuple, kwargs: dict):
        if self.op is None:
            return self.finish(args, kwargs, ())
        inputs = tuple([get(args, kwargs) for get in self.inputs])
        node = Node(self.op, inputs, self.encoded, self.out_metas, self.sig)
        if self.finish is None:  # most ops
            return fresh_tensor(node.first_output())
        return self.finish(args, kwargs, node.outputs)


# --- the argument signature -------------------------------------------------------------------

class Signature:
    """Computes an op's plan-cache key: per argument, its signature by the argument's kind."""

    def __init__(self, info: OpInfo):
        self.positional = tuple(_SIGNATURE_OF_KIND[a.kind] for a in info.args)
        self.by_name = {a.name: _SIGNATURE_OF_KIND[a.kind] for a in info.args}

    def __call__(self, args: tuple, kwargs: dict) -> tuple:
        """Raises Uncacheable; a key holding an unhashable constant raises TypeError where
        it is looked up."""
        if len(args) > len(self.positional):
            raise Uncacheable()
        key = []
        for sig, value in zip(self.positional, args):
            if type(value) is LazyTensor:  # most arguments: tensor_signature, inlined
                layout, whole = value._lt_layout, value._lt_storage.value.meta
                key.append(layout if layout is whole else (layout, whole))
            else:
                key.append(sig(value))
        if kwargs:
            for name, value in kwargs.items():
                sig = self.by_name.get(name)
                if sig is None:
                    raise Uncacheable()
                key.append(name)
                key.append(sig(value))
        return tuple(key)


def tensor_signature(t) -> Any:
    """A lazy tensor's layout, with its storage's when the tensor is not the whole storage."""
    if type(t) is LazyTensor or isinstance(t, LazyTensor):
        layout = t._lt_layout
        storage_meta = t._lt_storage.value.meta
        return layout if layout is storage_meta else (layout, storage_meta)
    if t is None:
        return None
    return _number_signature(t) if isinstance(t, (int, float, complex)) else _other_tensor(t)


def _tensor_list_signature(tensors) -> tuple:
    """tensor_signature of each element, the common case inlined: a foreach op's lists hold
    one tensor per parameter."""
    key = []
    for t in tensors:
        if type(t) is LazyTensor:
            layout, whole = t._lt_layout, t._lt_storage.value.meta
            key.append(layout if layout is whole else (layout, whole))
        else:
            key.append(tensor_signature(t))
    return tuple(key)


def _other_tensor(t) -> Any:
    if isinstance(t, torch.Tensor) and t.dim() == 0 and t.device.type == "cpu":
        return ("cpu scalar", t.dtype)
    raise Uncacheable()  # a CPU index tensor to upload, or a device mismatch to report


def _number_signature(value) -> Any:
    """A number that becomes a graph input is known by its type; bool and None are constants."""
    kind = type(value)
    if kind is bool or value is None:
        return value
    return kind if isinstance(value, (int, float, complex)) else _constant(value)


def _constant(value) -> Any:
    """Lists of ints (sizes, dims) as tuples; a nested list stays unhashable: uncached."""
    return tuple(value) if type(value) is list else value


def _generator(value) -> Any:
    return None if value is None else "generator"  # a random op reads it when it runs


_SIGNATURE_OF_KIND: dict[ArgKind, Callable[[Any], Any]] = {
    ArgKind.TENSOR: tensor_signature,
    ArgKind.TENSOR_LIST: _tensor_list_signature,
    ArgKind.SCALAR: _number_signature,
    ArgKind.SCALAR_LIST: lambda v: tuple([_number_signature(x) for x in v]),
    ArgKind.GENERATOR: _generator,
    ArgKind.DEVICE: _constant,
    ArgKind.OTHER: _constant,
}


# --- getters: where a plan finds an argument, and how it becomes an input value ---------------
# One closure per input, made for the common cases directly: a plan runs them for every op.

class Source:
    """An argument's place in the call: positional index or keyword, then list element."""

    __slots__ = ("position", "name", "element")

    def __init__(self, position: int | None, name: str, element: int | None = None):
        self.position, self.name, self.element = position, name, element

    def at(self, element: int) -> "Source":
        return Source(self.position, self.name, element)

    def getter(self) -> Getter:
        position, name, element = self.position, self.name, self.element
        if element is None:
            if position is not None:
                return lambda args, kwargs: args[position]
            return lambda args, kwargs: kwargs[name]
        if position is not None:
            return lambda args, kwargs: args[position][element]
        return lambda args, kwargs: kwargs[name][element]


def whole_storage_value(source: Source) -> Getter:
    """The tensor is its whole storage (its layout is the storage's): the storage's value."""
    position, element = source.position, source.element
    if position is not None and element is None:
        return lambda args, kwargs: args[position]._lt_storage.value
    if position is not None:  # an element of a list: each of a foreach op's tensors
        return lambda args, kwargs: args[position][element]._lt_storage.value
    get = source.getter()
    return lambda args, kwargs: get(args, kwargs)._lt_storage.value


def mapped(source: Source, fn: Callable[[Any], Value]) -> Getter:
    position = source.position
    if position is not None and source.element is None:
        return lambda args, kwargs: fn(args[position])
    get = source.getter()
    return lambda args, kwargs: fn(get(args, kwargs))
