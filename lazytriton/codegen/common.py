"""What every code generator shares: printing index expressions, simplifying them with the
loop ranges, and kernel bodies built from lines with common-subexpression elimination."""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

import sympy
from sympy.printing.str import StrPrinter

from ..sizevars import FloorDiv, ModularIndexing


class ExprPrinter(StrPrinter):
    """Index expressions in a C-like language. Pure: the symbol names to print come in through
    `rename`. FloorDiv and ModularIndexing have floor semantics; C's `/` and `%` truncate, so
    they are printed only where the dividend is provably non-negative, else the language's
    floor helpers (`floor_div`, `floor_mod`)."""

    floor_div = "lt::div_floor"
    floor_mod = "lt::mod_floor"

    def __init__(self, rename: dict | None = None):
        super().__init__()
        self.rename = rename or {}

    def _print_Symbol(self, expr):
        return self.rename.get(expr, expr.name)

    def _print_Integer(self, expr):
        return str(int(expr))

    def _print_Mul(self, expr):
        return "(" + " * ".join(self.paren(a) for a in expr.args) + ")"

    def _print_Add(self, expr):
        return "(" + " + ".join(self._print(a) for a in expr.args) + ")"

    def _print_Pow(self, expr):
        base, exp = expr.args
        if exp.is_Integer and int(exp) > 0:
            return "(" + " * ".join([self.paren(base)] * int(exp)) + ")"
        raise ValueError(f"cannot print {expr} as an index")

    def _print_FloorDiv(self, expr):
        return self._divide(*expr.args)

    def _print_ModularIndexing(self, expr):
        base, div, mod = expr.args
        inner = self.paren(base) if div == 1 else self._divide(base, div)
        if base.is_nonnegative:
            return f"({inner} % {self.paren(mod)})"
        return f"{self.floor_mod}({inner}, {self._print(mod)})"

    def _divide(self, base, div) -> str:
        if base.is_nonnegative:
            return f"({self.paren(base)} / {self.paren(div)})"
        return f"{self.floor_div}({self._print(base)}, {self._print(div)})"

    def paren(self, expr) -> str:
        text = self._print(expr)
        return text if text.startswith("(") or text.isidentifier() or text.isdigit() else f"({text})"

    def doprint(self, expr):
        return super().doprint(sympy.sympify(expr))


class PythonPrinter(ExprPrinter):
    """Size expressions in the generated Python wrapper (Python's `//` and `%` floor)."""

    def _print_FloorDiv(self, expr):
        return f"({self.paren(expr.args[0])} // {self.paren(expr.args[1])})"

    def _print_ModularIndexing(self, expr):
        base, div, mod = expr.args
        return f"(({self.paren(base)} // {self.paren(div)}) % {self.paren(mod)})"


class CppPrinter(ExprPrinter):
    def _print_Integer(self, expr):
        value = int(expr)
        return f"{value}L" if abs(value) > 2**31 - 1 else str(value)


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


# --- kernel bodies ------------------------------------------------------------------------

@dataclass
class CSEVariable:
    name: str
    dtype: object

    def __str__(self) -> str:
        return self.name


@dataclass
class Block:
    """Lines of code at one loop level, with their own CSE cache (values computed inside a
    loop are not visible after it)."""
    lines: list[str] = field(default_factory=list)
    cache: dict[str, CSEVariable] = field(default_factory=dict)
    parent: "Block | None" = None

    def lookup(self, key: str) -> CSEVariable | None:
        block = self
        while block is not None:
            if key in block.cache:
                return block.cache[key]
            block = block.parent
        return None


class KernelBody:
    """Three kinds of lines — loads, compute, stores — emitted into nested blocks with CSE."""

    def __init__(self, prefix: str = "tmp"):
        self._counter = itertools.count()
        self.prefix = prefix
        self.block = Block()

    def new_var(self, dtype) -> CSEVariable:
        return CSEVariable(f"{self.prefix}{next(self._counter)}", dtype)

    def emit(self, line: str) -> None:
        self.block.lines.append(line)

    def cse(self, key: str, dtype, declare) -> CSEVariable:
        """The variable holding `key`, declaring it (declare(var) -> line) the first time."""
        found = self.block.lookup(key)
        if found is not None:
            return found
        var = self.new_var(dtype)
        self.emit(declare(var))
        self.block.cache[key] = var
        return var

    def push(self) -> Block:
        self.block = Block(parent=self.block)
        return self.block

    def pop(self) -> Block:
        done = self.block
        self.block = done.parent
        return done
