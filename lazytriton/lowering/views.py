"""View lowerings: as_strided and the symbolic re-indexing of a buffer by sizes/strides/offset
that every view (reshape, permute, slice, expand) reduces to."""
from __future__ import annotations

import math

import sympy
import torch

from ..loopir import Buffer, StridedView, View
from ..sizevars import FloorDiv, ModularIndexing, contiguous_strides, flat_index
from .operands import symbolic_strides
from .registry import register

aten = torch.ops.aten


@register(aten.as_strided.default)
def _as_strided(lowering, node, self, size, stride, storage_offset=0):
    sizes, strides = symbolic_view(lowering, list(self.sizes), getattr(self, "strides", None),
                                   list(size), list(stride), storage_offset)
    offset = sympy.Integer(storage_offset or 0)
    if isinstance(self, Buffer) and _is_storage_layout(lowering, self, node.inputs[0].meta):
        return StridedView(self, self.dtype, sizes, strides, self.offset + offset)
    # our IR's as_strided indexes its input's dense layout (its TensorMeta), whatever holds it
    base_sizes = list(self.sizes)
    base_strides = _dense_strides_of(lowering, self, node)
    load = self.loader()
    walks = _walked_dims(lowering, base_sizes, base_strides, size, stride, storage_offset)
    if walks is not None:  # a permutation or selection of the base's dims: index them directly
        def inner(ops, index):
            own = [sympy.Integer(0)] * len(base_sizes)
            for k, d in enumerate(walks):
                if d is not None:
                    own[d] = index[k]
            return load(ops, own)
        return View(self.dtype, sizes, inner, base=self, strided=(strides, offset, base_strides))

    def inner(ops, index):
        flat = flat_index(index, strides, offset)
        return load(ops, unflatten_strided(flat, base_sizes, base_strides))
    return View(self.dtype, sizes, inner, base=self, strided=(strides, offset, base_strides))


def _walked_dims(lowering, base_sizes, base_strides, size, stride, offset) -> list | None:
    """For each dim of an as_strided view starting where its base starts, the base dim it walks
    (same stride, no longer; None for a size-1 dim), or None if the view is not such a
    selection (a permutation, a leading slice). Then loads need no flat index to unflatten,
    whose FloorDiv/Mod algebra costs sympy much time in deep chains of views."""
    if offset:
        return None
    ev = lowering.sizevars.evaluate
    by_stride = {ev(st): d for d, (n, st) in enumerate(zip(base_sizes, base_strides))
                 if ev(n) != 1}  # distinct: the base layout is dense
    walks = [None if n == 1 else by_stride.get(st, -1) for n, st in zip(size, stride)]
    if any(d == -1 or (d is not None and n > ev(base_sizes[d])) for d, n in zip(walks, size)):
        return None
    used = [d for d in walks if d is not None]
    return walks if len(set(used)) == len(used) else None


def _is_storage_layout(lowering, buf, meta) -> bool:
    ev = lowering.sizevars.evaluate
    return ev(buf.offset) == 0 and [ev(s) for s in buf.strides] == list(meta.stride)


def _dense_strides_of(lowering, box, node):
    meta = node.inputs[0].meta
    return symbolic_strides(list(box.sizes), meta)


def unflatten_strided(flat, sizes, strides):
    """Per-dim index of storage position `flat` in a layout with these strides: dense in any
    dim order, or with gaps between dims (a column slice's rows, stride 7 for 6 columns; a
    step slice's columns, stride 2): a decomposition's views of such a value index its
    storage. A dim's index is the position's remainder by the next larger stride, divided by
    its own stride (when dense, the quotient by its stride modulo its size). A dim of stride 0
    reads one element at every index."""
    if not all(isinstance(st, (int, sympy.Integer)) for st in strides):  # symbolic: dense
        return [sympy.Integer(0) if s == 1 else
                _mod(FloorDiv(flat, st), s) for s, st in zip(sizes, strides)]
    index = [sympy.Integer(0)] * len(sizes)
    outer = None
    for d in sorted((d for d, n in enumerate(sizes) if n != 1 and int(strides[d]) != 0),
                    key=lambda d: int(strides[d]), reverse=True):
        st = int(strides[d])
        if outer is None or outer == st * sizes[d]:
            index[d] = _mod(FloorDiv(flat, st), sizes[d])
        elif outer % st == 0:
            index[d] = _mod(FloorDiv(flat, st), outer // st)
        else:
            index[d] = FloorDiv(ModularIndexing(flat, 1, outer), st)
        outer = st
    return index


def _mod(e, m):

    return ModularIndexing(e, 1, m) if not isinstance(e, FloorDiv) else \
        ModularIndexing(e.args[0], e.args[1], m)


def symbolic_view(lowering, base_sizes: list, base_strides: list | None, size: list,
                  stride: list, offset: int):
    """Symbolic sizes/strides for an as_strided view of a base: its dims where they keep a base
    dim's size and stride (identity, transpose, slices along other dims), a contiguous
    regrouping (reshape), else constants. Any choice is right for this graph (the values
    match); symbols let a graph with another batch size produce the same kernel source."""
    ev = lowering.sizevars.evaluate
    base_strides = base_strides or contiguous_strides(base_sizes)
    pairs = {}
    for s, st in zip(base_sizes, base_strides):
        pairs.setdefault((ev(s), ev(st)), (s, st))
    kept = [pairs.get((n, st)) if n != 1 else (sympy.Integer(1), sympy.Integer(st))
            for n, st in zip(size, stride)]
    if offset == 0 and all(kept):
        return [k[0] for k in kept], [k[1] for k in kept]
    numel = math.prod(size)
    base_numel = math.prod(ev(s) for s in base_sizes)
    if offset == 0 and numel == base_numel and list(stride) == contiguous_strides(size) and \
            [ev(s) for s in base_strides] == contiguous_strides([ev(s) for s in base_sizes]):
        sizes = lowering.sizevars.match_reshape(base_sizes, size)
        return sizes, contiguous_strides(sizes)
    # a broadcast dim (stride 0: an expand, as sum's backward makes) of a size symbol's value
    # is that size: the shape guard checks the program's sizes, so a coincidence only costs a
    # compile
    return ([k[0] if k else (lowering.sizevars.symbol_of(n) if st == 0 else None) or
             sympy.Integer(n) for k, n, st in zip(kept, size, stride)],
            [k[1] if k else sympy.Integer(st) for k, st in zip(kept, stride)])

