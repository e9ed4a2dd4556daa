"""Reduction lowerings: sum/prod/amax/amin/any and argmax/argmin over any set of dims."""
from __future__ import annotations

import sympy
import torch

from ..loopir import Pointwise, Reduction, View
from ..sizevars import product, unflatten
from .operands import out_dtype
from .registry import register

aten = torch.ops.aten


def reduced_dims(dims, ndim: int) -> list[int]:
    """The dims a reduction runs over, normalized; none or all mean all. A 0-dim tensor has
    none to reduce (dim 0 and -1 name the tensor itself, as in eager)."""
    if ndim == 0:
        return []
    return sorted({d % ndim for d in dims}) if dims else list(range(ndim))


def lower_reduction(lowering, node, x, dims, keepdim, rtype, dtype=None, src_dtype=None):
    ndim = x.ndim
    dims = reduced_dims(dims, ndim)
    kept = [d for d in range(ndim) if d not in dims]
    out_sizes = [sympy.Integer(1) if d in dims else x.sizes[d] for d in range(ndim)] \
        if keepdim else [x.sizes[d] for d in kept]
    load = x.loader()
    src = src_dtype or x.dtype

    def inner(ops, index, rindex):
        full = [None] * ndim
        kept_index = [index[d] for d in kept] if keepdim else list(index)
        for d, i in zip(kept, kept_index):
            full[d] = i
        for d, r in zip(dims, rindex):
            full[d] = r
        value = ops.to_dtype(load(ops, full), src)
        if src in (torch.float16, torch.bfloat16):  # eager reduces the rounded 16-bit values
            value = ops.to_dtype(value, torch.float32)
        return value
    return Reduction(dtype or out_dtype(node), out_sizes, reduction_sizes=[x.sizes[d] for d in dims],
                     reduction_type=rtype, inner=inner, src_dtype=src)


@register(aten.sum.dim_IntList)
def _sum(lowering, node, self, dim=None, keepdim=False, dtype=None):
    return lower_reduction(lowering, node, self, dim, keepdim, "sum", src_dtype=out_dtype(node))


@register(aten.sum.default)
def _sum_all(lowering, node, self, dtype=None):
    return lower_reduction(lowering, node, self, None, False, "sum", src_dtype=out_dtype(node))


@register(aten.prod.dim_int)
def _prod(lowering, node, self, dim, keepdim=False, dtype=None):
    return lower_reduction(lowering, node, self, [dim], keepdim, "prod", src_dtype=out_dtype(node))


@register(aten.amax.default)
def _amax(lowering, node, self, dim=(), keepdim=False):
    return lower_reduction(lowering, node, self, dim, keepdim, "max")


@register(aten.amin.default)
def _amin(lowering, node, self, dim=(), keepdim=False):
    return lower_reduction(lowering, node, self, dim, keepdim, "min")


@register(aten.argmax.default)
def _argmax(lowering, node, self, dim=None, keepdim=False):
    return _arg_reduction(lowering, node, self, dim, keepdim, "argmax")


@register(aten.argmin.default)
def _argmin(lowering, node, self, dim=None, keepdim=False):
    return _arg_reduction(lowering, node, self, dim, keepdim, "argmin")


def _arg_reduction(lowering, node, x, dim, keepdim, rtype):
    if dim is None:  # over the flattened tensor
        flat = View(x.dtype, [product(x.sizes)], lambda ops, i: x.loader()(
            ops, unflatten(i[0], x.sizes)))
        result = lower_reduction(lowering, node, flat, [0], False, rtype, torch.int64)
        if not keepdim:
            return result
        load = lowering.realize(result).loader()  # keepdim: a 1 for every input dim
        return View(torch.int64, [sympy.Integer(1)] * x.ndim, lambda ops, i: load(ops, []))
    return lower_reduction(lowering, node, x, [dim], keepdim, rtype, torch.int64)


@register(aten.any.dim, aten.any.default, aten.any.dims)
def _any(lowering, node, self, dim=None, keepdim=False):
    dims = [dim] if isinstance(dim, int) else dim
    return lower_reduction(lowering, node, self, dims, keepdim, "any", torch.bool, torch.bool)


@register(aten.mean.dim, aten.mean.default)
def _mean(lowering, node, self, dim=None, keepdim=False, dtype=None):
    """sum / count with the count a size expression (a decomposition would bake `numel` in as
    a literal, so each batch size would need its own kernels)."""
    out = out_dtype(node)
    acc = torch.float32 if out in (torch.float16, torch.bfloat16) else out
    dims = reduced_dims(dim, self.ndim)
    count = product(self.sizes[d] for d in dims)
    total = lowering.realize(lower_reduction(lowering, node, self, dims, keepdim, "sum", acc, acc))
    load = total.loader()
    return Pointwise(out, list(total.sizes), inner=lambda ops, i: ops.to_dtype(
        ops.truediv(load(ops, i), ops.index_expr(count, acc)), out))
