"""The ops handler lowerings call while a Triton kernel is printed: each element op becomes a
Triton expression over blocks. Values know their dtype (float16/bfloat16 are computed in
float32) and which block dims they vary over, so loads are masked and broadcast only as far as
they need."""
from __future__ import annotations

import math
from dataclasses import dataclass

import sympy
import torch

from .common import CSEVariable

TL_TYPE = {
    torch.float32: "tl.float32", torch.float64: "tl.float64", torch.float16: "tl.float16",
    torch.bfloat16: "tl.bfloat16", torch.int64: "tl.int64", torch.int32: "tl.int32",
    torch.int16: "tl.int16", torch.int8: "tl.int8", torch.uint8: "tl.uint8", torch.bool: "tl.int1",
}
HALF = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in HALF else dtype


@dataclass
class TritonVar(CSEVariable):
    dims: frozenset = frozenset()  # block dims it varies over ("x", "r")
    literal: object = None  # the Python value of a constant printed as a literal
    block: bool = False  # a block (maybe of one element), not a scalar

    @property
    def is_literal(self) -> bool:
        return self.literal is not None


def stored(value: "TritonVar", dtype: torch.dtype) -> str:
    """The text a store of `value` into a `dtype` buffer writes: a 16-bit buffer's value
    converted (a number through tl.full: a Python number has no .to, as
    index_fill(..., -2) of a float16 tensor printed `-2.0.to(tl.float16)`)."""
    if dtype not in HALF:
        return str(value)
    if value.is_literal:
        return f"tl.full([], {value}, {TL_TYPE[dtype]})"
    if dtype == torch.bfloat16:  # the interpreter's .to(tl.bfloat16) truncates: round first
        return f"round_to_bf16({value}).to(tl.bfloat16)"
    return f"{value}.to({TL_TYPE[dtype]})"


