"""What every code generator shares: the ops-handler protocol loop IR computes through, printing
index expressions, and kernel bodies built from lines with common-subexpression elimination.
(Simplifying index expressions with the loop ranges is index algebra: sizevars.py.)"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import sympy
from sympy.printing.str import StrPrinter


# --- the ops handler ---------------------------------------------------------------------------
# Loop IR describes an element as calls on an `ops` handler that each code generator supplies
# (loopir.py). These are all the element ops it may call, by name; values are the handler's own
# (CSE variables), dtypes are torch dtypes.

UNARY_OPS = frozenset({  # one operand, its dtype out
    "neg", "abs", "exp", "exp2", "log", "log2", "log10", "sqrt", "rsqrt", "sin", "cos", "tan",
    "tanh", "sinh", "cosh", "asin", "acos", "atan", "atanh", "asinh", "acosh", "sigmoid",
    "relu", "erf", "erfc", "log1p", "expm1", "floor", "ceil", "round", "trunc", "reciprocal",
    "sign", "lgamma", "bitwise_not"})
PREDICATE_OPS = frozenset({"isnan", "isinf", "logical_not"})  # one operand, bool out
BINARY_OPS = frozenset({  # two operands of one dtype, that dtype out
    "add", "sub", "mul", "truediv", "maximum", "minimum", "atan2", "copysign", "hypot",
    "bitwise_and", "bitwise_or", "bitwise_xor", "clamp_min", "clamp_max", "pow",
    # Python semantics on integers (floor division, sign of the divisor); x / 0 sets the error flag
    "floordiv", "truncdiv", "remainder", "fmod"})
COMPARE_OPS = frozenset({"eq", "ne", "lt", "le", "gt", "ge",  # two operands, bool out
                         "logical_and", "logical_or", "logical_xor"})
ELEMENT_OPS = UNARY_OPS | PREDICATE_OPS | BINARY_OPS | COMPARE_OPS


class OpsHandler(Protocol):
    """What lowerings call while a code generator prints a kernel; plus every name in
    ELEMENT_OPS as a method taking and returning values."""

    def load(self, buf, index) -> Any:
        """buf's element at the flat `index` (a sympy expression in the loop variables)."""

    def constant(self, value, dtype) -> Any: ...

    def scalar(self, arg, dtype) -> Any:
        """A graph-input number (lowering.ScalarArg): a kernel parameter, never a literal."""

    def index_expr(self, expr, dtype) -> Any:
        """An index expression's value as data (arange, masks of cat/pad)."""

    def to_dtype(self, x, dtype) -> Any: ...

    def where(self, cond, a, b) -> Any: ...

    def masked(self, cond, body: Callable[[], Any], other) -> Any:
        """body() where cond holds (its loads may be out of bounds elsewhere), else other."""

    def indirect(self, var, size, negative_wraps: bool = True) -> Any:
        """An index read from memory, as a symbol usable in index expressions: a negative one
        counts from the end where the op's eager kernel does so (x[idx], index_put, take) and
        is out of range where it does not (embedding, index_select, gather, scatter); out of
        [0, size) sets the error flag."""

    def rand(self, seed, offset) -> Any:
        """Uniform [0, 1) float32, a pure function of (seed, flat offset)."""

    def randn(self, seed, offset) -> Any:
        """Standard normal float32, a pure function of (seed, flat offset)."""


def missing_ops(handler: object) -> list[str]:
    """Element ops `handler` does not answer (a backend's completeness check)."""
    return sorted(name for name in ELEMENT_OPS if not callable(getattr(handler, name, None)))


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
        return self._factored(list(expr.args))

    def _factored(self, terms: list) -> str:
        """A sum with common size factors pulled out (Horner form), so a dense index over
        symbolic sizes reads `((x0*ks1 + x1)*ks2 + x2)` rather than a polynomial."""
        counts: dict = {}
        for t in terms:
            for f in set(t.args) if t.is_Mul else ():
                if f.is_Symbol and f.is_positive:  # a size symbol (loop vars are not positive)
                    counts[f] = counts.get(f, 0) + 1
        common = max(counts, key=lambda f: (counts[f], str(f)), default=None)
        if common is None or counts[common] < 2:
            return "(" + " + ".join(self._print(a) for a in terms) + ")"
        inside = [sympy.Mul(*[a for a in t.args if a is not common]) for t in terms
                  if t.is_Mul and common in t.args]
        rest = [t for t in terms if not (t.is_Mul and common in t.args)]
        factored = f"({self._factored(inside)} * {self._print(common)})"
        return "(" + " + ".join([factored] + [self._print(a) for a in rest]) + ")"

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

    def _print_Max(self, expr):
        return "max(" + ", ".join(self._print(a) for a in expr.args) + ")"


class CppPrinter(ExprPrinter):
    def _print_Integer(self, expr):
        value = int(expr)
        return f"{value}L" if abs(value) > 2**31 - 1 else str(value)

    def _print_Max(self, expr):  # arena block sizes (codegen/cpp_frame.py)
        first, *rest = expr.args
        if not rest:
            return self._print(first)
        return f"std::max<int64_t>({self._print(first)}, {self._print(sympy.Max(*rest))})"


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
