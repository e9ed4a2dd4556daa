"""Automatic dynamic shapes: which sizes of a graph become symbols, and which graphs a
shape-generic program may run.

The first graph of a structure (graph.structure: the key with every integer erased) is compiled
with its sizes as they are: equal sizes are equal constants, so everything of one size fuses and
indices are simple. When a second graph of that structure arrives with other sizes, the input
dims that changed become size symbols (dims that changed alike share one, as torch.compile's
duck sizing does) and the graph is compiled once more. That program serves every later graph of
the structure whose integers its ShapeGuard accepts: no tracing-to-kernels work at all.

The guard is written from the two graphs: an integer equal in both must stay equal; one that
changed must be the same affine function of one symbol in every graph (`64 -> 29` with batch
`64 -> 29` is the batch; a flattened `50176 -> 22736` is 784 times it). A program is only made
shape-generic after its lowering of the first graph, with the same symbols, produced the same
kernels and wrapper (backend.fingerprint): a size baked into the program as a constant (a
decomposition's literal `numel`, a constant stride) shows up there as a difference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from ..graph import Graph, Structure


@dataclass
class ShapeGuard:
    """Accepts the integers of a graph of one structure for a program compiled with `symbols`
    ((input, dim) -> symbol number)."""
    fixed: list[tuple[int, int]]  # (position, value) that must hold
    affine: list[tuple[int, int, Fraction, Fraction]]  # (position, symbol, a, b): a*s + b
    symbol_at: dict[int, int]  # symbol -> a position holding its value
    symbols: dict[tuple[int, int], int]

    def holds(self, ints: tuple[int, ...]) -> bool:
        values = {s: ints[p] for s, p in self.symbol_at.items()}
        if any(v < 2 for v in values.values()):  # 0 and 1 change broadcasting: not generic
            return False
        if any(ints[p] != v for p, v in self.fixed):
            return False
        return all(ints[p] == a * values[s] + b for p, s, a, b in self.affine)

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


def build_guard(first: Structure, now: Structure, symbols: dict[tuple[int, int], int]) -> \
        ShapeGuard | None:
    """The guard of a program compiled from `now` with `symbols`; None when some changed
    integer is no affine function of a symbol (the structure then stays static)."""
    symbol_at = {s: now.input_dims[k][d] for (k, d), s in symbols.items()}
    pairs = {s: (first.ints[p], now.ints[p]) for s, p in symbol_at.items()}
    fixed, affine = [], []
    for p, (v1, v2) in enumerate(zip(first.ints, now.ints)):
        if v1 == v2:
            fixed.append((p, v2))
            continue
        fit = _fit(v1, v2, pairs)
        if fit is None:
            return None
        affine.append((p, *fit))
    return ShapeGuard(fixed, affine, symbol_at, symbols)


def _fit(v1: int, v2: int, pairs: dict[int, tuple[int, int]]):
    """(symbol, a, b) with a*x + b through both points; integer coefficients preferred, then
    no offset (a size or stride proportional to the symbol)."""
    best = None
    for s, (x1, x2) in pairs.items():
        a = Fraction(v2 - v1, x2 - x1)
        b = v1 - a * x1
        rank = (a.denominator != 1 or b.denominator != 1, b != 0)
        if best is None or rank < best[0]:
            best = (rank, (s, a, b))
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
