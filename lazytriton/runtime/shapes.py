"""Automatic dynamic shapes: which sizes of a graph become symbols, and which graphs a
shape-generic program may run.

The first graph of a structure (graph.structure: the key with every integer erased) is compiled
with its sizes as they are: equal sizes are equal constants, so everything of one size fuses and
indices are simple. When a second graph of that structure arrives with other sizes, the input
dims that changed become size symbols (dims that changed alike share one, as torch.compile's
duck sizing does) and the graph is compiled once more. That program serves every later graph of
the structure whose integers its ShapeGuard accepts: no tracing-to-kernels work at all.

The guard is written from the two graphs and the program: an integer equal in both must stay
equal; a computed value's size or stride that changed must equal the program's own expression
of the symbols for it (lowering may match a size to an expression by its value, and two
expressions can agree at two sizes: `h//2` and `w//2 - 2` at 12x16 and 16x20); an argument
equal to such a size of its own node is bound to it; any other changed integer must be the
same function of the symbols in every graph: `a * m + b` for a product `m` of at most four
symbols (`64 -> 29` with batch `64 -> 29` is the batch; a flattened `50176 -> 22736` is 784
times it; an image's channel stride `256 -> 400` with its height and width `16 -> 20` is
their product, the symbol squared; a padded size `18 -> 22` is the symbol plus 2). A program
is only made shape-generic after its lowering of the first graph, with the same symbols,
produced the same kernels and wrapper (backend.fingerprint): a size baked into the program as
a constant (a decomposition's literal `numel`, a constant stride) shows up there as a
difference.
"""
from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

import sympy

from ..graph import Graph, Structure, output_positions


@dataclass
class ShapeGuard:
    """Accepts the integers of a graph of one structure for a program compiled with `symbols`
    ((input, dim) -> symbol number)."""
    fixed: list[tuple[int, int]]  # (position, value) that must hold
    # (position, symbols, a, b): a * (the product of those symbols' values) + b
    derived: list[tuple[int, tuple[int, ...], Fraction, Fraction]]
    symbol_at: dict[int, int]  # symbol -> a position holding its value
    symbols: dict[tuple[int, int], int]
    # positions whose integers must equal the program's own expressions of the symbols (the
    # sizes it gives computed values), and the function computing those from the symbols
    checked: tuple[int, ...] = ()
    program_sizes: Callable[..., tuple] | None = None
    equal: list[tuple[int, int]] = field(default_factory=list)  # (position, position)

    def holds(self, ints: tuple[int, ...]) -> bool:
        values = {s: ints[p] for s, p in self.symbol_at.items()}
        if any(v < 2 for v in values.values()):  # 0 and 1 change broadcasting: not generic
            return False
        if any(ints[p] != v for p, v in self.fixed):
            return False
        if any(ints[p] != ints[q] for p, q in self.equal):
            return False
        if self.program_sizes is not None and \
                self.program_sizes(*[values[s] for s in sorted(values)]) != \
                tuple(ints[p] for p in self.checked):
            return False
        return all(ints[p] == a * math.prod(values[s] for s in product) + b
                   for p, product, a, b in self.derived)

    def failure(self, ints: tuple[int, ...]) -> str:
        """Why `ints` fail the guard, in a few words (for metrics_report)."""
        for p, v in self.fixed:
            if ints[p] != v:
                return f"an integer that never changed did ({v} -> {ints[p]})"
        return "the changed sizes are not related as before"


def changed_dims(first: Structure, now: Structure) -> dict[tuple[int, int], tuple[int, int]]:
    """(input, dim) -> (first value, value now) for every input dim whose size changed."""
    out = {}
    for k, positions in enumerate(now.input_dims):
        for d, p in enumerate(positions):
            if first.ints[p] != now.ints[p]:
                out[(k, d)] = (first.ints[p], now.ints[p])
    return out


def assign_symbols(changed: dict[tuple[int, int], tuple[int, int]]) -> dict[tuple[int, int], int]:
    """A symbol per distinct (before, after) pair: dims that changed alike are one size."""
    groups: dict[tuple[int, int], int] = {}
    return {dim: groups.setdefault(pair, len(groups)) for dim, pair in changed.items()}


