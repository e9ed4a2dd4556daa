"""max_pool2d as loops: the window's elements unrolled into a chain of selects, so the pool
fuses with what produces its input (a relu) and what reads its output (dropout), and its
backward is a pointwise gather that fuses with the relu's backward.

Only the common case lowers here: no padding, no dilation, no ceil_mode, windows of at most
MAX_WINDOW elements, and for the backward windows that do not overlap (stride == kernel size)
and indices made by this lowering in the same graph (an index from elsewhere could point
outside its window). Everything else is the aten call (externs.py), as before.
"""
from __future__ import annotations

import sympy
import torch

from ..loopir import ComputedBuffer, Pointwise
from ..sizevars import FloorDiv
from .operands import out_dtype
from .registry import register

aten = torch.ops.aten
MAX_WINDOW = 16  # unrolled loads per output element


def _pair(value, default):
    value = list(value) if value else list(default)
    return value * 2 if len(value) == 1 else value


def _window(kernel_size, stride, padding, dilation, ceil_mode):
    """(kh, kw, sh, sw) of a case this module lowers, or None."""
    kh, kw = _pair(kernel_size, None)
    sh, sw = _pair(stride, (kh, kw))
    if any(_pair(padding, (0, 0))) or _pair(dilation, (1, 1)) != [1, 1] or ceil_mode:
        return None
    if kh * kw > MAX_WINDOW:
        return None
    return kh, kw, sh, sw


@register(aten.max_pool2d_with_indices.default)
def _max_pool2d_with_indices(lowering, node, self, kernel_size, stride=(), padding=(0,),
                             dilation=(1,), ceil_mode=False):
    window = _window(kernel_size, stride, padding, dilation, ceil_mode)
    if window is None or self.ndim not in (3, 4) or not self.dtype.is_floating_point:
        return lowering.extern(node, dict(self=self, kernel_size=kernel_size, stride=stride,
                                          padding=padding, dilation=dilation,
                                          ceil_mode=ceil_mode))
    kh, kw, sh, sw = window
    height, width = self.sizes[-2], self.sizes[-1]
    sizes = list(self.sizes[:-2]) + [FloorDiv(height - kh, sh) + 1, FloorDiv(width - kw, sw) + 1]
    load = self.loader()

    def best(ops, index):
        """eager's CPU kernel: a later element replaces the max when greater or NaN; the index
        is the row-major position in the input plane, the window's first when none replaces."""
        oh, ow = index[-2], index[-1]
        value = index_value = None
        for i in range(kh):
            for j in range(kw):
                h, w = oh * sh + i, ow * sw + j
                v = load(ops, list(index[:-2]) + [h, w])
                position = ops.index_expr(h * width + w, torch.int64)
                if value is None:
                    value, index_value = v, position
                    continue
                take = ops.logical_or(ops.gt(v, value), ops.isnan(v))
                value = ops.where(take, v, value)
                index_value = ops.where(take, position, index_value)
        return value, index_value

    dtype = out_dtype(node, 0)
    values = Pointwise(dtype, sizes,
                       inner=lambda ops, index: ops.to_dtype(best(ops, index)[0], dtype))
    indices = Pointwise(torch.int64, sizes, inner=lambda ops, index: best(ops, index)[1])
    indices.facts["pool_window"] = window  # the backward gathers only from indices made here
    return [values, indices]


@register(aten.max_pool2d_with_indices_backward.default)
def _max_pool2d_backward(lowering, node, grad_output, self, kernel_size, stride, padding,
                         dilation, ceil_mode, indices):
    window = _window(kernel_size, stride, padding, dilation, ceil_mode)
    computed = indices.node if isinstance(indices, ComputedBuffer) else indices
    made_here = getattr(computed, "facts", {}).get("pool_window")
    if window is None or made_here != window or window[:2] != window[2:]:
        return lowering.extern(node, dict(grad_output=grad_output, self=self,
                                          kernel_size=kernel_size, stride=stride,
                                          padding=padding, dilation=dilation,
                                          ceil_mode=ceil_mode, indices=indices))
    kh, kw = window[:2]
    # memory, not loaders: inlined into the gather, each input element would recompute its
    # window's max and the window's gradient (a dropout's mask) once per window element
    indices, grad_output = lowering.realize(indices), lowering.realize(grad_output)
    height, width = self.sizes[-2], self.sizes[-1]
    out_h, out_w = grad_output.sizes[-2], grad_output.sizes[-1]
    covered = sympy.expand(out_h * kh - height) == 0 and sympy.expand(out_w * kw - width) == 0
    grad_load, index_load = grad_output.loader(), indices.loader()
    dtype = out_dtype(node)

    def inner(ops, index):
        """Each input element is in at most one window: its gradient is the window's, where
        the window's index names it (rows and columns past the last window get none)."""
        h, w = index[-2], index[-1]
        window_index = list(index[:-2]) + [FloorDiv(h, kh), FloorDiv(w, kw)]
        zero = ops.constant(0.0, dtype)

        def gathered():
            chosen = ops.eq(index_load(ops, window_index),
                            ops.index_expr(h * width + w, torch.int64))
            return ops.where(chosen, ops.to_dtype(grad_load(ops, window_index), dtype), zero)
        if covered:
            return gathered()
        inside = ops.logical_and(
            ops.lt(ops.index_expr(h, torch.int64), ops.index_expr(out_h * kh, torch.int64)),
            ops.lt(ops.index_expr(w, torch.int64), ops.index_expr(out_w * kw, torch.int64)))
        return ops.masked(inside, gathered, zero)
    return Pointwise(dtype, list(self.sizes), inner=inner)

