"""Which of a C++ kernel's pointwise members share one loop, and which of their dims merge.

- **Shared loops.** Consecutive pointwise members over the same inner sizes (an optimizer's
  updates of one parameter: the state, then the parameter) run in one loop with several stores
  instead of one loop each, which re-read what the previous one wrote. That is safe when every
  access to a buffer the group writes is at the index it is written: each iteration then reads
  what the separate loops would have read (earlier members' new values, later members' old).
- **Merged dims.** When all members are pointwise over one iteration space and every index the
  kernel computes (loads, stores, random offsets, index values) is linear in two adjacent dims
  with the outer one's coefficient `size(inner) * coefficient(inner)`, the two dims are one
  loop: a contiguous NCHW relu is `x[i]` over N*C*H*W instead of four loops whose innermost
  (W = 26) is too short to vectorize well. Loads through masks or indirection are not merged.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy

from lazytriton.loopir import Scatter
from lazytriton.scheduler import Kernel, Member, member_index, store_index
from lazytriton.sizevars import product, same_sizes


class _NotAffine(Exception):
    """The member computes an index this module does not follow (masked or indirect loads)."""


class _IndexRecorder:
    """An ops handler that computes nothing and records every index expression."""

    def __init__(self):
        self.loads: list[tuple[str, sympy.Expr]] = []
        self.other: list[sympy.Expr] = []  # index values and random offsets

    def load(self, buf, index):
        self.loads.append((buf.name, sympy.expand(index)))

    def index_expr(self, expr, dtype):
        self.other.append(sympy.expand(expr))

    def rand(self, seed, offset):
        self.other.append(sympy.expand(offset))

    randn = rand

    def masked(self, cond, body, other):
        raise _NotAffine("masked")

    def indirect(self, var, size, negative_wraps=True):
        raise _NotAffine("indirect")

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


@dataclass
class Accesses:
    loads: list[tuple[str, sympy.Expr]]  # (buffer name, flat index)
    stores: list[tuple[str, sympy.Expr]]
    other: list[sympy.Expr]

    def exprs(self) -> list[sympy.Expr]:
        return [e for _, e in self.loads] + [e for _, e in self.stores] + self.other


def _pointwise(member: Member) -> bool:
    return not member.is_reduction and not member.local and not isinstance(member.node, Scatter)


def accesses(members: list[Member], index_of) -> Accesses | None:
    """What the members read and write at the index `index_of(member)` gives each; None when
    one of them computes an index we cannot follow."""
    recorder = _IndexRecorder()
    stores = []
    try:
        for m in members:
            index = index_of(m)
            m.node.inner(recorder, index)
            written = sympy.expand(store_index(m, index))
            stores.append((m.buffer.name, written))
            donor = getattr(m.buffer, "donor", None)  # written into an input's memory:
            if donor is not None:  # reads of that input are reads of what it writes
                stores.append((donor.name, written))
    except _NotAffine:
        return None
    return Accesses(recorder.loads, stores, recorder.other)


def elementwise_safe(found: Accesses) -> bool:
    """Every access to a buffer the members write is at the index it is written (and no
    buffer is written twice): one loop computes what separate loops would."""
    written = dict(found.stores)
    if len(written) != len(found.stores):
        return False
    return all(written[name] - index == 0 for name, index in found.loads if name in written)


def shared_loop_groups(members: list[Member], outer_vars, prefix_of) -> list[list[Member]]:
    """Consecutive members in runs that can share one inner loop (runs of one included). A
    run's accesses grow member by member, not found again for each candidate: an optimizer's
    kernel over hundreds of tensors is one long run."""
    groups: list[list[Member]] = []
    found: list[Accesses | None] = []  # per group: what its members access (None: unknown)
    for m in members:
        last = groups[-1] if groups else None
        if last and found[-1] is not None and _pointwise(m) and all(_pointwise(g) for g in last) \
                and m.inner_sizes and same_sizes(m.inner_sizes, last[0].inner_sizes):
            joined = _joined(found[-1], _accesses_of(m, outer_vars, prefix_of(last[0])))
            if joined is not None and elementwise_safe(joined):
                last.append(m)
                found[-1] = joined
                continue
        groups.append([m])
        found.append(_accesses_of(m, outer_vars, prefix_of(m)) if _pointwise(m) else None)
    return groups


def _accesses_of(member: Member, outer_vars, prefix: str) -> Accesses | None:
    return accesses([member], lambda m: member_index(m, outer_vars, prefix)[0])


def _joined(a: Accesses, b: Accesses | None) -> Accesses | None:
    """The accesses of two runs of members, one after the other."""
    if b is None:
        return None
    return Accesses(a.loads + b.loads, a.stores + b.stores, a.other + b.other)


@dataclass
class FlatLoop:
    """Loops over the kernel's first `keep` outer dims, then one loop over `size` elements of
    `var`, which stands for the merged dims: `subs` maps their variables to it."""
    keep: int
    var: sympy.Symbol
    size: sympy.Expr
    subs: dict


def group_loop(group: list[Member], outer_vars, prefix: str) -> FlatLoop | None:
    """A shared loop's inner dims as one loop, when they all merge (a weight's update over
    its rows and columns, in a kernel with no outer loop), or None."""
    inner_vars = member_index(group[0], outer_vars, prefix)[1]
    dims = [(v, s) for v, s in zip(inner_vars, group[0].inner_sizes) if s != 1]
    if len(dims) < 2 or not all(_pointwise(m) for m in group):
        return None
    found = accesses(group, lambda m: member_index(m, outer_vars, prefix)[0])
    if found is None or not elementwise_safe(found):
        return None
    if _merge_start(dims, found.exprs(), set(outer_vars) | set(inner_vars)) != 0:
        return None
    return _merged(dims, 0)


def flat_loop(kernel: Kernel, outer_vars, prefix: str) -> FlatLoop | None:
    """How the kernel's trailing dims merge into one loop, or None (fewer than two merge, a
    member is not pointwise, members differ in sizes, or an access is not elementwise)."""
    members = kernel.members
    if not members or not all(_pointwise(m) for m in members):
        return None
    inner = members[0].inner_sizes
    if not all(same_sizes(m.inner_sizes, inner) for m in members):
        return None
    inner_vars = member_index(members[0], outer_vars, prefix)[1]
    dims = [(v, s) for v, s in zip(list(outer_vars) + inner_vars, list(kernel.outer) + inner)
            if s != 1]
    if len(dims) < 2:
        return None
    found = accesses(members, lambda m: member_index(m, outer_vars, prefix)[0])
    if found is None or not elementwise_safe(found):
        return None
    first = _merge_start(dims, found.exprs(), {v for v, _ in dims})
    if len(dims) - first < 2 or first > len(kernel.outer):
        return None  # the merged dims must take in every inner dim
    return _merged(dims, first)


def _merged(dims, first: int) -> FlatLoop:
    var = sympy.Symbol("y0", integer=True, nonnegative=True)
    merged = dims[first:]
    subs = {v: sympy.Integer(0) for v, _ in merged[:-1]}
    subs[merged[-1][0]] = var
    return FlatLoop(first, var, product([s for _, s in merged]), subs)


def _merge_start(dims, exprs, loop_vars=None) -> int:
    """The first dim of the longest suffix of dims that every expression addresses as one;
    `loop_vars`: every loop variable (a coefficient must name none)."""
    last_var = dims[-1][0]
    loop_vars = loop_vars or {v for v, _ in dims}
    if not all(_linear_in(e, last_var, loop_vars) for e in exprs):
        return len(dims)
    unit = [e.coeff(last_var) for e in exprs]
    span = sympy.sympify(dims[-1][1])
    start = len(dims) - 1
    while start > 0:
        var, size = dims[start - 1]
        if not all(_linear_in(e, var, loop_vars) and
                   sympy.expand(e.coeff(var) - span * u) == 0 for e, u in zip(exprs, unit)):
            break
        span *= size
        start -= 1
    return start


def _linear_in(expr: sympy.Expr, var, loop_vars) -> bool:
    """expr = c * var + rest, with c free of every loop variable and rest free of var."""
    if not expr.is_polynomial(var):
        return False
    coeff = expr.coeff(var)
    return not (coeff.free_symbols & loop_vars) and \
        var not in sympy.expand(expr - coeff * var).free_symbols
