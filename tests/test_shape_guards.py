"""The shape guard of a shape-generic program (runtime/shapes.py), on hand-made structures:
which later graphs it lets run the program, and which it sends to a compile."""
from __future__ import annotations

import sympy

from lazytriton.graph import Structure
from lazytriton.runtime.shapes import assign_symbols, build_guard, changed_dims
from lazytriton.sizevars import FloorDiv, size_symbol

s0, s1 = size_symbol(0), size_symbol(1)


def _structure(ints, input_dims, derived=(), node_starts=(0,)):
    return Structure(("k",), tuple(ints), input_dims, frozenset(derived), tuple(node_starts))


def _guard(first, now, program_sizes=None):
    symbols = assign_symbols(changed_dims(first, now))
    return build_guard(first, now, symbols, program_sizes)


def test_a_stride_that_is_the_square_of_one_symbol():
    """An image's height and width change alike (one symbol): its channel stride is s*s and
    its batch stride 3*s*s; the guard takes any later square size, not an oblong one."""
    def image(h, w):
        return _structure([4, 3, h, w, 3 * h * w, h * w, w, 1], [[0, 1, 2, 3]])
    guard = _guard(image(16, 16), image(20, 20))
    assert guard.holds(image(24, 24).ints) and guard.holds(image(7, 7).ints)
    assert not guard.holds(image(24, 28).ints)


def test_strides_that_are_products_of_two_symbols():
    def image(h, w):
        return _structure([4, 3, h, w, 3 * h * w, h * w, w, 1], [[0, 1, 2, 3]])
    guard = _guard(image(12, 16), image(16, 20))
    assert guard.holds(image(20, 28).ints) and guard.holds(image(10, 12).ints)
    assert not guard.holds(_structure([4, 3, 20, 28, 3 * 20 * 28 + 1, 20 * 28, 28, 1],
                                      [[0, 1, 2, 3]]).ints)


def test_a_padded_size_is_the_symbol_plus_its_padding():
    def padded(n):
        return _structure([n, n + 2], [[0]])
    guard = _guard(padded(16), padded(20))
    assert guard.holds(padded(33).ints) and not guard.holds((33, 34))


def test_the_programs_own_size_decides_not_a_fit_through_two_points():
    """A computed size the lowering holds as s0//2 agrees with s1//2 - 2 in both graphs
    (heights 12, 16; widths 16, 20), so a fit through the two could be either; the guard
    checks the program's expression: a later graph whose size is s1//2 - 2 is refused, one
    whose size is s0//2 accepted."""
    def graph(h, w, computed):
        # node 0: the input (h, w); node 1: a computed value of size `computed`
        return _structure([h, w, computed], [[0, 1]], derived=[2], node_starts=(0, 2))
    program = {2: FloorDiv(s0, 2)}
    first, now = graph(12, 16, 6), graph(16, 20, 8)
    guard = _guard(first, now, program)
    assert guard.checked == (2,)
    assert guard.holds(graph(20, 28, 10).ints)  # 20 // 2
    assert not guard.holds(graph(20, 28, 12).ints)  # 28 // 2 - 2: not what the program computes


def test_an_argument_equal_to_its_nodes_checked_size_is_bound_to_it():
    """An expand's size argument is its output's size: bound to it, not fitted."""
    def graph(h, w, size):
        # node 0: the input; node 1: an expand whose output size (derived) and argument agree
        return _structure([h, w, size, size], [[0, 1]], derived=[2], node_starts=(0, 2))
    program = {2: FloorDiv(s1, 2) - 2}
    guard = _guard(graph(12, 16, 6), graph(16, 20, 8), program)
    assert guard.equal == [(3, 2)]
    assert guard.holds(graph(20, 28, 12).ints)
    assert not guard.holds((20, 28, 12, 10))


def test_a_changed_size_the_program_holds_as_a_constant_is_not_checked():
    """The program printed the same code for both graphs with that size a different constant
    in each (the fingerprint): nothing in it depends on the size."""
    def graph(h, w, size):
        return _structure([h, w, size], [[0, 1]], derived=[2], node_starts=(0, 2))
    guard = _guard(graph(12, 16, 4), graph(16, 20, 6), {2: sympy.Integer(6)})
    assert guard.checked == () and guard.holds(graph(20, 28, 11).ints)


def test_expressions_python_cannot_evaluate_fall_back_to_fits():
    def graph(h, size):
        return _structure([h, size], [[0]], derived=[1], node_starts=(0, 1))
    guard = _guard(graph(12, 24), graph(16, 32), {1: sympy.Symbol("unknown") * s0})
    assert guard.checked == () and guard.holds(graph(20, 40).ints)
