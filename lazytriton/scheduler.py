"""The scheduler: realized computations grouped into kernels, each a fused loop nest.

A kernel has one parallel outer loop nest; its members run one after another inside it, each
with its own inner loops: a reduction over its reduced dims, a pointwise computation over its
remaining dims. A whole softmax (max, sum of exp, output) is one kernel: three members sharing
the row loop. A computation joins the current kernel when its outer sizes match and it reads
earlier members only at its own outer position (checked on the index expressions). A scatter
is a kernel of its own: a copy of its base, then its writes. A reduction
read only inside its kernel never touches memory: it stays in a register. A reduction over a
kernel's outer loop may join it as an across member (per-thread partials, on a backend that
prints them): a layer norm's weight and bias gradients in the kernel of its input gradient.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import sympy
import torch

from .loopir import (Buffer, ComputedBuffer, ExternKernel, InputBuffer, Pointwise, Reduction,
                     Scatter, StridedView, collecting_origins)
from .sizevars import flat_index, index_symbol, product, same_sizes, simplify_index


@dataclass(eq=False)
class Member:
    buffer: ComputedBuffer
    outer_dims: int  # the first `outer_dims` dims of the node's sizes are the kernel's outer
    local: bool = False  # a reduction kept in a register
    # a reduction over the kernel's outer loop (a column sum in a kernel over rows): its kept
    # dims are its inner loop, each thread accumulates partials there, combined after the loop
    across: bool = False

    @property
    def node(self) -> Pointwise | Reduction:
        return self.buffer.node

    @property
    def is_reduction(self) -> bool:
        return isinstance(self.node, Reduction)

    @cached_property
    def origins(self) -> list[str]:
        """The aten ops this member's loops compute: its own, and those of the computations it
        inlines (deepest first) -- not those of the buffers it loads."""
        node = self.node
        index = _outer_vars(len(node.sizes))
        rindex = [index_symbol("r", k) for k in range(len(node.reduction_sizes))] \
            if isinstance(node, Reduction) else None
        with collecting_origins() as inlined:
            reads_of(node, index, rindex)
        return list(dict.fromkeys(inlined + node.origins))

    @property
    def inner_sizes(self) -> list:
        node = self.node
        if self.across:
            return list(node.sizes)
        if isinstance(node, Reduction):
            return list(node.reduction_sizes)
        return list(node.sizes[self.outer_dims:])


@dataclass(eq=False)
class Kernel:
    name: str
    outer: list  # outer loop sizes (dims of size 1 dropped)
    members: list[Member] = field(default_factory=list)

    @property
    def origins(self) -> list[str]:
        return list(dict.fromkeys(o for m in self.members for o in m.origins))

    def extra_reads(self) -> list[Buffer]:
        """Buffers it reads besides its members' loads (a template kernel's operands)."""
        return []


@dataclass
class Schedule:
    steps: list  # Kernel | ExternKernel, in execution order
    outputs: list  # the graph's outputs (Buffer or StridedView)


class _ReadRecorder:
    """An ops handler that computes nothing and records every load."""

    def __init__(self):
        self.reads: list[tuple[Buffer, sympy.Expr]] = []
        self._indirect = 0

    def load(self, buf, index):
        self.reads.append((buf, index))
        return None

    def indirect(self, var, size, negative_wraps=True):
        self._indirect += 1
        return sympy.Symbol(f"indirect{self._indirect}", integer=True, nonnegative=True)

    def masked(self, cond, body, other):
        return body()

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def reads_of(node, index, rindex=None) -> list[tuple[Buffer, sympy.Expr]]:
    recorder = _ReadRecorder()
    if isinstance(node, Reduction):
        node.inner(recorder, index, rindex)
    elif isinstance(node, Scatter):
        node.base(recorder, index)
        src_index = [index_symbol("w", k) for k in range(len(node.src_sizes))]
        node.target(recorder, src_index)
        node.value(recorder, src_index)
    else:
        node.inner(recorder, index)
    return recorder.reads


def _nonone(sizes) -> list:
    return [s for s in sizes if s != 1]


def _outer_vars(n: int) -> list[sympy.Symbol]:
    return [index_symbol("x", k) for k in range(n)]


def member_index(member: Member, outer_vars: list, inner_prefix: str):
    """The member's index (per dim of its sizes) from the kernel's outer vars and its own
    inner vars; dims of size 1 are 0."""
    node = member.node
    sizes = node.sizes
    if member.across:  # its kept dims are its inner loop; across_rindex gives its reduced ones
        inner_vars = [index_symbol(inner_prefix, k) for k in range(len(sizes))]
        return [sympy.Integer(0) if s == 1 else v for s, v in zip(sizes, inner_vars)], inner_vars
    outer_iter = iter(outer_vars)
    index = []
    for d, s in enumerate(sizes[:member.outer_dims] if not member.is_reduction else sizes):
        index.append(sympy.Integer(0) if s == 1 else next(outer_iter))
    inner_vars = [index_symbol(inner_prefix, k) for k in range(len(member.inner_sizes))]
    if member.is_reduction:
        return index, inner_vars
    index += [sympy.Integer(0) if s == 1 else v for s, v in zip(member.inner_sizes, inner_vars)]
    return index, inner_vars


def across_rindex(member: Member, outer_vars) -> list:
    """An across member's reduced dims: the kernel's outer vars (dims of size 1 are 0)."""
    outer_iter = iter(outer_vars)
    return [sympy.Integer(0) if s == 1 else next(outer_iter) for s in member.node.reduction_sizes]


def member_reads(member: Member, outer_vars, prefix: str) -> tuple[list, list]:
    """(buffer, index) for each load of the member at the kernel's outer position, and the
    member's own inner loop vars the indices use."""
    index, inner = member_index(member, outer_vars, prefix)
    if member.across:
        return reads_of(member.node, index, across_rindex(member, outer_vars)), inner
    if member.is_reduction:
        return reads_of(member.node, index, inner), inner
    return reads_of(member.node, index), inner


