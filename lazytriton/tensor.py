"""LazyTensor: a tensor on the "lazy" device whose value is a Lazy IR Value.

Aliasing works as in eager PyTorch because tensors share a LazyStorage: the storage holds the IR
value of the whole buffer (its own layout, offset 0) and each tensor is a view (size, stride,
storage_offset) of it. Reading a view records `as_strided` over the storage's value; writing
through a view records `as_strided_scatter` into it. Views, slices, `.data`, `detach`, `set_` and
in-place optimizer updates therefore all see each other's writes.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import torch

from . import ir
from .ir import TensorMeta, Value, interned
from .storage import LazyStorage

LAZY_TORCH_DEVICE = torch.device("lazy", 0)


def _untraced(func):
    raise RuntimeError("lazy tensors need the tracer: import lazytriton and call lazytriton.init()")


# Every aten call on a LazyTensor goes to its op's handler, made once per op by the tracer's
# router (tracing._route), which the tracer installs when it is imported (the tracer builds on
# this module, not the other way round). Ops live as long as torch: their ids name them.
_handlers: dict[int, Callable[[tuple, dict], Any]] = {}
_router: Callable[[Any], Callable[[tuple, dict], Any]] = _untraced


def set_router(router) -> None:
    global _router
    _router = router
    _handlers.clear()


class LazyTensor(torch.Tensor):
    """The Python object behind every tensor on the lazy device."""

    # slots, not the instance dict: tracing sets both on every output, and a dict per tensor
    # costs its allocation and more garbage collection (other attributes still go to the dict)
    __slots__ = ("_lt_storage", "_lt_layout")
    _lt_storage: LazyStorage
    _lt_layout: TensorMeta  # this view's (shape, stride, dtype, offset), read by the tracer

    @staticmethod
    def __new__(cls, storage: LazyStorage, shape, stride, offset: int, dtype: torch.dtype,
                requires_grad: bool = False, layout: TensorMeta | None = None):
        if layout is not None and layout.plain and not requires_grad:
            # most outputs: torch parses the arguments of every op's, the fewer the better
            t = torch.Tensor._make_wrapper_subclass(cls, shape, dtype=dtype,
                                                    device=LAZY_TORCH_DEVICE)
        else:
            t = torch.Tensor._make_wrapper_subclass(
                cls, shape, strides=stride, storage_offset=offset, dtype=dtype,
                device=LAZY_TORCH_DEVICE, requires_grad=requires_grad)
        t._lt_storage = storage
        t._lt_layout = layout or interned(TensorMeta(tuple(shape), tuple(stride), dtype, offset))
        return t

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        handler = _handlers.get(id(func))
        if handler is None:
            handler = _handlers[id(func)] = _router(func)
        return handler(args, kwargs or {})

    # --- what bypasses the dispatcher -------------------------------------------------------
    @property
    def data(self) -> torch.Tensor:
        return torch._C.TensorBase.data.__get__(self)

    @data.setter
    def data(self, new: torch.Tensor) -> None:
        alias_into(self, new)

    def __repr__(self, *, tensor_contents=None) -> str:
        # torch prints subclasses as "ClassName(...)"; a lazy tensor should read like eager's
        text = torch._tensor_str._str(self, tensor_contents=tensor_contents)
        prefix = type(self).__name__ + "("
        return "tensor(" + text[len(prefix):].replace("\n" + " " * len(prefix), "\n" + " " * 7)

    def __format__(self, format_spec: str) -> str:
        # eager formats 0-dim tensors as numbers only for exact torch.Tensor
        if self.dim() == 0:
            return self.detach().item().__format__(format_spec)
        return object.__format__(self, format_spec)

    def tolist(self):
        return self.cpu().tolist()

    def __reduce_ex__(self, protocol):
        # Saved as a CPU tensor (as torch_xla does): a checkpoint must not need a lazy runtime.
        return self.detach().cpu().__reduce_ex__(protocol)

    def __deepcopy__(self, memo):
        copied = self.detach().clone()
        if isinstance(self, torch.nn.Parameter):  # a lazy Parameter is a LazyTensor marked so
            copied = torch.nn.Parameter(copied, self.requires_grad)
        else:
            copied.requires_grad_(self.requires_grad)
        memo[id(self)] = copied
        return copied


def is_identity_view(t: LazyTensor, storage: LazyStorage) -> bool:
    layout, meta = t._lt_layout, storage.value.meta
    return layout is meta or layout == meta


def overlap(a: TensorMeta, b: TensorMeta) -> str:
    """How two views of one storage share memory, as eager tells it (ATen's memory overlap
    status): "full" (the same view), "partial", "none", or "too hard" (one is not dense: eager
    does not check those)."""
    if a == b:
        return "full"
    n_a, n_b = math.prod(a.shape), math.prod(b.shape)
    if not n_a or not n_b:
        return "none"
    if not _dense(a) or not _dense(b):
        return "too hard"
    start_a, start_b = a.storage_offset * a.dtype.itemsize, b.storage_offset * b.dtype.itemsize
    end_a, end_b = start_a + n_a * a.dtype.itemsize, start_b + n_b * b.dtype.itemsize
    if start_a == start_b and end_a == end_b:
        return "full" if a.stride == b.stride else "partial"
    return "partial" if start_a < end_b and start_b < end_a else "none"


def _dense(meta: TensorMeta) -> bool:
    """Non-overlapping and dense: its elements fill a block of memory, in some order."""
    expected = 1
    for size, stride in sorted(zip(meta.shape, meta.stride), key=lambda p: p[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def view_key(t: torch.Tensor) -> tuple:
    return tuple(t.shape), tuple(t.stride()), t.storage_offset()


def value_of(t: LazyTensor) -> Value:
    """The IR value of what `t` shows of its storage now."""
    storage = t._lt_storage
    if is_identity_view(t, storage):
        return storage.value
    key = t._lt_layout
    views = storage.views
    if views is None:
        views = storage.views = {}
    found = views.get(key)
    if found is None:
        if t.dtype == storage.meta.dtype:
            found = _as_strided(storage.value, (key.shape, key.stride, key.storage_offset), t.dtype)
        else:
            flat = _reinterpret(storage, t.dtype)
            whole = view_key(t) == (flat.meta.shape, (1,), 0)
            found = flat if whole else _as_strided(flat, view_key(t), t.dtype)
        views[key] = found
    return found


INTERNAL_OVERLAP = ("unsupported operation: more than one element of the written-to tensor "
                    "refers to a single memory location. Please clone() the tensor before "
                    "performing the operation.")  # eager's words


def write(t: LazyTensor, new: Value, same_value_everywhere: bool = False) -> None:
    """Make `t` show `new` (same shape and dtype), updating every alias of its storage.
    A view whose elements share memory (an expanded tensor) takes a write only where the op
    writes one value everywhere (`same_value_everywhere`: fill_, zero_), as eager allows;
    otherwise this raises eager's error, before anything changes."""
    storage = t._lt_storage
    layout, whole = t._lt_layout, storage.value.meta
    if layout is whole or layout == whole:  # t shows its whole storage (as most writes do)
        meta = new.meta
        if meta is whole or (meta.stride == whole.stride and meta.storage_offset == 0):
            storage.set_value(new)
            return
    elif layout.dtype != whole.dtype:
        _write_reinterpreted(t, storage, new)
        return
    if overlaps_itself(layout):
        if not same_value_everywhere:
            raise RuntimeError(INTERNAL_OVERLAP)
        layout, new = _one_of_each_shared(layout, new)
    key = (layout.shape, layout.stride, layout.storage_offset)
    storage.set_value(_as_strided_scatter(storage.value, new, key))


