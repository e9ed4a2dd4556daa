"""Differential tests: ops on the lazy device against eager PyTorch on the CPU.

Every check runs a function eagerly on CPU tensors and again on copies moved to the "lazy"
device, cuts the graph with one mark_step, and compares values, dtypes and shapes (and, where
asked, gradients of a random weighting of the outputs). Inputs are random, never constant.
"""
from __future__ import annotations

import operator
import re
import warnings

import pytest
import torch
import torch.nn.functional as F

import lazytriton
from lazytriton import metrics
from lazytriton.testing.differential import (assert_lazy, assert_same, aten_fallbacks, check,
                                             check_grad, check_raises, flat, index, nonzero,
                                             pos, rnd, to_cpu, to_lazy)

F32, F64, F16, BF16 = torch.float32, torch.float64, torch.float16, torch.bfloat16
I64, I32, U8, BOOL = torch.int64, torch.int32, torch.uint8, torch.bool
FLOATS = (F32, F64)
INTS = (I64, I32)
LOOSE = dict(atol=1e-2, rtol=1e-2)  # float16 / bfloat16


pytestmark = pytest.mark.differential  # runs once per backend (conftest.py)


@pytest.fixture(scope="module", autouse=True)
def lazy_device(test_backend, tmp_path_factory):
    lazytriton.init(test_backend, cache_dir=tmp_path_factory.mktemp(f"cache-{test_backend}"))
    yield
    lazytriton.wait_device_ops()


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def _params(table: dict) -> list:
    """pytest params over a {name: value} table."""
    return [pytest.param(value, id=name) for name, value in table.items()]


# --- unary pointwise ------------------------------------------------------------------------

UNARY = {  # name: (fn, domain)
    "exp": (torch.exp, rnd),
    "log": (torch.log, pos),
    "sqrt": (torch.sqrt, pos),
    "rsqrt": (torch.rsqrt, pos),
    "sin": (torch.sin, rnd),
    "cos": (torch.cos, rnd),
    "tanh": (torch.tanh, rnd),
    "sigmoid": (torch.sigmoid, rnd),
    "relu": (torch.relu, rnd),
    "gelu": (F.gelu, rnd),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), rnd),
    "silu": (F.silu, rnd),
    "abs": (torch.abs, rnd),
    "neg": (torch.neg, rnd),
    "floor": (torch.floor, rnd),
    "ceil": (torch.ceil, rnd),
    "round": (torch.round, rnd),
    "round_decimals": (lambda x: torch.round(x, decimals=2), rnd),
    "reciprocal": (torch.reciprocal, nonzero),
    "erf": (torch.erf, rnd),
    "log1p": (torch.log1p, pos),
    "expm1": (torch.expm1, rnd),
    "sign": (torch.sign, rnd),
    "trunc": (torch.trunc, rnd),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.1), rnd),
    "softplus": (F.softplus, rnd),
}
SMOOTH = ["exp", "log", "sqrt", "rsqrt", "sin", "cos", "tanh", "sigmoid", "relu", "gelu",
          "gelu_tanh", "silu", "abs", "neg", "reciprocal", "erf", "log1p", "expm1",
          "leaky_relu", "softplus"]
SHAPES = [(), (1,), (7, 13), (1, 5, 1), (2, 3, 4)]
LAYOUTS = {  # non-contiguous views of a (6, 8) input
    "transposed": lambda x: x.t(),
    "permuted": lambda x: x.view(2, 3, 8).permute(2, 0, 1),
    "step_slice": lambda x: x[:, ::2],
    "offset_slice": lambda x: x[1:, 3:7],
    "expanded": lambda x: x[:1].expand(4, 6, 8),
}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", UNARY)
def test_unary_shapes(name, shape):
    fn, domain = UNARY[name]
    check(fn, domain(*shape))


@pytest.mark.parametrize("name", UNARY)
def test_unary_float64(name):
    fn, domain = UNARY[name]
    check(fn, domain(4, 7, dtype=F64))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", UNARY)
def test_unary_noncontiguous(name, layout):
    fn, domain = UNARY[name]
    check(lambda x: fn(LAYOUTS[layout](x)), domain(6, 8))


SPECIAL = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 1e-40,
           -1e30, -0.3]
# where eager's CPU kernel gives what no formula does and lazytriton keeps the formula's value
SPECIAL_DIFFERS = {"gelu": "eager's gelu(inf) is NaN (inf * erf(inf) in its vector path)"}


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("name", UNARY)
def test_unary_special_values(name, dtype):
    """NaN, infinities and signed zeros (in a vector's body and in its remainder) as eager:
    sign(NaN) is 0, relu(-0.0) is -0.0."""
    fn, _ = UNARY[name]
    x = torch.tensor(SPECIAL * 3 + [0.25], dtype=dtype)[torch.randperm(3 * len(SPECIAL) + 1)]
    if name in SPECIAL_DIFFERS:
        x = x[~torch.isinf(x)]
    expected = check(fn, x)
    actual = fn(x.to("lazy")).cpu()
    zeros = expected == 0
    assert torch.equal(actual[zeros].signbit(), expected[zeros].signbit()), (x, actual)


@pytest.mark.parametrize("name", SMOOTH)
def test_unary_grad(name):
    fn, domain = UNARY[name]
    check_grad(lambda x: fn(x[:, 1:]), domain(5, 7))


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
@pytest.mark.parametrize("name", ["exp", "sigmoid", "relu", "tanh", "abs", "neg", "gelu",
                                  "silu", "sin", "sqrt", "erf"])
def test_unary_half(name, dtype):
    fn, domain = UNARY[name]
    check(fn, domain(7, 13, dtype=dtype), **LOOSE)


@pytest.mark.parametrize("dtype", [I64, I32, U8], ids=str)
@pytest.mark.parametrize("name", ["abs", "neg", "sign", "relu", "floor", "ceil", "round",
                                  "exp", "sin", "sigmoid", "sqrt", "reciprocal"])
def test_unary_int(name, dtype):
    # integer inputs: identity-like ops keep the dtype, transcendental ones promote to float
    fn, _ = UNARY[name]
    domain = pos if name in ("sqrt", "reciprocal") else rnd
    check(fn, domain(7, 13, dtype=dtype))


@pytest.mark.parametrize("fn", _params({
    "logical_not": torch.logical_not,
    "bitwise_not": torch.bitwise_not,
    "sign": torch.sign,
    "exp": torch.exp,
    "neg_of_int": lambda x: -x.to(I64),
}))
def test_unary_bool(fn):
    check(fn, rnd(7, 13, dtype=BOOL))


# --- binary pointwise -----------------------------------------------------------------------

def _pow(a, b):
    return torch.pow(a.abs() + 0.5, b) if a.is_floating_point() else torch.pow(a, b.abs() % 4)


