"""Functions generated Triton kernels call, copied (with @triton.jit) into each kernel module that
uses them, so a module is self-contained: it runs compiled or under Triton's interpreter, and
compiles ahead of time, without importing lazytriton.

They use Triton builtins only, never triton.language's own @jit functions (tl.sum, tl.rand, ...):
those are JITFunction or interpreted depending on TRITON_INTERPRET when triton was first
imported, so a kernel using them could not run interpreted in a process that imported triton
first.

Math that Triton's core lacks has two forms: libdevice on a GPU, and under the interpreter
(which has no libdevice) the same function from core ops, computed in float64 so float32
results are correctly rounded or nearly. A name ending in `_interpreted` is that second form.
This module is read as source, never run: `tl` and `libdevice` are the kernel module's names.
"""
from __future__ import annotations

import inspect
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import triton.language as tl
    from triton.language.extra import libdevice

PI = 3.141592653589793
HALF_PI = 1.5707963267948966
LN2 = 0.6931471805599453


# --- matmul operands --------------------------------------------------------------------------

def dot_operand(x):
    return x


def dot_operand_interpreted(x):
    # the interpreter holds bfloat16 as its raw bits, which its dot would multiply as integers
    return x.to(tl.float32)


# --- index arithmetic with floor semantics (Triton's // and % truncate, like C) -------------

def floor_div(a, b):
    q = a // b
    return tl.where((a % b != 0) & (a < 0), q - 1, q)


def floor_mod(a, b):
    r = a % b
    return tl.where(r < 0, r + b, r)


# --- Python semantics of integer division (b != 0: the kernel guards division by zero) ------

def floordiv_int(a, b):
    a, b = tl.broadcast(a, b)  # (the interpreter mishandles scalar compares next to blocks)
    q = a // b
    return tl.where((a % b != 0) & ((a < 0) != (b < 0)), q - 1, q)


def remainder_int(a, b):
    a, b = tl.broadcast(a, b)  # (the interpreter mishandles scalar compares next to blocks)
    r = a % b
    return tl.where((r != 0) & ((r < 0) != (b < 0)), r + b, r)


def pow_int(base, exp):
    """C++ semantics: a negative exponent gives 0 but for bases 1 and -1; overflow wraps."""
    b = base + exp * 0  # both broadcast to one shape, so the loop keeps it
    e = tl.where(exp < 0, 0, exp) + base * 0
    one = b * 0 + 1
    result = one
    for _ in range(63):
        result = tl.where((e & 1) != 0, result * b, result)
        b = b * b
        e = e >> 1
    # no negative literals: they do not mix with unsigned types
    odd = (exp & 1) != 0
    negative = tl.where(base == 1, one, tl.where(base + 1 == 0, tl.where(odd, base, one), one * 0))
    return tl.where(exp < 0, negative, result)


# --- float division and remainders as eager computes them ----------------------------------

def floordiv_float(a, b):
    a, b = tl.broadcast(a, b)  # (the interpreter mishandles scalar compares next to blocks)
    mod = fmod(a, b)
    div = (a - mod) / b
    div = tl.where((mod != 0) & ((b < 0) != (mod < 0)), div - 1.0, div)
    fl = tl.floor(div)
    fl = tl.where(div - fl > 0.5, fl + 1.0, fl)
    zero = tl.where(a / b < 0, -0.0, 0.0)
    return tl.where(b == 0, a / b, tl.where(div == 0, zero, fl))


def remainder_float(a, b):
    a, b = tl.broadcast(a, b)  # (the interpreter mishandles scalar compares next to blocks)
    r = fmod(a, b)
    return tl.where((r != 0) & ((r < 0) != (b < 0)), r + b, r)


def copysign(a, b):
    a, b = tl.broadcast(a, b)  # (the interpreter mishandles scalar compares next to blocks)
    negative = (b < 0) | ((b == 0) & (1.0 / b < 0))
    return tl.where(negative, -tl.abs(a), tl.abs(a))


