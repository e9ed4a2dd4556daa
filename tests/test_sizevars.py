"""Property tests of the index algebra: sympy expressions built from FloorDiv / ModularIndexing,
their simplification with loop ranges, and their printed C++ and Python, all against plain
integer arithmetic on random assignments. Sizes are positive (>= 2 for symbols), loop variables
lie in their ranges; intermediate values may be negative, as in size formulas like
`(s3 - s7) // 2` once terms are pulled out of a floor division."""
from __future__ import annotations

import random
import subprocess

import sympy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lazytriton.codegen.common import CppPrinter, PythonPrinter
from lazytriton.lowering.externs import _conv_dim
from lazytriton.sizevars import (FloorDiv, ModularIndexing, SizeVars, exact_quotient,
                                 flat_index, index_symbol, simplify_index, size_symbol, unflatten)

SIZES = [size_symbol(k) for k in range(4)]
LOOPS = [index_symbol("x", k) for k in range(2)]
PROPERTY = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# --- C's integer semantics, to evaluate what CppPrinter prints ----------------------------

class CInt:
    """An int64 whose `/` and `%` truncate toward zero, as in C."""

    def __init__(self, v: int):
        self.v = int(v)

    @staticmethod
    def _of(x) -> int:
        return x.v if isinstance(x, CInt) else int(x)

    def __add__(self, o): return CInt(self.v + self._of(o))
    __radd__ = __add__
    def __mul__(self, o): return CInt(self.v * self._of(o))
    __rmul__ = __mul__
    def __sub__(self, o): return CInt(self.v - self._of(o))
    def __rsub__(self, o): return CInt(self._of(o) - self.v)
    def __neg__(self): return CInt(-self.v)
    def __truediv__(self, o): return CInt(_c_div(self.v, self._of(o)))
    def __rtruediv__(self, o): return CInt(_c_div(self._of(o), self.v))
    def __mod__(self, o): return CInt(_c_rem(self.v, self._of(o)))
    def __rmod__(self, o): return CInt(_c_rem(self._of(o), self.v))


def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _c_rem(a: int, b: int) -> int:
    return a - b * _c_div(a, b)


def _lt_div_floor(a, b):  # the prelude's lt::div_floor, written as the C++ does it
    a, b = CInt._of(a), CInt._of(b)
    return CInt(_c_div(a, b) - int(_c_rem(a, b) != 0 and a < 0))


def _lt_mod_floor(a, b):
    a, b = CInt._of(a), CInt._of(b)
    r = _c_rem(a, b)
    return CInt(r + (b if r < 0 else 0))


def eval_cpp(text: str, values: dict) -> int:
    text = text.replace("lt::", "lt_")
    names = {str(k): CInt(v) for k, v in values.items()}
    names.update(lt_div_floor=_lt_div_floor, lt_mod_floor=_lt_mod_floor)
    return eval(text.replace("L", ""), names).v if "(" in text or text.isidentifier() else \
        int(text.rstrip("L"))


def eval_python(text: str, values: dict) -> int:
    return int(eval(text, {str(k): v for k, v in values.items()}))


def eval_sympy(expr, values: dict) -> int:
    return int(sympy.sympify(expr).xreplace({k: sympy.Integer(v) for k, v in values.items()}))


# --- random expressions paired with their meaning in Python integers ----------------------

def _leaf():
    return st.one_of(
        st.sampled_from(SIZES).map(lambda s: (s, lambda v, s=s: v[s])),
        st.sampled_from(LOOPS).map(lambda x: (x, lambda v, x=x: v[x])),
        st.integers(-6, 9).map(lambda c: (sympy.Integer(c), lambda v, c=c: c)))


def _divisor():
    """Positive divisors: constants, sizes and products of them (strides)."""
    return st.one_of(
        st.integers(1, 5).map(lambda c: (sympy.Integer(c), lambda v, c=c: c)),
        st.sampled_from(SIZES).map(lambda s: (s, lambda v, s=s: v[s])),
        st.tuples(st.sampled_from(SIZES), st.integers(1, 3)).map(
            lambda p: (p[0] * p[1], lambda v, p=p: v[p[0]] * p[1])))


