"""Matmul templates: an mm/addmm extern call and the pointwise computations that consume its
result (bias, activation, residual add) become one template kernel, whose epilogue computes
them on the product's tile while it is in registers.

A pass over the scheduler's output, for code generators that have a matmul template (Triton).
It runs only when templates are wanted (`templates_wanted`): forced by LAZYTRITON_MM_TEMPLATE=1,
or in autotune mode "max", where the template's configs compete at the kernel's first call with
the extern (aten's mm, cuBLAS on a GPU) followed by a separate epilogue kernel. Otherwise mm
stays an extern call, as it always was.

What joins the epilogue: Pointwise members of the kernels after the extern (up to the next
extern or scatter), over the product's [M, N] sizes (or a view splitting M), that read the
product (and each other) only at their own element and read nothing else computed since the
extern. They then run at the extern's place, earlier than before, which is safe because every
buffer is written once and they read only what exists there.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import sympy
import torch

from . import autotune
from .loopir import (Buffer, ExternBuffer, ExternKernel, Pointwise, Reduction, ScalarArg,
                     StridedView)
from .scheduler import Kernel, Member, Schedule, reads_of
from .sizevars import SizeVars, flat_index, index_symbol, product

aten = torch.ops.aten
MATMUL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
ENV = "LAZYTRITON_MM_TEMPLATE"  # "1": always the template; "0": never; unset: autotune decides


def templates_wanted() -> bool:
    """Whether mm calls become template kernels in graphs compiled from now on."""
    forced = os.environ.get(ENV)
    if forced in ("0", "1"):
        return forced == "1"
    return autotune.mode() == "max"


def forced() -> bool:
    """LAZYTRITON_MM_TEMPLATE=1: the template alone, no extern candidate (tests use this)."""
    return os.environ.get(ENV) == "1"


@dataclass(eq=False)
class MatmulTemplate:
    """out = beta * bias + alpha * (a @ b), computed by the template; `store_output`: the
    product itself is read after the template kernel (else only its epilogue's results are)."""
    extern: ExternKernel
    a: Buffer | StridedView
    b: Buffer | StridedView
    bias: Buffer | StridedView | None
    alpha: float | ScalarArg  # a Python float the op was called with is a graph input
    beta: float | ScalarArg
    store_output: bool = True
    rows: list | None = None  # the epilogue's x dims: [M], or sizes whose product is M

    @property
    def output(self) -> ExternBuffer:
        return self.extern.outputs[0]

    @property
    def op_name(self) -> str:
        return self.extern.op.__name__

    @property
    def sizes(self) -> list:
        """M, N, K."""
        return [self.output.sizes[0], self.output.sizes[1], self.a.sizes[1]]

    def operands(self) -> list[Buffer | StridedView]:
        return [t for t in (self.a, self.b, self.bias) if t is not None]

    def operand_buffers(self) -> list[Buffer]:
        return [t.base if isinstance(t, StridedView) else t for t in self.operands()]


@dataclass(eq=False)
class TemplateKernel(Kernel):
    """A scheduled kernel made from a template: the matmul, then its members as epilogue."""
    template: MatmulTemplate = None

    @property
    def origins(self) -> list[str]:
        return list(dict.fromkeys([self.template.op_name] + super().origins))

    def extra_reads(self) -> list[Buffer]:
        return self.template.operand_buffers()


def matmul_template(step: ExternKernel, sizevars: SizeVars) -> MatmulTemplate | None:
    """The template for an mm/addmm call the template can compute, else None."""
    args = dict(step.args)
    if step.op is aten.mm.default:
        a, b, bias, alpha, beta = args["self"], args["mat2"], None, 1, 0
    elif step.op is aten.addmm.default:
        a, b, bias = args["mat1"], args["mat2"], args["self"]
        alpha, beta = args.get("alpha", 1), args.get("beta", 1)
    else:
        return None
    out = step.outputs[0]
    if out is None or out.dtype not in MATMUL_DTYPES or len(out.sizes) != 2:
        return None
    if any(isinstance(v, bool) or not isinstance(v, (int, float, ScalarArg))
           or (isinstance(v, ScalarArg) and v.dtype == torch.bool) for v in (alpha, beta)):
        return None
    tensors = [a, b] + ([bias] if bias is not None else [])
    if any(not isinstance(t, (Buffer, StridedView)) or t.dtype != out.dtype for t in tensors):
        return None
    if a.ndim != 2 or b.ndim != 2 or (bias is not None and bias.ndim > 2):
        return None
    if any(sizevars.evaluate(s) == 0 for s in [*out.sizes, a.sizes[1]]):
        return None
    return MatmulTemplate(step, a, b, bias if beta != 0 else None, alpha, beta)


def fuse_matmul_templates(sched: Schedule, sizevars: SizeVars) -> Schedule:
    """Each mm/addmm the template can compute becomes a TemplateKernel with its epilogue."""
    steps = list(sched.steps)
    result = []
    number = 0
    for i, step in enumerate(steps):
        template = matmul_template(step, sizevars) if isinstance(step, ExternKernel) else None
        if template is None:
            result.append(step)
            continue
        kernel = TemplateKernel(f"template{number}", list(template.output.sizes),
                                template=template)
        number += 1
        kernel.members = _take_epilogue(_later_kernels(steps, i), template)
        result.append(kernel)
    result = [s for s in result if not isinstance(s, Kernel) or s.members
              or isinstance(s, TemplateKernel)]
    for kernel in result:
        if isinstance(kernel, TemplateKernel):
            kernel.template.store_output = _read_elsewhere(kernel, result, sched.outputs)
    return Schedule(result, sched.outputs)


# how many kernels after an extern may give its template members (as the scheduler's own
# horizontal fusion looks back a bounded number of kernels)
EPILOGUE_KERNELS = 8


def _later_kernels(steps: list, i: int) -> list[Kernel]:
    """The kernels after step i, up to the next extern call or scatter (a barrier)."""
    found = []
    for step in steps[i + 1:i + 1 + EPILOGUE_KERNELS]:
        if not isinstance(step, Kernel) or isinstance(step, TemplateKernel) or \
                any(not isinstance(m.node, (Pointwise, Reduction)) for m in step.members):
            break
        found.append(step)
    return found


def _take_epilogue(kernels: list[Kernel], template: MatmulTemplate) -> list[Member]:
    """Move the members of these kernels that can be the template's epilogue out of them: they
    cover the product's [M, N] (or a view of it that splits M: [B, T, N] of a linear layer on
    a batch of sequences; template.rows says how) and read nothing computed since the extern
    but the product and members moved before them. So a ReLU after a linear joins it, and in
    a training step the optimizer's update of a weight joins the mm of its gradient."""
    out = template.output
    pulled: dict[str, Buffer] = {out.name: out}
    staying: set[str] = set()  # computed since the extern, where they are
    taken = []
    for kernel in kernels:
        staying |= {m.buffer.name for m in kernel.members}
        for m in kernel.members:
            rows = template.rows or _rows_of(m.node, out.sizes)
            if rows is not None and _fits_epilogue(m, rows, out, pulled, staying):
                template.rows = rows
                taken.append(Member(m.buffer, len(rows)))
                pulled[m.buffer.name] = m.buffer
                staying.discard(m.buffer.name)
        kernel.members = [m for m in kernel.members if m.buffer.name not in pulled]
    template.rows = template.rows or [out.sizes[0]]
    return taken


def _rows_of(node, sizes: list) -> list | None:
    """The node's leading sizes if they split the product's M and its last is N."""
    if not isinstance(node, Pointwise) or len(node.sizes) < 2:
        return None
    m, n = sizes
    if sympy.expand(node.sizes[-1] - n) != 0 or \
            sympy.expand(product(node.sizes[:-1]) - m) != 0:
        return None
    return list(node.sizes[:-1])


def epilogue_index(rows: list) -> tuple[list, sympy.Expr, sympy.Symbol]:
    """An epilogue member's index (x0, x1, ..., r0), the product's row (M index) in those
    x vars, and r0."""
    xs = [index_symbol("x", k) for k in range(len(rows))]
    row = sympy.Integer(0)
    for var, size in zip(xs, rows):
        row = row * size + var
    r = index_symbol("r", 0)
    return xs + [r], sympy.expand(row), r


def _fits_epilogue(m: Member, rows: list, out: Buffer, pulled: dict[str, Buffer],
                   staying: set) -> bool:
    node = m.node
    if not isinstance(node, Pointwise) or len(node.sizes) != len(rows) + 1 or \
            any(sympy.expand(a - b) != 0 for a, b in zip(node.sizes, rows)):
        return False
    if _rows_of(node, out.sizes) is None:
        return False
    index, row, r = epilogue_index(rows)
    for buf, read in reads_of(node, index):
        if buf.name in pulled:
            own = flat_index([row, r] if buf is out else index, buf.strides, buf.offset)
            if sympy.expand(read - own) != 0:
                return False  # another element of the tile: not in this lane's registers
        elif buf.name in staying:
            return False  # computed later in the kernel it came from
    return True


def _read_elsewhere(kernel: TemplateKernel, steps: list, outputs: list) -> bool:
    """Whether anything but the template's own epilogue reads the product."""
    from .scheduler import extern_reads, kernel_reads
    out = kernel.template.output
    if any(o is out or getattr(o, "base", None) is out for o in outputs):
        return True
    for step in steps:
        if step is kernel:
            continue
        reads = kernel_reads(step) if isinstance(step, Kernel) else extern_reads(step)
        if any(buf is out for buf in reads):
            return True
    return False