def literal(value, dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "True" if value else "False"
    if dtype.is_floating_point:
        value = float(value)
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return '-float("inf")' if value < 0 else 'float("inf")'
        return repr(value)
    return str(int(value))


# math Triton has as builtins; the others are helpers (triton_helpers.py)
_UNARY = {
    "neg": "-{0}", "abs": "tl.abs({0})", "exp": "tl.exp({0})", "exp2": "tl.exp2({0})",
    "log": "tl.log({0})", "log2": "tl.log2({0})", "sqrt": "tl.sqrt_rn({0})",
    "rsqrt": "tl.rsqrt({0})", "sin": "tl.sin({0})", "cos": "tl.cos({0})", "erf": "tl.erf({0})",
    "sigmoid": "(1.0 / (1.0 + tl.exp(-{0})))", "reciprocal": "(1.0 / {0})",
    "floor": "tl.floor({0})", "ceil": "tl.ceil({0})",
    "trunc": "tl.where({0} < 0, tl.ceil({0}), tl.floor({0}))", "round": "nearbyint({0})",
    "relu": "tl.where({0} < 0, 0, {0})", "bitwise_not": "~{0}",
    **{name: name + "({0})" for name in ("tan", "tanh", "sinh", "cosh", "asin", "acos", "atan",
                                         "atanh", "asinh", "acosh", "erfc", "lgamma", "log1p",
                                         "expm1", "log10")},
}
_INTEGER_IDENTITY = {"floor", "ceil", "round", "trunc"}
_BOOL_UNARY = {"bitwise_not": "({0} == 0)", "abs": "{0}", "neg": "({0} == 0)"}
_BINARY = {
    "add": "({0} + {1})", "sub": "({0} - {1})", "mul": "({0} * {1})", "truediv": "({0} / {1})",
    "maximum": "maximum({0}, {1})", "minimum": "minimum({0}, {1})",
    "bitwise_and": "({0} & {1})", "bitwise_or": "({0} | {1})", "bitwise_xor": "({0} ^ {1})",
    "clamp_min": "tl.where({1} != {1}, {1}, tl.where({0} < {1}, {1}, {0}))",  # NaN bound: NaN
    "clamp_max": "tl.where({1} != {1}, {1}, tl.where({0} > {1}, {1}, {0}))",
    "atan2": "atan2({0}, {1})", "copysign": "copysign({0}, {1})", "hypot": "hypot({0}, {1})",
}
_HELPER_BINARY = {"maximum", "minimum", "atan2", "copysign", "hypot"}
_BOOL_BINARY = {"add": "({0} | {1})", "mul": "({0} & {1})", "maximum": "({0} | {1})",
                "minimum": "({0} & {1})"}
_COMPARE = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_LOGICAL = {"logical_and": "&", "logical_or": "|", "logical_xor": "^"}
# integer division with Python semantics (the divisor is never 0 there: see _int_division)
_INT_DIVISION = {"floordiv": "floordiv_int({0}, {1})", "truncdiv": "({0} // {1})",
                 "remainder": "remainder_int({0}, {1})", "fmod": "({0} % {1})"}
_FLOAT_DIVISION = {"floordiv": "floordiv_float({0}, {1})",
                   "truncdiv": "tl.where({0} / {1} < 0, tl.ceil({0} / {1}), tl.floor({0} / {1}))",
                   "remainder": "remainder_float({0}, {1})", "fmod": "fmod({0}, {1})"}


class TritonOps:
    """Element ops as Triton source; `kernel` owns the body, the signature and the masks."""

    def __init__(self, kernel):
        self.k = kernel

    # --- data in --------------------------------------------------------------------------
    def load(self, buf, index):
        return self.k.load(buf, index)

    def constant(self, value, dtype):
        dtype = compute_dtype(dtype)
        if dtype == torch.bool:
            value = bool(value)
        elif not dtype.is_floating_point:
            value = int(value)
        else:
            value = float(value)
        return TritonVar(literal(value, dtype), dtype, frozenset(), literal=value)

    def scalar(self, arg, dtype):
        name = self.k.scalar_param(arg)
        return self._cast(TritonVar(name, arg.dtype), dtype)

    def index_expr(self, expr, dtype):
        expr = sympy.sympify(expr)
        if not expr.free_symbols and expr.is_Integer:
            return self.constant(int(expr), dtype)
        text, dims = self.k.index(expr)
        if text.isidentifier():  # a size or loop index: no copy of it
            var = TritonVar(text, self.k.index_dtype, dims, block=bool(dims))
        else:
            var = self._cse(text, self.k.index_dtype, dims)
        return self.to_dtype(var, dtype)

    def to_dtype(self, x: TritonVar, dtype):
        if x.dtype == dtype:
            return x
        if x.is_literal:
            return self.constant(x.literal, dtype)
        if dtype in HALF:  # eager rounds to the 16-bit type; we compute in float32
            value = self.to_dtype(x, torch.float32)
            if dtype == torch.bfloat16:
                return self._apply("round_to_bf16({0})", dtype, self._tensor(value))
            return self._apply(f"{{0}}.to({TL_TYPE[dtype]}).to(tl.float32)", dtype, value)
        if x.dtype in HALF:  # computed in float32: eager's value is the 16-bit one
            x = self.to_dtype(TritonVar(x.name, torch.float32, x.dims, block=x.block), x.dtype)
            x = TritonVar(x.name, torch.float32, x.dims, block=x.block)
            if dtype == torch.float32:
                return x
        if compute_dtype(x.dtype) == compute_dtype(dtype):
            return TritonVar(x.name, dtype, x.dims, block=x.block)
        if dtype == torch.bool:
            return self._apply("({0} != 0)", dtype, x)
        return self._cast(x, dtype)

    def _cast(self, x: TritonVar, dtype):
        target = compute_dtype(dtype)
        if compute_dtype(x.dtype) == target:
            return TritonVar(x.name, dtype, x.dims, block=x.block)
        return self._cse(f"{x}.to({TL_TYPE[target]})", dtype, x.dims, x.block)

    # --- computing --------------------------------------------------------------------------
    def _cse(self, expr: str, dtype, dims, block: bool = False) -> TritonVar:
        return self.k.cse(expr, dtype, dims, block)

    def _apply(self, template: str, dtype, *args) -> TritonVar:
        dims = frozenset().union(*(a.dims for a in args))
        block = any(a.block for a in args)
        return self._cse(template.format(*[str(a) for a in args]), dtype, dims, block)

    def __getattr__(self, name):
        if name in _UNARY:
            return lambda x: self._unary(name, x)
        if name in _BINARY:
            return lambda a, b: self._binary(name, a, b)
        if name in _COMPARE:
            return lambda a, b: self._apply(f"({{0}} {_COMPARE[name]} {{1}})", torch.bool, a, b)
        if name in _LOGICAL:
            return lambda a, b: self._apply(f"(({{0}} != 0) {_LOGICAL[name]} ({{1}} != 0))",
                                            torch.bool, a, b)
        if name in _INT_DIVISION:
            return lambda a, b: self._division(name, a, b)
        raise AttributeError(f"the Triton backend has no element op {name!r}")

    def _unary(self, name, x):
        if x.dtype == torch.bool and name in _BOOL_UNARY:
            return self._apply(_BOOL_UNARY[name], torch.bool, x)
        if not x.dtype.is_floating_point and name in _INTEGER_IDENTITY:
            return x
        template = "tl.sqrt({0})" if name == "sqrt" and x.dtype == torch.float64 else _UNARY[name]
        return self._apply(template, x.dtype, self._tensor(x))

    def _binary(self, name, a, b):
        if a.dtype == torch.bool and name in _BOOL_BINARY:
            return self._apply(_BOOL_BINARY[name], torch.bool, a, b)
        if name in _HELPER_BINARY:  # function calls: both operands as Triton values
            a, b = self._tensor(a), self._tensor(b)
        return self._apply(_BINARY[name], a.dtype, a, b)

    def _tensor(self, x: TritonVar) -> TritonVar:
        """A literal as a typed scalar, for functions that need a Triton value."""
        if not x.is_literal:
            return x
        return self._cse(f"tl.full([], {x}, {TL_TYPE[compute_dtype(x.dtype)]})", x.dtype, x.dims)


    def _division(self, name, a, b):
        if a.dtype.is_floating_point:
            return self._apply(_FLOAT_DIVISION[name], a.dtype, self._tensor(a), self._tensor(b))
        if a.dtype.is_signed and b.is_literal and b.literal == -1:
            return self._by_minus_one(name, a)
        if b.is_literal and b.literal != 0:
            # floordiv_int/remainder_int broadcast their operands: a Triton value each, typed
            # as `a` (the interpreter's tl.broadcast has no Python int form: "'int' object has
            # no attribute 'type'")
            b = self._tensor(self.to_dtype(b, a.dtype))
            return self._apply(_INT_DIVISION[name], a.dtype, self._tensor(a), b)
        zero = self._apply("({0} == 0)", torch.bool, self._tensor(b))
        self.k.flag_error(zero, 2)  # ZeroDivisionError
        if not a.dtype.is_signed:
            safe = self._apply("tl.where({0}, 1, {1})", b.dtype, zero, b)
            return self._apply(_INT_DIVISION[name], a.dtype, a, safe)
        # MIN / -1 overflows (the CPU traps, the interpreter with it): -1 divides apart
        minus_one = self._apply("({0} == -1)", torch.bool, self._tensor(b))
        safe = self._apply("tl.where({0} | {1}, 1, {2})", b.dtype, zero, minus_one, b)
        quotient = self._apply(_INT_DIVISION[name], a.dtype, a, safe)
        return self._apply("tl.where({0}, {1}, {2})", a.dtype, minus_one,
                           self._by_minus_one(name, a), quotient)

    def _by_minus_one(self, name, a):
        """`a` divided by -1 as eager: the quotient -a, wrapping (MIN stays MIN); remainder 0."""
        if name in ("floordiv", "truncdiv"):
            return self._apply("(0 - {0})", a.dtype, self._tensor(a))
        return self.constant(0, a.dtype)

    def isnan(self, x):
        if not x.dtype.is_floating_point:
            return self.constant(False, torch.bool)
        return self._apply("({0} != {0})", torch.bool, x)

    def isinf(self, x):
        if not x.dtype.is_floating_point:
            return self.constant(False, torch.bool)
        return self._apply('(tl.abs({0}) == float("inf"))', torch.bool, x)

    def logical_not(self, x):
        return self._apply("({0} == 0)", torch.bool, x)

    def sign(self, x):
        if x.dtype == torch.bool:
            return x
        t = TL_TYPE[compute_dtype(x.dtype)]
        sign = f"(({{0}} > 0).to({t}) - ({{0}} < 0).to({t}))"  # NaN: 0, as eager's
        return self._apply(sign, x.dtype, self._tensor(x))

    def pow(self, a, b):
        if a.dtype.is_floating_point:
            return self._apply("pow({0}, {1})", a.dtype, self._tensor(a), self._tensor(b))
        return self._apply("pow_int({0}, {1})", a.dtype, self._tensor(a), self._tensor(b))

    def where(self, cond, a, b):
        if a.is_literal and b.is_literal and a.dtype != torch.bool:  # keep the dtype
            a = self._tensor(a)
        return self._apply("tl.where({0}, {1}, {2})", a.dtype, cond, a, b)

    def masked(self, cond, body, other):
        """Lanes where cond is false compute garbage that tl.where drops; their loads are
        masked by cond, so they stay in bounds."""
        value = self.k.under_mask(cond, body)
        return self.where(cond, value, self.to_dtype(other, value.dtype))

    def indirect(self, var, size, negative_wraps: bool = True):
        return self.k.indirect(var, size, negative_wraps)

    def rand(self, seed, offset):
        return self._random("uniform", seed, offset)

    def randn(self, seed, offset):
        return self._random("normal", seed, offset)

    def _random(self, fn: str, seed, offset):
        text, dims = self.k.index(offset)
        if not dims:  # a tensor, as the generator needs
            text = f"tl.full([], {text}, tl.int64)"
        return self._cse(f"{fn}({seed}, {text})", torch.float32, dims)