def ranges_of(kernel: Kernel, member: Member, outer_vars, inner_vars) -> dict:
    ranges = dict(zip(outer_vars, kernel.outer))
    ranges.update(zip(inner_vars, member.inner_sizes))
    return ranges


def store_index(member: Member, index) -> sympy.Expr:
    buf = member.buffer
    return flat_index(index, buf.strides, buf.offset)


def _split_for(node, outer: list) -> int | None:
    """How many leading dims of `node` form `outer` (ignoring size-1 dims), or None."""
    if isinstance(node, Reduction):
        return len(node.sizes) if _nonone(node.sizes) == outer else None
    for k in range(len(node.sizes), -1, -1):
        if _nonone(node.sizes[:k]) == outer:
            return k
    return None


def _start_kernel(buf: ComputedBuffer, name: str) -> Kernel:
    node = buf.node
    if isinstance(node, Reduction):
        outer_dims = len(node.sizes)
    else:
        outer_dims = max(len(node.sizes) - 1, 0) if len(node.sizes) > 1 else len(node.sizes)
    kernel = Kernel(name, _nonone(node.sizes[:outer_dims]))
    kernel.members.append(Member(buf, outer_dims))
    return kernel


def _row_local(kernel: Kernel, candidate: Member) -> bool:
    """True if the candidate reads earlier members only at its own outer position."""
    produced = {id(m.buffer): m for m in kernel.members}
    outer_vars = _outer_vars(len(kernel.outer))
    reads, inner = member_reads(candidate, outer_vars, "r" if candidate.is_reduction else "i")
    ranges = ranges_of(kernel, candidate, outer_vars, inner)
    for buf, read in reads:
        producer = produced.get(id(buf))
        if producer is None:
            continue
        if producer.across:
            return False  # its result is complete only after the kernel's loop
        p_index, p_inner = member_index(producer, outer_vars, "p")
        written = store_index(producer, p_index)
        read = simplify_index(read, ranges)
        if not _same_outer_part(read, written, outer_vars, set(inner), set(p_inner)):
            return False
        if producer.is_reduction and read.free_symbols & set(inner):
            return False  # a reduction result is one value per outer position
    return True


