"""Buffer donation: which graph outputs may be written into the memory of a graph input.

The session asks for (input, output) pairs whose input buffer nothing outside the graph can read
after the step (a parameter, optimizer state, a running statistic updated in place). A pair is
granted only when the schedule proves that no read of the input's old value happens after the
output's write to an element it reads:
- every step after the writing kernel, and every extern, reads the input before that kernel or
  not at all;
- inside the writing kernel, members after the writer never read the input; the writer reads it
  only at the element it stores; an earlier member (sharing the outer loop) reads, at each outer
  position, only the elements the writer stores at that position. Without an outer loop the
  members run one after another over the whole tensor, so an earlier member may read anything.
A transpose, a flip, a shifted read or a later kernel still reading the old value keep the
output in its own buffer.
"""
from __future__ import annotations

import sympy

from .loopir import Buffer, ComputedBuffer, InputBuffer, Reduction, Scatter, StridedView
from .scheduler import (Kernel, Member, Schedule, _outer_vars, _ReadRecorder, extern_reads,
                        kernel_reads, member_index, member_reads, ranges_of, reads_of,
                        store_index)
from .sizevars import simplify_index


def grant(inputs: list, sched: Schedule, requests: tuple) -> dict[int, tuple[int, InputBuffer]]:
    """{output index: (input index, the input's buffer)} for the requests proven safe; marks
    each granted output buffer's `donor`."""
    granted: dict[int, tuple[int, InputBuffer]] = {}
    used: set[int] = set()
    schedule_reads = _ScheduleReads(sched)
    for j, k in requests:
        source, out = inputs[j], sched.outputs[k]
        if j in used or not isinstance(source, InputBuffer) or not _same_layout(source, out):
            continue
        if _outputs_alias(sched, source, out) or \
                not _reads_before_write(schedule_reads, source, out):
            continue
        out.donor = source
        granted[k] = (j, source)
        used.add(j)
    return granted


class _ScheduleReads:
    """What the schedule's steps and members read, found once: every request asks about the
    same steps, and an optimizer's step makes a request per parameter and state tensor (600
    requests evaluating every member's loads each took 96 s for 100 Linear layers' Adam step)."""

    def __init__(self, sched: Schedule):
        self.sched = sched
        self.writer_step: dict[int, int] = {}  # id(buffer) -> the first kernel storing it
        self.last_read: dict[int, int] = {}  # id(buffer) -> the last step reading it
        for i, step in enumerate(sched.steps):
            if isinstance(step, Kernel):
                for m in step.members:
                    self.writer_step.setdefault(id(m.buffer), i)
            for b in kernel_reads(step) if isinstance(step, Kernel) else extern_reads(step):
                self.last_read[id(b)] = i
        self._kernels: dict[int, dict] = {}

    def in_kernel(self, kernel: Kernel, outer_vars) -> dict[int, dict[int, list]]:
        """{id(buffer): {member position: [(inner vars, index) of each load of it]}}."""
        found = self._kernels.get(id(kernel))
        if found is None:
            found = self._kernels[id(kernel)] = {}
            for position, member in enumerate(kernel.members):
                for buf, index in _member_reads(member, outer_vars):
                    found.setdefault(id(buf), {}).setdefault(position, []).append(index)
        return found


def _same_layout(source: InputBuffer, out) -> bool:
    if not isinstance(out, ComputedBuffer) or out.donor is not None or out.dtype != source.dtype:
        return False
    pairs = [(out.offset, source.offset), (len(out.sizes), len(source.sizes))]
    pairs += list(zip(out.sizes, source.sizes)) + list(zip(out.strides, source.strides))
    return all(sympy.expand(sympy.sympify(a) - sympy.sympify(b)) == 0 for a, b in pairs)