BINARY = {  # name: (fn, dtypes, second-operand domain)
    "add": (torch.add, FLOATS + INTS, rnd),
    "add_alpha": (lambda a, b: torch.add(a, b, alpha=2), FLOATS + INTS, rnd),
    "sub": (torch.sub, FLOATS + INTS, rnd),
    "sub_alpha": (lambda a, b: torch.sub(a, b, alpha=3), FLOATS + INTS, rnd),
    "mul": (torch.mul, FLOATS + INTS + (BOOL,), rnd),
    "div": (torch.div, FLOATS + INTS, nonzero),
    "div_floor": (lambda a, b: torch.div(a, b, rounding_mode="floor"), FLOATS + INTS, nonzero),
    "div_trunc": (lambda a, b: torch.div(a, b, rounding_mode="trunc"), FLOATS + INTS, nonzero),
    "remainder": (lambda a, b: a % b, FLOATS + INTS, nonzero),
    "fmod": (torch.fmod, FLOATS + INTS, nonzero),
    "floor_divide": (lambda a, b: a // b, FLOATS + INTS, nonzero),
    "pow": (_pow, FLOATS + INTS, rnd),
    "maximum": (torch.maximum, FLOATS + INTS + (BOOL,), rnd),
    "minimum": (torch.minimum, FLOATS + INTS + (BOOL,), rnd),
    "atan2": (torch.atan2, FLOATS, rnd),
    "eq": (torch.eq, FLOATS + INTS + (BOOL,), rnd),
    "ne": (torch.ne, FLOATS + INTS + (BOOL,), rnd),
    "lt": (torch.lt, FLOATS + INTS, rnd),
    "le": (torch.le, FLOATS + INTS, rnd),
    "gt": (torch.gt, FLOATS + INTS, rnd),
    "ge": (torch.ge, FLOATS + INTS, rnd),
    "logical_and": (torch.logical_and, FLOATS + INTS + (BOOL,), rnd),
    "logical_or": (torch.logical_or, FLOATS + INTS + (BOOL,), rnd),
    "logical_xor": (torch.logical_xor, INTS + (BOOL,), rnd),
    "bitwise_and": (torch.bitwise_and, INTS + (BOOL, U8), rnd),
    "bitwise_or": (torch.bitwise_or, INTS + (BOOL, U8), rnd),
    "bitwise_xor": (torch.bitwise_xor, INTS + (BOOL, U8), rnd),
}
BROADCAST = [  # (shape of a, shape of b)
    ((7, 13), (7, 13)),
    ((7, 13), (13,)),
    ((7, 1), (1, 13)),
    ((2, 1, 4), (3, 1)),
    ((1,), (5, 3)),
    ((), (4, 5)),
    ((3, 1, 5), (1, 4, 1)),
]


def _binary_inputs(name, shape_a, shape_b, dtype):
    _, _, domain = BINARY[name]
    return rnd(*shape_a, dtype=dtype), domain(*shape_b, dtype=dtype)


@pytest.mark.parametrize("shapes", BROADCAST, ids=str)
@pytest.mark.parametrize("name", BINARY)
def test_binary_broadcast(name, shapes):
    fn, dtypes, _ = BINARY[name]
    check(fn, *_binary_inputs(name, *shapes, dtypes[0]))


def _dtype_cases():
    return [pytest.param(name, dtype, id=f"{name}-{dtype}".replace("torch.", ""))
            for name, (_, dtypes, _) in BINARY.items() for dtype in dtypes[1:]]


@pytest.mark.parametrize("name, dtype", _dtype_cases())
def test_binary_dtypes(name, dtype):
    fn, _, _ = BINARY[name]
    check(fn, *_binary_inputs(name, (5, 6), (6,), dtype))


BINARY_LAYOUTS = {  # (view of a, view of b), both (6, 8) in
    "transposed": (lambda a: a.t(), lambda b: b.t()),
    "transposed_with_contiguous": (lambda a: a.t(), lambda b: b.reshape(8, 6)),
    "step_slices": (lambda a: a[:, ::2], lambda b: b[:, 1::2]),
    "expanded": (lambda a: a[:1].expand(4, 6, 8), lambda b: b[:, :1]),
}


@pytest.mark.parametrize("layout", BINARY_LAYOUTS)
@pytest.mark.parametrize("name", BINARY)
def test_binary_noncontiguous(name, layout):
    fn, dtypes, _ = BINARY[name]
    view_a, view_b = BINARY_LAYOUTS[layout]
    a, b = _binary_inputs(name, (6, 8), (6, 8), dtypes[0])
    check(lambda a, b: fn(view_a(a), view_b(b)), a, b)


@pytest.mark.parametrize("name", ["add_alpha", "sub", "mul", "div", "pow", "maximum",
                                  "minimum", "atan2", "remainder", "fmod"])
def test_binary_grad(name):
    fn, _, _ = BINARY[name]
    a, b = _binary_inputs(name, (4, 1, 5), (3, 5), F32)
    check_grad(fn, a, b)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
@pytest.mark.parametrize("name", ["add", "mul", "div", "maximum", "gt"])
def test_binary_half(name, dtype):
    fn, _, _ = BINARY[name]
    check(fn, *_binary_inputs(name, (7, 13), (13,), dtype), **LOOSE)


DIVISIONS = {  # floor/trunc semantics with negative operands
    "div_floor": lambda a, b: torch.div(a, b, rounding_mode="floor"),
    "div_trunc": lambda a, b: torch.div(a, b, rounding_mode="trunc"),
    "remainder_op": lambda a, b: a % b,
    "remainder": torch.remainder,
    "fmod": torch.fmod,
    "floor_divide": torch.floor_divide,
    "floordiv_op": lambda a, b: a // b,
}


@pytest.mark.parametrize("dtype", [F32, F64, I64, I32], ids=str)
@pytest.mark.parametrize("name", DIVISIONS)
def test_division_negative(name, dtype):
    a = nonzero(9, 11, dtype=dtype) * 3
    b = nonzero(9, 11, dtype=dtype)
    assert (a < 0).any() and (b < 0).any()
    check(DIVISIONS[name], a, b)


@pytest.mark.parametrize("divisor", [3, -3, 2.5, -2.5])
@pytest.mark.parametrize("dtype", [F32, I64], ids=str)
@pytest.mark.parametrize("name", DIVISIONS)
def test_division_scalar(name, dtype, divisor):
    check(lambda a: DIVISIONS[name](a, divisor), nonzero(9, 11, dtype=dtype) * 3)


SCALAR_OPS = {  # tensor with a Python scalar, both orders
    "add_int": lambda x: x + 2,
    "add_float": lambda x: x + 2.5,
    "radd_float": lambda x: 1.5 + x,
    "rsub": lambda x: 3 - x,
    "rsub_float": lambda x: 3.5 - x,
    "mul_int": lambda x: x * 3,
    "mul_float": lambda x: x * 0.25,
    "div_int": lambda x: x / 4,
    "rdiv": lambda x: 2 / (x.abs() + 1),
    "pow_2": lambda x: x ** 2,
    "pow_3": lambda x: x.pow(3),
    "pow_half": lambda x: (x.abs() + 1) ** 0.5,
    "rpow": lambda x: 2 ** x,
    "rpow_float": lambda x: 1.5 ** x,
    "gt_float": lambda x: x > 0.5,
    "eq_int": lambda x: x == 1,
    "maximum_clamp": lambda x: x.clamp_min(1),
    "add_alpha_scalar": lambda x: torch.add(x, 2, alpha=3),
}


@pytest.mark.parametrize("dtype", [F32, I64, I32, BOOL, U8], ids=str)
@pytest.mark.parametrize("name", SCALAR_OPS)
def test_scalar_operand(name, dtype):
    x = rnd(5, 7, dtype=dtype)
    try:
        SCALAR_OPS[name](x.clone())
    except RuntimeError:
        check_raises(SCALAR_OPS[name], x)  # e.g. bool - scalar: must fail on lazy too
        return
    check(SCALAR_OPS[name], x)


@pytest.mark.parametrize("fn", _params({
    "lshift": lambda x: x << 2,
    "rshift": lambda x: x >> 1,
    "and_scalar": lambda x: x & 5,
    "or_scalar": lambda x: x | 8,
    "xor_scalar": lambda x: x ^ 3,
    "invert": lambda x: ~x,
}))
@pytest.mark.parametrize("dtype", [I64, I32, U8], ids=str)
def test_bitwise_scalar(fn, dtype):
    check(fn, rnd(6, 7, dtype=dtype))


@pytest.mark.parametrize("fn", _params({
    "lshift": lambda b, i: b << 2,
    "rshift": lambda b, i: b >> 1,
    "lshift_tensor": lambda b, i: b << i,
    "rshift_of_int_by_bool": lambda b, i: i >> b,
    "bitwise_left_shift": lambda b, i: torch.bitwise_left_shift(b, i),
    "bitwise_right_shift": lambda b, i: torch.bitwise_right_shift(b, 1),
}))
def test_shifts_of_bool_tensors_promote_as_eager(fn):
    """Eager shifts a bool tensor as int64 (bool << 2 is int64); the meta kernel refused
    bool. Found by fuzzing."""
    check(fn, rnd(6, 7, dtype=BOOL), rnd(6, 7, dtype=I32).abs() % 5)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
@pytest.mark.parametrize("fn", _params({
    "add": lambda x: x + 0.1, "sub": lambda x: x - 1.3, "rsub": lambda x: 2.7 - x,
    "add_alpha": lambda x: torch.add(x, 1.3, alpha=2), "sub_": lambda x: x.sub_(1.3),
    "mul": lambda x: x * 1.3, "div": lambda x: x / 2.7,
    "scalar_tensor": lambda x: x - torch.tensor(1.3),  # a CPU 0-dim tensor: a graph input
}))
def test_half_tensor_and_number_exactly_as_eager(fn, dtype):
    """Bit for bit (a single op has no fused intermediate to round differently): eager rounds
    a number added or subtracted to the tensor's dtype first, and keeps it whole in mul and
    div. Found by fuzzing (x - 1.3 differed by 1 ulp in half the elements)."""
    check(fn, rnd(40, 50, dtype=dtype), atol=0, rtol=0)


UPCASTS = {  # a 16-bit result read as a wider type: eager's value is the rounded one
    "float": lambda a, b: (a * b).float(),
    "double": lambda a, b: (a + b).double(),
    "int": lambda a, b: (a * 10).int(),
    "past_max": lambda a, b: (a * 3e4).float(),  # inf in float16, as eager's
    "compared": lambda a, b: (a * b).double() > (a * b).float().double(),
}


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
@pytest.mark.parametrize("fn", UPCASTS.values(), ids=list(UPCASTS))
def test_half_results_read_wider_are_rounded_first(fn, dtype):
    """Found by fuzzing: a 16-bit value computed in float and then upcast kept its float
    bits (`(x * 1000).float()` was 70000.0 where eager's float16 gives inf)."""
    check(fn, rnd(40, 50, dtype=dtype) * 3, rnd(40, 50, dtype=dtype), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [F16, BF16], ids=str)
def test_a_half_sum_adds_the_rounded_values(dtype):
    """Eager sums the 16-bit values of `a + b`; summing their float values drifted 16 bfloat16
    ulps over 1,000 elements. Within 2 ulps of the result (the order of the float sum may
    differ)."""
    eps = torch.finfo(dtype).eps
    check(lambda a, b: (a + b).sum(), rnd(1000, dtype=dtype), rnd(1000, dtype=dtype),
          atol=0, rtol=2 * eps)


# --- ternary --------------------------------------------------------------------------------

TERNARY = {  # name: (fn, input factories)
    "where": (torch.where, (lambda: rnd(4, 1, 6, dtype=BOOL), lambda: rnd(5, 6),
                            lambda: rnd(4, 5, 1))),
    "where_scalar_other": (lambda c, x: torch.where(c, x, 0.5),
                           (lambda: rnd(5, 6, dtype=BOOL), lambda: rnd(5, 6))),
    "where_scalars": (lambda c: torch.where(c, 2.0, -1.0), (lambda: rnd(5, 6, dtype=BOOL),)),
    "where_int_float": (torch.where, (lambda: rnd(5, 6, dtype=BOOL), lambda: rnd(5, 6, dtype=I64),
                                      lambda: rnd(6))),
    "where_int_scalar": (lambda c, x: torch.where(c, x, 2.5),
                         (lambda: rnd(5, 6, dtype=BOOL), lambda: rnd(5, 6, dtype=I32))),
    "clamp_scalars": (lambda x: torch.clamp(x, -0.5, 0.7), (lambda: rnd(7, 13),)),
    "clamp_min": (lambda x: torch.clamp(x, min=0.2), (lambda: rnd(7, 13),)),
    "clamp_max": (lambda x: x.clamp(max=-0.1), (lambda: rnd(7, 13),)),
    "clamp_tensors": (lambda x, lo, hi: torch.clamp(x, lo, hi),
                      (lambda: rnd(7, 13), lambda: rnd(13) - 1, lambda: rnd(7, 1) + 1)),
    "clamp_tensor_min": (lambda x, lo: torch.clamp(x, min=lo), (lambda: rnd(7, 13),
                                                                 lambda: rnd(7, 13))),
    "clamp_int": (lambda x: torch.clamp(x, -3, 4), (lambda: rnd(7, 13, dtype=I64),)),
    "clamp_int_float_bound": (lambda x: torch.clamp(x, -3.5, 4.5),
                              (lambda: rnd(7, 13, dtype=I32),)),
    "addcmul": (lambda x, a, b: torch.addcmul(x, a, b, value=0.5),
                (lambda: rnd(5, 6), lambda: rnd(6), lambda: rnd(5, 1))),
    "addcdiv": (lambda x, a, b: torch.addcdiv(x, a, b, value=-2),
                (lambda: rnd(5, 6), lambda: rnd(5, 6), lambda: nonzero(5, 6))),
    "lerp_scalar": (lambda a, b: torch.lerp(a, b, 0.3), (lambda: rnd(5, 6), lambda: rnd(6))),
    "lerp_tensor": (torch.lerp, (lambda: rnd(5, 6), lambda: rnd(5, 6), lambda: torch.rand(5, 1))),
}
TERNARY_GRAD = ["where", "where_scalar_other", "clamp_scalars", "clamp_tensors", "addcmul",
                "addcdiv", "lerp_scalar", "lerp_tensor"]


@pytest.mark.parametrize("name", TERNARY)
def test_ternary(name):
    fn, makers = TERNARY[name]
    check(fn, *[make() for make in makers])


@pytest.mark.parametrize("name", TERNARY_GRAD)
def test_ternary_grad(name):
    fn, makers = TERNARY[name]
    check_grad(fn, *[make() for make in makers])


@pytest.mark.parametrize("name", ["where", "clamp_tensors", "addcmul", "lerp_tensor"])
def test_ternary_float64(name):
    fn, makers = TERNARY[name]
    inputs = [make() for make in makers]
    check(fn, *[x.to(F64) if x.is_floating_point() else x for x in inputs])


# --- casts and type promotion ---------------------------------------------------------------

CAST_DTYPES = [F32, F64, F16, BF16, I64, I32, U8, BOOL]


def _dtype_id(dtype):
    return str(dtype).replace("torch.", "")


@pytest.mark.parametrize("dst", CAST_DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("src", CAST_DTYPES, ids=_dtype_id)
def test_cast(src, dst):
    # non-negative values below 200 are representable in every dtype here
    if src is BOOL:
        x = rnd(5, 7, dtype=BOOL)
    else:
        x = (torch.rand(5, 7) * 200).to(src)
    check(lambda t: t.to(dst), x)


@pytest.mark.parametrize("dst", [I64, I32], ids=_dtype_id)
@pytest.mark.parametrize("src", [F32, F64], ids=_dtype_id)
def test_cast_negative_floats_truncate(src, dst):
    check(lambda t: t.to(dst), rnd(6, 7, dtype=src) * 10)


@pytest.mark.parametrize("fn", _params({
    "transposed_to_f64": lambda x: x.t().to(F64),
    "sliced_to_int": lambda x: (x[:, ::2] * 10).to(I32),
    "double": lambda x: x.double(),
    "long": lambda x: (x * 5).long(),
    "bool": lambda x: x.bool(),
    "half": lambda x: x.half(),
    "type_as": lambda x: x.type_as(torch.ones(1, dtype=I64, device=x.device)),
    "to_same_dtype_then_mul": lambda x: x.to(F32) * 2,
}))
def test_cast_methods(fn):
    check(fn, rnd(6, 8))


PROMOTION = {  # (dtype of a, dtype of b)
    "int64_float32": (I64, F32),
    "int32_int64": (I32, I64),
    "bool_int32": (BOOL, I32),
    "bool_float32": (BOOL, F32),
    "uint8_int64": (U8, I64),
    "uint8_bool": (U8, BOOL),
    "float16_float32": (F16, F32),
    "bfloat16_float16": (BF16, F16),
    "float32_float64": (F32, F64),
    "int32_float16": (I32, F16),
}


@pytest.mark.parametrize("op", [torch.add, torch.mul, torch.maximum, torch.eq],
                         ids=["add", "mul", "maximum", "eq"])
@pytest.mark.parametrize("name", PROMOTION)
def test_type_promotion(name, op):
    da, db = PROMOTION[name]
    check(op, rnd(4, 5, dtype=da), rnd(5, dtype=db))


@pytest.mark.parametrize("dtypes", [(I32, F64), (F32, F64), (I32, I64), (F16, F32), (BOOL, I64)],
                         ids=str)
def test_zero_dim_promotion(dtypes):
    # a 0-dim operand only wins when it is of a higher category
    check(torch.add, rnd(4, 5, dtype=dtypes[0]), rnd(dtype=dtypes[1]))


@pytest.mark.parametrize("scalar", [torch.tensor(2.5, dtype=F64), torch.tensor(3),
                                    torch.tensor(True)], ids=["f64", "i64", "bool"])
@pytest.mark.parametrize("dtype", [F32, I32], ids=_dtype_id)
def test_cpu_scalar_tensor_operand(dtype, scalar):
    # eager lets a 0-dim CPU tensor join ops on another device; it stays on the CPU here
    check(lambda x: (x * scalar, x + scalar, torch.where(x > 0, scalar, x)),
          rnd(4, 5, dtype=dtype))


# --- special values: NaN bounds, roots by pow, integer rounding ---------------------------------

_NAN, _INF = float("nan"), float("inf")
SPECIAL_VALUES = [-_INF, -2.5, -0.0, 0.0, 0.3, 4.0, _INF, _NAN]


@pytest.mark.parametrize("fn", _params({
    "clamp_nan_min": lambda x: x.clamp(min=_NAN),
    "clamp_nan_max": lambda x: x.clamp(max=_NAN),
    "clamp_nan_tensor_bounds": lambda x: torch.clamp(x, torch.where(x.abs() > 3, _NAN, -1.0),
                                                      torch.where(x > 0.1, _NAN, 1.0)),
    "hardtanh_nan": lambda x: F.hardtanh(x, _NAN, 1.0),
    "pow_half": lambda x: x.pow(0.5),
    "pow_minus_half": lambda x: x.pow(-0.5),
    "pow_half_f64": lambda x: x.double() ** 0.5,
    "foreach_pow": lambda x: torch._foreach_pow([x, x * 2], 0.5),
    "foreach_pow_list": lambda x: torch._foreach_pow([x, x], [0.5, -0.5]),
    "maximum_minimum_of_zeros": lambda x: [f(a, b) for f in (torch.maximum, torch.minimum)
                                          for a, b in ((x * 0, -x * 0), (-x * 0, x * 0))],
    "foreach_clamp_min": lambda x: torch._foreach_clamp_min([x, x * 2], 0.2),
    "foreach_clamp_max_list": lambda x: torch._foreach_clamp_max([x, x], [x.flip(0), x * 0]),
    "foreach_clamp_min_scalars": lambda x: torch._foreach_clamp_min([x, x], [_NAN, -1.0]),
}))
def test_special_values_as_eager(fn):
    """NaN bounds give NaN; x ** 0.5 is sqrt (as eager's pow by a number: -0 stays -0, -inf
    gives NaN); signs of zero as eager's."""
    x = torch.tensor(SPECIAL_VALUES)
    expected, actual = flat(fn(x.clone())), flat(fn(to_lazy(x)))
    for a, e in zip(to_cpu(actual), expected):
        torch.testing.assert_close(a, e, equal_nan=True)
        same = ~e.isnan()
        assert torch.equal(a[same].signbit(), e[same].signbit()), (a, e)


@pytest.mark.parametrize("out_dtype", [None, F64], ids=str)
def test_foreach_norm_as_eager_and_lowered(out_dtype):
    """clip_grad_norm_(foreach=True)'s per-tensor norms: kernels, not an aten call, over
    tensors of other shapes, a strided column slice and a 0-dim tensor. One test for every
    ord: the aten call took ord as a runtime scalar, so a later ord reused its program."""
    metrics.reset()
    a, b, c, d = rnd(5, 3), rnd(7), rnd(4, 6), rnd()
    for ord in (2, 1, 0, 3.5, _INF, -_INF):
        check(lambda a, b, c, d: torch._foreach_norm([a, b, c[:, ::2], d], ord, dtype=out_dtype),
              a, b, c, d, atol=1e-5, rtol=1e-5)
    assert not aten_fallbacks()


@pytest.mark.parametrize("dtype", FLOATS)
def test_a_product_and_a_difference_round_apart(dtype):
    """`a * b - c` in one kernel rounds the product first, as eager's two ops do: with c
    eager's product, exactly 0 (one fused multiply-add would give the product's rounding
    error)."""
    a, b = rnd(1000, dtype=dtype), rnd(1000, dtype=dtype)
    got = (to_lazy(a) * to_lazy(b) - to_lazy(a * b)).cpu()
    assert torch.equal(got, torch.zeros_like(got)), got.abs().max()


@pytest.mark.parametrize("dtype", FLOATS)
def test_addcdiv_rounds_as_eager(dtype):
    """addcdiv is `self + (value * t1) / t2` in eager's kernel: the other association,
    value * (t1 / t2), rounded about one element in five apart. Exact division on these
    backends (a GPU's Triton divides approximately)."""
    a, b, c = rnd(1000, dtype=dtype), rnd(1000, dtype=dtype), nonzero(1000, dtype=dtype)
    for value in (0.37, -1e-3, 3):
        got = torch.addcdiv(to_lazy(a), to_lazy(b), to_lazy(c), value=value).cpu()
        want = torch.addcdiv(a, b, c, value=value)
        assert torch.equal(got, want), (got != want).sum()


@pytest.mark.parametrize("dtype", [I64, I32])
def test_rounding_integers_is_the_identity(dtype):
    big = [2 ** 63 - 1, 2 ** 53 + 1, -(2 ** 53 + 1)] if dtype == I64 else [2 ** 31 - 1, -2 ** 31]
    check(lambda x: (x.floor(), x.ceil(), x.round(), x.trunc(), x.floor() + 1),
          torch.tensor(big + [7, -3], dtype=dtype))


# --- reductions -----------------------------------------------------------------------------

REDUCTIONS = {  # name: (fn, accepts tuple dims, dtypes beyond float32)
    "sum": (torch.sum, True, (F64, I64, I32, BOOL, U8)),
    "mean": (torch.mean, True, (F64,)),
    "amax": (torch.amax, True, (I64, I32, BOOL)),
    "amin": (torch.amin, True, (I64, U8)),
    "argmax": (torch.argmax, False, (F64, I32)),
    "argmin": (torch.argmin, False, (I64,)),
    "prod": (torch.prod, False, (F64, I64, BOOL)),
    "var": (torch.var, True, (F64,)),
    "std": (torch.std, True, (F64,)),
    "var_biased": (lambda x, *a, **k: torch.var(x, *a, correction=0, **k), True, ()),
    "logsumexp": (torch.logsumexp, True, (F64,)),
    "all": (torch.all, True, (BOOL, I64, U8)),
    "any": (torch.any, True, (BOOL, I32)),
}
DIMS = [None, 0, 1, -1, (0, 2), (-1, 0), (0, 1, 2)]


def _reduce(name, dim, keepdim):
    fn = REDUCTIONS[name][0]
    if dim is None:
        if name == "logsumexp":  # logsumexp needs dims
            return lambda x: fn(x, (0, 1, 2), keepdim=keepdim)
        return lambda x: fn(x)
    return lambda x: fn(x, dim, keepdim=keepdim)


def _reduction_cases():
    cases = []
    for name, (_, tuples, _) in REDUCTIONS.items():
        for dim in DIMS:
            if isinstance(dim, tuple) and not tuples:
                continue
            for keepdim in ((False,) if dim is None else (False, True)):
                cases.append(pytest.param(name, dim, keepdim, id=f"{name}-{dim}-{keepdim}"))
    return cases


def _reduction_input(name, *shape, dtype=F32):
    if name == "prod":  # keep products near 1
        return (torch.rand(shape) + 0.5).to(dtype) if dtype.is_floating_point \
            else rnd(*shape, dtype=dtype).clamp(-2, 2)
    return rnd(*shape, dtype=dtype)


@pytest.mark.parametrize("name, dim, keepdim", _reduction_cases())
def test_reduction(name, dim, keepdim):
    check(_reduce(name, dim, keepdim), _reduction_input(name, 3, 5, 7))


@pytest.mark.parametrize("fn", [torch.argmax, torch.argmin], ids=["argmax", "argmin"])
def test_arg_reduction_over_all_dims_keepdim(fn):
    check(lambda x: (fn(x, dim=None, keepdim=True), fn(x[:, ::2], keepdim=True)),
          _reduction_input("argmax", 3, 5, 7))


def _reduction_dtype_cases():
    return [pytest.param(name, dtype, id=f"{name}-{_dtype_id(dtype)}")
            for name, (_, _, dtypes) in REDUCTIONS.items() for dtype in dtypes]


@pytest.mark.parametrize("name, dtype", _reduction_dtype_cases())
def test_reduction_dtypes(name, dtype):
    x = _reduction_input(name, 4, 6, dtype=dtype)
    check(lambda x: (_reduce(name, None, False)(x) if name != "logsumexp" else x.logsumexp(0),
                     REDUCTIONS[name][0](x, 1, keepdim=True)), x)


@pytest.mark.parametrize("name", REDUCTIONS)
@pytest.mark.parametrize("layout", ["transposed", "step_slice", "expanded"])
def test_reduction_noncontiguous(name, layout):
    fn = REDUCTIONS[name][0]
    view = LAYOUTS[layout]
    check(lambda x: (fn(view(x), 0), fn(view(x), -1)), _reduction_input(name, 6, 8))


@pytest.mark.parametrize("fn", _params({
    "sum_all": lambda x: x.sum(),
    "mean_all": lambda x: x.mean(),
    "sum_rows": lambda x: x.view(4, -1).sum(1),
    "sum_of_squares": lambda x: (x * x).sum(),
}))
def test_long_float_sums_are_accurate(fn, test_backend):
    """A million float32 values of 0.1 (each 0.1f, so each addition rounds the same way):
    within 1e-5 of the float64 sum, as eager's cascade sum is (the C++ backend adding them in
    float, 8 lanes at a time, was 6e-4 off). Triton's reductions add in float32 per lane of a
    block, as Inductor's do (on a GPU, a double accumulator costs): within 1e-4."""
    x = torch.full((1_000_000,), 0.1)
    exact = fn(x.double()).float()
    rtol = 1e-4 if test_backend.startswith("triton") else 1e-5
    torch.testing.assert_close(fn(to_lazy(x)).cpu(), exact, rtol=rtol, atol=0)
    torch.testing.assert_close(fn(x), exact, rtol=1e-5, atol=0)  # what eager holds to


@pytest.mark.parametrize("fn", _params({  # one tensor reduced over two ranges, in one kernel
    "sum_rows": lambda h: h.sum(0) + h[:5].sum(0),
    "sum_columns": lambda h: h.sum(1) + h[:, :3].sum(1),
    "var": lambda h: h.var(0) + h[:5].var(0),
    "mean_amax_prod": lambda h: (h.mean(0) + h[:3].mean(0), h.amax(1) - h[:, 2:].amax(1),
                                 h.prod(0) * h[1:].prod(0)),
    "batch_norm": lambda h: F.batch_norm(h, None, None, training=True) +
    F.batch_norm(h[:5], None, None, training=True).sum(0),
}))
def test_reductions_of_one_tensor_over_two_ranges(fn):
    """Their summands load alike; their ranges differ, so they are two accumulators."""
    check_grad(fn, rnd(8, 6))


@pytest.mark.parametrize("fn", _params({
    "normalized_over_two_dims": lambda x: (lambda e: e / e.sum((1, 2), keepdim=True))(x.exp()),
    "layer_norm_over_two_dims": lambda x: (lambda g: g + F.layer_norm(g, g.shape[-2:]))(
        x.tanh()),
}))
def test_a_sum_over_two_dims_beside_its_summand_recomputed(fn):
    """The backward's kernel sums over two dims; a pointwise member recomputing the summand
    loops over them as one merged dim."""
    check_grad(fn, rnd(4, 4, 17))


@pytest.mark.filterwarnings(r"ignore:var\(\)")  # var over a single element
@pytest.mark.parametrize("shape", [(1,), (7, 13), (1, 5, 1), (4, 1)], ids=str)
@pytest.mark.parametrize("name", ["sum", "mean", "amax", "argmax", "var", "logsumexp"])
def test_reduction_shapes(name, shape):
    fn = REDUCTIONS[name][0]
    check(lambda x: (fn(x, 0), fn(x, -1, keepdim=True)), rnd(*shape))


@pytest.mark.parametrize("fn", _params({
    "sum_dtype_f64": lambda x: x.sum(1, dtype=F64),
    "sum_int_to_f32": lambda x: (x * 5).to(I32).sum(0, dtype=F32),
    "mean_dtype": lambda x: (x * 5).long().mean(dtype=F64),
    "max_dim": lambda x: tuple(torch.max(x, 1)),
    "min_dim_keepdim": lambda x: tuple(torch.min(x, 0, keepdim=True)),
    "max_all": torch.max,
    "median_dim": lambda x: tuple(torch.median(x, 1)),
    "norm": lambda x: torch.linalg.vector_norm(x, dim=1),
    "var_mean": lambda x: torch.var_mean(x, 0),
    "std_correction_2": lambda x: torch.std(x, 1, correction=2),
    "cumsum": lambda x: torch.cumsum(x, 1),
    "count_nonzero": lambda x: torch.count_nonzero(x > 0, 0),
    "sum_empty_dims": lambda x: x.sum(()),
}))
def test_reduction_variants(fn):
    check(fn, rnd(5, 7))


@pytest.mark.parametrize("fn", _params({
    "sum": lambda x: x.sum((0, 2)),
    "mean_keepdim": lambda x: x.mean(-1, keepdim=True),
    "amax": lambda x: x.amax(1),
    "prod": lambda x: x.prod(1),
    "var": lambda x: x.var((0, 1)),
    "std": lambda x: x.std(-1),
    "logsumexp": lambda x: x.logsumexp((0, 2)),
    "max_dim": lambda x: x.max(2).values,
    "norm": lambda x: x.norm(dim=1),
}))
def test_reduction_grad(fn):
    check_grad(fn, torch.rand(3, 5, 4) + 0.5)


def test_a_whole_tensor_max_beside_a_loop_of_merged_dims_compiles():
    """Found by fuzzing: the C++ backend's cheap-exp proof (codegen/row_max.py) replayed the
    max over the 2 dims of a loop that had merged them into 1, and the graph failed to
    compile (it ran uncompiled, counted as FallbackGraph)."""
    metrics.reset()
    check(lambda c: (c.amax(), c.amax().flip(0), torch.logical_not(c)), rnd(65, 3))
    assert not metrics.counter_value("FallbackGraph")


# --- softmax and normalization ----------------------------------------------------------------

SOFTMAX = {"softmax": torch.softmax, "log_softmax": torch.log_softmax}


@pytest.mark.parametrize("dim", [0, 1, -1])
@pytest.mark.parametrize("name", SOFTMAX)
def test_softmax(name, dim):
    fn = SOFTMAX[name]
    check_grad(lambda x: fn(x, dim), rnd(3, 5, 7) * 3)


@pytest.mark.parametrize("name", SOFTMAX)
def test_softmax_variants(name):
    fn = SOFTMAX[name]
    check(lambda x: (fn(x, 1, dtype=F64), fn(x.t(), 0), fn(x[:, ::2], -1), fn(x.half(), 1)),
          rnd(6, 9), **LOOSE)
    check(lambda x: fn(x, 0), rnd(1))


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape, normalized", [((4, 7), (7,)), ((2, 3, 5), (3, 5)),
                                               ((3, 1, 6), (6,))], ids=str)