def _same_outer_part(a, b, outer_vars, a_inner, b_inner) -> bool:
    a, b = sympy.expand(a), sympy.expand(b)
    for v in outer_vars:
        if sympy.expand(a.coeff(v) - b.coeff(v)) != 0:
            return False
    rest_a = sympy.expand(a - sum(a.coeff(v) * v for v in outer_vars))
    rest_b = sympy.expand(b - sum(b.coeff(v) * v for v in outer_vars))
    if (rest_a.free_symbols | rest_b.free_symbols) & set(outer_vars):
        return False
    return not (rest_a.free_symbols & b_inner) and not (rest_b.free_symbols & a_inner)


def schedule(steps: list, outputs: list, extern_reads: set[int],
             parallel_inner: bool = True, outer_reductions: bool = False) -> Schedule:
    """Group computations into kernels; externs run between them, and a computation that
    reads no result of an extern may join a kernel before it.
    `parallel_inner`: the backend runs a kernel's inner loops in parallel when it has no outer
    loop (C++/OpenMP does; a Triton kernel without an outer range is one program, so there a
    pointwise loop does not join a whole-tensor reduction). `outer_reductions`: the backend
    prints across members (per-thread partials over the outer loop: C++ does)."""
    result: list = []
    segment: list = []  # the kernels and externs since the last scatter, in order
    names = iter(f"kernel{k}" for k in range(10**6))
    for step in steps:
        if isinstance(step, ExternKernel):
            segment.append(step)  # what reads none of its outputs may join a kernel before it
            result.append(step)
            continue
        if isinstance(step.node, Scatter):  # two phases of its own: nothing fuses with it
            segment = []
            result.append(Kernel(next(names), [], [Member(step, 0)]))
            continue
        if not _join(segment, step, parallel_inner, outer_reductions):
            segment.append(_start_kernel(step, next(names)))
            result.append(segment[-1])
    result = _split_large(_drop_unread(result, outputs, extern_reads))
    for kernel in result:
        if isinstance(kernel, Kernel) and len(kernel.members) > 2:
            kernel.members = _clustered(kernel.members)
    _keep_local_reductions(result, outputs, extern_reads)
    return Schedule(result, outputs)


def _split_large(steps: list) -> list:
    """Kernels of more than MAX_MEMBERS members split in place, then every kernel renamed in
    order (only where one split, so that other graphs keep their kernels' names)."""
    result = []
    for step in steps:
        big = isinstance(step, Kernel) and len(step.members) > MAX_MEMBERS
        result.extend(_split_kernel(step) if big else [step])
    if len(result) > len(steps):
        for k, kernel in enumerate(s for s in result if isinstance(s, Kernel)):
            kernel.name = f"kernel{k}"
    return result


def _split_kernel(kernel: Kernel) -> list[Kernel]:
    """The kernel's members in groups of at most MAX_MEMBERS, each holding whole chains of
    members that read one another (one parameter's optimizer update, its intermediates in
    registers): chains read nothing of each other, so the groups may run in any order. A
    chain longer than the cap is cut in pieces run in its order, the results of one piece
    read from memory by the next."""
    members = kernel.members
    chain = list(range(len(members)))  # union-find over members: a read joins two chains

    def root(i: int) -> int:
        while chain[i] != i:
            chain[i] = chain[chain[i]]
            i = chain[i]
        return i
    position = {id(m.buffer): i for i, m in enumerate(members)}
    for j, m in enumerate(members):
        for buf, _ in _all_reads(m.buffer):
            i = position.get(id(getattr(buf, "base", buf)))
            if i is not None:
                chain[root(j)] = root(i)
    chains: dict[int, list[int]] = {}
    for i in range(len(members)):
        chains.setdefault(root(i), []).append(i)
    groups: list[list[int]] = [[]]
    for indices in chains.values():
        if groups[-1] and len(groups[-1]) + len(indices) > MAX_MEMBERS:
            groups.append([])  # a chain that fits a group stays whole
        for i in indices:  # one that does not is cut where each group fills
            if len(groups[-1]) == MAX_MEMBERS:
                groups.append([])
            groups[-1].append(i)
    return [Kernel(kernel.name, list(kernel.outer), [members[i] for i in sorted(group)])
            for group in groups]


