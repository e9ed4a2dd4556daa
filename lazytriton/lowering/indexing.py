"""Indexing lowerings: gathers (embedding, index_select, gather, index.Tensor), cat and
constant_pad, and indexed writes.

scatter, scatter_add, index_put and as_strided_scatter become Scatter nodes: a copy of the base,
then one write (or accumulation) per source element at a computed position. index.Tensor (x[idx]
with integer index tensors) becomes a Pointwise gather. Boolean masks and 0-dim scatters stay
extern aten calls (counted fallbacks).
"""
from __future__ import annotations

from typing import Sequence

import sympy
import torch

from ..loopir import Pointwise, Scatter
from ..sizevars import contiguous_strides, flat_index
from .operands import (broadcast_sizes, is_tensor, operand_loader, out_dtype, scalar_value,
                       symbolic_strides)
from .registry import register
from .views import symbolic_view, unflatten_strided

aten = torch.ops.aten
_INDEX_DTYPES = (torch.int64, torch.int32)


@register(aten.embedding.default)
def _embedding(lowering, node, weight, indices, padding_idx=-1, scale_grad_by_freq=False,
               sparse=False):
    sizes = list(indices.sizes) + [weight.sizes[1]]
    wload, iload = weight.loader(), indices.loader()
    rows = weight.sizes[0]

    def inner(ops, index):
        row = ops.indirect(iload(ops, index[:-1]), rows, negative_wraps=False)
        return wload(ops, [row, index[-1]])
    return Pointwise(weight.dtype, sizes, inner=inner)


@register(aten.index_select.default)
def _index_select(lowering, node, self, dim, index):
    if self.ndim == 0:
        return _index_select_scalar(self, index)
    dim %= self.ndim
    sizes = list(self.sizes)
    sizes[dim] = index.sizes[0] if index.ndim else sympy.Integer(1)
    load, iload = self.loader(), index.loader()

    def inner(ops, idx):
        own = list(idx)
        own[dim] = ops.indirect(iload(ops, [idx[dim]] if index.ndim else []), self.sizes[dim],
                                negative_wraps=False)
        return load(ops, own)
    return Pointwise(self.dtype, sizes, inner=inner)


def _index_select_scalar(self, index):
    """A 0-dim self: eager checks the (one) index against size 1 and returns self."""
    load, iload = self.loader(), index.loader()

    def inner(ops, idx):
        ops.indirect(iload(ops, [sympy.Integer(0)] * index.ndim), sympy.Integer(1),
                     negative_wraps=False)
        return load(ops, [])
    return Pointwise(self.dtype, [], inner=inner)


@register(aten.gather.default)
def _gather(lowering, node, self, dim, index, sparse_grad=False):
    dim %= max(self.ndim, 1)
    load, iload = self.loader(), index.loader()

    def inner(ops, idx):
        own = list(idx)
        own[dim] = ops.indirect(iload(ops, idx), self.sizes[dim], negative_wraps=False)
        return load(ops, own)
    return Pointwise(self.dtype, list(index.sizes), inner=inner)


@register(aten.cat.default)
def _cat(lowering, node, tensors, dim=0):
    tensors = [t for t in tensors if not (t.ndim == 1 and t.sizes[0] == 0)]
    dim %= tensors[0].ndim
    sizes = list(tensors[0].sizes)
    sizes[dim] = sum((t.sizes[dim] for t in tensors), sympy.Integer(0))
    dtype = out_dtype(node)
    loaders = [operand_loader(t, t.sizes, dtype) for t in tensors]
    starts, acc = [], sympy.Integer(0)
    for t in tensors:
        starts.append(acc)
        acc = acc + t.sizes[dim]
    starts.append(acc)

    def inner(ops, index):
        if len(tensors) == 1:
            return loaders[0](ops, list(index))
        pos = ops.index_expr(index[dim], torch.int64)
        result = scalar_value(ops, 0, dtype)  # never kept: every position is in one segment
        for k, load in enumerate(loaders):  # each loads only in its segment: elsewhere its
            own = list(index)  # index is out of bounds
            own[dim] = index[dim] - starts[k]
            after = ops.ge(pos, ops.index_expr(starts[k], torch.int64))
            before = ops.lt(pos, ops.index_expr(starts[k + 1], torch.int64))
            inside = before if k == 0 else after if k == len(loaders) - 1 else \
                ops.logical_and(after, before)
            result = ops.masked(inside, lambda load=load, own=own: load(ops, own), result)
        return result
    return Pointwise(dtype, sizes, inner=inner)