def test_layer_norm(shape, normalized, affine):
    x = rnd(*shape) * 3 + 1
    if affine:
        check_grad(lambda x, w, b: F.layer_norm(x, normalized, w, b, eps=1e-3), x,
                   rnd(*normalized), rnd(*normalized))
    else:
        check_grad(lambda x: F.layer_norm(x, normalized), x)


@pytest.mark.parametrize("fn", _params({
    "group_norm": lambda x, w, b: F.group_norm(x, 2, w, b),
    "batch_norm_train": lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
    "rms_norm": lambda x, w, b: F.rms_norm(x.transpose(1, 2), (4,), w) + b,
}))
def test_other_norms(fn):
    check_grad(fn, rnd(3, 4, 5), rnd(4), rnd(4))


# --- views ----------------------------------------------------------------------------------

VIEWS = {  # applied to a (4, 6, 5) input
    "view": lambda x: x.view(24, 5),
    "view_infer": lambda x: x.view(-1, 10),
    "reshape_copy": lambda x: x.transpose(0, 2).reshape(-1),
    "reshape_view": lambda x: x.reshape(4, 30),
    "permute": lambda x: x.permute(2, 0, 1),
    "permute_neg": lambda x: x.permute(-1, -3, -2),
    "transpose": lambda x: x.transpose(0, 2),
    "t_2d": lambda x: x[0].t(),
    "expand": lambda x: x[:, :1].expand(3, 4, 6, 5),
    "expand_as_view": lambda x: x[None, :, 2:3].expand(2, -1, 4, -1),
    "slice_step": lambda x: x[:, ::2],
    "slice_step_offset": lambda x: x[1::2, 1:5:3],
    "slice_negative": lambda x: x[-3:, :-2],
    "select": lambda x: x[2],
    "select_neg_dim": lambda x: x.select(-1, 3),
    "select_then_slice": lambda x: x[:, 3, 1:],
    "squeeze": lambda x: x[:, :1].squeeze(1),
    "squeeze_all": lambda x: x[:1, :, :1].squeeze(),
    "unsqueeze": lambda x: x.unsqueeze(1),
    "unsqueeze_neg": lambda x: x.unsqueeze(-1),
    "none_index": lambda x: x[None, :, None],
    "flatten": lambda x: x.flatten(),
    "flatten_dims": lambda x: x.flatten(1, 2),
    "unflatten": lambda x: x.unflatten(1, (2, 3)),
    "narrow": lambda x: x.narrow(1, 2, 3),
    "diagonal": lambda x: x.diagonal(0, 1, 2),
    "split": lambda x: x.split(2, dim=1),
    "split_sizes": lambda x: x.split([1, 3, 2], dim=1),
    "chunk": lambda x: x.chunk(3, dim=-1),
    "unbind": lambda x: x.unbind(0),
    "movedim": lambda x: x.movedim(0, -1),
    "ellipsis": lambda x: x[..., 1],
    "as_strided": lambda x: x.as_strided((3, 3), (7, 2), 4),
}


