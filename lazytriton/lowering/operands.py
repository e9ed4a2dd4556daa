"""What lowerings share: dtype promotion as eager does it, broadcasting, loaders that give an
operand (tensor, graph-input scalar or number) at an index, and the pointwise builder."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import sympy
import torch

from ..ir import TensorMeta
from ..loopir import Pointwise, ScalarArg, TensorBox

if TYPE_CHECKING:
    from . import Lowering


def is_tensor(x) -> bool:
    return isinstance(x, TensorBox)


def _example(x):
    """Something torch.result_type understands, with x's dtype and dim-ness."""
    if is_tensor(x):
        return torch.empty((1,) * min(x.ndim, 1), dtype=x.dtype, device="meta")
    if isinstance(x, ScalarArg):
        return x.value
    return x


def promote(*operands) -> torch.dtype:
    """The dtype eager computes in for these operands (tensors, graph scalars, numbers)."""
    examples = [_example(x) for x in operands if x is not None]
    result = examples[0]
    for e in examples[1:]:
        dtype = torch.result_type(result, e)
        has_dims = any(isinstance(t, torch.Tensor) and t.dim() for t in (result, e))
        result = torch.empty((1,) if has_dims else (), dtype=dtype, device="meta")
    return result.dtype if isinstance(result, torch.Tensor) else torch.tensor(result).dtype


def broadcast_sizes(lowering: Lowering, *boxes) -> list:
    """Sizes of the broadcast: per dim (from the right), a size that is not 1."""
    tensors = [b for b in boxes if is_tensor(b)]
    ndim = max((b.ndim for b in tensors), default=0)
    out = []
    for d in range(ndim):
        chosen = sympy.Integer(1)
        for b in tensors:
            k = b.ndim - ndim + d
            if k >= 0 and b.sizes[k] != 1:
                chosen = b.sizes[k]
                break
        out.append(chosen)
    return out


def operand_loader(x, sizes: Sequence, dtype: torch.dtype):
    """A loader giving x (tensor broadcast to `sizes`, or a scalar) in `dtype`."""
    if isinstance(x, ScalarArg):
        return lambda ops, index: ops.scalar(x, dtype)
    if not is_tensor(x):
        return lambda ops, index: ops.constant(x, dtype)
    load = x.loader()
    offset = len(sizes) - x.ndim

    def broadcast(ops, index):
        own = [sympy.Integer(0) if s == 1 else index[offset + k] for k, s in enumerate(x.sizes)]
        return ops.to_dtype(load(ops, own), dtype)
    return broadcast


def pointwise(lowering: Lowering, operands: Sequence, fn: Callable, out_dtype: torch.dtype,
              compute_dtype: torch.dtype | None = None, sizes=None) -> Pointwise:
    compute_dtype = compute_dtype or out_dtype
    sizes = sizes if sizes is not None else broadcast_sizes(lowering, *operands)
    loaders = [operand_loader(x, sizes, compute_dtype) for x in operands]

    def inner(ops, index):
        return ops.to_dtype(fn(ops, *[load(ops, index) for load in loaders]), out_dtype)
    return Pointwise(out_dtype, list(sizes), inner=inner)


def out_dtype(node, i: int = 0) -> torch.dtype:
    return node.outputs[i].meta.dtype


def scalar_value(ops, x, dtype):
    """A scalar operand: a kernel argument if it is a graph input, else a literal."""
    return ops.scalar(x, dtype) if isinstance(x, ScalarArg) else ops.constant(x, dtype)


def float_scalar(ops, x):
    return ops.scalar(x, torch.float32) if isinstance(x, ScalarArg) else ops.constant(x, torch.float32)


def symbolic_strides(sizes: list, meta: TensorMeta) -> list:
    """Strides in terms of the sizes when the layout is dense (any dim order), else constants."""
    order = sorted(range(len(sizes)), key=lambda d: (meta.stride[d], -d), reverse=True)
    expected, acc = {}, 1
    for d in reversed(order):
        expected[d] = acc
        acc *= meta.shape[d]
    if all(meta.stride[d] == expected[d] or meta.shape[d] == 1 for d in range(len(sizes))):
        strides, acc_sym = [None] * len(sizes), sympy.Integer(1)
        for d in reversed(order):
            strides[d] = acc_sym if meta.shape[d] != 1 else sympy.Integer(meta.stride[d])
            acc_sym = acc_sym * sizes[d]
        return strides
    return [sympy.Integer(s) for s in meta.stride]
