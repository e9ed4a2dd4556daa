"""A loader's element expression as a tree, for code generators that decide by what an
expression *is* before printing it: two reductions of one kernel that compute the same thing
(layer norm's mean, traced twice), or a pointwise member that recomputes a reduction's summand
(softmax's `exp(x - max)`, which can be stored once and read back).

`record(fn)` runs a loader on TreeOps; each Node carries a structural `key` (op and operands'
keys; loads by buffer name and expanded index), so equal keys mean the same value at the same
loop position. `replay` prints a tree through a real ops handler, with chosen subtrees replaced.
Loaders that use masked/indirect/random ops are not recorded (Unsupported): they stay as they
are."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import sympy

from .common import ELEMENT_OPS

# element ops that cost far more than a load: recomputing them is what storing saves
EXPENSIVE_OPS = frozenset({"exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "tanh",
                           "sigmoid", "erf", "erfc", "sin", "cos", "tan", "pow", "sinh", "cosh",
                           "atan", "atan2", "asin", "acos", "lgamma"})


class Unsupported(Exception):
    """The loader calls an op whose value is not a pure function of its operands' keys."""


@dataclass(eq=False)
class Node:
    op: str
    args: tuple
    key: tuple
    children: list["Node"] = field(default_factory=list)


def _key(value) -> Any:
    return value.key if isinstance(value, Node) else ("lit", repr(value))


class TreeOps:
    """An ops handler that builds trees instead of code."""

    def load(self, buf, index):
        return Node("load", (buf, index), ("load", buf.name, sympy.srepr(sympy.expand(index))))

    def constant(self, value, dtype):
        return Node("constant", (value, dtype), ("constant", repr(value), str(dtype)))

    def scalar(self, arg, dtype):
        return Node("scalar", (arg, dtype), ("scalar", arg.name, str(dtype)))

    def index_expr(self, expr, dtype):
        return Node("index_expr", (expr, dtype),
                    ("index_expr", sympy.srepr(sympy.expand(expr)), str(dtype)))

    def to_dtype(self, x, dtype):
        return Node("to_dtype", (x, dtype), ("to_dtype", _key(x), str(dtype)), [x])

    def masked(self, cond, body, other):
        raise Unsupported("masked")

    def indirect(self, var, size, negative_wraps=True):
        raise Unsupported("indirect")

    def rand(self, seed, offset):
        raise Unsupported("rand")

    def randn(self, seed, offset):
        raise Unsupported("randn")

    def __getattr__(self, name):
        if name not in ELEMENT_OPS and name != "where":
            raise AttributeError(name)

        def op(*args):
            return Node(name, args, (name, *map(_key, args)),
                        [a for a in args if isinstance(a, Node)])
        return op


def record(fn: Callable[[TreeOps], Any]) -> Node | None:
    """fn(TreeOps())'s tree, or None where it cannot be recorded."""
    try:
        value = fn(TreeOps())
    except Unsupported:
        return None
    return value if isinstance(value, Node) else None


def walk(tree: Node):
    yield tree
    for child in tree.children:
        yield from walk(child)


def contains(tree: Node, key: tuple) -> bool:
    return any(n.key == key for n in walk(tree))


def uses_op(tree: Node, ops: frozenset) -> bool:
    return any(n.op in ops for n in walk(tree))


def replay(tree: Node, ops, replace: dict[tuple, Callable[[], Any]] | None = None,
           rewrite: Callable[[Node, Callable[[Node], Any]], Any] | None = None,
           memo: dict | None = None):
    """The tree printed through `ops`; a subtree whose key is in `replace` is that function's
    value instead; `rewrite(node, emit)` may print a node another way (None: as recorded)."""
    memo = {} if memo is None else memo
    replace = replace or {}

    def emit(node):
        if not isinstance(node, Node):
            return node
        if node.key in memo:
            return memo[node.key]
        if node.key in replace:
            value = replace[node.key]()
        else:
            value = rewrite(node, emit) if rewrite else None
            if value is None:
                value = _emit_plain(node, ops, emit)
        memo[node.key] = value
        return value
    return emit(tree)


def _emit_plain(node: Node, ops, emit):
    if node.op in ("load", "constant", "scalar", "index_expr"):
        return getattr(ops, node.op)(*node.args)
    if node.op == "to_dtype":
        return ops.to_dtype(emit(node.args[0]), node.args[1])
    return getattr(ops, node.op)(*map(emit, node.args))
