"""Looking at what is pending: the IR that computing some tensors would run."""
from __future__ import annotations

import torch

from .graph import build_graph, to_dot, to_text
from .runtime import session
from .tensor import LazyTensor, value_of


def dump_ir(tensors: list[torch.Tensor], ir_format: str = "text") -> str:
    """The pending IR of `tensors` (torch._lazy's signature): "text" (one node per line),
    "backend" (the source the current backend would generate for it: C++ kernels for "cpp"),
    "dot" (Graphviz) or "loops" (the fused loop nests, externs between them)."""
    graph = build_graph(_values(tensors))
    if ir_format == "text":
        return to_text(graph)
    if ir_format == "backend":
        return session.current().backend.source(graph)
    if ir_format == "dot":
        return to_dot(graph)
    if ir_format == "loops":
        return loop_nests(graph)
    raise ValueError(f"dump_ir format must be 'text', 'backend', 'dot' or 'loops', "
                     f"not {ir_format!r}")


def render_ir_graph(tensors: list[torch.Tensor]) -> str:
    """The pending IR of `tensors` as a Graphviz dot graph (torch._lazy.debug's name)."""
    return to_dot(build_graph(_values(tensors)))


def _values(tensors: list[torch.Tensor]) -> list:
    values = []
    for t in tensors:
        if not isinstance(t, LazyTensor):
            raise TypeError(f"dump_ir takes lazy tensors, got a tensor on {t.device}")
        values.append(value_of(t))
    return values


def loop_nests(graph) -> str:
    """The scheduled kernels of a graph, one block per kernel or extern call."""
    from .codegen.cpp import CTYPE
    from .lowering import Lowering
    from .runtime.kernel_backend import lowering_extern_reads
    from .scheduler import Kernel, schedule
    lowering = Lowering(graph, kernel_dtypes=CTYPE)
    outputs = lowering.outputs()
    lines = []
    sched = schedule(lowering.steps, outputs, lowering_extern_reads(lowering),
                     outer_reductions=True)  # as the C++ backend schedules
    for step in sched.steps:
        if not isinstance(step, Kernel):
            lines.append(f"extern {getattr(step.op, '__name__', step.op)}")
            continue
        outer = ", ".join(str(s) for s in step.outer) or "-"
        lines.append(f"{step.name}: parallel over [{outer}]  fuses {sorted(set(step.origins))}")
        for m in step.members:
            where = "register" if m.local else m.buffer.name
            lines.append(f"    {_member_kind(m)} -> {where} {[str(s) for s in m.node.sizes]}")
    return "\n".join(lines) + "\n"


def _member_kind(m) -> str:
    from .loopir import Scatter
    node = m.node
    if m.is_reduction:
        over = " (the outer loop: per-thread partials)" if m.across else ""
        return f"reduce {node.reduction_type} over {[str(s) for s in node.reduction_sizes]}{over}"
    if isinstance(node, Scatter):
        ordered = [str(s) for s, o in zip(node.src_sizes, node.ordered) if o]
        return (f"copy, then {'accumulate' if node.accumulate else 'write'} over "
                f"{[str(s) for s in node.src_sizes]} (in order over {ordered})")
    return f"loop over {[str(s) for s in m.inner_sizes]}"