# --- counter-based random numbers: Philox-4x32 (10 rounds) keyed by the seed ---------------

def philox(seed, offset):
    """Two random uint32 words for each (seed, offset); offsets are int64 tensors."""
    s = seed.to(tl.int64).to(tl.uint64)
    o = offset.to(tl.uint64)
    k0 = s.to(tl.uint32)
    k1 = (s >> 32).to(tl.uint32)
    c0 = o.to(tl.uint32)
    c1 = (o >> 32).to(tl.uint32)
    c2 = c0 * 0
    c3 = c0 * 0
    for _ in tl.static_range(10):
        hi0 = tl.umulhi(c0, 0xD2511F53)
        lo0 = c0 * 0xD2511F53
        hi1 = tl.umulhi(c2, 0xCD9E8D57)
        lo1 = c2 * 0xCD9E8D57
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = k0 + 0x9E3779B9
        k1 = k1 + 0xBB67AE85
    return c0, c1


def uniform_of_bits(bits):
    """uint32 -> [0, 1) as tl.rand does: the int32 reading, folded to >= 0, times 2^-31."""
    x = bits.to(tl.int32, bitcast=True)
    x = tl.where(x < 0, ~x, x)
    return x.to(tl.float32) * 4.6566127342e-10


def uniform(seed, offset):
    """float32 in [0, 1): tl.rand's value, and the C++ prelude's and lazytriton.philox's."""
    r, _ = philox(seed, offset)
    return uniform_of_bits(r)


def normal(seed, offset):
    """A standard normal float32 (Box-Muller on the first two words, as tl.randn)."""
    a, b = philox(seed, offset)
    u1 = tl.maximum(uniform_of_bits(a), 1e-7)
    u2 = uniform_of_bits(b)
    return tl.sqrt(-2.0 * tl.log(u1)) * tl.cos(6.283185307179586 * u2)


# --- rounding to bfloat16 (the interpreter's float32 -> bfloat16 conversion truncates) ------

def round_to_bf16(x):
    return x.to(tl.bfloat16).to(tl.float32)


def round_to_bf16_interpreted(x):
    """Round half to even, on the bits."""
    bits = x.to(tl.uint32, bitcast=True)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return tl.where(x != x, x, rounded.to(tl.float32, bitcast=True))


# --- reductions: combine functions for tl.reduce (eager's NaN semantics) -------------------

def add(a, b):
    return a + b


def mul(a, b):
    return a * b


def maximum(a, b):  # NaN propagates; of two equal values the first (maximum(0., -0.) is 0.)
    a, b = tl.broadcast(a, b)
    return tl.where((a != a) | (a >= b), a, b)


def minimum(a, b):
    a, b = tl.broadcast(a, b)
    return tl.where((a != a) | (a <= b), a, b)


def logical_or(a, b):
    return a | b


def logical_and(a, b):
    return a & b


def argmax(v1, i1, v2, i2):
    """(value, index) pairs: the larger wins, NaN beats everything, ties take the first."""
    nan1 = v1 != v1
    nan2 = v2 != v2
    tie = (v1 == v2) | (nan1 & nan2)
    pick1 = (nan1 & ~nan2) | ((v1 > v2) & ~nan2) | (tie & (i1 < i2))
    return tl.where(pick1, v1, v2), tl.where(pick1, i1, i2)


def argmin(v1, i1, v2, i2):
    nan1 = v1 != v1
    nan2 = v2 != v2
    tie = (v1 == v2) | (nan1 & nan2)
    pick1 = (nan1 & ~nan2) | ((v1 < v2) & ~nan2) | (tie & (i1 < i2))
    return tl.where(pick1, v1, v2), tl.where(pick1, i1, i2)


# --- math beyond Triton's core: libdevice, and its interpreter form -------------------------

def tan(x):
    return libdevice.tan(x)