def _clustered(members: list[Member]) -> list[Member]:
    """The members, with pointwise ones over the same inner sizes moved next to each other
    where no dependence stands in between, so that they can share one loop (codegen's
    shared_loop_groups joins consecutive ones only). A foreach optimizer traces each arithmetic
    step for every parameter in turn, so one parameter's updates arrive interleaved with the
    others': left in that order, each would be its own pass over the parameter. A member moves
    ahead of the ones it skips only if it reads none of their results (each member writes a
    buffer of its own; donation is decided on the order made here)."""
    reads = [{id(getattr(b, "base", b)) for b, _ in _all_reads(m.buffer)} for m in members]
    remaining = list(range(len(members)))
    order: list[int] = []
    while remaining:
        first = remaining.pop(0)
        order.append(first)
        if not _loop_member(members[first]):
            continue
        skipped: set[int] = set()
        for j in list(remaining):
            m = members[j]
            if _loop_member(m) and same_sizes(m.inner_sizes, members[first].inner_sizes) \
                    and not reads[j] & skipped:
                order.append(j)
                remaining.remove(j)
            else:
                skipped.add(id(m.buffer))
    return [members[i] for i in order]


def _loop_member(m: Member) -> bool:
    return not m.is_reduction and not isinstance(m.node, Scatter) and bool(m.inner_sizes)


# how many earlier kernels of the same outer size a computation may try to join
_HORIZONTAL_CANDIDATES = 8

# members of one kernel, at most. Horizontal fusion would otherwise put every same-sized
# parameter's optimizer update into one kernel: a model with hundreds of them got one loop body
# of hundreds of statements over as many pointers, which compilers take minutes over (80 Adam
# parameters: g++ 34 s a graph, 15 s capped; a Triton kernel of 160 for sm_90: 59 s, 965
# arguments), for no gain at run time: each member streams its own tensors anyway.
MAX_MEMBERS = 32


def _join(segment: list, step: ComputedBuffer, parallel_inner: bool,
          outer_reductions: bool = False) -> bool:
    """Add `step` to the latest kernel of the segment it can run in: same outer loop, reading
    that kernel's members only at its own outer position, and reading nothing a later kernel
    or extern computes (it moves up to there: a bias gradient's sum runs before the weight
    gradient's matmul, in the kernel of the activation's backward it sums). So a parameter's
    optimizer updates, traced interleaved with other parameters' (foreach), share one kernel:
    horizontal fusion. With
    `outer_reductions`, a reduction over a kernel's outer loop joins it as an across member:
    a layer norm's weight and bias gradients (sums over its rows) read the rows the input
    gradient's kernel has just read, instead of reading them again from memory."""
    if not segment:
        return False
    reads = {id(buf) for buf, _ in _all_reads(step)}
    tried = 0
    for position in range(len(segment) - 1, -1, -1):
        kernel = segment[position]
        if isinstance(kernel, ExternKernel):
            if any(id(out) in reads for out in kernel.outputs):
                return False  # `step` needs the extern's result: it runs after it
            if any(isinstance(b, InputBuffer) and id(b) in reads for b in extern_reads(kernel)):
                return False  # an update of an input the extern reads stays after it, so
            continue  # that it may still be written in place (donation.py)
        split = _split_for(step.node, kernel.outer)
        serial = not (parallel_inner or kernel.outer or isinstance(step.node, Reduction)
                      or all(s == 1 for s in step.node.sizes))
        member = Member(step, split) if split is not None and not serial else \
            _across_member(kernel, step) if outer_reductions else None
        if member is not None:
            if _row_local(kernel, member):
                kernel.members.append(member)
                return True
            tried += 1
        if tried >= _HORIZONTAL_CANDIDATES:
            return False
        if any(id(m.buffer) in reads for m in kernel.members):
            return False  # `step` needs this kernel's result: it cannot run before it
    return False


