"""Lowerings of random ops: one counter-based stream (Philox, see philox.py) keyed by the seed
input and each element's index in its contiguous tensor, so a graph replays the same numbers
and every backend draws the same ones."""
from __future__ import annotations

import torch

from ..loopir import Pointwise
from ..philox import native_dropout_seeded
from ..sizevars import contiguous_strides, flat_index
from .operands import float_scalar, operand_loader, out_dtype, pointwise
from .registry import register

aten = torch.ops.aten


def _random(lowering, sizes, dtype, seed, fn):
    def inner(ops, index):
        offset = flat_index(index, contiguous_strides(sizes))
        return ops.to_dtype(fn(ops, ops.scalar(seed, torch.int64), offset), dtype)
    return Pointwise(dtype, list(sizes), inner=inner)


@register(aten.uniform.default)
def _uniform(lowering, node, self, generator, **kw):
    lo, hi = kw.get("from", 0.0), kw.get("to", 1.0)
    dtype = out_dtype(node)

    def fn(ops, seed, offset):
        u = ops.rand(seed, offset)
        return ops.add(ops.mul(u, ops.sub(float_scalar(ops, hi), float_scalar(ops, lo))), float_scalar(ops, lo))
    return _random(lowering, self.sizes, dtype, generator, fn)


@register(aten.normal_functional.default)
def _normal(lowering, node, self, generator, mean=0.0, std=1.0):
    def fn(ops, seed, offset):
        return ops.add(ops.mul(ops.randn(seed, offset), float_scalar(ops, std)), float_scalar(ops, mean))
    return _random(lowering, self.sizes, out_dtype(node), generator, fn)


@register(aten.bernoulli.p)
def _bernoulli(lowering, node, self, p=0.5, generator=None):
    def fn(ops, seed, offset):
        return ops.lt(ops.rand(seed, offset), float_scalar(ops, p))
    return _random(lowering, self.sizes, out_dtype(node), generator, fn)


@register(native_dropout_seeded)
def _dropout_lowering(lowering, node, input, p, train, generator):
    """native_dropout_seeded: keep where a counter-based uniform draw >= p, scaled by 1/(1-p)."""
    dtype = out_dtype(node)
    sizes = list(input.sizes)
    load = operand_loader(input, sizes, torch.float32)

    def keep(ops, index):
        offset = flat_index(index, contiguous_strides(sizes))
        return ops.ge(ops.rand(ops.scalar(generator, torch.int64), offset), float_scalar(ops, p))

    def out(ops, index):
        scale = ops.truediv(ops.constant(1.0, torch.float32),
                            ops.sub(ops.constant(1.0, torch.float32), float_scalar(ops, p)))
        kept = ops.where(keep(ops, index), ops.mul(load(ops, index), scale),
                         ops.constant(0.0, torch.float32))
        return ops.to_dtype(kept, dtype)
    if train is False:
        return [pointwise(lowering, [input], lambda ops, a: a, dtype),
                pointwise(lowering, [True], lambda ops, a: a, torch.bool, sizes=sizes)]
    return [Pointwise(dtype, sizes, inner=out),
            Pointwise(torch.bool, sizes, inner=lambda ops, i: keep(ops, i))]