def tan_interpreted(x):
    y = x.to(tl.float64)
    return (tl.sin(y) / tl.cos(y)).to(x.dtype)


def log10(x):
    return libdevice.log10(x)


def log10_interpreted(x):
    return (tl.log(x.to(tl.float64)) * 0.4342944819032518).to(x.dtype)


def log1p(x):
    return libdevice.log1p(x)


def log1p_interpreted(x):
    y = x.to(tl.float64)
    u = 1.0 + y
    r = tl.log(u) * (y / (u - 1.0))  # exact to rounding, whatever u's rounding error
    r = tl.where(u == 1.0, y, r)
    return tl.where(y == float("inf"), y, r).to(x.dtype)


def expm1(x):
    return libdevice.expm1(x)


def expm1_interpreted(x):
    return _expm1_f64(x.to(tl.float64)).to(x.dtype)


def _expm1_f64(y):
    u = tl.exp(y)
    r = (u - 1.0) * (y / tl.log(u))  # Kahan: the rounding error of u cancels
    r = tl.where(u == 1.0, y, r)
    r = tl.where(u - 1.0 == -1.0, -1.0, r)
    return tl.where(u == float("inf"), u, r)


def tanh(x):
    return libdevice.tanh(x)


def tanh_interpreted(x):
    y = x.to(tl.float64)
    t = _expm1_f64(-2.0 * tl.abs(y))
    r = -t / (t + 2.0)
    return tl.where(y < 0, -r, tl.where(y == 0, y, r)).to(x.dtype)  # -0.0 keeps its sign


def sinh(x):
    return libdevice.sinh(x)


def sinh_interpreted(x):
    y = x.to(tl.float64)
    t = _expm1_f64(tl.abs(y))
    r = tl.where(t == float("inf"), t, 0.5 * (t + t / (t + 1.0)))
    return tl.where(y < 0, -r, tl.where(y == 0, y, r)).to(x.dtype)  # -0.0 keeps its sign


def cosh(x):
    return libdevice.cosh(x)


def cosh_interpreted(x):
    e = tl.exp(tl.abs(x.to(tl.float64)))
    return (0.5 * (e + 1.0 / e)).to(x.dtype)


def atan(x):
    return libdevice.atan(x)


def atan_interpreted(x):
    return _atan_f64(x.to(tl.float64)).to(x.dtype)


def _atan_f64(y):
    a = tl.abs(y)
    big = a > 1.0
    z = tl.where(big, 1.0 / a, a)
    z2 = z * z  # Abramowitz & Stegun 4.4.49 (error < 1e-5), then Newton on sin(t) = z cos(t)
    t = z * (0.9998660 + z2 * (-0.3302995 + z2 * (0.1801410 + z2 * (-0.0851330 + z2 * 0.0208351))))
    for _ in tl.static_range(2):
        s = tl.sin(t)
        c = tl.cos(t)
        t = t - (s - z * c) / (c + z * s)
    r = tl.where(big, 1.5707963267948966 - t, t)
    return tl.where(y < 0, -r, r)


def atan2(y, x):
    return libdevice.atan2(y, x)


def atan2_interpreted(y, x):
    b, a = tl.broadcast(y.to(tl.float64), x.to(tl.float64))
    return _atan2_f64(b, a).to(y.dtype)


def _atan2_f64(b, a):
    r = _atan_f64(b / a)
    b_negative = (b < 0) | ((b == 0) & (1.0 / b < 0))
    a_negative = (a < 0) | ((a == 0) & (1.0 / a < 0))
    r = tl.where(a_negative, tl.where(b_negative, r - 3.141592653589793, r + 3.141592653589793), r)
    zero = tl.where(a_negative, 1.0, 0.0).to(tl.float64) * 3.141592653589793  # pi in float64
    return tl.where(b == 0, tl.where(b_negative, -zero, zero), r)


def asin(x):
    return libdevice.asin(x)


def asin_interpreted(x):
    y = x.to(tl.float64)
    return _atan2_f64(y, tl.sqrt((1.0 - y) * (1.0 + y))).to(x.dtype)


