"""The lowering table, filled by the family modules (pointwise, reductions, views, ...) as they
are imported; it imports none of them.

LOWERINGS: aten op -> lowering, a function (lowering context, IR node, schema arguments by name)
returning TensorBox(es). DECOMPOSITIONS: aten op -> a function of torch tensors in smaller ops
(torch._decomp's or ours), re-traced and lowered in turn; an op with a lowering never decomposes.
"""
from __future__ import annotations

from typing import Any, Callable

LOWERINGS: dict[Any, Callable] = {}
DECOMPOSITIONS: dict[Any, Callable] = {}


def register(*ops):
    """Decorator: the function lowers each of `ops`."""
    def wrap(fn):
        for op in ops:
            LOWERINGS[op] = fn
        return fn
    return wrap


def register_decompositions(table: dict[Any, Callable]) -> None:
    DECOMPOSITIONS.update(table)


def drop_lowered_decompositions() -> None:
    """Once every family registered: a lowering wins over a decomposition of the same op."""
    for op in LOWERINGS:
        DECOMPOSITIONS.pop(op, None)
