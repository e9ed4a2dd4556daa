"""Lowerings of prims ops, which torch._refs-based decompositions (var_mean, ...) emit."""
from __future__ import annotations

import sympy
import torch

from ..loopir import Pointwise, View
from ..sizevars import product
from .operands import out_dtype, pointwise, promote
from .pointwise import COMPARE_NAMES, lower_where
from .reductions import lower_reduction, reduced_dims
from .registry import LOWERINGS, register

aten = torch.ops.aten


# --- prims (what torch._refs-based decompositions such as var_mean produce) -----------------

prims = torch.ops.prims


def _prim(name: str):
    packet = getattr(prims, name, None)
    return None if packet is None else packet.default


def _prim_unary(name: str):
    def lower(lowering, node, self):
        a = self
        return pointwise(lowering, [a], lambda ops, x: getattr(ops, name)(x), out_dtype(node))
    return lower


def _prim_binary(name: str):
    def lower(lowering, node, self, other):
        a, b = self, other
        return pointwise(lowering, [a, b], lambda ops, x, y: getattr(ops, name)(x, y),
                         out_dtype(node), promote(a, b) if name in COMPARE_NAMES else None)
    return lower


for _name in ["neg", "abs", "exp", "log", "sqrt", "rsqrt", "sin", "cos", "tanh", "erf",
              "log1p", "expm1", "floor", "ceil", "round", "trunc", "reciprocal", "sign"]:
    if _prim(_name) is not None:
        LOWERINGS[_prim(_name)] = _prim_unary(_name)
for _name in ["add", "sub", "mul", "maximum", "minimum", "atan2", "pow", "fmod", "remainder",
              "bitwise_and", "bitwise_or", "bitwise_xor", "eq", "ne", "lt", "le", "gt", "ge"]:
    if _prim(_name) is not None:
        LOWERINGS[_prim(_name)] = _prim_binary(_name)


@register(prims.div.default)
def _prim_div(lowering, node, self, other):
    a, b = self, other
    name = "truediv" if out_dtype(node).is_floating_point else "truncdiv"  # prims.div truncates
    return pointwise(lowering, [a, b], lambda ops, x, y: getattr(ops, name)(x, y), out_dtype(node))


@register(prims.convert_element_type.default)
def _prim_convert(lowering, node, a, dtype):
    return pointwise(lowering, [a], lambda ops, x: x, out_dtype(node))


@register(prims.where.default)
def _prim_where(lowering, node, pred, a, b):
    return lower_where(lowering, node, pred, a, b)


@register(prims.sum.default)
def _prim_sum(lowering, node, inp, dims, output_dtype=None):
    return lower_reduction(lowering, node, inp, dims, False, "sum", src_dtype=out_dtype(node))


@register(prims.amax.default)
def _prim_amax(lowering, node, inp, dims, output_dtype=None):
    return lower_reduction(lowering, node, inp, dims, False, "max")


@register(prims.amin.default)
def _prim_amin(lowering, node, inp, dims, output_dtype=None):
    return lower_reduction(lowering, node, inp, dims, False, "min")


@register(prims.var.default)
def _prim_var(lowering, node, inp, dims, correction, output_dtype=None):
    """Two passes, as eager: the mean, then the sum of squared deviations from it."""
    dtype = out_dtype(node)
    dims = reduced_dims(dims, inp.ndim)
    count = product(inp.sizes[d] for d in dims)
    total = lowering.realize(lower_reduction(lowering, node, inp, dims, True, "sum", dtype, dtype))
    load_x, load_total = inp.loader(), total.loader()

    def deviation(ops, index):
        mean_index = [sympy.Integer(0) if d in dims else i for d, i in enumerate(index)]
        mean = ops.truediv(load_total(ops, mean_index), ops.index_expr(count, dtype))
        diff = ops.sub(ops.to_dtype(load_x(ops, index), dtype), mean)
        return ops.mul(diff, diff)
    squares = View(dtype, list(inp.sizes), deviation)
    summed = lowering.realize(lower_reduction(lowering, node, squares, dims, False, "sum", dtype,
                                         dtype))
    correction = lowering.specialize(correction)
    load_sum = summed.loader()
    dof = count - correction  # eager divides by max(0, dof): inf or NaN where it is not positive

    def divisor(ops):
        if dof.is_number:
            return ops.index_expr(sympy.Max(0, dof), dtype)
        return ops.maximum(ops.index_expr(dof, dtype), ops.constant(0, dtype))
    return Pointwise(dtype, list(summed.sizes), inner=lambda ops, i: ops.truediv(
        load_sum(ops, i), divisor(ops)))
