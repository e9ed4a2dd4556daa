"""Arguments known never to be positive: `exp(v - max(v))`, where `max(v)` is a row maximum that
the same kernel computed earlier over the very elements `v` runs through. That is softmax's,
log_softmax's and cross-entropy's exp, and its argument is <= 0 or NaN (each element is at most
its row's max), which lets the C++ backend print a cheaper exp that gives the same bits on that
domain (vecmath.h `exp_nonpos_f32`).

The proof is structural, on exprtree keys: the operand subtracted is a load of a row-max
member's buffer (in a register or stored; either way the reader's own row, as the scheduler
fuses only such readers), and the operand it is subtracted from has the key of that member's
summand recorded over the consuming loop's own variables, whose extents equal the max's
reduced extents. Anything else keeps the plain exp."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from lazytriton.scheduler import Member
from lazytriton.sizevars import same_sizes

from .cpp_variants import reduction_tree
from .exprtree import Node


def row_max_summands(members: Sequence[Member], outer_vars, inner_vars, sizes) -> dict[str, tuple]:
    """For each float max member among `members` (computed earlier in the kernel, so read at
    the reader's own row: scheduler._row_local) whose reduced extents are `sizes`: its
    buffer's name -> the key of its summand over `inner_vars`."""
    found = {}
    for member in members:
        node = member.node
        if not (member.is_reduction and not member.across and node.reduction_type == "max"
                and node.src_dtype.is_floating_point and node.dtype == node.src_dtype
                and same_sizes(node.reduction_sizes, sizes)
                and len(inner_vars) == len(sizes)):  # a loop of merged dims has fewer vars
            continue
        tree = reduction_tree(member, outer_vars, list(inner_vars))
        if tree is not None:
            found[member.buffer.name] = tree.key
    return found


def is_minus_row_max(node: Node, maxima: dict[str, tuple]) -> bool:
    """Whether `node` is `v - m` for m a row max (in `maxima`) over exactly v's values, up to
    conversions between float types (a rounding keeps a value's sign)."""
    node = _through(node, _to_float)
    if node.op != "sub" or len(node.args) != 2:
        return False
    value, maximum = node.args
    if not (isinstance(value, Node) and isinstance(maximum, Node)):
        return False
    maximum = _through(maximum, _exact_widening)
    if maximum.op != "load":
        return False
    return maxima.get(maximum.args[0].name) == value.key


def _through(node: Node, passes: Callable[[Node], bool]) -> Node:
    while node.op == "to_dtype" and passes(node) and isinstance(node.args[0], Node):
        node = node.args[0]
    return node


def _to_float(node: Node) -> bool:
    return node.args[1].is_floating_point


def _exact_widening(node: Node) -> bool:
    """A conversion of the max's loaded value that cannot round it below any element: to
    float64, or to float32 from the buffer's own 16- or 32-bit float type."""
    inner, dtype = node.args
    if dtype == torch.float64:
        return True
    source = inner.args[0].dtype if inner.op == "load" else None
    return dtype == torch.float32 and source in (torch.float16, torch.bfloat16, torch.float32)


def nonpositive_exp(maxima: dict[str, tuple], exp_nonpos: Callable) -> Callable:
    """An exprtree.replay rewrite: an exp of `v - max(v)` printed by `exp_nonpos`."""
    def rewrite(node: Node, emit: Callable[[Node], object]):
        if node.op == "exp" and is_minus_row_max(node.args[0], maxima):
            return exp_nonpos(emit(node.args[0]))
        return None
    return rewrite