@pytest.mark.parametrize("name", VIEWS)
def test_view(name):
    check(VIEWS[name], rnd(4, 6, 5), check_stride=name != "reshape_copy")


@pytest.mark.parametrize("name", VIEWS)
def test_view_then_compute(name):
    # a view as the input of compute, also of a non-contiguous base
    fn = VIEWS[name]
    check(lambda x: [v * 2 + 1 for v in flat(fn(x))], rnd(4, 6, 5))
    check(lambda x: [v.exp() for v in flat(fn(x[1:]))], rnd(5, 6, 5))  # storage offset
    if not name.startswith("view"):  # .view needs compatible strides
        check(lambda x: [v.exp() for v in flat(fn(x.permute(2, 1, 0)))], rnd(5, 6, 4))


# ops whose decompositions take views of their input: on a layout with gaps between its dims
# (a column slice's rows, a step slice's columns, a sliced transpose, a channels-last slice),
# those views index the input's storage, not a dense copy of it
DECOMPOSED_VIEWERS = {
    "repeat": lambda x: x.repeat(2, 1),
    "repeat_new_dim": lambda x: x.repeat(2, 1, 3),
    "tile": lambda x: x.tile(2),
    "glu": lambda x: F.glu(x, 1),
    "unsafe_split": lambda x: torch.ops.aten.unsafe_split.Tensor(x, 1, 0)[1],
    "unsafe_split_with_sizes": lambda x: torch.ops.aten.unsafe_split_with_sizes.default(
        x, [1, x.shape[1] - 1], 1)[1],
    "unsafe_chunk": lambda x: torch.unsafe_chunk(x, 2, 1)[1],
}
GAPPED = {  # of a (6, 13) input: rows 13 apart, none a multiple of the slices' widths
    "column_slice": lambda x: x[:, :6],
    "step_slice": lambda x: x[:, 1::2],
    "sliced_transpose": lambda x: x.t()[:4, 2:],
    "offset_slice": lambda x: x[1:, 1:5],
    "computed_then_sliced": lambda x: (x * 2)[:, 1:7],
}


@pytest.mark.parametrize("layout", GAPPED)
@pytest.mark.parametrize("name", DECOMPOSED_VIEWERS)
def test_decomposed_views_of_a_layout_with_gaps(name, layout):
    fn, view = DECOMPOSED_VIEWERS[name], GAPPED[layout]
    check(lambda x: fn(view(x)), rnd(6, 13))


def test_decomposed_views_of_a_channels_last_slice():
    check(lambda x: x[:, :, 1:].repeat(1, 2, 1, 1), rnd(2, 4, 5, 6).to(
        memory_format=torch.channels_last))


@pytest.mark.parametrize("name", [n for n in VIEWS if n != "as_strided"])
def test_view_grad(name):
    check_grad(VIEWS[name], rnd(4, 6, 5))


SHAPE_OPS = {  # name: (fn, input factories)
    "cat_dim0": (lambda a, b: torch.cat([a, b]), (lambda: rnd(2, 5), lambda: rnd(3, 5))),
    "cat_dim1": (lambda a, b: torch.cat([a, b], 1), (lambda: rnd(3, 2), lambda: rnd(3, 5))),
    "cat_neg_dim": (lambda a, b, c: torch.cat([a, b, c], -1),
                    (lambda: rnd(2, 3, 1), lambda: rnd(2, 3, 4), lambda: rnd(2, 3, 2))),
    "cat_noncontig": (lambda a, b: torch.cat([a.t(), b[:, ::2]], 0),
                      (lambda: rnd(6, 4), lambda: rnd(3, 12))),
    "cat_mixed_dtype": (lambda a, b: torch.cat([a, b]), (lambda: rnd(2, 5, dtype=I32),
                                                         lambda: rnd(3, 5))),
    "stack": (lambda a, b: torch.stack([a, b]), (lambda: rnd(3, 4), lambda: rnd(3, 4))),
    "stack_dim1": (lambda a, b: torch.stack([a, b], 1), (lambda: rnd(3, 4), lambda: rnd(3, 4))),
    "stack_neg_dim": (lambda a, b, c: torch.stack([a, b, c], -1),
                      (lambda: rnd(3, 4), lambda: rnd(3, 4), lambda: rnd(3, 4))),
    "pad_constant": (lambda x: F.pad(x, (1, 2, 0, 3), value=0.5), (lambda: rnd(2, 3, 4),)),
    "pad_negative": (lambda x: F.pad(x, (-1, 2)), (lambda: rnd(3, 5),)),
    "pad_reflect": (lambda x: F.pad(x, (2, 1), mode="reflect"), (lambda: rnd(2, 3, 5),)),
    "pad_reflect_2d": (lambda x: F.pad(x, (1, 2, 2, 1), mode="reflect"),
                       (lambda: rnd(1, 2, 4, 5),)),
    "pad_replicate": (lambda x: F.pad(x, (1, 2), mode="replicate"), (lambda: rnd(2, 3, 5),)),
    "tril": (torch.tril, (lambda: rnd(5, 7),)),
    "tril_diag": (lambda x: torch.tril(x, -1), (lambda: rnd(2, 5, 7),)),
    "triu": (torch.triu, (lambda: rnd(7, 5),)),
    "triu_diag": (lambda x: torch.triu(x, 2), (lambda: rnd(5, 7),)),
    "flip": (lambda x: torch.flip(x, (0,)), (lambda: rnd(5, 7),)),
    "flip_dims": (lambda x: torch.flip(x, (-1, 0)), (lambda: rnd(3, 5, 7),)),
    "roll": (lambda x: torch.roll(x, 2, 1), (lambda: rnd(5, 7),)),
    "roll_neg_multi": (lambda x: torch.roll(x, (-1, 3), (0, 2)), (lambda: rnd(3, 5, 7),)),
    "roll_flat": (lambda x: torch.roll(x, 4), (lambda: rnd(3, 5),)),
    "repeat": (lambda x: x.repeat(2, 3), (lambda: rnd(3, 4),)),
    "repeat_new_dims": (lambda x: x.repeat(2, 1, 3), (lambda: rnd(3, 4),)),
    "repeat_interleave": (lambda x: x.repeat_interleave(2, dim=1), (lambda: rnd(3, 4),)),
    "tile": (lambda x: x.tile((2,)), (lambda: rnd(3, 4),)),
    "contiguous": (lambda x: x.t().contiguous(), (lambda: rnd(3, 4),)),
    "clone_noncontig": (lambda x: x[:, ::2].clone(), (lambda: rnd(3, 8),)),
}


@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_op(name):
    fn, makers = SHAPE_OPS[name]
    check(fn, *[make() for make in makers])


@pytest.mark.parametrize("name", [n for n in SHAPE_OPS if n != "cat_mixed_dtype"])
def test_shape_op_grad(name):
    fn, makers = SHAPE_OPS[name]
    check_grad(fn, *[make() for make in makers])


@pytest.mark.parametrize("dtype", [I64, BOOL, U8], ids=_dtype_id)
def test_shape_ops_int(dtype):
    check(lambda a, b: (torch.cat([a, b]), torch.stack([a, b], -1), a.t().flip(0),
                        F.pad(a, (1, 1), value=1), a.tril(), a.roll(1, 0), a.repeat(1, 2)),
          rnd(3, 4, dtype=dtype), rnd(3, 4, dtype=dtype))


# --- indexing -------------------------------------------------------------------------------