def overlaps_itself(layout: TensorMeta) -> bool:
    """Some elements share memory: a dim of stride 0 (expand), as eager tells it."""
    return any(stride == 0 and size > 1 for size, stride in zip(layout.shape, layout.stride))


def _one_of_each_shared(layout: TensorMeta, new: Value) -> tuple[TensorMeta, Value]:
    """The view with its stride-0 dims cut to one element, and `new`'s first element along
    them: the same memory, written once."""
    shape = tuple(1 if stride == 0 else size for size, stride in zip(layout.shape, layout.stride))
    first = _as_strided(new, (shape, new.meta.stride, new.meta.storage_offset), new.meta.dtype)
    return TensorMeta(shape, layout.stride, layout.dtype, layout.storage_offset), first


# --- views that reinterpret the dtype (view_as_complex, view_as_real, view(dtype)) -----------
# Such a view's sizes, strides and offset count elements of its own dtype from the start of the
# storage, as in eager: it reads the storage's memory reinterpreted as a 1-D value of its dtype.

def reinterpreted_numel(storage_meta: TensorMeta, dtype: torch.dtype) -> tuple[int, int]:
    """(whole `dtype` elements in the storage, storage elements they cover)."""
    old, new = storage_meta.dtype.itemsize, dtype.itemsize
    n_new = storage_meta.storage_numel * old // new
    return n_new, n_new * new // old


def _reinterpret(storage: LazyStorage, dtype: torch.dtype) -> Value:
    n_new, n_old = reinterpreted_numel(storage.meta, dtype)
    flat = _as_strided(storage.value, ((n_old,), (1,), 0), storage.meta.dtype)
    return _bitcast(flat, dtype, n_new)


