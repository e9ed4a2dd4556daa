"""Pointwise lowerings: unary and binary math, comparisons, where/clamp/masked_fill, copies and
dtype conversions, and the factories (full, arange, *_like)."""
from __future__ import annotations

import sympy
import torch

from ..loopir import Pointwise, ScalarArg
from .operands import broadcast_sizes, operand_loader, out_dtype, pointwise, promote
from .registry import LOWERINGS, register

aten = torch.ops.aten


_UNARY = {
    aten.neg.default: "neg", aten.abs.default: "abs", aten.exp.default: "exp",
    aten.exp2.default: "exp2", aten.log.default: "log", aten.log2.default: "log2",
    aten.log10.default: "log10", aten.sqrt.default: "sqrt", aten.rsqrt.default: "rsqrt",
    aten.sin.default: "sin", aten.cos.default: "cos", aten.tan.default: "tan",
    aten.tanh.default: "tanh", aten.sinh.default: "sinh", aten.cosh.default: "cosh",
    aten.asin.default: "asin", aten.acos.default: "acos", aten.atan.default: "atan",
    aten.sigmoid.default: "sigmoid", aten.relu.default: "relu", aten.erf.default: "erf",
    aten.erfc.default: "erfc", aten.log1p.default: "log1p", aten.expm1.default: "expm1",
    aten.floor.default: "floor", aten.ceil.default: "ceil", aten.round.default: "round",
    aten.trunc.default: "trunc", aten.reciprocal.default: "reciprocal",
    aten.sign.default: "sign", aten.bitwise_not.default: "bitwise_not",
    aten.logical_not.default: "logical_not", aten.isnan.default: "isnan",
    aten.isinf.default: "isinf", aten.lgamma.default: "lgamma", aten.atanh.default: "atanh",
    aten.asinh.default: "asinh", aten.acosh.default: "acosh",
}

# ops that stay in the input's dtype category for their math (compute in the promoted inputs)
_FLOAT_MATH = {"exp", "exp2", "log", "log2", "log10", "sqrt", "rsqrt", "sin", "cos", "tan",
               "tanh", "sinh", "cosh", "asin", "acos", "atan", "sigmoid", "erf", "erfc",
               "log1p", "expm1", "reciprocal", "lgamma", "atanh", "asinh", "acosh"}
_PREDICATES = {"isnan", "isinf", "logical_not"}


def _unary(name: str):
    def lower(lowering, node, self):
        _reject_bool(name, self)
        dtype = out_dtype(node)
        compute = self.dtype if name in _PREDICATES else dtype
        return pointwise(lowering, [self], lambda ops, a: getattr(ops, name)(a), dtype, compute)
    return lower


for _op, _name in _UNARY.items():
    LOWERINGS[_op] = _unary(_name)


@register(aten.pow.Tensor_Scalar)
def _pow_scalar(lowering, node, self, exponent):
    """Eager's pow by a number computes x ** 0.5 as sqrt and x ** -0.5 as rsqrt, whose
    results differ from pow's at -0 and -inf; a number given at run time chooses per call."""
    dtype = out_dtype(node)
    if not dtype.is_floating_point or not (isinstance(exponent, ScalarArg) or
                                           exponent in (0.5, -0.5)):
        return pointwise(lowering, [self, exponent], lambda ops, a, b: ops.pow(a, b), dtype)

    def apply(ops, a, b):
        if not isinstance(exponent, ScalarArg):
            return ops.sqrt(a) if exponent == 0.5 else ops.rsqrt(a)
        return ops.where(ops.eq(b, ops.constant(0.5, dtype)), ops.sqrt(a),
                         ops.where(ops.eq(b, ops.constant(-0.5, dtype)), ops.rsqrt(a),
                                   ops.pow(a, b)))
    return pointwise(lowering, [self, exponent], apply, dtype)

