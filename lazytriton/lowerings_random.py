"""Lowerings of random ops: one counter-based stream (Philox, see philox.py) keyed by the seed
input and each element's index in its contiguous tensor, so a graph replays the same numbers
and every backend draws the same ones."""
from __future__ import annotations

import torch

from .loopir import Pointwise
from .lowerings import (LOWERINGS, _num, aten, operand_loader, out_dtype, pointwise,
                        register)
from .sizevars import contiguous_strides, flat_index


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
        return ops.add(ops.mul(u, ops.sub(_num(ops, hi), _num(ops, lo))), _num(ops, lo))
    return _random(lowering, self.sizes, dtype, generator, fn)


@register(aten.normal_functional.default)
def _normal(lowering, node, self, generator, mean=0.0, std=1.0):
    def fn(ops, seed, offset):
        return ops.add(ops.mul(ops.randn(seed, offset), _num(ops, std)), _num(ops, mean))
    return _random(lowering, self.sizes, out_dtype(node), generator, fn)


@register(aten.bernoulli.p)
def _bernoulli(lowering, node, self, p=0.5, generator=None):
    def fn(ops, seed, offset):
        return ops.lt(ops.rand(seed, offset), _num(ops, p))
    return _random(lowering, self.sizes, out_dtype(node), generator, fn)


def _dropout_lowering(lowering, node, input, p, train, generator):
    """native_dropout_seeded: keep where a counter-based uniform draw >= p, scaled by 1/(1-p)."""
    dtype = out_dtype(node)
    sizes = list(input.sizes)
    load = operand_loader(input, sizes, torch.float32)

    def keep(ops, index):
        offset = flat_index(index, contiguous_strides(sizes))
        return ops.ge(ops.rand(ops.scalar(generator, torch.int64), offset), _num(ops, p))

    def out(ops, index):
        scale = ops.truediv(ops.constant(1.0, torch.float32),
                            ops.sub(ops.constant(1.0, torch.float32), _num(ops, p)))
        kept = ops.where(keep(ops, index), ops.mul(load(ops, index), scale),
                         ops.constant(0.0, torch.float32))
        return ops.to_dtype(kept, dtype)
    if train is False:
        return [pointwise(lowering, [input], lambda ops, a: a, dtype),
                pointwise(lowering, [True], lambda ops, a: a, torch.bool, sizes=sizes)]
    return [Pointwise(dtype, sizes, inner=out),
            Pointwise(torch.bool, sizes, inner=lambda ops, i: keep(ops, i))]


def _register_dropout():
    from .tracing import native_dropout_seeded
    LOWERINGS[native_dropout_seeded] = _dropout_lowering


_register_dropout()