def _write_reinterpreted(t: LazyTensor, storage: LazyStorage, new: Value) -> None:
    """Write into the memory seen as t's dtype, then bit-cast it back into the storage."""
    n_new, n_old = reinterpreted_numel(storage.meta, t.dtype)
    flat = _as_strided_scatter(_reinterpret(storage, t.dtype), new, view_key(t))
    back = _bitcast(flat, storage.meta.dtype, n_old)
    storage.set_value(_as_strided_scatter(storage.value, back, ((n_old,), (1,), 0)))


def _record(op, inputs: tuple[Value, ...], args: tuple, meta: TensorMeta) -> Value:
    return ir.Node(op, inputs, args, (meta,)).outputs[0]


# Reading and writing views happens every step for the same layouts: their nodes' arguments,
# metadata and interned signatures are made once per layout.

@functools.lru_cache(maxsize=None)
def _as_strided_node(key: tuple, dtype: torch.dtype) -> tuple:
    shape, stride, offset = key
    args = (("self", ir.InputRef(0)), ("size", shape), ("stride", stride),
            ("storage_offset", offset))
    metas = (TensorMeta(shape, stride, dtype, offset),)
    op = torch.ops.aten.as_strided.default
    return op, args, metas, ir.intern_signature((op, args, metas))


@functools.lru_cache(maxsize=None)
def _as_strided_scatter_node(key: tuple, base: TensorMeta) -> tuple:
    shape, stride, offset = key
    args = (("self", ir.InputRef(0)), ("src", ir.InputRef(1)), ("size", shape),
            ("stride", stride), ("storage_offset", offset))
    metas = (TensorMeta(base.shape, base.stride, base.dtype),)
    op = torch.ops.aten.as_strided_scatter.default
    return op, args, metas, ir.intern_signature((op, args, metas))


def _as_strided(value: Value, key: tuple, dtype: torch.dtype) -> Value:
    op, args, metas, sig = _as_strided_node(key, dtype)
    return ir.Node(op, (value,), args, metas, sig).outputs[0]


def _as_strided_scatter(base: Value, src: Value, key: tuple) -> Value:
    op, args, metas, sig = _as_strided_scatter_node(key, base.meta)
    return ir.Node(op, (base, src), args, metas, sig).outputs[0]


def _bitcast(flat: Value, dtype: torch.dtype, numel: int) -> Value:
    """A 1-D contiguous value's bytes as `numel` elements of `dtype` (aten's view.dtype)."""
    return _record(torch.ops.aten.view.dtype, (flat,),
                   (("self", ir.InputRef(0)), ("dtype", dtype)), TensorMeta((numel,), (1,), dtype))


def fresh_tensor(value: Value) -> LazyTensor:
    """A tensor owning a new storage that holds `value` (a whole buffer: offset 0)."""
    meta = value.meta
    if meta.storage_offset:
        return LazyTensor(LazyStorage(value), meta.shape, meta.stride, 0, meta.dtype)
    return _traced_tensor(LazyStorage(value), meta)


def view_tensor(base: LazyTensor, meta: TensorMeta) -> LazyTensor:
    """A tensor sharing `base`'s storage with the layout `meta` (from the op's meta kernel)."""
    return _traced_tensor(base._lt_storage, meta)


_make_wrapper = torch.Tensor._make_wrapper_subclass


def _traced_tensor(storage: LazyStorage, meta: TensorMeta) -> LazyTensor:
    """`LazyTensor(storage, ..., layout=meta)` for an op's output, which never requires grad
    (autograd wraps it above the dispatcher), built without LazyTensor.__new__'s arguments
    and branches: the tracer makes one or more per op."""
    if meta.plain:
        t = _make_wrapper(LazyTensor, meta.shape, dtype=meta.dtype, device=LAZY_TORCH_DEVICE)
    else:
        t = _make_wrapper(LazyTensor, meta.shape, strides=meta.stride,
                          storage_offset=meta.storage_offset, dtype=meta.dtype,
                          device=LAZY_TORCH_DEVICE)
    t._lt_storage = storage
    t._lt_layout = meta
    return t


def alias_into(t: LazyTensor, source: LazyTensor) -> None:
    """`t.set_(source)` / `t.data = source`: t becomes another view of source's storage."""
    if not isinstance(source, LazyTensor):
        raise RuntimeError(
            f"cannot alias a lazy tensor to a tensor on {source.device}: move it with .to('lazy') first")
    torch._C.TensorBase.data.__set__(t, source)  # sizes, strides, offset and dtype of the TensorImpl
    t._lt_storage = source._lt_storage
    t._lt_layout = source._lt_layout