# an across member's outputs, at most: each thread keeps a partial of every one
_ACROSS_MAX_OUTPUTS = 1 << 16
_ACROSS_REDUCTIONS = ("sum", "prod", "max", "min")


def _across_member(kernel: Kernel, step: ComputedBuffer) -> Member | None:
    """`step` as a member reducing over `kernel`'s outer loop, where that pays: a reduction
    whose reduced dims are the outer loop's, over few enough outputs that every thread keeps
    partials of them all, reading contiguously along its inner loop (a kernel of its own
    vectorizes a column sum as well; here it must do no worse)."""
    node = step.node
    if not (kernel.outer and isinstance(node, Reduction)
            and node.reduction_type in _ACROSS_REDUCTIONS and node.src_dtype != torch.bool
            and same_sizes(_nonone(node.reduction_sizes), kernel.outer)):
        return None
    outputs = product(node.sizes)
    if not (outputs.is_Integer and 0 < int(outputs) <= _ACROSS_MAX_OUTPUTS):
        return None
    member = Member(step, 0, across=True)
    reads, inner = member_reads(member, _outer_vars(len(kernel.outer)), "i")
    loop_vars = [v for v, s in zip(inner, node.sizes) if s != 1]
    if not loop_vars:
        return member
    last = loop_vars[-1]
    for _, index in reads:
        index = sympy.expand(index)
        if index.free_symbols & set(loop_vars) and index.coeff(last) != 1:
            return None
    return member


def _all_reads(buf: ComputedBuffer) -> list[tuple[Buffer, sympy.Expr]]:
    node = buf.node
    index = [index_symbol("y", k) for k in range(len(node.sizes))]
    if isinstance(node, Reduction):
        rindex = [index_symbol("q", k) for k in range(len(node.reduction_sizes))]
        return reads_of(node, index, rindex)
    return reads_of(node, index)


def _drop_unread(steps: list, outputs: list, extern_reads: set[int]) -> list:
    """Drop computations nothing reads (e.g. a loss whose gradient alone is used), and the
    kernels left empty."""
    wanted = {id(o) for o in outputs} | {id(getattr(o, "base", None)) for o in outputs}
    wanted |= extern_reads
    while True:
        kernels = [s for s in steps if isinstance(s, Kernel)]
        read = wanted | {id(buf) for k in kernels for buf in kernel_reads(k)}
        changed = False
        for kernel in kernels:
            alive = [m for m in kernel.members if id(m.buffer) in read]
            changed |= len(alive) < len(kernel.members)
            kernel.members = alive
        steps = [s for s in steps if not isinstance(s, Kernel) or s.members]
        if not changed:
            return steps


def kernel_reads(kernel: Kernel) -> list[Buffer]:
    """Every buffer the kernel's members load from."""
    found = []
    outer_vars = _outer_vars(len(kernel.outer))
    for m in kernel.members:
        found += [buf for buf, _ in member_reads(m, outer_vars, "r")[0]]
    return found + kernel.extra_reads()


def extern_reads(kernel: ExternKernel) -> list[Buffer]:
    """The buffers an extern call reads (a strided view reads its base)."""
    found = []
    for _, value in kernel.args:
        for t in (value if isinstance(value, (list, tuple)) else [value]):
            if isinstance(t, StridedView):
                found.append(t.base)
            elif isinstance(t, Buffer):
                found.append(t)
    return found


def _keep_local_reductions(steps: list, outputs: list, extern_reads: set[int]) -> None:
    readers: dict[int, set[int]] = {}
    for kernel in (s for s in steps if isinstance(s, Kernel)):
        for buf in kernel_reads(kernel):
            readers.setdefault(id(buf), set()).add(id(kernel))
    out_ids = {id(o) for o in outputs} | {id(getattr(o, "base", None)) for o in outputs}
    for kernel in (s for s in steps if isinstance(s, Kernel)):
        for m in kernel.members:
            b = id(m.buffer)
            if m.is_reduction and not m.across and b not in out_ids and b not in extern_reads and \
                    readers.get(b, set()) <= {id(kernel)}:
                m.local = True