INDEXING = {  # name: (fn, input factories); x is (5, 7)
    "gather": (lambda x, i: torch.gather(x, 1, i), (lambda: rnd(5, 7), lambda: index(7, 5, 4))),
    "gather_dim0": (lambda x, i: x.gather(0, i), (lambda: rnd(5, 7), lambda: index(5, 3, 7))),
    "take_along_dim": (lambda x, i: torch.take_along_dim(x, i, -1),
                       (lambda: rnd(5, 7), lambda: index(7, 5, 2))),
    "index_select": (lambda x, i: torch.index_select(x, 1, i),
                     (lambda: rnd(5, 7), lambda: index(7, 9))),
    "index_select_dim0": (lambda x, i: x.index_select(0, i),
                          (lambda: rnd(5, 7), lambda: index(5, 3))),
    "embedding": (lambda w, i: F.embedding(i, w), (lambda: rnd(10, 4), lambda: index(10, 3, 5))),
    "embedding_padding": (lambda w, i: F.embedding(i, w, padding_idx=2),
                          (lambda: rnd(10, 4), lambda: index(10, 3, 5))),
    "scatter_add": (lambda x, i, s: torch.scatter_add(x, 1, i, s),
                    (lambda: rnd(5, 7), lambda: index(7, 5, 9), lambda: rnd(5, 9))),
    "scatter_add_dim0": (lambda x, i, s: x.scatter_add(0, i, s),
                         (lambda: rnd(5, 7), lambda: index(5, 8, 7), lambda: rnd(8, 7))),
    "scatter_src": (lambda x, s: x.scatter(1, torch.randperm(7)[:4].expand(5, 4).to(x.device), s),
                    (lambda: rnd(5, 7), lambda: rnd(5, 4))),
    "index_add": (lambda x, i, s: x.index_add(0, i, s, alpha=2),
                  (lambda: rnd(5, 7), lambda: index(5, 8), lambda: rnd(8, 7))),
    "index_copy": (lambda x, s: x.index_copy(1, torch.randperm(7)[:4].to(x.device), s),
                   (lambda: rnd(5, 7), lambda: rnd(5, 4))),
    "index_fill": (lambda x, i: x.index_fill(1, i, -2.5), (lambda: rnd(5, 7), lambda: index(7, 3))),
    "index_put_accumulate": (lambda x, i, v: x.index_put((i,), v, accumulate=True),
                             (lambda: rnd(5, 7), lambda: index(5, 9), lambda: rnd(9, 7))),
    "index_put_accumulate_2d": (lambda x, i, j, v: x.index_put((i, j), v, accumulate=True),
                                (lambda: rnd(5, 7), lambda: index(5, 12), lambda: index(7, 12),
                                 lambda: rnd(12))),
    "index_put_unique": (lambda x, v: x.index_put((torch.randperm(5)[:3].to(x.device),), v),
                         (lambda: rnd(5, 7), lambda: rnd(7))),
    "advanced_index": (lambda x, i: x[i], (lambda: rnd(5, 7), lambda: index(5, 2, 3))),
    "advanced_index_dim1": (lambda x, i: x[:, i], (lambda: rnd(5, 7), lambda: index(7, 4))),
    "advanced_index_pair": (lambda x, i, j: x[i, j],
                            (lambda: rnd(5, 7), lambda: index(5, 6), lambda: index(7, 6))),
    "advanced_index_broadcast": (lambda x, i, j: x[i[:, None], j],
                                 (lambda: rnd(5, 7), lambda: index(5, 3), lambda: index(7, 4))),
    "negative_index": (lambda x, i: x[i - 5], (lambda: rnd(5, 7), lambda: index(5, 4))),
    "masked_fill": (lambda x, m: x.masked_fill(m, -1.5),
                    (lambda: rnd(5, 7), lambda: rnd(5, 7, dtype=BOOL))),
    "masked_fill_broadcast": (lambda x, m: x.masked_fill(m, 2.0),
                              (lambda: rnd(5, 7), lambda: rnd(7, dtype=BOOL))),
    "masked_fill_tensor": (lambda x, m, v: x.masked_fill(m, v),
                           (lambda: rnd(5, 7), lambda: rnd(5, 1, dtype=BOOL), lambda: rnd())),
    # a boolean mask with one value: where(mask, v, x), a pointwise kernel
    "mask_put": (lambda x, m: x.index_put((m,), torch.tensor(-1.5).to(x.device)),
                 (lambda: rnd(5, 7), lambda: rnd(5, 7, dtype=BOOL))),
    "mask_put_rows": (lambda x, m, v: x.index_put((m,), v),
                      (lambda: rnd(5, 7), lambda: rnd(5, dtype=BOOL), lambda: rnd(1))),
    "mask_put_accumulate": (lambda x, m, v: x.index_put((m,), v, accumulate=True),
                            (lambda: rnd(5, 7), lambda: rnd(5, 7, dtype=BOOL), lambda: rnd())),
    "mask_put_transposed": (lambda x, m: x.t().index_put((m,), torch.tensor(3.0).to(x.device)),
                            (lambda: rnd(5, 7), lambda: rnd(7, 5, dtype=BOOL))),
    "mask_setitem": (lambda x: _set_where_negative(x * 1, 0.0), (lambda: rnd(4, 6, 3),)),
}
INDEXING_NO_GRAD = {"index_put_unique", "scatter_src", "index_copy"}  # indices drawn inside fn


def _set_where_negative(x, value):
    x[x < 0] = value
    return x


@pytest.mark.parametrize("name", INDEXING)
def test_indexing(name):
    fn, makers = INDEXING[name]
    metrics.reset()
    torch.manual_seed(1)
    inputs = [make() for make in makers]
    torch.manual_seed(2)  # indices drawn inside fn are the same in both runs
    lazy_inputs = [to_lazy(x) for x in inputs]
    expected = fn(*inputs)
    torch.manual_seed(2)
    actual = fn(*lazy_inputs)
    lazytriton.mark_step()
    assert_lazy(actual)
    assert_same(to_cpu(actual), expected, {})
    assert not aten_fallbacks()  # lowered (or decomposed into what is), not aten calls


@pytest.mark.parametrize("name", [n for n in INDEXING if n not in INDEXING_NO_GRAD])
def test_indexing_grad(name):
    fn, makers = INDEXING[name]
    check_grad(fn, *[make() for make in makers])


@pytest.mark.parametrize("dtype", [I64, I32, BOOL], ids=_dtype_id)
def test_indexing_int_values(dtype):
    check(lambda x, i, m: (x.gather(1, i), x.index_select(0, i[:, 0]), x[i[:, :2]],
                           x.masked_fill(m, 1), x.scatter_add(1, i, x[:, :3]) if dtype != BOOL
                           else x.scatter(1, i, x[:, :3])),
          rnd(5, 7, dtype=dtype), index(5, 5, 3), rnd(5, 7, dtype=BOOL))


# --- matmul family ----------------------------------------------------------------------------

MATMUL = {  # name: (fn, input factories)
    "mm": (torch.mm, (lambda: rnd(7, 13), lambda: rnd(13, 5))),
    "mm_transposed": (lambda a, b: a.t() @ b.t(), (lambda: rnd(13, 7), lambda: rnd(5, 13))),
    "mm_sliced": (lambda a, b: a[:, ::2] @ b[1:], (lambda: rnd(4, 12), lambda: rnd(7, 3))),
    "bmm": (torch.bmm, (lambda: rnd(3, 4, 5), lambda: rnd(3, 5, 2))),
    "bmm_permuted": (lambda a, b: torch.bmm(a.permute(1, 0, 2), b.transpose(1, 2)),
                     (lambda: rnd(4, 3, 5), lambda: rnd(3, 2, 5))),
    "addmm": (torch.addmm, (lambda: rnd(5), lambda: rnd(7, 3), lambda: rnd(3, 5))),
    "addmm_scaled": (lambda c, a, b: torch.addmm(c, a, b, beta=0.5, alpha=2),
                     (lambda: rnd(7, 5), lambda: rnd(7, 3), lambda: rnd(3, 5))),
    "baddbmm": (lambda c, a, b: torch.baddbmm(c, a, b, alpha=0.5),
                (lambda: rnd(2, 1, 4), lambda: rnd(2, 3, 5), lambda: rnd(2, 5, 4))),
    "matmul_broadcast": (torch.matmul, (lambda: rnd(2, 1, 3, 4), lambda: rnd(5, 4, 6))),
    "matmul_batched_2d": (torch.matmul, (lambda: rnd(3, 4, 5), lambda: rnd(5, 2))),
    "matmul_2d_batched": (torch.matmul, (lambda: rnd(4, 5), lambda: rnd(3, 5, 2))),
    "matmul_vec_mat": (torch.matmul, (lambda: rnd(5), lambda: rnd(5, 3))),
    "matmul_mat_vec": (torch.matmul, (lambda: rnd(3, 5), lambda: rnd(5))),
    "matmul_batched_vec": (torch.matmul, (lambda: rnd(2, 3, 5), lambda: rnd(5))),
    "dot": (torch.matmul, (lambda: rnd(7), lambda: rnd(7))),
    "linear": (F.linear, (lambda: rnd(4, 6), lambda: rnd(3, 6), lambda: rnd(3))),
    "linear_no_bias": (F.linear, (lambda: rnd(2, 4, 6), lambda: rnd(3, 6))),
    "linear_batched": (F.linear, (lambda: rnd(2, 3, 4, 6), lambda: rnd(5, 6), lambda: rnd(5))),
    "einsum_mm": (lambda a, b: torch.einsum("ij,jk->ik", a, b),
                  (lambda: rnd(3, 4), lambda: rnd(4, 5))),
    "einsum_bmm": (lambda a, b: torch.einsum("bij,bjk->bik", a, b),
                   (lambda: rnd(2, 3, 4), lambda: rnd(2, 4, 5))),
    "einsum_attention": (lambda q, k: torch.einsum("bhqd,bhkd->bhqk", q, k),
                         (lambda: rnd(2, 3, 4, 5), lambda: rnd(2, 3, 6, 5))),
    "einsum_outer": (lambda a, b: torch.einsum("i,j->ij", a, b), (lambda: rnd(4), lambda: rnd(5))),
    "einsum_transpose_sum": (lambda a: torch.einsum("ijk->kj", a), (lambda: rnd(2, 3, 4),)),
    "einsum_trace": (lambda a: torch.einsum("ii->", a), (lambda: rnd(4, 4),)),
    "einsum_three": (lambda a, b, c: torch.einsum("ij,jk,kl->il", a, b, c),
                     (lambda: rnd(2, 3), lambda: rnd(3, 4), lambda: rnd(4, 5))),
    "outer": (torch.outer, (lambda: rnd(4), lambda: rnd(6))),
}


@pytest.mark.parametrize("name", MATMUL)
def test_matmul(name):
    fn, makers = MATMUL[name]
    check_grad(fn, *[make() for make in makers], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [F64, I64], ids=_dtype_id)
@pytest.mark.parametrize("name", ["mm", "bmm", "matmul_broadcast", "einsum_attention"])
def test_matmul_dtypes(name, dtype):
    fn, makers = MATMUL[name]
    check(fn, *[make().to(dtype) for make in makers])


# --- convolution and pooling ----------------------------------------------------------------

CONV = {  # name: (kwargs, input shape, weight shape)
    "basic": (dict(), (2, 3, 7, 9), (4, 3, 3, 3)),
    "padding": (dict(padding=1), (2, 3, 7, 9), (4, 3, 3, 3)),
    "stride_dilation": (dict(stride=2, dilation=2, padding=(1, 2)), (1, 3, 9, 11), (2, 3, 3, 2)),
    "groups": (dict(groups=3, padding=1), (2, 3, 6, 5), (6, 1, 3, 3)),
    "same": (dict(padding="same", dilation=2), (1, 2, 7, 8), (3, 2, 3, 5)),
    "one_by_one": (dict(stride=2), (2, 4, 5, 5), (3, 4, 1, 1)),
}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name", CONV)
def test_conv2d(name, bias):
    kwargs, x_shape, w_shape = CONV[name]
    inputs = [rnd(*x_shape), rnd(*w_shape)] + ([rnd(w_shape[0])] if bias else [])
    check_grad(lambda x, w, *b: F.conv2d(x, w, *b, **kwargs), *inputs, atol=1e-5, rtol=1e-5)


def test_conv2d_noncontiguous_input():
    check_grad(lambda x, w: F.conv2d(x.permute(0, 3, 1, 2), w, padding=1),
               rnd(2, 6, 7, 3), rnd(4, 3, 3, 3), atol=1e-5, rtol=1e-5)


POOL = {
    "max_2": lambda x: F.max_pool2d(x, 2),
    "max_3_s2_p1": lambda x: F.max_pool2d(x, 3, stride=2, padding=1),
    "max_ceil": lambda x: F.max_pool2d(x, 2, ceil_mode=True),
    "max_dilation": lambda x: F.max_pool2d(x, 2, dilation=2),
    "max_indices": lambda x: F.max_pool2d(x, 3, stride=2, return_indices=True),
    "max_indices_2": lambda x: F.max_pool2d(x, 2, return_indices=True),
    "max_2x3": lambda x: F.max_pool2d(x, (2, 3)),
    "max_2_s1": lambda x: F.max_pool2d(x, 2, stride=1),  # overlapping: the backward is aten's
    "max_3d_input": lambda x: F.max_pool2d(x[0], 2, return_indices=True),
    "avg_2": lambda x: F.avg_pool2d(x, 2),
    "avg_3_s2_p1": lambda x: F.avg_pool2d(x, 3, stride=2, padding=1),
    "avg_exclude_pad": lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
    "avg_ceil": lambda x: F.avg_pool2d(x, 2, ceil_mode=True),
    "avg_divisor": lambda x: F.avg_pool2d(x, 2, divisor_override=3),
    "adaptive_avg_1": lambda x: F.adaptive_avg_pool2d(x, 1),
    "adaptive_avg_3x2": lambda x: F.adaptive_avg_pool2d(x, (3, 2)),
    "adaptive_avg_4x5": lambda x: F.adaptive_avg_pool2d(x, (4, 5)),
    "adaptive_max_3": lambda x: F.adaptive_max_pool2d(x, 3),
}