@register(aten.constant_pad_nd.default)
def _constant_pad(lowering, node, self, pad, value=0):
    sizes = list(self.sizes)
    pads = list(pad)
    load = self.loader()
    dtype = out_dtype(node)
    bounds = []
    for k in range(len(pads) // 2):
        d = self.ndim - 1 - k
        lo, hi = pads[2 * k], pads[2 * k + 1]
        sizes[d] = sizes[d] + lo + hi
        bounds.append((d, lo))

    def inner(ops, index):
        own = list(index)
        inside = None
        for d, lo in bounds:
            own[d] = index[d] - lo
            i = ops.index_expr(index[d] - lo, torch.int64)
            ok = ops.logical_and(ops.ge(i, ops.constant(0, torch.int64)),
                                 ops.lt(i, ops.index_expr(self.sizes[d], torch.int64)))
            inside = ok if inside is None else ops.logical_and(inside, ok)
        if inside is None:
            return load(ops, own)
        return ops.masked(inside, lambda: load(ops, own), scalar_value(ops, value, dtype))
    return Pointwise(dtype, sizes, inner=inner)


def scatter_along(node, self, dim: int, index, value, accumulate: bool) -> Scatter | None:
    """out = self; out[..., index[i], ...] (+)= value[i] along `dim`, for every i of index.
    None for 0-dim tensors (aten handles those)."""
    if self.ndim == 0 or index.ndim != self.ndim:
        return None
    dim %= self.ndim
    dtype = out_dtype(node)
    iload = index.loader()

    def target(ops, idx):
        own = list(idx)
        own[dim] = ops.indirect(iload(ops, idx), self.sizes[dim], negative_wraps=False)
        return own
    return Scatter(dtype, list(self.sizes), base=operand_loader(self, self.sizes, dtype),
                   src_sizes=list(index.sizes), target=target,
                   value=operand_loader(value, index.sizes, dtype), accumulate=accumulate,
                   ordered=[d == dim for d in range(self.ndim)])


@register(aten.scatter_add.default)
def _scatter_add(lowering, node, self, dim, index, src):
    return scatter_along(node, self, dim, index, src, accumulate=True) or lowering.extern(
        node, {"self": self, "dim": dim, "index": index, "src": src}, fallback=True)


# --- advanced indexing ------------------------------------------------------------------------

class AdvancedIndex:
    """Where x[indices] (integer index tensors, None for a full dim) reads: the result's sizes,
    which of its dims come from the broadcast index tensors, and the x index of a result index.
    As in NumPy: adjacent indexed dims stay in place, separated ones move to the front."""

    def __init__(self, lowering, x, indices: Sequence):
        indices = list(indices) + [None] * (x.ndim - len(indices))
        self.x = x
        tensors = [t for t in indices if t is not None]
        self.broadcast = broadcast_sizes(lowering, *tensors)
        indexed = [d for d, t in enumerate(indices) if t is not None]
        adjacent = indexed == list(range(indexed[0], indexed[-1] + 1))
        self.first = indexed[0] if adjacent else 0
        kept = [d for d, t in enumerate(indices) if t is None]
        before = [d for d in kept if adjacent and d < indexed[0]]
        after = [d for d in kept if d not in before]
        self.sizes = [x.sizes[d] for d in before] + self.broadcast + [x.sizes[d] for d in after]
        self._position = {d: k for k, d in enumerate(before)}
        self._position.update({d: len(before) + len(self.broadcast) + k
                               for k, d in enumerate(after)})
        self._loaders = {d: operand_loader(t, self.broadcast, t.dtype)
                         for d, t in enumerate(indices) if t is not None}

    @staticmethod
    def supported(indices: Sequence) -> bool:
        tensors = [t for t in indices if t is not None]
        return bool(tensors) and all(is_tensor(t) and t.dtype in _INDEX_DTYPES for t in tensors)

    def is_broadcast_dim(self, k: int) -> bool:
        return self.first <= k < self.first + len(self.broadcast)

    def source_index(self, ops, idx) -> list:
        at_broadcast = idx[self.first:self.first + len(self.broadcast)]
        own = []
        for d in range(self.x.ndim):
            if d in self._loaders:
                own.append(ops.indirect(self._loaders[d](ops, at_broadcast), self.x.sizes[d]))
            else:
                own.append(idx[self._position[d]])
        return own


@register(aten.index.Tensor, aten._unsafe_index.Tensor)
def _index(lowering, node, self, indices):
    if not AdvancedIndex.supported(indices):  # boolean masks: the result's size is data
        return lowering.extern(node, {"self": self, "indices": indices}, fallback=True)
    where = AdvancedIndex(lowering, self, indices)
    load = self.loader()
    return Pointwise(self.dtype, where.sizes, inner=lambda ops, idx: load(
        ops, where.source_index(ops, idx)))


@register(aten.index_put.default, aten._unsafe_index_put.default)
def _index_put(lowering, node, self, indices, values, accumulate=False):
    if _is_mask_fill(self, indices, values):
        return _mask_fill(self, indices[0], values, bool(accumulate), out_dtype(node))
    if not AdvancedIndex.supported(indices):
        return lowering.extern(node, {"self": self, "indices": indices, "values": values,
                                      "accumulate": accumulate}, fallback=True)
    dtype = out_dtype(node)
    where = AdvancedIndex(lowering, self, indices)
    return Scatter(dtype, list(self.sizes), base=operand_loader(self, self.sizes, dtype),
                   src_sizes=list(where.sizes), target=where.source_index,
                   value=operand_loader(values, where.sizes, dtype), accumulate=bool(accumulate),
                   ordered=[where.is_broadcast_dim(k) for k in range(len(where.sizes))])


def _is_mask_fill(self, indices, values) -> bool:
    """x[mask] = v with one value for every selected element: a boolean mask over x's leading
    dims and a one-element v. The result's shape is x's whatever the mask holds."""
    if len(indices) != 1 or not is_tensor(indices[0]) or indices[0].dtype != torch.bool:
        return False
    mask = indices[0]
    one_value = not is_tensor(values) or (values.ndim <= len(self.sizes)
                                          and all(s == 1 for s in values.sizes))
    return one_value and mask.ndim <= len(self.sizes) and \
        all(m == s for m, s in zip(mask.sizes, self.sizes))


def _mask_fill(self, mask, values, accumulate: bool, dtype) -> Pointwise:
    """where(mask, v, x), or x + where(mask, v, 0) when accumulating: a pointwise op."""
    base = operand_loader(self, self.sizes, dtype)
    value = operand_loader(values, self.sizes, dtype)
    selected = mask.loader()

    def inner(ops, idx):
        hit = selected(ops, list(idx[:mask.ndim]))
        if accumulate:
            return ops.add(base(ops, idx), ops.where(hit, value(ops, idx), ops.constant(0, dtype)))
        return ops.where(hit, value(ops, idx), base(ops, idx))
    return Pointwise(dtype, list(self.sizes), inner=inner)


# --- writes through a view ----------------------------------------------------------------------

@register(aten.as_strided_scatter.default)
def _as_strided_scatter(lowering, node, self, src, size, stride, storage_offset=None):
    """out = self.clone(); out.as_strided(size, stride, offset).copy_(src). `size`, `stride`
    and `offset` address self's storage, laid out as self's TensorMeta says (a transposed
    exp() result's storage holds it column by column), while the Scatter's flat target
    indexes self's elements in row-major order: a storage position maps to one through
    self's strides. Views where elements overlap (aten raises) run as aten, and so does a
    self that is not one dense buffer (the tracer's storages always are)."""
    self_meta = node.inputs[0].meta
    overlapping = any(st == 0 and sz > 1 for sz, st in zip(size, stride))  # aten raises
    if overlapping or not self_meta.is_whole_buffer:
        return lowering.extern(node, {"self": self, "src": src, "size": size, "stride": stride,
                                      "storage_offset": storage_offset}, fallback=True)
    dtype = out_dtype(node)
    offset = storage_offset or 0
    storage_strides = symbolic_strides(list(self.sizes), self_meta)
    sizes, strides = symbolic_view(lowering, list(self.sizes), storage_strides, list(size),
                                   list(stride), offset)
    src_load = operand_loader(src, sizes, dtype)
    row_major = contiguous_strides(list(self.sizes))
    in_storage_order = list(self_meta.stride) == contiguous_strides(list(self_meta.shape))

    def target(ops, idx):
        position = flat_index(idx, strides, offset)
        if in_storage_order:
            return position
        return flat_index(unflatten_strided(position, list(self.sizes), storage_strides),
                          row_major)
    return Scatter(dtype, list(self.sizes), base=operand_loader(self, self.sizes, dtype),
                   src_sizes=sizes, target=target, value=src_load, accumulate=False,
                   ordered=[False] * len(sizes), flat_target=True)