_BINARY = {
    aten.add.Tensor: "add", aten.sub.Tensor: "sub", aten.mul.Tensor: "mul",
    aten.maximum.default: "maximum", aten.minimum.default: "minimum",
    aten.atan2.default: "atan2", aten.pow.Tensor_Tensor: "pow", aten.pow.Scalar: "pow",
    aten.fmod.Tensor: "fmod", aten.fmod.Scalar: "fmod",
    aten.remainder.Tensor: "remainder", aten.remainder.Scalar: "remainder",
    aten.bitwise_and.Tensor: "bitwise_and", aten.bitwise_or.Tensor: "bitwise_or",
    aten.bitwise_xor.Tensor: "bitwise_xor", aten.bitwise_and.Scalar: "bitwise_and",
    aten.bitwise_or.Scalar: "bitwise_or", aten.bitwise_xor.Scalar: "bitwise_xor",
    aten.floor_divide.default: "floordiv", aten.copysign.Tensor: "copysign",
    aten.hypot.default: "hypot", aten.add.Scalar: "add", aten.sub.Scalar: "sub",
    aten.mul.Scalar: "mul",
}
_COMPARE = {
    aten.eq.Tensor: "eq", aten.eq.Scalar: "eq", aten.ne.Tensor: "ne", aten.ne.Scalar: "ne",
    aten.lt.Tensor: "lt", aten.lt.Scalar: "lt", aten.le.Tensor: "le", aten.le.Scalar: "le",
    aten.gt.Tensor: "gt", aten.gt.Scalar: "gt", aten.ge.Tensor: "ge", aten.ge.Scalar: "ge",
    aten.logical_and.default: "logical_and", aten.logical_or.default: "logical_or",
    aten.logical_xor.default: "logical_xor",
}


def _operands(kwargs: dict) -> tuple:
    """The two operands of a binary op, whatever the schema calls them (self/other,
    self/exponent, ...), and its alpha if any."""
    alpha = kwargs.pop("alpha", None)
    first, second = list(kwargs.values())[:2]
    return first, second, alpha


def _reject_bool(name: str, *operands) -> None:
    """Checks eager's CPU kernels make and meta kernels do not."""
    if any(getattr(x, "dtype", None) == torch.bool for x in operands):
        if name == "sub":
            raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not "
                               "supported. If you are trying to invert a mask, use the `~` or "
                               "`logical_not()` operator instead.")
        if name == "neg":
            raise RuntimeError("Negation, the `-` operator, on a bool tensor is not supported. "
                               "If you are trying to invert a mask, use the `~` or "
                               "`logical_not()` operator instead.")


_HALF = (torch.float16, torch.bfloat16)


def _binary(name: str):
    def lower(lowering, node, **kwargs):
        self, other, alpha = _operands(kwargs)
        _reject_bool(name, self, other)
        dtype = out_dtype(node)
        rounded = (False, False)
        if name in ("add", "sub") and dtype in _HALF:
            self, other = _number_in(self, dtype), _number_in(other, dtype)
            rounded = (isinstance(self, ScalarArg), isinstance(other, ScalarArg))

        def apply(ops, a, b, *scale):
            a, b = [_rounded(ops, v, dtype) if r else v for v, r in zip((a, b), rounded)]
            return getattr(ops, name)(a, ops.mul(b, scale[0]) if scale else b)
        if alpha is not None and alpha != 1:  # add/sub with alpha: other * alpha first
            return pointwise(lowering, [self, other, alpha], apply, dtype)
        return pointwise(lowering, [self, other], apply, dtype)
    return lower