@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 1, 8, 8)], ids=str)
@pytest.mark.parametrize("name", POOL)
def test_pool(name, shape):
    check_grad(POOL[name], rnd(*shape))


@pytest.mark.parametrize("name", ["max_3_s2_p1", "max_2", "avg_exclude_pad", "adaptive_avg_3x2"])
def test_pool_noncontiguous(name):
    check_grad(lambda x: POOL[name](x.transpose(2, 3)), rnd(2, 3, 9, 7))


@pytest.mark.parametrize("name", ["max_2", "max_indices_2", "max_2x3", "max_2_s1"])
def test_max_pool_nan_inf_and_ties_as_eager(name):
    """Eager's CPU kernel: a later element wins when greater or NaN (so the last NaN's index),
    the first of equal maxima keeps its index, an all -inf window points at its first element."""
    x = rnd(2, 3, 8, 9)
    flat = x.view(-1)
    flat[[5, 40, 41, 77]] = float("nan")
    flat[100:104] = float("-inf")
    flat[200:220] = 0.5  # ties
    x[1, 2] = float("-inf")
    check_grad(POOL[name], x)


@pytest.mark.parametrize("name, lowered", [("max_2", True), ("max_indices_2", True),
                                           ("max_2x3", True), ("max_2_s1", False)])
def test_max_pool_lowers_to_loops(name, lowered, test_backend):
    """Windows that do not overlap, no padding: forward and backward are kernels, not aten
    calls (an overlapping window's backward stays aten's)."""
    if test_backend == "aten":
        pytest.skip("the reference executor runs every op as an aten call")
    before = set(lazytriton.cache_dir().glob("graphs/*"))
    check_grad(POOL[name], rnd(2, 3, 8, 10))
    wrappers = [(g / "wrapper.py").read_text() for g in lazytriton.cache_dir().glob("graphs/*")
                if g not in before and "max_pool2d" in (g / "ir.txt").read_text()]
    assert wrappers
    calls = [w for w in wrappers if re.search(r"extern\d+\(.*# max_pool2d_with_indices", w)]
    assert not calls if lowered else calls, calls


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=str)
def test_max_pool_dtypes(dtype):
    check_grad(POOL["max_indices_2"], rnd(2, 3, 8, 8, dtype=dtype))


UPSAMPLE = {  # U-Nets and FPNs: every mode and way to give the size, up and down
    "nearest_size": lambda x: F.interpolate(x, size=(9, 13), mode="nearest"),
    "nearest_x2": lambda x: F.interpolate(x, scale_factor=2, mode="nearest"),
    "nearest_down": lambda x: F.interpolate(x, scale_factor=0.6, mode="nearest"),
    "bilinear_size": lambda x: F.interpolate(x, size=(9, 13), mode="bilinear"),
    "bilinear_x1_7": lambda x: F.interpolate(x, scale_factor=1.7, mode="bilinear"),
    "bilinear_align_corners": lambda x: F.interpolate(x, size=(4, 13), mode="bilinear",
                                                      align_corners=True),
}


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("name", UPSAMPLE)
def test_upsample(name, dtype):
    metrics.reset()
    check_grad(UPSAMPLE[name], rnd(2, 3, 5, 7, dtype=dtype), atol=1e-5, rtol=1e-5)
    assert not [n for n in metrics.counter_names() if n.startswith("aten::")]  # lowered


# --- losses ---------------------------------------------------------------------------------