def acos(x):
    return libdevice.acos(x)


def acos_interpreted(x):
    y = x.to(tl.float64)
    return _atan2_f64(tl.sqrt((1.0 - y) * (1.0 + y)), y).to(x.dtype)


def atanh(x):
    return libdevice.atanh(x)


def atanh_interpreted(x):
    y = x.to(tl.float64)
    return (0.5 * log1p_interpreted(2.0 * y / (1.0 - y))).to(x.dtype)


def asinh(x):
    return libdevice.asinh(x)


def asinh_interpreted(x):
    y = x.to(tl.float64)
    a = tl.abs(y)
    r = log1p_interpreted(a + a * a / (1.0 + tl.sqrt(1.0 + a * a)))
    r = tl.where(a > 268435456.0, tl.log(a) + 0.6931471805599453, r)
    return tl.where(y < 0, -r, r).to(x.dtype)


def acosh(x):
    return libdevice.acosh(x)


def acosh_interpreted(x):
    y = x.to(tl.float64)
    t = y - 1.0
    r = log1p_interpreted(t + tl.sqrt(2.0 * t + t * t))
    return tl.where(y > 268435456.0, tl.log(y) + 0.6931471805599453, r).to(x.dtype)


def erfc(x):
    return libdevice.erfc(x)


def erfc_interpreted(x):
    """1 - erf(y) below 2 (at most ~2.3 digits lost there, of float64's 16); from 2 on, where
    it would lose the whole tail (erfc(6) is 2e-17), the continued fraction
    exp(-y^2) / sqrt(pi) / (y + (1/2) / (y + 1 / (y + (3/2) / (y + ...)))), from the far end."""
    y = x.to(tl.float64)
    a = tl.maximum(tl.abs(y), 2.0)
    tail = a * 0.0
    for k in tl.static_range(60, 0, -1):
        tail = (k * 0.5) / (a + tail)
    far = tl.exp(-a * a) / (a + tail) * 0.5641895835477563  # 1 / sqrt(pi)
    far = tl.where(y < 0, 2.0 - far, far)
    return tl.where(tl.abs(y) < 2.0, 1.0 - tl.erf(y), far).to(x.dtype)


def lgamma(x):
    return libdevice.lgamma(x)


def lgamma_interpreted(x):
    """Lanczos (g = 7, 9 terms) for x >= 0.5, the reflection formula below."""
    y = x.to(tl.float64)
    small = y < 0.5
    z = tl.where(small, 1.0 - y, y) - 1.0
    a = 0.99999999999980993 + 676.5203681218851 / (z + 1.0) - 1259.1392167224028 / (z + 2.0)
    a = a + 771.32342877765313 / (z + 3.0) - 176.61502916214059 / (z + 4.0)
    a = a + 12.507343278686905 / (z + 5.0) - 0.13857109526572012 / (z + 6.0)
    a = a + 9.9843695780195716e-6 / (z + 7.0) + 1.5056327351493116e-7 / (z + 8.0)
    t = z + 7.5
    big = 0.9189385332046727 + (z + 0.5) * tl.log(t) - t + tl.log(a)
    reflected = tl.log(3.141592653589793 / tl.abs(tl.sin(3.141592653589793 * y))) - big
    return tl.where(small, reflected, big).to(x.dtype)


def nearbyint(x):
    return libdevice.nearbyint(x)


def nearbyint_interpreted(x):
    """Round half to even."""
    r = tl.floor(x)
    d = x - r
    half = r * 0.5
    odd = tl.floor(half) != half
    out = tl.where((d > 0.5) | ((d == 0.5) & odd), r + 1.0, r)
    return tl.where(out == 0, x * 0.0, out)  # round(-0.3) is -0.0, as libdevice's


def pow(a, b):
    return libdevice.pow(a, b)