def build_guard(first: Structure, now: Structure, symbols: dict[tuple[int, int], int],
                program_sizes: dict[int, Any] | None = None) -> ShapeGuard | None:
    """The guard of a program compiled from `now` with `symbols`; None when some changed
    integer is no function `a * m + b` of a product `m` of symbols (the structure then stays
    static). `program_sizes` (position -> the program's expression for a computed value's
    size or stride there) makes the guard check those exactly (but for those the program
    does not use), and an argument equal to a checked size of its own node (a view's or an
    expand's size) equal to it; without it, or for an integer it does not cover, the guard
    fits a function through the two graphs."""
    symbol_at = {s: now.input_dims[k][d] for (k, d), s in symbols.items()}
    pairs = {s: (first.ints[p], now.ints[p]) for s, p in symbol_at.items()}
    products = _products(sorted(pairs))
    checked = program_sizes or {}
    fixed, derived, equal, exact = [], [], [], []
    for p, (v1, v2) in enumerate(zip(first.ints, now.ints)):
        if v1 == v2:
            fixed.append((p, v2))
        elif p in checked:
            if not _unused(checked[p]):
                exact.append(p)
        elif (q := _own_checked_size(p, first, now, checked)) is not None:
            if not _unused(checked[q]):
                equal.append((p, q))
        elif (fit := _fit(v1, v2, pairs, products)) is not None:
            derived.append((p, *fit))
        else:
            return None
    guard = ShapeGuard(fixed, derived, symbol_at, symbols, equal=equal)
    if exact:
        function = _size_function(sorted(pairs), [checked[p] for p in exact])
        at_now = [now.ints[symbol_at[s]] for s in sorted(pairs)]
        if function is None or _call(function, at_now) != tuple(now.ints[p] for p in exact):
            return build_guard(first, now, symbols)  # the expressions are no use: fit them
        guard.checked, guard.program_sizes = tuple(exact), function
    return guard


def _call(function: Callable[..., tuple], values: list[int]) -> tuple | None:
    try:
        return function(*values)
    except Exception:  # noqa: BLE001 -- an expression Python cannot evaluate
        return None


def _unused(expr) -> bool:
    """A changed integer the program holds as a constant: the program's lowering of the first
    graph, with other constants there, printed the same code (the fingerprint), so none of it
    depends on that integer (an expand's sizes, where its readers' loops come from elsewhere)."""
    return sympy.sympify(expr).is_Integer


def _own_checked_size(p: int, first: Structure, now: Structure, checked: dict) -> int | None:
    """A checked position of the node holding argument `p` whose integers were p's in both
    graphs."""
    if not checked or p in now.derived:
        return None
    node = bisect.bisect_right(now.node_starts, p) - 1
    for q in range(now.node_starts[node], p):
        if q in checked and first.ints[q] == first.ints[p] and now.ints[q] == now.ints[p]:
            return q
    return None


def _size_function(symbols: list[int], exprs: list) -> Callable[..., tuple] | None:
    """A Python function of the symbols' values computing `exprs` (None: one cannot be
    printed)."""
    from ..codegen.common import PythonPrinter
    from ..sizevars import size_symbol
    printer = PythonPrinter()
    try:
        body = ", ".join(printer.doprint(e) for e in exprs)
    except (ValueError, TypeError):
        return None
    names = {size_symbol(s) for s in symbols}
    if any(not set(sympy.sympify(e).free_symbols) <= names for e in exprs):
        return None
    params = ", ".join(size_symbol(s).name for s in symbols)
    return eval(f"lambda {params}: ({body},)")  # noqa: S307 -- our own printed expressions


def program_sizes(graph: Graph, now: Structure, lowered: dict) -> dict[int, Any]:
    """Position -> the program's expression for the integer there, from the sizes and strides
    the lowering gave computed values (kernel_backend.lowered_sizes)."""
    starts = output_positions(graph, now.node_starts)
    found = {}
    for key, (sizes, strides) in lowered.items():
        at = starts[key]
        found.update({at + d: e for d, e in enumerate(sizes)})
        found.update({at + len(sizes) + d: e for d, e in enumerate(strides)})
    return found


_MOST_FACTORS = 4  # N*C*H*W: the largest product a size or stride of a 4-D tensor holds


def _products(symbols: list[int]) -> list[tuple[int, ...]]:
    return [product for n in range(1, _MOST_FACTORS + 1)
            for product in itertools.combinations_with_replacement(symbols, n)]


def _fit(v1: int, v2: int, pairs: dict[int, tuple[int, int]], products: list[tuple[int, ...]]):
    """(product, a, b) with a * product + b through both points. Two points fit many lines, so
    the likeliest is taken: integer coefficients, then no offset (a size or stride proportional
    to the product), then fewer factors, then distinct symbols (H*W over W*W)."""
    best = None
    for product in products:
        x1 = math.prod(pairs[s][0] for s in product)
        x2 = math.prod(pairs[s][1] for s in product)
        if x1 == x2:
            continue
        a = Fraction(v2 - v1, x2 - x1)
        b = v1 - a * x1
        rank = (a.denominator != 1 or b.denominator != 1, b != 0, len(product),
                len(product) - len(set(product)))
        if best is None or rank < best[0]:
            best = (rank, (product, a, b))
    return best[1] if best else None


@dataclass
class Family:
    """The graphs of one structure seen so far: the first one's skeleton and integers, the
    shape-generic programs compiled for it, and why it stays static (if it does)."""
    first: Graph
    first_structure: Structure
    generic: list[tuple[ShapeGuard, Any]] = field(default_factory=list)
    static_reason: str | None = None


def describe_change(changed: dict[tuple[int, int], tuple[int, int]]) -> str:
    items = [f"input {k} dim {d}: {a} -> {b}" for (k, d), (a, b) in sorted(changed.items())]
    more = f" (+{len(items) - 4} more)" if len(items) > 4 else ""
    return ", ".join(items[:4]) + more
