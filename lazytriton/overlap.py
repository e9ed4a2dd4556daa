"""Where eager's in-place semantics depend on memory that arguments share, and a traced
(functional) node would compute something else: what eager refuses is refused with eager's
words, and a foreach call whose elements overlap is traced element by element, as eager runs
it. Called by the trace path's mutation plans (tracing.py) on every call: a plan's signature
sees layouts, not which arguments share a storage.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

from .opschema import ArgKind, OpInfo
from .plans import MISSING
from .tensor import overlap

if TYPE_CHECKING:
    from .tracing import _Call

aten = torch.ops.aten

FILLS = (aten.fill_.Scalar, aten.zero_.default)  # one value everywhere: eager allows these
_PARTIAL_OVERLAP = ("unsupported operation: some elements of the input tensor and the written-to "
                    "tensor refer to a single memory location. Please clone() the tensor before "
                    "performing the operation.")  # eager's words, so that code fails alike


# Ops that refuse to write a tensor sharing any memory with these arguments (ATen's
# assert_no_overlap), where elementwise ops refuse only partial overlap.
_NO_OVERLAP_WITH = {
    aten.index_add_.default: ("source",), aten.index_copy_.default: ("source",),
    aten.scatter_.src: ("src",), aten.scatter_add_.default: ("src",),
    aten.scatter_reduce_.two: ("src",), aten.index_put_.default: ("values",),
    aten.put_.default: ("source",), aten.cat.out: ("tensors",), aten.gather.out: ("self",),
}


def overlap_check_of(call: _Call) -> Callable | None:
    """For an op writing one tensor: a check, run on every call, that raises as eager does
    where the written tensor shares memory with a tensor it reads — an elementwise op (tagged
    pointwise, copy_; x[1:].add_(x[:-1])) where they are not the same view, the ops of
    _NO_OVERLAP_WITH wherever they overlap. Eager computes in place and refuses these; the
    functional node traced here would quietly compute something else."""
    info = call.info
    if len(info.mutated) != 1 or call.values[info.mutated[0]] is MISSING \
            or info.args[info.mutated[0]].kind is not ArgKind.TENSOR:
        return None
    if info.op in _NO_OVERLAP_WITH:
        names, refused = _NO_OVERLAP_WITH[info.op], ("partial", "full")
    elif torch.Tag.pointwise in info.op.tags or info.op is aten.copy_.default:
        names, refused = None, ("partial",)
    else:
        return None
    readers = [call.getters[i] for i, spec in enumerate(info.args)
               if i not in info.mutated and (names is None or spec.name in names)
               and spec.kind in (ArgKind.TENSOR, ArgKind.TENSOR_LIST)
               and call.values[i] is not MISSING]
    if not readers:
        return None

    def check(written, args: tuple, kwargs: dict) -> None:
        storage = written._lt_storage
        for get in readers:
            read = get(args, kwargs)
            for t in read if isinstance(read, (list, tuple)) else (read,):
                if getattr(t, "_lt_storage", None) is storage \
                        and overlap(written._lt_layout, t._lt_layout) in refused:
                    raise RuntimeError(_PARTIAL_OVERLAP)
    return check


class ListOverlap:
    """A foreach op is recorded as one node computing every element's new value from the old
    values. Eager runs it element by element, so where an element reads memory an earlier one
    wrote (a list holding a tensor and its view, or `_foreach_add_([a, b], [b, a])`) the two
    differ: such a call is traced again one element at a time, as eager runs it."""

    def __init__(self, call: _Call):
        info = call.info
        self.op = info.op
        self.written = [call.getters[i] for i in info.mutated
                        if info.args[i].kind is ArgKind.TENSOR_LIST]
        self.read = [call.getters[i] for i, spec in enumerate(info.args)
                     if spec.kind is ArgKind.TENSOR_LIST and i not in info.mutated
                     and call.values[i] is not MISSING]
        self.per_element = [(source.position, source.name)
                            for spec, source, value in zip(info.args, call.sources, call.values)
                            if spec.kind in (ArgKind.TENSOR_LIST, ArgKind.SCALAR_LIST)
                            and value is not MISSING]

    def found(self, args: tuple, kwargs: dict) -> bool:
        """Whether an element reads or writes a storage that another element writes. Runs for
        every call: the common case (no list shares a storage with a written one) is decided
        with sets, element by element only otherwise."""
        written = [id(getattr(t, "_lt_storage", t)) for get in self.written
                   for t in get(args, kwargs)]
        storages = set(written)
        if len(storages) == len(written) and all(
                storages.isdisjoint([id(getattr(t, "_lt_storage", t)) for t in get(args, kwargs)])
                for get in self.read):
            return False
        return self._found_by_element(args, kwargs)

    def _found_by_element(self, args: tuple, kwargs: dict) -> bool:
        owner: dict[int, int] = {}  # storage -> the element writing it
        for get in self.written:
            for k, t in enumerate(get(args, kwargs)):
                storage = getattr(t, "_lt_storage", None)
                if storage is not None and owner.setdefault(id(storage), k) != k:
                    return True
        for get in self.read:
            for k, t in enumerate(get(args, kwargs)):
                writer = owner.get(id(getattr(t, "_lt_storage", None)))
                if writer is not None and writer != k:
                    return True
        return False

    def one_by_one(self, args: tuple, kwargs: dict) -> None:
        count = len(self.written[0](args, kwargs))
        for k in range(count):
            element_args, element_kwargs = list(args), dict(kwargs)
            for position, name in self.per_element:
                if position is not None:
                    element_args[position] = [args[position][k]]
                else:
                    element_kwargs[name] = [kwargs[name][k]]
            self.op(*element_args, **element_kwargs)


def is_foreach(info: OpInfo) -> bool:
    """An op over lists whose k-th elements make the k-th result (`_foreach_*`, out= too)."""
    return info.op._schema.name.startswith("aten::_foreach_") and any(
        info.args[i].kind is ArgKind.TENSOR_LIST for i in info.mutated)