def pow_interpreted(a, b):
    x, y = tl.broadcast(a.to(tl.float64), b.to(tl.float64))
    r = tl.exp2(y * tl.log2(tl.abs(x)))
    integer = tl.floor(y) == y
    odd = integer & (tl.floor(y * 0.5) * 2.0 != y)
    r = tl.where((x < 0) & odd, -r, r)
    r = tl.where((x < 0) & ~integer, float("nan"), r)
    return tl.where((y == 0) | (x == 1.0), 1.0, r).to(a.dtype)


def hypot(a, b):
    return libdevice.hypot(a, b)


def hypot_interpreted(a, b):
    x = a.to(tl.float64)
    y = b.to(tl.float64)
    return tl.sqrt(x * x + y * y).to(a.dtype)


def fmod(a, b):
    return libdevice.fmod(a, b)


def fmod_interpreted(a, b):
    return a % b  # the interpreter's float % is C's fmod, exactly


# --- which helpers a kernel needs, as module source ------------------------------------------

_CALLS = re.compile(r"(?<![\w.])([a-z_][a-z0-9_]*)\(")  # f(...), not x.f(...)
_NAMES = re.compile(r"(?<![\w.])([a-z_][a-z0-9_]*)\b")
_MODULE = sys.modules[__name__]
INTERPRETED_SUFFIX = "_interpreted"


def _function(name: str):
    fn = getattr(_MODULE, name, None)
    return fn if inspect.isfunction(fn) and fn.__module__ == __name__ else None


def _calls(fn) -> list[str]:
    """Helper names fn's body calls (an interpreter form's callees by their plain names)."""
    found = (m.group(1).removesuffix(INTERPRETED_SUFFIX)
             for m in _CALLS.finditer(inspect.getsource(fn).split(":", 1)[1]))
    return [n for n in dict.fromkeys(found) if _function(n) is not None]


def _closure(roots: list[str], interpreted: bool) -> list[str]:
    """roots and every helper they call, callees first, following one form of dual helpers."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        form = _function(name + INTERPRETED_SUFFIX) if interpreted else None
        for callee in _calls(form or _function(name)):
            visit(callee)
        order.append(name)
    for name in roots:
        visit(name)
    return order


def _source(name: str, interpreted: bool, indent: str = "") -> str:
    fn = (_function(name + INTERPRETED_SUFFIX) if interpreted else None) or _function(name)
    text = inspect.getsource(fn).replace(f"def {fn.__name__}(", f"def {name}(", 1)
    text = text.replace(INTERPRETED_SUFFIX + "(", "(")
    lines = ["@triton.jit"] + text.rstrip("\n").split("\n")
    return "\n".join(indent + line if line else line for line in lines)


def helper_block(code: str) -> str:
    """Source of the helpers `code` calls: plain ones at top level; those with a libdevice
    and an interpreter form in a branch on INTERPRETED. Empty if it calls none."""
    roots = _NAMES.findall(code)  # calls, and combine functions passed to tl.reduce
    roots = [n for n in dict.fromkeys(roots) if _function(n) is not None
             and not n.endswith(INTERPRETED_SUFFIX)]
    device = _closure(roots, interpreted=False)
    interpreter = _closure(roots, interpreted=True)
    dual = [n for n in device if _function(n + INTERPRETED_SUFFIX) is not None]
    shared = [n for n in device if n not in dual and n in interpreter]
    only_interpreter = [n for n in interpreter if n not in shared and n not in dual]
    blocks = [_source(n, False) for n in shared]
    if dual:
        branch = ["# Triton's interpreter has no libdevice: there, these come from core ops",
                  "if INTERPRETED:"]
        branch += ["\n\n".join(_source(n, True, "    ") for n in only_interpreter + dual),
                   "else:", "\n\n".join(_source(n, False, "    ") for n in dual)]
        blocks.append("\n".join(branch))
    return "\n\n\n".join(blocks)


def uses_libdevice(code: str) -> bool:
    return "if INTERPRETED:" in code