LOSSES = {  # name: fn(logits, target, class weights, reduction)
    "nll": lambda x, t, w, r: F.nll_loss(F.log_softmax(x, 1), t, reduction=r),
    "nll_weight": lambda x, t, w, r: F.nll_loss(F.log_softmax(x, 1), t, weight=w, reduction=r),
    "nll_ignore": lambda x, t, w, r: F.nll_loss(F.log_softmax(x, 1), t, ignore_index=1,
                                                reduction=r),
    "cross_entropy": lambda x, t, w, r: F.cross_entropy(x, t, reduction=r),
    "cross_entropy_weight": lambda x, t, w, r: F.cross_entropy(x, t, weight=w, reduction=r),
    "cross_entropy_smoothing": lambda x, t, w, r: F.cross_entropy(x, t, label_smoothing=0.1,
                                                                  reduction=r),
    "cross_entropy_ignore": lambda x, t, w, r: F.cross_entropy(x, t, ignore_index=1,
                                                               reduction=r),
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", LOSSES)
def test_loss(name, reduction):
    t = index(5, 6)
    t[0] = 1  # so the ignored class occurs
    check_grad(lambda x, t, w: LOSSES[name](x, t, w, reduction), rnd(6, 5), t,
               torch.rand(5) + 0.5, wrt=[0])


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_spatial_and_soft(reduction):
    target = index(5, 2, 3, 4)
    check_grad(lambda x, t: F.cross_entropy(x, t, reduction=reduction), rnd(2, 5, 3, 4), target)
    probs = torch.softmax(rnd(6, 5), 1)
    check_grad(lambda x, p: F.cross_entropy(x, p, reduction=reduction), rnd(6, 5), probs)


@pytest.mark.parametrize("fn", _params({
    "mse": lambda a, b: F.mse_loss(a, b),
    "l1_none": lambda a, b: F.l1_loss(a, b, reduction="none"),
    "smooth_l1": lambda a, b: F.smooth_l1_loss(a, b, beta=0.5),
    "bce_logits": lambda a, b: F.binary_cross_entropy_with_logits(a, torch.sigmoid(b)),
    "bce": lambda a, b: F.binary_cross_entropy(torch.sigmoid(a), torch.sigmoid(b).detach()),
    "kl_div": lambda a, b: F.kl_div(F.log_softmax(a, 1), F.softmax(b, 1), reduction="batchmean"),
}))
def test_other_losses(fn):
    check_grad(fn, rnd(4, 6), rnd(4, 6))


# --- in-place ops on views, out= ------------------------------------------------------------

def add_into_slice(x, y):
    x[:, 1:].add_(y)
    return x


def mul_transposed(x):
    x.t().mul_(2)
    return x


def sub_chained_views(x):
    x.view(6, 4)[1:, ::2].t().sub_(1.5)
    return x


def setitem_scalar(x):
    x[1] = 3.0
    x[:, -1] = -2.0
    return x


def setitem_tensor_strided(x, y):
    x[::2, 1::2] = y
    return x


def setitem_broadcast(x, y):
    x[1:3] = y[0]
    return x


def iadd_select_of_transpose(x, y):
    x.t()[0] += y[0, :4]
    return x


def view_sees_base_write(x):
    v = x[1:, 2]
    x.mul_(-1)
    return v, v + 0


def views_see_each_other(x):
    row, col = x[0], x[:, 0]
    row.add_(10)  # x[0, 0] is in both
    return col.clone(), col, x


def inplace_chain(x, y):
    x.add_(y).mul_(2).clamp_(-1, 1)
    return x


def inplace_ops_on_slices(x, y):
    x[:2].copy_(y[:2])
    x[2].fill_(0.25)
    x[:, 3].zero_()
    x[3:, :2].clamp_(min=0)
    F.relu(x[:, 1:3], inplace=True)
    return x


def inplace_index_ops(x, y):
    m = y > 0
    x.t()[:2].masked_fill_(m[:2, :4], 7.0)
    x[1:].index_put_((torch.tensor([0, 2], device=x.device),), y[0], accumulate=True)
    x.scatter_add_(1, torch.tensor([[0, 0, 3]] * 4, device=x.device), y[:4, :3])
    return x


# a computed value laid out as its input (eager keeps a transposed input's strides): its
# storage's order is not its row-major order, and writes into it address the storage
STORAGE_ORDERS = {
    "transposed": lambda x: x.t().exp(),
    "permuted": lambda x: x.view(2, 3, 8).permute(2, 0, 1).sigmoid(),
    "contiguous": lambda x: x.exp(),
}
def _drawn(y, high: int, *shape: int, floats: bool = False) -> torch.Tensor:
    """The same random indices (or values) for the eager and the lazy run, on y's device."""
    gen = torch.Generator().manual_seed(7)
    t = torch.randn(shape, generator=gen) if floats else torch.randint(0, high, shape,
                                                                       generator=gen)
    return t.to(y.device)


WRITES_IN_PLACE = {
    "scatter_add_": lambda y: y.scatter_add_(1, _drawn(y, y.shape[1], *y.shape[:-1], 2),
                                             _drawn(y, 0, *y.shape[:-1], 2, floats=True)),
    "scatter_": lambda y: y.scatter_(0, _drawn(y, y.shape[0], 2, *y.shape[1:]),
                                     _drawn(y, 0, 2, *y.shape[1:], floats=True)),
    "index_add_": lambda y: y.index_add_(1, _drawn(y, y.shape[1], 3),
                                         _drawn(y, 0, y.shape[0], 3, *y.shape[2:], floats=True)),
    "index_put_": lambda y: y.index_put_((_drawn(y, y.shape[0], 4),),
                                         _drawn(y, 0, *y.shape[1:], floats=True),
                                         accumulate=True),
    "index_fill_": lambda y: y.index_fill_(1, _drawn(y, y.shape[1], 2), -3.0),
    "setitem_slice": lambda y: y.__setitem__((slice(1, None), 0), -y[1:, 1]) or y,
    "masked_fill_": lambda y: y.masked_fill_(y > 1, 0.5),
}


@pytest.mark.parametrize("write", WRITES_IN_PLACE)
@pytest.mark.parametrize("order", STORAGE_ORDERS)
def test_writes_into_a_result_in_storage_order(order, write):
    """Found by fuzzing: x.t().exp().scatter_add_(...) wrote src through row-major positions
    of a storage laid out column by column (silently wrong values)."""
    def fn(x):
        y = STORAGE_ORDERS[order](x)
        out = WRITES_IN_PLACE[write](y)
        return out, y, out.stride()
    check(fn, rnd(6, 8))


def setitem_bool_mask(x, y):
    x[y > 0] = 0.5
    return x


def inplace_on_detach(x):
    d = x.detach()
    d.mul_(3)
    return x


def unsqueeze_inplace(x):
    x.unsqueeze_(0)
    x.add_(1)
    return x


def t_inplace(x):
    x.t_()
    x[0].add_(1)
    return x


def transpose_inplace(x):
    x.transpose_(0, 1)
    x[0].add_(1)
    return x


def out_add(a, b):
    c = torch.empty_like(a)
    torch.add(a, b, alpha=2, out=c)
    return c


def out_resized(a, b):
    c = a.new_empty(0)
    torch.mul(a, b, out=c)
    return c


def out_into_view(a, b):
    c = b.clone()
    torch.sub(a[:, :3], b[:, 3:], out=c[:, 2:5])
    return c


def out_resizes_an_empty_view(a, b):
    """Eager resizes out= in place: an empty view at an offset of its base grows over the
    base's storage, and the base sees the write (fft_fftfreq's composite does this)."""
    c = b.clone().reshape(-1)
    torch.add(a[0], 1, out=c[5:5])  # 6 elements into an empty view at offset 5
    return c, torch.fft.fftfreq(7, 0.5, device=a.device), torch.fft.fftfreq(8, device=a.device)


def out_dtype_cast(a, b):
    c = torch.empty(a.shape, dtype=F64, device=a.device)
    torch.add((a * 4).long(), (b * 4).long(), out=c)
    return c


def out_reductions_and_matmul(a, b):
    s = a.new_empty(4)
    m = a.new_empty(4, 4)
    k = a.new_empty(0)
    torch.sum(a, 1, out=s)
    torch.mm(a, b.t(), out=m)
    torch.cat([a, b], out=k)
    return s, m, k


INPLACE = {  # name: (fn, input factories); x is (4, 6) unless noted
    "add_into_slice": (add_into_slice, (lambda: rnd(4, 6), lambda: rnd(4, 5))),
    "add_into_slice_broadcast": (add_into_slice, (lambda: rnd(4, 6), lambda: rnd(5))),
    "mul_transposed": (mul_transposed, (lambda: rnd(4, 6),)),
    "sub_chained_views": (sub_chained_views, (lambda: rnd(4, 6),)),
    "setitem_scalar": (setitem_scalar, (lambda: rnd(4, 6),)),
    "setitem_tensor_strided": (setitem_tensor_strided, (lambda: rnd(4, 6), lambda: rnd(2, 3))),
    "setitem_broadcast": (setitem_broadcast, (lambda: rnd(4, 6), lambda: rnd(3, 6))),
    "iadd_select_of_transpose": (iadd_select_of_transpose, (lambda: rnd(4, 6), lambda: rnd(4, 4))),
    "view_sees_base_write": (view_sees_base_write, (lambda: rnd(4, 6),)),
    "views_see_each_other": (views_see_each_other, (lambda: rnd(4, 6),)),
    "inplace_chain": (inplace_chain, (lambda: rnd(4, 6), lambda: rnd(6))),
    "inplace_ops_on_slices": (inplace_ops_on_slices, (lambda: rnd(4, 6), lambda: rnd(4, 6))),
    "inplace_index_ops": (inplace_index_ops, (lambda: rnd(4, 6), lambda: rnd(4, 6))),
    "setitem_bool_mask": (setitem_bool_mask, (lambda: rnd(4, 6), lambda: rnd(4, 6))),
    "inplace_on_detach": (inplace_on_detach, (lambda: rnd(4, 6),)),
    "unsqueeze_inplace": (unsqueeze_inplace, (lambda: rnd(4, 6),)),
    "t_inplace": (t_inplace, (lambda: rnd(4, 6),)),
    "transpose_inplace": (transpose_inplace, (lambda: rnd(4, 6),)),
    "inplace_int": (lambda x, y: x.mul_(y).add_(3).remainder_(4),
                    (lambda: rnd(4, 6, dtype=I64), lambda: rnd(6, dtype=I64))),
    "inplace_float_into_int_target": (lambda x, y: x.add_(y), (lambda: rnd(4, 6),
                                                               lambda: rnd(4, 6, dtype=I32))),
    "out_add": (out_add, (lambda: rnd(4, 6), lambda: rnd(6))),
    "out_resized": (out_resized, (lambda: rnd(4, 6), lambda: rnd(4, 1))),
    "out_into_view": (out_into_view, (lambda: rnd(4, 6), lambda: rnd(4, 6))),
    "out_resizes_an_empty_view": (out_resizes_an_empty_view,
                                  (lambda: rnd(4, 6), lambda: rnd(4, 6))),
    "out_dtype_cast": (out_dtype_cast, (lambda: rnd(4, 6), lambda: rnd(4, 6))),
    "out_reductions_and_matmul": (out_reductions_and_matmul, (lambda: rnd(4, 6),
                                                              lambda: rnd(4, 6))),
}


@pytest.mark.parametrize("name", INPLACE)
def test_inplace(name):
    fn, makers = INPLACE[name]
    check(fn, *[make() for make in makers])


INPLACE_METHODS = {  # name: fn(target, other); other is random of the target's shape
    "add_": lambda v, o: v.add_(o, alpha=2),
    "add_scalar": lambda v, o: v.add_(3),
    "sub_": lambda v, o: v.sub_(o),
    "mul_": lambda v, o: v.mul_(o),
    "mul_scalar": lambda v, o: v.mul_(-2),
    "div_": lambda v, o: v.div_(o),
    "div_floor_": lambda v, o: v.div_(o, rounding_mode="floor"),
    "div_trunc_scalar": lambda v, o: v.div_(-3, rounding_mode="trunc"),
    "remainder_": lambda v, o: v.remainder_(o),
    "remainder_scalar": lambda v, o: v.remainder_(-3),
    "fmod_": lambda v, o: v.fmod_(o),
    "floor_divide_": lambda v, o: v.floor_divide_(o),
    "floor_divide_scalar": lambda v, o: v.floor_divide_(-2),
    "pow_scalar": lambda v, o: v.pow_(2),
    "pow_tensor": lambda v, o: v.pow_(o.abs() % 3),
    "clamp_": lambda v, o: v.clamp_(-1, 1),
    "clamp_tensor_": lambda v, o: v.clamp_(min=o),
    "lerp_": lambda v, o: v.lerp_(o, 0.25),
    "addcmul_": lambda v, o: v.addcmul_(o, o, value=0.5),
    "exp_": lambda v, o: v.exp_(),
    "neg_": lambda v, o: v.neg_(),
    "abs_": lambda v, o: v.abs_(),
    "sigmoid_": lambda v, o: v.sigmoid_(),
    "relu_": lambda v, o: v.relu_(),
    "round_": lambda v, o: v.round_(),
    "eq_": lambda v, o: v.eq_(o),
    "lt_scalar": lambda v, o: v.lt_(0.5),
    "masked_fill_": lambda v, o: v.masked_fill_(o > 0, -1),
    "bitwise_and_": lambda v, o: v.bitwise_and_(o),
    "bitwise_xor_scalar": lambda v, o: v.bitwise_xor_(5),
    "logical_and_": lambda v, o: v.logical_and_(o),
    "copy_": lambda v, o: v.copy_(o),
    "copy_cast": lambda v, o: v.copy_(o.to(F64) * 2.5),
    "fill_": lambda v, o: v.fill_(2),
    "zero_": lambda v, o: v.zero_(),
    "iadd": lambda v, o: operator.iadd(v, o),
    "isub_scalar": lambda v, o: operator.isub(v, 1),
    "imul": lambda v, o: operator.imul(v, o),
    "itruediv": lambda v, o: operator.itruediv(v, o),
    "ifloordiv": lambda v, o: operator.ifloordiv(v, 2),
    "imod": lambda v, o: operator.imod(v, o),
    "ipow": lambda v, o: operator.ipow(v, 2),
    "ilshift": lambda v, o: operator.ilshift(v, 1),
    "iand": lambda v, o: operator.iand(v, o),
    "float_power_scalar": lambda v, o: v.float_power_(2),
    "float_power_": lambda v, o: v.float_power_(o.abs() % 3),
    "ldexp_": lambda v, o: v.ldexp_(o.long() % 3),
}
TARGETS = {  # the written tensor, as a view of a (5, 8) base
    "whole": lambda x: x,
    "strided_view": lambda x: x[:, 1::2],
    "transposed_view": lambda x: x.t()[1:5],
}


def _inplace_call(method, target):
    def call(x, o):
        v = TARGETS[target](x)
        result = INPLACE_METHODS[method](v, o[:v.shape[0], :v.shape[1]])
        returned = "self" if result is v else "a new tensor"  # in-place ops return self
        return returned, result, x
    return call


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", [F32, F64, I64], ids=_dtype_id)
@pytest.mark.parametrize("method", INPLACE_METHODS)
def test_inplace_method(method, dtype, target):
    x, o = rnd(5, 8, dtype=dtype), nonzero(8, 8, dtype=dtype)
    fn = _inplace_call(method, target)
    try:
        fn(x.clone(), o.clone())
    except RuntimeError:
        check_raises(fn, x, o)  # e.g. an int target of a float result: lazy must refuse too
        return
    check(fn, x, o)


@pytest.mark.parametrize("fn, values", [
    pytest.param(lambda v: v.bernoulli_(0.5), lambda v, x: (v == 0) | (v == 1), id="bernoulli_"),
    pytest.param(lambda v: v.uniform_(-1, 2), lambda v, x: (v >= -1) & (v < 2), id="uniform_"),
    pytest.param(lambda v: F.dropout(v, 0.5, inplace=True),
                 lambda v, x: (v == 0) | torch.isclose(v, 2 * x), id="dropout_inplace"),
])
def test_random_inplace_on_view(fn, values):
    # random draws differ from eager's: check the values' law and that the base sees them
    x = rnd(6, 8, dtype=F64)
    base = x.to("lazy")
    view = base[1:, ::2]
    result = fn(view)
    lazytriton.mark_step()
    assert result is view
    got, expected_rest = base.cpu(), x.clone()
    assert values(got[1:, ::2], x[1:, ::2]).all(), got
    expected_rest[1:, ::2] = got[1:, ::2]
    assert torch.equal(got, expected_rest)  # nothing outside the view was written
    assert not torch.equal(got, x)


@pytest.mark.parametrize("name", ["add_into_slice", "mul_transposed", "setitem_tensor_strided",
                                  "iadd_select_of_transpose", "inplace_chain"])
def test_inplace_grad(name):
    # autograd through in-place ops on views of a non-leaf
    fn, makers = INPLACE[name]
    check_grad(lambda x, *rest: fn(x * 1, *rest), *[make() for make in makers])


@pytest.mark.parametrize("fn, inputs", [
    pytest.param(lambda a, b: a + b, (rnd(3, 4), rnd(5)), id="broadcast_mismatch"),
    pytest.param(lambda a, b: a.add_(b), (rnd(1, 4), rnd(3, 4)), id="inplace_broadcast_self"),
    pytest.param(lambda a, b: a.add_(b), (rnd(3, 4, dtype=I64), rnd(3, 4)),
                 id="inplace_float_into_int"),
    pytest.param(lambda a, b: a @ b, (rnd(3, 4), rnd(5, 2)), id="matmul_mismatch"),
    pytest.param(lambda a: a.view(5, -1), (rnd(3, 4),), id="bad_view"),
    pytest.param(lambda a: a.t().view(-1), (rnd(3, 4),), id="view_of_noncontiguous"),
    pytest.param(lambda a, i: a[i], (rnd(3, 4), torch.tensor([0, 3])), id="index_out_of_range"),
    pytest.param(lambda a: a[:1].expand(3, 4).add_(1), (rnd(3, 4),), id="inplace_on_expanded"),
    pytest.param(lambda a: a.requires_grad_().mul_(2), (rnd(3, 4),), id="inplace_on_grad_leaf"),
])
def test_errors(fn, inputs):
    check_raises(fn, *inputs)


def test_mlp_training_step():
    # a whole forward and backward in one graph
    def step(x, t, w1, b1, w2, b2):
        h = F.gelu(F.layer_norm(F.linear(x, w1, b1), (16,)))
        return F.cross_entropy(F.dropout(h, 0.0) @ w2.t() + b2, t)
    check_grad(step, rnd(8, 12), index(5, 8), rnd(16, 12) / 4, rnd(16), rnd(5, 16) / 4, rnd(5),
               atol=1e-5, rtol=1e-5)


def test_conv_net_step():
    def step(x, t, w1, w2):
        h = F.max_pool2d(F.relu(F.conv2d(x, w1, padding=1)), 2)
        h = F.adaptive_avg_pool2d(F.conv2d(h, w2, stride=2), 1).flatten(1)
        return F.nll_loss(F.log_softmax(h, 1), t)
    check_grad(step, rnd(2, 3, 9, 9), index(4, 2), rnd(6, 3, 3, 3) / 4, rnd(4, 6, 3, 3) / 4,
               atol=1e-5, rtol=1e-5)


# --- reading values mid-trace, factories, empty tensors, graph reuse -------------------------

@pytest.mark.parametrize("fn", _params({
    "item": lambda x: x.sum().item(),
    "item_int": lambda x: (x > 0).sum().item(),
    "tolist": lambda x: (x[0] * 4).round().tolist(),
    "bool_branch": lambda x: x * 2 if bool(x.mean() > 0) else x - 2,
    "item_then_compute": lambda x: x / x.abs().max().item() + x.shape[0],
    "int_of_tensor": lambda x: x[:int((x > 0).sum()) % 4 + 1].exp(),
}))
def test_read_values(fn):
    check(fn, rnd(5, 6))


@pytest.mark.parametrize("fn", _params({
    "arange": lambda d: torch.arange(7, device=d) * 2,
    "arange_step": lambda d: torch.arange(-3, 5, 0.5, device=d),
    "linspace": lambda d: torch.linspace(-1, 1, 9, device=d),
    "eye": lambda d: torch.eye(3, 5, device=d, dtype=I32),
    "full": lambda d: torch.full((2, 3), 1.5, device=d),
    "full_int": lambda d: torch.full((2, 3), 7, device=d),
    "ones_zeros": lambda d: torch.ones(2, 3, device=d) + torch.zeros(3, device=d, dtype=F64),
    "tensor": lambda d: torch.tensor([[1.5, -2.0], [3.0, 0.25]], device=d),
    "tensor_int": lambda d: torch.tensor([1, -2, 3], device=d) * 3,
    "empty_shape": lambda d: torch.empty(3, 4, device=d, dtype=F16).shape,
    # found by a stress run: kernels per device, no composite (they raised on the lazy device)
    "tril_triu_indices": lambda d: (torch.tril_indices(4, 5, -1, device=d),
                                    torch.triu_indices(4, 3, 1, device=d, dtype=I32)),
    "tril_indices_gather": lambda d: (lambda i: torch.arange(20., device=d).view(4, 5)[i[0], i[1]])(
        torch.tril_indices(4, 5, device=d)),
    "kaiser_window": lambda d: (torch.kaiser_window(8, device=d),
                                torch.kaiser_window(7, False, 5.0, device=d, dtype=F64)),
    "window_functions": lambda d: (torch.hann_window(6, device=d),
                                   torch.bartlett_window(5, device=d),
                                   torch.hamming_window(7, True, 0.5, 0.3, device=d),
                                   torch.blackman_window(6, False, device=d)),
    "fftfreq": lambda d: (torch.fft.fftfreq(8, 0.5, device=d), torch.fft.fftfreq(5, device=d),
                          torch.fft.rfftfreq(9, device=d)),
}))
def test_factories(fn):
    expected = fn("cpu")
    actual = fn("lazy")
    lazytriton.mark_step()
    assert_lazy(actual)
    assert_same(to_cpu(actual), expected, {})


@pytest.mark.parametrize("fn", _params({
    "like": lambda x: (torch.ones_like(x) * 2, torch.full_like(x, 3),
                       torch.zeros_like(x, dtype=I64), torch.empty_like(x).shape),
    "new": lambda x: (x.new_ones(3) + x.new_tensor([1.0, 2.0, 3.0]), x.new_full((2,), -1)),
}))
def test_factories_like(fn):
    check(fn, rnd(4, 5))


@pytest.mark.parametrize("fn", _params({
    "exp": lambda x, y: x.exp(),
    "add_broadcast": lambda x, y: x + y,
    "sum": lambda x, y: (x.sum(0), x.sum(1), x.sum()),
    "mean_rows": lambda x, y: x.mean(1),
    "cat": lambda x, y: torch.cat([x, y[None]]),
    "matmul": lambda x, y: x.t() @ x,
    "softmax": lambda x, y: x.softmax(1),
    "view": lambda x, y: x.view(3, 0, 1).expand(3, 0, 5),
}))
def test_empty_tensors(fn):
    check(fn, rnd(0, 3), rnd(3))


def test_graph_reuse_new_data_and_scalars():
    # the same structure again must hit the graph cache and still see the new data/scalars
    metrics.reset()
    for k in (1, 2, 3):
        check(lambda x, k: (x * k + k, x.sum(0) / k), rnd(5, 4), k)
    assert metrics.counter_value("CachedCompile") == 2, metrics.metrics_report()


def test_graph_new_shapes():
    for k in (1, 2, 3):
        check(lambda x: (x[: 2 + k] @ x.t()).relu().sum(-1), rnd(5, 4))


# --- fallbacks: output shapes that depend on data ---------------------------------------------

FALLBACKS = {  # name: (fn, counter)
    "nonzero": (lambda x: torch.nonzero(x > 0), "aten::nonzero"),
    "nonzero_of_float": (torch.nonzero, "aten::nonzero"),
    "nonzero_as_tuple": (lambda x: torch.nonzero(x > 0.5, as_tuple=True), "aten::nonzero"),
    "argwhere": (lambda x: torch.argwhere(x < 0), "aten::nonzero"),
    "masked_select": (lambda x: torch.masked_select(x, x > 0), "aten::masked_select"),
    "masked_select_broadcast": (lambda x: torch.masked_select(x, x[0] > 0),
                                "aten::masked_select"),
    "bool_mask_index": (lambda x: x[x > 0], "aten::index"),
    "bool_mask_rows": (lambda x: x[x[:, 0] > 0], "aten::index"),
    "unique": (lambda x: torch.unique((x * 2).round()), "aten::_unique2"),
    "unique_inverse_counts": (lambda x: torch.unique((x * 2).round(), return_inverse=True,
                                                     return_counts=True), "aten::_unique2"),
    "unique_int": (lambda x: torch.unique((x * 3).long()), "aten::_unique2"),
    "unique_dim": (lambda x: torch.unique((x > 0).long(), dim=0), "aten::unique_dim"),
}


@pytest.mark.parametrize("name", FALLBACKS)
def test_fallback(name):
    fn, counter = FALLBACKS[name]
    metrics.reset()
    check(fn, rnd(6, 7))
    assert (metrics.counter_value(counter) or 0) >= 1, metrics.counter_names()


@pytest.mark.parametrize("name", ["nonzero", "masked_select", "bool_mask_index", "unique"])
def test_fallback_then_compute(name):
    # the trace goes on after the op ran eagerly: its result feeds more lazy ops
    fn, counter = FALLBACKS[name]
    metrics.reset()
    check(lambda x: (lambda y: (y * 2 + 1, y.sum(0), y.float().mean()))(fn(x * 3 - 1)),
          rnd(6, 7))
    assert (metrics.counter_value(counter) or 0) >= 1, metrics.counter_names()


@pytest.mark.parametrize("fn", _params({
    "bool_mask_index": lambda x: x[x > 0] * 2,
    "masked_select": lambda x: torch.masked_select(x.exp(), x < 0.5),
    "bool_mask_rows": lambda x: x[x[:, 1] > 0].tanh(),
}))
def test_fallback_grad(fn):
    check_grad(fn, rnd(6, 7))


@pytest.mark.parametrize("dtype", [F16, BF16, F32], ids=str)
def test_index_fill_of_half_tensors_with_a_number(dtype):
    """Found by fuzzing: Triton stored the number as `-2.0.to(tl.float16)`."""
    check(lambda x: x.index_fill(0, torch.tensor([1, 2], device=x.device), -2),
          rnd(4, 5, dtype=dtype))


@pytest.mark.parametrize("op", [operator.mod, operator.floordiv], ids=["mod", "floordiv"])
def test_integer_division_by_a_number_under_padding(op):
    """Found by fuzzing: the divide-by-zero check of a scalar divisor, under the pad's mask,
    was a mask Triton's interpreter rejected."""
    x = torch.randint(-9, 10, (9,), dtype=I32)
    check(lambda x: F.pad(op(x, 4), (1, 2), value=2), x)
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        F.pad(op(x, 0), (1, 2), value=2)  # eager's words
    with pytest.raises(lazytriton.LazyExecutionError, match="ZeroDivisionError"):
        F.pad(op(x.to("lazy"), 0), (1, 2), value=2).cpu()


@pytest.mark.parametrize("dtype", [I32, I64], ids=str)
@pytest.mark.parametrize("name", ["div_floor", "remainder", "fmod", "floor_divide"])
def test_integer_minimum_divided_by_minus_one(name, dtype):
    """Found by fuzzing: the CPU traps on MIN / -1 and killed the process (SIGFPE); eager
    wraps the quotient (MIN) and gives remainder 0. Also the number -1 and a divisor
    column with both -1 and others."""
    low = torch.iinfo(dtype).min
    a = torch.tensor([[low, 7, -9, low + 1], [low, 5, 6, -7]], dtype=dtype)
    b = torch.tensor([[-1, -1, 2, -1], [3, -1, -4, 1]], dtype=dtype)
    check(DIVISIONS[name], a, b)
    check(lambda x: DIVISIONS[name](x, -1), a)


def test_integer_truncating_division_of_minimum_by_minus_one_wraps(test_backend):
    """Eager's own trunc division traps here (SIGFPE, torch 2.13), so the expected values are
    written out: the quotient wraps, as floor division's does."""
    if test_backend == "aten":
        pytest.skip("the reference executor runs eager's kernel, which traps on MIN / -1")
    low = torch.iinfo(I32).min
    a = torch.tensor([low, 7, -9], dtype=I32, device="lazy")
    got = torch.div(a, torch.tensor([-1, -1, 2], dtype=I32, device="lazy"),
                    rounding_mode="trunc").cpu()
    assert got.tolist() == [low, -7, -4]
    assert torch.div(a, -1, rounding_mode="trunc").cpu().tolist() == [low, -7, 9]


@pytest.mark.parametrize("correction", [1, 2, 3, 5])
def test_var_and_std_with_a_correction_past_the_count(correction):
    """Found by fuzzing: eager divides by max(0, count - correction), giving inf or NaN; a
    negative divisor gave finite values of the wrong sign. Empty reductions are NaN too."""
    x = rnd(2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # eager's "degrees of freedom is <= 0"
        check(lambda x: x.var(0, correction=correction), x)
        check(lambda x: x.std(1, correction=correction), x)
        check(lambda x: torch.var_mean(x, 0, correction=correction), x)
        check(lambda x: x[:1].var(0, correction=correction), x)  # 0 / 0
        check(lambda x: x.var(0), rnd(0, 4))


WRAPPING = {  # integer results that overflow, then tested: g++ folded these assuming none
    "sign_of_square": lambda x: (x * x).sign(),
    "abs_of_square": lambda x: (x * x).abs(),
    "sum_past_max": lambda x: (x + 100) > x,
    "difference_past_min": lambda x: (x - x.max()) - 2147483647 < 0,
    "maximum_of_square": lambda x: torch.maximum(x * x, torch.zeros_like(x)),
    "negated_min": lambda x: (-(x.min() + x * 0)).sign(),
    "abs_of_min": lambda x: torch.abs(torch.full_like(x, torch.iinfo(x.dtype).min) + x * 0).sign(),
    "power": lambda x: (x ** 3).sign(),
}


@pytest.mark.parametrize("dtype", [I32, I64], ids=str)
@pytest.mark.parametrize("name", WRAPPING)
def test_integer_overflow_wraps_as_eager(name, dtype):
    """Found by fuzzing: signed overflow is undefined in C++, and g++ used that (sign(x * x)
    was 0 where the square wrapped negative)."""
    info = torch.iinfo(dtype)
    x = torch.tensor([1353881234, 46341, 3, -7, info.max, info.min + 5, 3037000500 % info.max],
                     dtype=dtype)
    check(WRAPPING[name], x)


def test_repeat_interleave_by_a_tensor_of_counts():
    """Found by a stress run: the meta kernel refuses (the output size depends on the
    counts) with a RuntimeError the tracer did not take for "needs the data"."""
    counts = torch.tensor([0, 1, 3, 2])
    check(lambda x, r: x.repeat_interleave(r, dim=0), rnd(4, 3), counts)
    check(lambda r: torch.repeat_interleave(r), counts)


CL = torch.channels_last
CONV_LAYOUTS = {  # (fn, input, weight): eager keeps channels_last if either one is
    "input": (lambda x, w: F.conv2d(x, w, padding=1),
              lambda: rnd(2, 4, 6, 5).to(memory_format=CL), lambda: rnd(8, 4, 3, 3)),
    "weight": (lambda x, w: F.conv2d(x, w, stride=2),
               lambda: rnd(2, 4, 7, 6), lambda: rnd(8, 4, 3, 3).to(memory_format=CL)),
    "depthwise": (lambda x, w: F.conv2d(x, w, groups=4),
                  lambda: rnd(2, 4, 6, 6).to(memory_format=CL), lambda: rnd(4, 1, 3, 3)),
    "transposed": (lambda x, w: F.conv_transpose2d(x, w, stride=2),
                   lambda: rnd(2, 4, 5, 5).to(memory_format=CL), lambda: rnd(4, 3, 3, 3)),
    "3d": (lambda x, w: F.conv3d(x, w),
           lambda: rnd(2, 3, 4, 5, 5).to(memory_format=torch.channels_last_3d),
           lambda: rnd(4, 3, 2, 3, 3)),
    "contiguous": (lambda x, w: F.conv2d(x, w), lambda: rnd(2, 4, 6, 5), lambda: rnd(8, 4, 3, 3)),
}


@pytest.mark.parametrize("name", CONV_LAYOUTS)
def test_convolution_keeps_channels_last_as_eager(name):
    """Found by a stress run: the meta kernel gives contiguous strides, eager's CPU kernel
    channels_last, so `y.permute(0, 2, 3, 1).view(-1, C)` failed on the lazy device only."""
    fn, x, w = CONV_LAYOUTS[name]
    check(fn, x(), w(), check_stride=True, atol=1e-4, rtol=1e-4)
    if name != "contiguous":  # a view that only channels_last allows, as eager's code may use
        check(lambda x, w: (lambda y: y.movedim(1, -1).view(-1, y.shape[1]))(fn(x, w)), x(), w(),
              atol=1e-4, rtol=1e-4)
    check_grad(fn, x(), w(), atol=1e-4, rtol=1e-4)


def test_one_row_of_a_cat():
    """A kernel computing one row of a cat tests each input's range at a constant position:
    a scalar condition, which Triton's interpreter took as no load mask (found by a packed
    RNN's step)."""
    check(lambda x: torch.cat([x[:2], x[2:] * 2])[3] + 1, rnd(6, 40))


@pytest.mark.parametrize("gathered", [5, 3])
def test_loss_over_gathered_columns(gathered):
    """cross_entropy over columns gathered from a wider tensor (as a top-k head does). Its
    backward compares each target with the index of a loop over the gathered columns inside the
    gather's backward scatter; Triton's interpreter runs that index as a Python int, and a
    `.to()` on it failed the graph."""
    idx = torch.randint(0, 10, (8, gathered))
    y = torch.randint(0, gathered, (8,))
    check_grad(lambda h: F.cross_entropy(torch.gather(h, 1, idx.to(h.device)), y.to(h.device)),
               rnd(8, 10))