def _number_in(x, dtype: torch.dtype):
    """A number added to (or subtracted from) a float16/bfloat16 tensor, as eager uses it:
    rounded to the tensor's dtype first (TensorIterator casts it to the common dtype; its mul
    and div keep the number whole, and so do ours). A kernel argument is rounded in the
    kernel (`_rounded`)."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return torch.tensor(x, dtype=dtype).item()
    return x


def _rounded(ops, value, dtype: torch.dtype):
    return ops.to_dtype(ops.to_dtype(value, torch.float32), dtype)


def _compare(name: str):
    def lower(lowering, node, **kwargs):
        self, other, _ = _operands(kwargs)
        compute = promote(self, other)
        return pointwise(lowering, [self, other], lambda ops, a, b: getattr(ops, name)(a, b),
                         out_dtype(node), compute)
    return lower


for _op, _name in _BINARY.items():
    LOWERINGS[_op] = _binary(_name)
COMPARE_NAMES = set(_COMPARE.values())
for _op, _name in _COMPARE.items():
    LOWERINGS[_op] = _compare(_name)


@register(aten.div.Tensor, aten.div.Scalar)
def _div(lowering, node, self, other):
    return pointwise(lowering, [self, other], lambda ops, a, b: ops.truediv(a, b), out_dtype(node))


@register(aten.div.Tensor_mode, aten.div.Scalar_mode)
def _div_mode(lowering, node, self, other, rounding_mode=None):
    dtype = out_dtype(node)
    if rounding_mode is None:
        return _div(lowering, node, self, other)
    name = "floordiv" if rounding_mode == "floor" else "truncdiv"
    return pointwise(lowering, [self, other], lambda ops, a, b: getattr(ops, name)(a, b), dtype)


@register(aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar)
def lower_where(lowering, node, condition, self, other):
    dtype = out_dtype(node)
    sizes = broadcast_sizes(lowering, condition, self, other)
    cond = operand_loader(condition, sizes, torch.bool)
    a, b = operand_loader(self, sizes, dtype), operand_loader(other, sizes, dtype)
    return Pointwise(dtype, sizes, inner=lambda ops, i: ops.where(cond(ops, i), a(ops, i),
                                                                  b(ops, i)))


@register(aten.clamp.default, aten.clamp.Tensor)
def _clamp(lowering, node, self, min=None, max=None):
    dtype = out_dtype(node)
    operands = [self] + [x for x in (min, max) if x is not None]

    def fn(ops, x, *bounds):
        bounds = list(bounds)
        if min is not None:
            x = ops.clamp_min(x, bounds.pop(0))
        if max is not None:
            x = ops.clamp_max(x, bounds.pop(0))
        return x
    return pointwise(lowering, operands, fn, dtype)


@register(aten.clamp_min.default, aten.clamp_min.Tensor)
def _clamp_min(lowering, node, self, min):
    return pointwise(lowering, [self, min], lambda ops, a, b: ops.clamp_min(a, b), out_dtype(node))


@register(aten.clamp_max.default, aten.clamp_max.Tensor)
def _clamp_max(lowering, node, self, max):
    return pointwise(lowering, [self, max], lambda ops, a, b: ops.clamp_max(a, b), out_dtype(node))


@register(aten.masked_fill.Scalar, aten.masked_fill.Tensor)
def _masked_fill(lowering, node, self, mask, value):
    return lower_where(lowering, node, mask, value, self)


@register(aten._to_copy.default)
def _to_copy(lowering, node, self, **kwargs):
    return pointwise(lowering, [self], lambda ops, a: a, out_dtype(node))


@register(aten.clone.default)
def _clone(lowering, node, self, memory_format=None):
    return pointwise(lowering, [self], lambda ops, a: a, out_dtype(node))


@register(aten.copy.default)
def _copy(lowering, node, self, src, non_blocking=False):
    return pointwise(lowering, [src], lambda ops, a: a, out_dtype(node), sizes=list(self.sizes))


@register(aten.zero.default)
def _zero(lowering, node, self):
    return pointwise(lowering, [0], lambda ops, a: a, out_dtype(node), sizes=list(self.sizes))


@register(aten.fill.Scalar, aten.fill.Tensor)
def _fill(lowering, node, self, value):
    return pointwise(lowering, [value], lambda ops, a: a, out_dtype(node), sizes=list(self.sizes))


@register(aten.full.default)
def _full(lowering, node, size, fill_value, **kwargs):
    sizes = [sympy.Integer(s) for s in size]
    return pointwise(lowering, [fill_value], lambda ops, a: a, out_dtype(node), sizes=sizes)


@register(aten.new_zeros.default, aten.new_ones.default, aten.new_empty.default)
def _new_filled(lowering, node, self, size, **kwargs):
    value = 1 if node.op is aten.new_ones.default else 0  # new_empty: zeros, as _empty says
    return pointwise(lowering, [value], lambda ops, a: a, out_dtype(node),
                     sizes=[sympy.Integer(s) for s in size])


@register(aten.empty.memory_format, aten.empty_strided.default)
def _empty(lowering, node, size, **kwargs):
    # uninitialized memory may hold anything; zeros keep results reproducible
    return pointwise(lowering, [0], lambda ops, a: a, out_dtype(node),
                     sizes=[sympy.Integer(s) for s in size])


@register(aten.scalar_tensor.default)
def _scalar_tensor(lowering, node, s, **kwargs):
    return pointwise(lowering, [s], lambda ops, a: a, out_dtype(node), sizes=[])


@register(aten.full_like.default, aten.zeros_like.default, aten.ones_like.default,
          aten.empty_like.default)
def _like(lowering, node, self, fill_value=None, **kwargs):
    value = {aten.zeros_like.default: 0, aten.ones_like.default: 1,
             aten.empty_like.default: 0}.get(node.op, fill_value)
    return pointwise(lowering, [value], lambda ops, a: a, out_dtype(node), sizes=list(self.sizes))


@register(aten.arange.start_step, aten.arange.start, aten.arange.default)
def _arange(lowering, node, *args, **kwargs):
    start = kwargs.get("start", 0)
    step = kwargs.get("step", 1)
    dtype = out_dtype(node)
    n = node.outputs[0].meta.shape[0]
    compute = torch.float64 if dtype.is_floating_point else torch.int64

    def inner(ops, index):
        i = ops.index_expr(index[0], compute)
        return ops.to_dtype(ops.add(ops.constant(start, compute),
                                    ops.mul(i, ops.constant(step, compute))), dtype)
    return Pointwise(dtype, [sympy.Integer(n)], inner=inner)