def _outputs_alias(sched: Schedule, source: Buffer, out: Buffer) -> bool:
    """The input (or a view of it) is itself an output, or the output is returned twice."""
    seen = [o.base if isinstance(o, StridedView) else o for o in sched.outputs]
    return any(b is source for b in seen) or sum(b is out for b in seen) > 1


def _reads_before_write(schedule_reads: _ScheduleReads, source: Buffer, out: Buffer) -> bool:
    position = schedule_reads.writer_step.get(id(out))
    if position is None:
        return False
    if schedule_reads.last_read.get(id(source), -1) > position:
        return False  # a later step reads the old value
    kernel = schedule_reads.sched.steps[position]
    if any(b is source for b in kernel.extra_reads()):
        return False  # a matmul template's operand: other tiles read it at other elements
    return _in_kernel_reads_safe(schedule_reads, kernel, source, out)


def _in_kernel_reads_safe(schedule_reads: _ScheduleReads, kernel: Kernel, source: Buffer,
                          out: Buffer) -> bool:
    at, writer = next((i, m) for i, m in enumerate(kernel.members) if m.buffer is out)
    if writer.local or writer.across:  # an across member stores after the kernel's loop
        return False
    outer_vars = _outer_vars(len(kernel.outer))
    w_index, w_inner = member_index(writer, outer_vars, "i")
    ranges = ranges_of(kernel, writer, outer_vars, w_inner)
    written = simplify_index(store_index(writer, w_index), ranges)
    after = False
    readers = schedule_reads.in_kernel(kernel, outer_vars).get(id(source), {})
    for position in sorted({*readers, at}):  # only the writer and readers can refuse
        member, reads = kernel.members[position], readers.get(position, [])
        if after:
            if reads:
                return False
        elif member is writer:
            after = True
            if not _writer_reads_safe(writer, source, reads, written, ranges):
                return False
        elif reads and (member.across or kernel.outer and not _reads_own_rows(
                kernel, member, writer, reads, written, outer_vars)):
            return False
    return True


def _writer_reads_safe(writer: Member, source: Buffer, reads: list, written, ranges) -> bool:
    """The writer reads the input only at the element it stores, in the same iteration."""
    if isinstance(writer.node, Reduction):
        return not reads  # it stores per outer position after reading a whole range
    if isinstance(writer.node, Scatter):  # only the copy of the base may read it
        return _scatter_reads_base_only(writer, source, written, ranges)
    return all(simplify_index(index, ranges) == written for _, index in reads)


def _member_reads(member: Member, outer_vars) -> list:
    """(buffer, (inner vars, index)) for each load of the member."""
    reads, inner = member_reads(member, outer_vars, "r" if member.is_reduction else "i")
    return [(buf, (inner, idx)) for buf, idx in reads]


def _reads_own_rows(kernel: Kernel, member: Member, writer: Member, reads: list, written,
                    outer_vars) -> bool:
    """An earlier member reads exactly the elements the writer stores at the same outer
    position (its inner range, renamed to the writer's, is the writer's)."""
    if [sympy.sympify(s) for s in member.inner_sizes] != \
            [sympy.sympify(s) for s in writer.inner_sizes]:
        return False
    _, w_inner = member_index(writer, outer_vars, "i")
    for inner, index in reads:
        renamed = sympy.sympify(index).xreplace(dict(zip(inner, w_inner)))
        ranges = ranges_of(kernel, writer, outer_vars, w_inner)
        if simplify_index(renamed, ranges) != written:
            return False
    return True


def _scatter_reads_base_only(writer: Member, source: Buffer, written, ranges) -> bool:
    node: Scatter = writer.node
    index, _ = member_index(writer, [], "i")
    recorder = _ReadRecorder()
    node.base(recorder, index)
    base_reads = [(b, i) for b, i in recorder.reads if b is source]
    all_reads = [(b, i) for b, i in reads_of(node, index) if b is source]
    return len(base_reads) == len(all_reads) and \
        all(simplify_index(i, ranges) == written for _, i in base_reads)
