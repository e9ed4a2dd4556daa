"""Symbolic sizes: sympy symbols for a graph's input dimensions, and the index algebra on them.

The input dimensions the session chose as dynamic (runtime/shapes.py: those that changed between
graphs of one structure) are symbols; all other sizes are constants. Sizes of everything
computed from the inputs are derived structurally by the lowerings (a broadcast takes its
operand's size, a reshape groups dimensions by their products, ...), never by looking a value
up — so a batch of 64 is never confused with 64 channels, and a kernel's source does not depend
on the value of a symbolic size.
Each derived size is checked against the concrete size the trace recorded (`SizeVars.check`).
"""
from __future__ import annotations

import functools
from typing import Iterable, Sequence

import sympy

Expr = sympy.Expr


def exact_quotient(term: Expr, divisor: Expr) -> Expr | None:
    """term / divisor when it divides exactly as polynomials in the sizes, else None. (Cheap:
    polynomial division, never sympy.simplify: this runs for every index expression.)"""
    if divisor == 1:
        return term
    if divisor == 0:  # a stride over a zero-size dim: nothing divides by it
        return None
    if term.is_Integer and divisor.is_Integer:
        return sympy.Integer(int(term) // int(divisor)) if int(term) % int(divisor) == 0 else None
    try:
        quotient, remainder = sympy.div(term, divisor)
    except (sympy.polys.polyerrors.BasePolynomialError, TypeError):
        return None
    if remainder != 0 or not quotient.is_polynomial():
        return None
    if not quotient.free_symbols:
        return quotient if quotient.is_Integer else None
    coeffs = sympy.Poly(quotient, *sorted(quotient.free_symbols, key=str)).coeffs()
    return quotient if all(c.is_Integer for c in coeffs) else None  # div works over rationals


class FloorDiv(sympy.Function):
    """Integer floor division (Python's `//`) by a positive divisor. The base may be negative
    (a size formula such as `(s3 - s7) // 2` after terms were pulled out), so printers use a
    truncating `/` only where the base is provably non-negative."""

    nargs = (2,)
    is_integer = True

    def _eval_is_nonnegative(self):
        return True if self.args[0].is_nonnegative and self.args[1].is_positive else None

    @classmethod
    def eval(cls, base, divisor):
        if divisor == 1:
            return base
        if base == 0:
            return sympy.Integer(0)
        if base.is_Integer and divisor.is_Integer:
            return sympy.Integer(int(base) // int(divisor))
        if isinstance(base, FloorDiv):  # (a // b) // c == a // (b * c)
            return FloorDiv(base.args[0], base.args[1] * divisor)
        terms = base.args if isinstance(base, sympy.Add) else (base,)
        whole, rest = [], []
        for t in terms:  # pull out terms that are multiples of the divisor
            q = exact_quotient(t, divisor)
            (whole if q is not None else rest).append(q if q is not None else t)
        if whole:
            return sympy.Add(*whole) + (FloorDiv(sympy.Add(*rest), divisor) if rest else 0)
        return None


class ModularIndexing(sympy.Function):
    """(base // divisor) % modulus with Python's floor semantics: in [0, modulus) for any
    integer base, given a positive divisor and modulus."""

    nargs = (3,)
    is_integer = True

    def _eval_is_nonnegative(self):
        return True if self.args[1].is_positive and self.args[2].is_positive else None

    @classmethod
    def eval(cls, base, divisor, modulus):
        if modulus == 1 or base == 0:
            return sympy.Integer(0)
        if base.is_Integer and divisor.is_Integer and modulus.is_Integer:
            return sympy.Integer((int(base) // int(divisor)) % int(modulus))
        if isinstance(base, sympy.Add):  # terms that are multiples of divisor*modulus vanish
            keep = [t for t in base.args if exact_quotient(t, divisor * modulus) is None]
            if len(keep) < len(base.args):
                return ModularIndexing(sympy.Add(*keep), divisor, modulus)
        return None


def size_symbol(index: int) -> sympy.Symbol:
    return sympy.Symbol(f"s{index}", integer=True, positive=True)


def index_symbol(prefix: str, index: int) -> sympy.Symbol:
    return sympy.Symbol(f"{prefix}{index}", integer=True, nonnegative=True)


def contiguous_strides(sizes: Sequence) -> list:
    """Row-major strides as torch gives them (a size-0 dim strides like a size-1 one), of
    symbolic sizes or of ints (then ints)."""
    symbolic = any(isinstance(s, sympy.Basic) for s in sizes)
    strides, acc = [], sympy.Integer(1) if symbolic else 1
    for s in reversed(sizes):
        strides.append(acc)
        acc = acc * (1 if s == 0 else s)
    return strides[::-1]


def same_sizes(a: Sequence, b: Sequence) -> bool:
    """Whether two lists of sizes (ints or sympy expressions) are equal, dim by dim."""
    return len(a) == len(b) and all(sympy.expand(sympy.sympify(x) - sympy.sympify(y)) == 0
                                    for x, y in zip(a, b))


def flatten(items) -> list:
    """Nested lists/tuples as one flat list."""
    if not isinstance(items, (list, tuple)):
        return [items]
    return [x for item in items for x in flatten(item)]


def product(items: Iterable[Expr]) -> Expr:
    return functools.reduce(lambda a, b: a * b, items, sympy.Integer(1))


def flat_index(index: Sequence[Expr], strides: Sequence[Expr], offset: Expr = 0) -> Expr:
    return sympy.expand(sum((i * s for i, s in zip(index, strides)), sympy.Integer(offset)))


def unflatten(flat: Expr, sizes: Sequence[Expr]) -> list[Expr]:
    """Index per dimension of a contiguous tensor of `sizes` from its linear index."""
    out, divisor = [], sympy.Integer(1)
    for s in reversed(sizes):
        out.append(sympy.Integer(0) if s == 1 else ModularIndexing(flat, divisor, s))
        divisor = divisor * s
    return list(reversed(out))


class SizeVars:
    """Binds the graph's size symbols to the concrete sizes of the inputs being compiled.

    `dynamic` ((input, dim) -> symbol number) names the input dims that are symbols; every
    other size is a constant, so equal sizes are known equal. None makes every dim other than
    0 and 1 a symbol of its own (the most general program; tests of the index algebra)."""

    def __init__(self, dynamic: dict[tuple[int, int], int] | None = None):
        self.dynamic = dynamic
        self.values: dict[sympy.Symbol, int] = {}
        self.origins: dict[sympy.Symbol, tuple[int, int]] = {}  # symbol -> (input, dim)

    def symbolize(self, sizes: Sequence[int], input_index: int) -> list[Expr]:
        """Symbols for an input's sizes: 0 and 1 stay constants (they change broadcasting)."""
        out = []
        for dim, s in enumerate(sizes):
            number = self._symbol_number(input_index, dim)
            if s in (0, 1) or number is None:
                out.append(sympy.Integer(s))
                continue
            sym = size_symbol(number)
            if sym not in self.values:
                self.values[sym] = int(s)
                self.origins[sym] = (input_index, dim)
            elif self.values[sym] != s:
                raise AssertionError(f"size symbol {sym} is {self.values[sym]} and {s}")
            out.append(sym)
        return out

    def _symbol_number(self, input_index: int, dim: int) -> int | None:
        if self.dynamic is None:
            return len(self.values)
        return self.dynamic.get((input_index, dim))

    def symbol_of(self, size: int) -> sympy.Symbol | None:
        """The one size symbol whose value is `size` (None: none or several)."""
        found = [sym for sym, value in self.values.items() if value == size]
        return found[0] if len(found) == 1 and size > 1 else None

    def evaluate(self, expr: Expr | int) -> int:
        if isinstance(expr, int):
            return expr
        # xreplace, not subs: sizes are plain symbols, and subs costs ~1 ms an expression
        return int(sympy.sympify(expr).xreplace(self.values))

    def check(self, exprs: Sequence[Expr], concrete: Sequence[int], what: str) -> None:
        """A derived size must equal what the trace recorded; anything else is a lowering bug."""
        got = [self.evaluate(e) for e in exprs]
        if got != list(concrete):
            raise AssertionError(f"{what}: symbolic sizes {list(exprs)} evaluate to {got}, "
                                 f"the trace recorded {list(concrete)}")

    def match_reshape(self, old: Sequence[Expr], new: Sequence[int]) -> list[Expr]:
        """Symbolic sizes for reshaping `old` to the concrete `new`, from the left: a run of old
        dims whose product is one new dim becomes that product (flatten keeps the batch symbol);
        one old dim split into several new dims gives constants for the pieces (unflatten).
        Anything else: constants."""
        old_vals = [self.evaluate(e) for e in old]
        constants = [sympy.Integer(n) for n in new]
        result: list[Expr] = []
        i = j = 0
        while j < len(new):
            if new[j] == 1:
                result.append(sympy.Integer(1))
                j += 1
                continue
            while i < len(old) and old_vals[i] == 1:
                i += 1
            if i >= len(old):
                return constants
            if old_vals[i] <= new[j]:  # group old dims into new[j]
                acc, group = 1, []
                while i < len(old) and acc < new[j]:
                    acc *= old_vals[i]
                    group.append(old[i])
                    i += 1
                if acc != new[j]:
                    return constants
                result.append(product(group))
                j += 1
            else:  # split old[i] over several new dims
                acc, k = 1, j
                while k < len(new) and acc < old_vals[i]:
                    acc *= new[k]
                    k += 1
                if acc != old_vals[i]:
                    return constants
                result += constants[j:k]
                i, j = i + 1, k
        return result


# --- simplification with loop ranges ------------------------------------------------------

def _max_value(expr, ranges: dict) -> sympy.Expr | None:
    """Upper bound of a sum of non-negative terms, each a size or (size * loop var); None if
    the expression has another form."""
    expr = sympy.expand(expr)
    total = sympy.Integer(0)
    for term in (expr.args if isinstance(expr, sympy.Add) else (expr,)):
        coeff, rest = term.as_coeff_Mul()
        loop_vars = [s for s in rest.free_symbols if s in ranges]
        if coeff < 0 or len(loop_vars) > 1:
            return None
        if not loop_vars:
            total += term  # sizes are positive
            continue
        scale = sympy.cancel(rest / loop_vars[0])
        if scale.free_symbols & set(ranges):
            return None
        total += coeff * scale * (ranges[loop_vars[0]] - 1)
    return total


def _less(a, b) -> bool:
    """a < b provably (sizes are positive symbols); False when unsure."""
    return bool(sympy.expand(b - a).is_positive)


def simplify_index(expr, ranges: dict):
    """Remove FloorDiv/ModularIndexing made redundant by the loop ranges."""
    expr = sympy.sympify(expr)
    if not expr.has(FloorDiv, ModularIndexing):
        return sympy.expand(expr)
    relevant = frozenset((k, v) for k, v in ranges.items() if k in expr.free_symbols)
    return _simplify_index(expr, relevant)


@functools.lru_cache(maxsize=65536)
def _simplify_index(expr, relevant: frozenset):
    ranges = dict(relevant)

    def fix(e):
        if isinstance(e, ModularIndexing):
            base, div, mod = (fix(a) for a in e.args)
            top = _max_value(base, ranges) if base.is_nonnegative else None
            if top is not None:
                if _less(top, div):
                    return sympy.Integer(0)
                if _less(top, div * mod):
                    return FloorDiv(base, div) if div != 1 else base
            return ModularIndexing(base, div, mod)
        if isinstance(e, FloorDiv):
            base, div = (fix(a) for a in e.args)
            top = _max_value(base, ranges) if base.is_nonnegative else None
            if top is not None and _less(top, div):
                return sympy.Integer(0)
            return FloorDiv(base, div)
        if e.args:
            return e.func(*[fix(a) for a in e.args])
        return e
    for _ in range(4):  # a rewrite can expose another (x*s + r) // s -> x + r // s -> x
        simpler = sympy.expand(fix(expr))
        if simpler == expr:
            break
        expr = simpler
    return expr
