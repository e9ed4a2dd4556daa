"""The C++ element ops: the ops handler lowerings call while a kernel's C++ is written
(`CppOps`: loads, arithmetic, math through vecmath.h, indices read from memory, random
numbers), and how C++ names the dtypes. codegen/cpp.py prints the loops around them."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import sympy
import torch

from lazytriton.loopir import Buffer

from .common import CSEVariable
from .signature import KernelSignature

if TYPE_CHECKING:
    from .cpp import CppKernel

CTYPE = {
    torch.float32: "float", torch.float64: "double", torch.int64: "int64_t",
    torch.int32: "int32_t", torch.int16: "int16_t", torch.int8: "int8_t",
    torch.uint8: "uint8_t", torch.bool: "bool", torch.bfloat16: "uint16_t",
    torch.float16: "uint16_t",
}

# dtypes computed in float and stored as 16 bits
HALF = {torch.bfloat16: ("lt::bf16_to_float", "lt::float_to_bf16"),
         torch.float16: ("lt::half_to_float", "lt::float_to_half")}


def compute_ctype(dtype: torch.dtype) -> str:
    return "float" if dtype in HALF else CTYPE[dtype]


def _literal(value, dtype: torch.dtype) -> str:
    ctype = compute_ctype(dtype)
    if dtype == torch.bool:
        return "true" if value else "false"
    if dtype.is_floating_point:
        value = float(value)
        if math.isnan(value):
            return f"std::numeric_limits<{ctype}>::quiet_NaN()"
        if math.isinf(value):
            sign = "-" if value < 0 else ""
            return f"{sign}std::numeric_limits<{ctype}>::infinity()"
        return f"static_cast<{ctype}>({value!r})"
    return f"static_cast<{ctype}>({int(value)}L)"


_UNARY = {
    "neg": "-({0})", "abs": "std::abs({0})", "exp": "std::exp({0})", "exp2": "std::exp2({0})",
    "log": "std::log({0})", "log2": "std::log2({0})", "log10": "std::log10({0})",
    "sqrt": "std::sqrt({0})", "rsqrt": "(1 / std::sqrt({0}))", "sin": "std::sin({0})",
    "cos": "std::cos({0})", "tan": "std::tan({0})", "tanh": "std::tanh({0})",
    "sinh": "std::sinh({0})", "cosh": "std::cosh({0})", "asin": "std::asin({0})",
    "acos": "std::acos({0})", "atan": "std::atan({0})", "atanh": "std::atanh({0})",
    "asinh": "std::asinh({0})", "acosh": "std::acosh({0})",
    "sigmoid": "(1 / (1 + std::exp(-({0}))))", "erf": "std::erf({0})",
    "erfc": "std::erfc({0})", "log1p": "std::log1p({0})", "expm1": "std::expm1({0})",
    "floor": "std::floor({0})", "ceil": "std::ceil({0})", "round": "std::nearbyint({0})",
    "trunc": "std::trunc({0})", "reciprocal": "(1 / ({0}))", "sign": "lt::sign({0})",
    "lgamma": "std::lgamma({0})", "bitwise_not": "(~({0}))", "relu": "lt::relu({0})",
}
_UNARY_BOOL_INPUT = {"bitwise_not": "(!({0}))", "abs": "({0})", "neg": "(!({0}))"}
# float functions of vecmath.h: branch-free, so `omp simd` loops calling them vectorize
# (scalar libm calls do not without -ffast-math); within 2 ULP, eager's special values
_VECTOR_F32 = {"exp", "expm1", "log", "log1p", "log2", "tanh", "sigmoid", "erf", "sin", "cos"}
_PREDICATE = {"isnan": "std::isnan({0})", "isinf": "std::isinf({0})",
              "logical_not": "(!({0}))"}
_BINARY = {
    "add": "({0} + {1})", "sub": "({0} - {1})", "mul": "({0} * {1})", "truediv": "({0} / {1})",
    "maximum": "lt::maximum({0}, {1})", "minimum": "lt::minimum({0}, {1})",
    "atan2": "std::atan2({0}, {1})", "copysign": "std::copysign({0}, {1})",
    "hypot": "std::hypot({0}, {1})", "bitwise_and": "({0} & {1})", "bitwise_or": "({0} | {1})",
    "bitwise_xor": "({0} ^ {1})", "clamp_min": "((({0}) < ({1}) || ({1}) != ({1})) ? ({1}) : ({0}))",
    "clamp_max": "((({0}) > ({1}) || ({1}) != ({1})) ? ({1}) : ({0}))",  # a NaN bound: NaN
}
# rounding ops: eager's are the identity on integers
_INTEGRAL_IDENTITY = {"floor", "ceil", "round", "trunc"}
# integer ops that can overflow: they wrap, as eager's (lt::wrapping_*; in plain C++ signed
# overflow is undefined, and g++ folds comparisons assuming it never happens)
_WRAPPING = {"add", "sub", "mul", "neg", "abs"}


def _wraps(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point and not dtype.is_complex and dtype != torch.bool


_BOOL_BINARY = {"add": "({0} || {1})", "mul": "({0} && {1})", "maximum": "({0} || {1})",
                "minimum": "({0} && {1})", "bitwise_and": "({0} && {1})",
                "bitwise_or": "({0} || {1})", "bitwise_xor": "({0} != {1})"}
_COMPARE = {"eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_LOGICAL = {"logical_and": "({0} && {1})", "logical_or": "({0} || {1})",
            "logical_xor": "(static_cast<bool>({0}) != static_cast<bool>({1}))"}


def access(args: KernelSignature, param: str, index: str) -> str:
    """The element `param[index]`, as an lvalue; checked against the buffer's extent."""
    if not args.checked:
        return f"{param}[{index}]"
    return f"lt::checked({param}, {index}, {param}_n, {param[1:]}, bounds)"