def _extend(children):
    pair = st.tuples(children, children)
    return st.one_of(
        pair.map(lambda ab: (ab[0][0] + ab[1][0], lambda v, ab=ab: ab[0][1](v) + ab[1][1](v))),
        pair.map(lambda ab: (ab[0][0] - ab[1][0], lambda v, ab=ab: ab[0][1](v) - ab[1][1](v))),
        st.tuples(children, st.integers(-3, 4)).map(
            lambda ec: (ec[0][0] * ec[1], lambda v, ec=ec: ec[0][1](v) * ec[1])),
        st.tuples(children, st.sampled_from(SIZES + LOOPS)).map(
            lambda es: (es[0][0] * es[1], lambda v, es=es: es[0][1](v) * v[es[1]])),
        st.tuples(children, _divisor()).map(
            lambda ed: (FloorDiv(ed[0][0], ed[1][0]),
                        lambda v, ed=ed: ed[0][1](v) // ed[1][1](v))),
        st.tuples(children, _divisor(), _divisor()).map(
            lambda edm: (ModularIndexing(edm[0][0], edm[1][0], edm[2][0]),
                         lambda v, edm=edm: (edm[0][1](v) // edm[1][1](v)) % edm[2][1](v))))


expressions = st.recursive(_leaf(), _extend, max_leaves=12)


@st.composite
def assignments(draw):
    """Sizes >= 2 (0 and 1 are never symbols); loop ranges that are sizes or constants;
    loop variables inside them."""
    values = {s: draw(st.integers(2, 40)) for s in SIZES}
    ranges = {}
    for x in LOOPS:
        bound = draw(st.one_of(st.sampled_from(SIZES), st.integers(1, 12).map(sympy.Integer)))
        ranges[x] = bound
        top = eval_sympy(bound, values)
        values[x] = draw(st.integers(0, top - 1))
    return values, ranges


# --- the properties -----------------------------------------------------------------------

@PROPERTY
@given(expressions, assignments())
def test_construction_keeps_integer_meaning(pair, assignment):
    """FloorDiv/ModularIndexing's eval rules (pulling out multiples, merging nested
    divisions) never change the value."""
    expr, meaning = pair
    values, _ = assignment
    assert eval_sympy(expr, values) == meaning(values)


@PROPERTY
@given(expressions, assignments())
def test_printed_cpp_and_python_compute_the_value(pair, assignment):
    expr, meaning = pair
    values, _ = assignment
    expected = meaning(values)
    assert eval_cpp(CppPrinter().doprint(expr), values) == expected
    assert eval_python(PythonPrinter().doprint(expr), values) == expected


@PROPERTY
@given(expressions, assignments())
def test_simplification_with_loop_ranges_keeps_the_value(pair, assignment):
    expr, meaning = pair
    values, ranges = assignment
    simpler = simplify_index(expr, ranges)
    assert eval_sympy(simpler, values) == meaning(values)
    assert eval_cpp(CppPrinter().doprint(simpler), values) == meaning(values)


@PROPERTY
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=3), st.sampled_from(SIZES),
       st.integers(1, 4), assignments())
def test_exact_quotient_divides_exactly(coeffs, size, factor, assignment):
    values, _ = assignment
    term = sum((c * size ** k for k, c in enumerate(coeffs)), sympy.Integer(0)) * factor
    quotient = exact_quotient(sympy.expand(term), sympy.Integer(factor) * size)
    if quotient is not None:
        assert eval_sympy(quotient, values) * factor * values[size] == eval_sympy(term, values)


# conv / pool layers as a network stacks them: kernel sizes are symbols (a weight's dims)
_layer = st.tuples(st.integers(1, 7), st.integers(1, 3), st.integers(0, 3), st.integers(1, 2))


@PROPERTY
@given(st.integers(8, 300), st.lists(_layer, min_size=1, max_size=9))
def test_stacked_conv_and_pool_sizes_match_torch(size, layers):
    """Chains of floor divisions from strided convs and pools: the symbolic size, its
    printed C++ and the wrapper's Python all give torch's output size."""
    sizevars = SizeVars()
    [h] = sizevars.symbolize([size], 0)
    kernels = sizevars.symbolize([k for k, *_ in layers if k > 1], 1)
    x = torch.empty(1, 1, size, device="meta")
    kernel_iter = iter(kernels)
    for kernel, stride, padding, dilation in layers:
        padding = min(padding, kernel // 2)
        if dilation * (kernel - 1) + 1 > x.shape[-1] + 2 * padding:
            break  # torch rejects a kernel larger than the padded input
        k_sym = next(kernel_iter) if kernel > 1 else sympy.Integer(1)
        h = _conv_dim(h, k_sym, stride, padding, dilation)
        w = torch.empty(1, 1, kernel, device="meta")
        x = torch.nn.functional.conv1d(x, w, stride=stride, padding=padding, dilation=dilation)
        values = dict(sizevars.values)
        assert sizevars.evaluate(h) == x.shape[-1]
        assert eval_cpp(CppPrinter().doprint(h), values) == x.shape[-1]
        assert eval_python(PythonPrinter().doprint(h), values) == x.shape[-1]


@PROPERTY
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.data())
def test_unflatten_then_flatten_is_the_identity(shape, data):
    sizevars = SizeVars()
    sizes = sizevars.symbolize(shape, 0)
    flat = index_symbol("x", 0)
    numel = 1
    for n in shape:
        numel *= n
    position = data.draw(st.integers(0, numel - 1))
    per_dim = unflatten(flat, sizes)
    strides = [sympy.Integer(1)] * len(sizes)
    for d in range(len(sizes) - 2, -1, -1):
        strides[d] = strides[d + 1] * sizes[d + 1]
    values = dict(sizevars.values)
    values[flat] = position
    roundtrip = simplify_index(flat_index(per_dim, strides), {flat: sympy.Mul(*sizes)})
    assert eval_cpp(CppPrinter().doprint(roundtrip), values) == position
    expected = []
    for n in reversed(shape):
        expected.append(position % n)
        position //= n
    assert [eval_cpp(CppPrinter().doprint(i), values) for i in per_dim] == expected[::-1]


@PROPERTY
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.data())
def test_reshape_sizes_evaluate_to_the_new_shape(old_shape, data):
    sizevars = SizeVars()
    old = sizevars.symbolize(old_shape, 0)
    numel = 1
    for n in old_shape:
        numel *= n
    divisors = [d for d in range(1, numel + 1) if numel % d == 0]
    new, left = [], numel
    while left > 1 and len(new) < 4:
        d = data.draw(st.sampled_from([d for d in divisors if left % d == 0]))
        new.append(d)
        left //= d
    new.append(left)
    assert [sizevars.evaluate(s) for s in sizevars.match_reshape(old, new)] == new


def test_cpp_semantics_emulation_matches_gcc(tmp_path):
    """The CInt emulation the properties use is what g++ computes, on a batch of random
    expressions compiled once."""
    rng = random.Random(7)
    exprs = [_random_expr(rng, depth=4) for _ in range(60)]
    cases = [{**{s: rng.randint(2, 40) for s in SIZES},
              **{x: rng.randint(0, 30) for x in LOOPS}} for _ in range(5)]
    printer = CppPrinter()
    from lazytriton.codegen.cpp import PRELUDE_INCLUDE
    from lazytriton.runtime.cpp_build import include_flags
    lines = [PRELUDE_INCLUDE, "#include <cstdio>", "int main() {"]
    for case in cases:
        lines.append("{" + " ".join(f"int64_t {k} = {v};" for k, v in case.items()))
        for e in exprs:
            lines.append(f'std::printf("%lld\\n", (long long)({printer.doprint(e)}));')
        lines.append("}")
    lines.append("}")
    source = tmp_path / "check.cpp"
    source.write_text("\n".join(lines))
    binary = tmp_path / "check"
    subprocess.run(["g++", "-O1", "-fopenmp", "-std=c++17", *include_flags(), str(source), "-o", str(binary)],
                   check=True, capture_output=True)
    got = [int(v) for v in subprocess.run([str(binary)], check=True, capture_output=True,
                                          text=True).stdout.split()]
    expected = [eval_cpp(printer.doprint(e), case) for case in cases for e in exprs]
    assert got == expected


def _random_expr(rng: random.Random, depth: int):
    if depth == 0 or rng.random() < 0.25:
        return rng.choice([*SIZES, *LOOPS, sympy.Integer(rng.randint(-6, 9))])
    a, b = _random_expr(rng, depth - 1), _random_expr(rng, depth - 1)
    divisor = rng.choice([sympy.Integer(rng.randint(1, 5)), *SIZES])
    return rng.choice([a + b, a - b, a * rng.randint(-3, 4), FloorDiv(a, divisor),
                       ModularIndexing(a, divisor, rng.choice([sympy.Integer(3), *SIZES]))])