class CppOps:
    """The ops handler lowerings call while this kernel's C++ is being written."""

    def __init__(self, kernel: "CppKernel"):
        self.k = kernel

    # --- data in and out --------------------------------------------------------------------
    def load(self, buf: Buffer, index):
        local = self.k.locals.get(buf.name)
        if local is not None:
            return local
        param = self.k.args.buffer(buf)
        text = self.k.index(index)
        expr = access(self.k.args, param, text)
        if buf.dtype in HALF:
            expr = f"{HALF[buf.dtype][0]}({expr})"
        elif buf.dtype == torch.bool:  # read as a byte: g++ vectorizes no loop selecting
            expr = f"(reinterpret_cast<const uint8_t&>({expr}) != 0)"  # floats by loaded bools
        return self._cse(f"load {expr}", buf.dtype, expr)

    def constant(self, value, dtype):
        return CSEVariable(_literal(value, dtype), dtype)

    def scalar(self, arg, dtype):
        name = self.k.args.scalar(arg)
        return self._cse(f"scalar {name} {dtype}", dtype,
                         f"static_cast<{compute_ctype(dtype)}>({name})")

    def index_expr(self, expr, dtype):
        return self._cse(f"index {expr} {dtype}", dtype,
                         f"static_cast<{compute_ctype(dtype)}>({self.k.index(expr)})")

    def to_dtype(self, x, dtype):
        if x.dtype == dtype:
            return x
        if dtype in HALF:  # eager rounds to the 16-bit type; we compute in float
            from_half, to_half = HALF[dtype]
            value = self.to_dtype(x, torch.float32)
            return self._cse(f"round {value} {dtype}", dtype, f"{from_half}({to_half}({value}))")
        if x.dtype in HALF:  # computed in float: eager's value is the 16-bit one (inf past max)
            from_half, to_half = HALF[x.dtype]
            x = self._cse(f"round {x} {x.dtype}", torch.float32, f"{from_half}({to_half}({x}))")
            if dtype == torch.float32:
                return x
        if compute_ctype(x.dtype) == compute_ctype(dtype):
            return CSEVariable(x.name, dtype)
        if dtype == torch.bool:
            return self._cse(f"bool {x}", dtype, f"static_cast<bool>({x})")
        if x.dtype == torch.bool:  # a select: a cast from the byte-wide bool keeps g++ from
            ctype = compute_ctype(dtype)  # vectorizing the loop (dropout's backward mask)
            return self._cse(f"cast {x} {dtype}", dtype,
                             f"({x} ? static_cast<{ctype}>(1) : static_cast<{ctype}>(0))")
        return self._cse(f"cast {x} {dtype}", dtype, f"static_cast<{compute_ctype(dtype)}>({x})")

    # --- computing --------------------------------------------------------------------------
    def _cse(self, key: str, dtype, expr: str) -> CSEVariable:
        ctype = compute_ctype(dtype)
        return self.k.body.cse(key, dtype, lambda v: f"{ctype} {v} = {expr};")

    def _apply(self, template: str, dtype, *args) -> CSEVariable:
        expr = template.format(*[str(a) for a in args])
        return self._cse(expr, dtype, expr)

    def __getattr__(self, name):
        if name in _UNARY or name in _PREDICATE:
            return lambda x: self._unary(name, x)
        if name in _BINARY:
            return lambda a, b: self._binary(name, a, b)
        if name in _COMPARE:
            return lambda a, b: self._apply(f"({{0}} {_COMPARE[name]} {{1}})", torch.bool, a, b)
        if name in _LOGICAL:
            return lambda a, b: self._apply(_LOGICAL[name], torch.bool, a, b)
        raise AttributeError(f"the C++ backend has no element op {name!r}")

    def _unary(self, name, x):
        if name in _PREDICATE:
            if name != "logical_not" and not x.dtype.is_floating_point:
                return self.constant(False, torch.bool)
            return self._apply(_PREDICATE[name], torch.bool, x)
        if x.dtype == torch.bool and name in _UNARY_BOOL_INPUT:
            return self._apply(_UNARY_BOOL_INPUT[name], torch.bool, x)
        if name in _VECTOR_F32 and compute_ctype(x.dtype) == "float":
            return self._apply(f"lt::{name}_f32({{0}})", x.dtype, x)
        if name in _WRAPPING and _wraps(x.dtype):
            return self._apply(f"lt::wrapping_{name}<{compute_ctype(x.dtype)}>({{0}})", x.dtype, x)
        if name in _INTEGRAL_IDENTITY and not x.dtype.is_floating_point:
            return x  # std::floor of an int64 would round it through a double
        return self._apply(_UNARY[name], x.dtype, x)

    def exp_nonpos(self, x):
        """exp of an argument known to be <= 0 or NaN (row_max.py): a cheaper exp, same bits."""
        if compute_ctype(x.dtype) == "float":
            return self._apply("lt::exp_nonpos_f32({0})", x.dtype, x)
        return self._unary("exp", x)

    def _binary(self, name, a, b):
        if a.dtype == torch.bool and name in _BOOL_BINARY:
            return self._apply(_BOOL_BINARY[name], torch.bool, a, b)
        if name in _WRAPPING and _wraps(a.dtype):
            return self._apply(f"lt::wrapping_{name}<{compute_ctype(a.dtype)}>({{0}}, {{1}})",
                               a.dtype, a, b)
        return self._apply(_BINARY[name], a.dtype, a, b)

    def _int_op(self, fn: str, a, b):
        self.k.args.uses_err = True
        return self._apply(f"lt::{fn}_int<{compute_ctype(a.dtype)}>({{0}}, {{1}}, err)", a.dtype,
                           a, b)

    def _division(self, a, b, float_form: str, int_fn: str):
        if a.dtype.is_floating_point:
            return self._apply(float_form, a.dtype, a, b)
        return self._int_op(int_fn, a, b)  # Python semantics, division by zero flagged

    def floordiv(self, a, b):
        return self._division(a, b, "lt::floordiv_float({0}, {1})", "floordiv")

    def truncdiv(self, a, b):
        return self._division(a, b, "std::trunc({0} / {1})", "truncdiv")

    def remainder(self, a, b):
        return self._division(a, b, "lt::remainder_float({0}, {1})", "remainder")

    def fmod(self, a, b):
        return self._division(a, b, "std::fmod({0}, {1})", "fmod")

    def pow(self, a, b):
        if a.dtype.is_floating_point:
            return self._apply("std::pow({0}, {1})", a.dtype, a, b)
        return self._apply("lt::pow_int({0}, static_cast<decltype({0})>({1}))", a.dtype, a, b)

    def where(self, cond, a, b):
        if a.dtype.is_floating_point:  # a blend: see lt::select
            return self._apply(f"lt::select<{compute_ctype(a.dtype)}>({{0}}, {{1}}, {{2}})",
                               a.dtype, cond, a, b)
        return self._apply("({0} ? {1} : {2})", a.dtype, cond, a, b)

    def masked(self, cond, body, other):
        """`body()` only where cond holds (its loads may be out of bounds elsewhere)."""
        self.k.body.push()
        value = body()
        inner = self.k.body.pop()
        var = self.k.body.new_var(value.dtype)
        ctype = compute_ctype(value.dtype)
        self.k.body.emit(f"{ctype} {var} = static_cast<{ctype}>({other});")
        lines = "\n".join("    " + line for line in inner.lines)
        self.k.body.emit(f"if ({cond}) {{\n{lines}\n    {var} = {value};\n}}")
        return var

    def indirect(self, var, size, negative_wraps: bool = True):
        """An index read from memory (common.py); out of range sets err."""
        self.k.args.uses_err = True
        idx = self.k.body.new_var(torch.int64)
        bound = self.k.index(size)
        check = "wrap_index" if negative_wraps else "strict_index"
        self.k.body.emit(f"int64_t {idx} = lt::{check}({var}, {bound}, err);")
        return sympy.Symbol(idx.name, integer=True, nonnegative=True)

    def rand(self, seed, offset):
        return self._cse(f"rand {seed} {offset}", torch.float32,
                         f"lt::uniform({seed}, {self.k.index(offset)})")

    def randn(self, seed, offset):
        return self._cse(f"randn {seed} {offset}", torch.float32,
                         f"lt::normal({seed}, {self.k.index(offset)})")
