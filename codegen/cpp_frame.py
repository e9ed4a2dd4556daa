"""Cheap execution of a C++ graph: a memory plan and segments.

- **Memory plan.** Every intermediate a kernel writes (not an output, not kept in a register)
  lives in the arena at an offset that is a symbolic expression of the graph's sizes; a
  buffer's block is reused by a later one that fits once its last reader has run. The arena
  is one block of memory the backend's programs share (runtime/cpp_backend.py: they run one
  at a time), grown only when a call needs more, so a step allocates only the buffers it
  returns.
- **Segments.** The kernels between two extern calls run from one generated C function,
  `segment<k>(P, S, F)`: P holds the data pointers of tensors that are not in the arena
  (inputs, outputs, extern results, the arena itself, the error flag), S the sizes, integer
  scalars and (bounds-checked) extents, F the float scalars. The arrays are made once per
  program; a call stores the few entries that change (input pointers, sizes) and makes one
  foreign call per segment. A segment returns -1, or in bounds-checked mode the position of
  the first kernel that addressed outside a buffer, each buffer checked against its own
  planned extent.
- **Tuned kernels.** A kernel the code generator emitted in several variants (autotuning)
  ends the segment before it, runs from the wrapper, and the next kernel starts a new
  segment. Its line is `if not tuned<k>(sizes): k_<name>(tensors...)`: `tuned<k>` runs the
  variant its TunedKernel chose for these sizes as `tuned<k>_<j>(P, S, F)`, a C function like
  a segment's (one foreign call, no tensors made), or returns False before there is a
  choice; then the TunedKernel gets tensors, times the variants on them and runs the winner.
  Its arena buffers are passed as views of the arena at their planned offsets (arena_view):
  simpler than taking them out of the plan, which stays one plan whatever is tuned, and
  correct because the arena grows only at the start of a call and a buffer's block is no
  other live buffer's, so the view is exactly the memory the segments' kernels address. The
  error flag goes as a tensor over the frame's ctypes array (`err_tensor`), so a flag it sets
  is seen by the check at the end.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sympy
import torch

from lazytriton.loopir import Buffer, ComputedBuffer, ExternKernel, InputBuffer, ScalarArg
from lazytriton.scheduler import Kernel
from lazytriton.sizevars import FloorDiv, product

from .common import CppPrinter
from .signature import BOUNDS, BUFFER, ERR, EXTENT, SCALAR, SIZE, GeneratedKernel, Param
from .wrapper import WrapperWriter, _step_reads

ALIGN = 64  # bytes: each arena block starts on a cache line


@dataclass
class Frame:
    """The layout of a program's argument arrays and arena, and its segments."""
    pointers: dict[str, int] = field(default_factory=dict)  # tensor variable -> P index
    ints: dict[str, int] = field(default_factory=dict)  # wrapper expression -> S index
    floats: dict[str, int] = field(default_factory=dict)  # wrapper expression -> F index
    arena: dict[int, tuple[Buffer, sympy.Expr]] = field(default_factory=dict)  # id -> offset
    arena_bytes: sympy.Expr = sympy.Integer(0)
    segments: list[list[GeneratedKernel]] = field(default_factory=list)
    launched: list[GeneratedKernel] = field(default_factory=list)  # tuned: run from Python

    def pointer(self, name: str) -> int:
        return self.pointers.setdefault(name, len(self.pointers))

    def int_slot(self, expr: str) -> int:
        return self.ints.setdefault(expr, len(self.ints))

    def float_slot(self, expr: str) -> int:
        return self.floats.setdefault(expr, len(self.floats))


class FrameWrapperWriter(WrapperWriter):
    """The wrapper for a backend whose kernels run in segments from argument arrays (C++)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.frame = Frame()
        self.checked = any(k.signature.checked for k in self.kernels.values())
        self._segment: list[GeneratedKernel] = []
        self._plan_arena()

    # --- memory plan ------------------------------------------------------------------------
    def _plan_arena(self) -> None:
        """Blocks of cache lines: a buffer takes a free block (one whose last reader has run),
        preferring one that provably fits, else the first free one, which then grows to the
        symbolic Max of both; offsets are the blocks' prefix sums."""
        outputs = {id(o) for o in self.sched.outputs} | {id(getattr(o, "base", None))
                                                         for o in self.sched.outputs}
        last = {}
        for i, step in enumerate(self.sched.steps):
            for buf in _step_reads(step):
                last[id(buf)] = i
        blocks: list[sympy.Expr] = []  # lines per block
        placed: dict[int, tuple[Buffer, int]] = {}  # id(buffer) -> (buffer, block)
        free: list[int] = []
        ends: dict[int, list[int]] = {}
        for i, step in enumerate(self.sched.steps):
            if isinstance(step, Kernel):
                for m in step.members:
                    buf = m.buffer
                    if m.local or id(buf) in outputs or buf.donor is not None:
                        continue
                    block = self._take_block(blocks, free, _lines(buf))
                    placed[id(buf)] = (buf, block)
                    ends.setdefault(last.get(id(buf), i), []).append(block)
            free += ends.pop(i, [])
        offsets = [sympy.Integer(0)]
        for lines in blocks:
            offsets.append(offsets[-1] + lines)
        self.frame.arena = {key: (buf, offsets[b] * ALIGN) for key, (buf, b) in placed.items()}
        self.frame.arena_bytes = offsets[-1] * ALIGN

    def _take_block(self, blocks: list, free: list[int], need) -> int:
        fitting = [b for b in free if _fits(blocks[b], need)]
        if fitting:
            free.remove(fitting[0])
            return fitting[0]
        if not free:
            blocks.append(need)
            return len(blocks) - 1
        # the first free block, never chosen by this graph's sizes: the plan (and the program)
        # must not depend on them, so that one program serves every size of its symbols
        first = free.pop(0)
        blocks[first] = sympy.Max(blocks[first], need)  # holds either, at any sizes
        return first

    # --- the call ---------------------------------------------------------------------------
    def _header(self) -> list[str]:
        return ["def call(inputs):", "    err[0] = 0"]

    def _bind_inputs(self) -> None:
        super()._bind_inputs()
        for sym in self.lowering.sizevars.origins:
            self.lines.append(f"S[{self.frame.int_slot(str(sym))}] = {sym}")
        for k, lowered in enumerate(self.lowering.inputs):
            if isinstance(lowered, InputBuffer):
                self._set_pointer(lowered.name)
            elif isinstance(lowered, ScalarArg):
                if isinstance(lowered.value, complex):  # only aten ops take complex numbers
                    continue
                expr = f"inputs[{k}]"
                if lowered.dtype == torch.float64:
                    self.lines.append(f"F[{self.frame.float_slot(expr)}] = {expr}")
                else:
                    self.lines.append(f"S[{self.frame.int_slot(expr)}] = {expr}")
        for const in self.lowering.constants:
            self._set_pointer(const.name)
        if self.frame.arena:
            nbytes = self.expr(self.frame.arena_bytes)
            self.lines.append(f"arena = grow_arena({nbytes})")
            self.lines.append(f"P[{self.frame.pointer('arena')}] = arena.data_ptr()")
        self.frame.pointer("err")
        self.frame.pointer("bounds")

    def _set_pointer(self, name: str) -> None:
        self.lines.append(f"P[{self.frame.pointer(name)}] = {name}.data_ptr()")
        if self.checked:
            self.lines.append(f"S[{self.frame.int_slot('extent ' + name)}] = extent({name})")

    def _allocate(self, buf: ComputedBuffer) -> str:
        if id(buf) in self.frame.arena:
            self.names[id(buf)] = buf.name
            return buf.name  # no Python object: kernels reach it through the arena
        name = super()._allocate(buf)
        if buf.donor is None:
            self._set_pointer(name)
        return name

    def _kernel(self, kernel: Kernel) -> None:
        for m in kernel.members:
            if not m.local:
                self._allocate(m.buffer)
        emitted = self.kernels[kernel.name]
        if is_tuned(emitted):
            self._flush()
            self._launch(emitted, kernel)
        else:
            self._segment.append(emitted)

    def _launch(self, emitted: GeneratedKernel, kernel: Kernel) -> None:
        """A tuned kernel between the segments before and after it: `tuned<k>(sizes)` runs the
        variant its TunedKernel chose for these sizes from the frame's arrays (one foreign
        call) and says whether it did; until the TunedKernel has chosen, `k_<name>(...)` calls
        it with tensors, which it times its variants on."""
        assert not emitted.signature.checked  # checked builds have no variants
        k = len(self.frame.launched)
        self.frame.launched.append(emitted)
        params = emitted.signature.params()
        sizes = "".join(self._argument(p) + ", " for p in params if p.kind == SIZE)
        self.namespace[f"tuned{k}"] = self.namespace[f"k_{emitted.name}"] = None  # launcher's
        args = ", ".join(self._argument(p) for p in params)
        fused = ", ".join(sorted(set(kernel.origins))) or "copy"
        self.lines.append(f"if not tuned{k}({sizes}):  # {emitted.name}, tuned: {fused}")
        self.lines.append(f"    k_{emitted.name}({args})")

    def _argument(self, param: Param) -> str:
        if param.kind == BUFFER:  # an arena buffer as a view, made only when it is called
            return self._tensor(param.value)
        if param.kind == ERR:
            return "err_tensor"
        return super()._argument(param)

    def _flush(self) -> None:
        if not self._segment:
            return
        k = len(self.frame.segments)
        self.frame.segments.append(self._segment)
        names = ", ".join(g.name for g in self._segment)
        self.namespace[f"segment{k}"] = None  # bound by the launcher
        if self.checked:
            self.lines.append(f"failed = segment{k}()  # {names}")
            self.lines.append("if failed >= 0:")
            self.lines.append(f"    report_bounds({k}, failed)")
        else:
            self.lines.append(f"segment{k}()  # {names}")
        self._segment = []

    def _extern(self, step: ExternKernel, i: int) -> None:
        self._flush()
        super()._extern(step, i)
        for o in step.outputs:
            if o is not None:
                self._set_pointer(o.name)

    def _tensor(self, box) -> str:
        arena = self.frame.arena.get(id(getattr(box, "base", box)))
        if arena is None:
            return super()._tensor(box)
        buf, offset = arena
        return (f"arena_view(arena, {self.expr(offset)}, {buf.dtype}, {self.shape(box.sizes)}, "
                f"{self.shape(box.strides)}, {self.expr(box.offset)})")

    def _finish(self) -> None:
        self._flush()
        for o in self.sched.outputs:
            if id(getattr(o, "base", o)) in self.frame.arena:
                raise AssertionError("a graph output was planned in the arena")

    def _release(self, i: int, last_use: dict) -> None:
        """Intermediates are planned in the arena; nothing is pooled by name."""


def is_tuned(emitted: GeneratedKernel) -> bool:
    """Whether a kernel has several variants for the autotuner to choose from."""
    return emitted.launch is not None and len(list(emitted.launch)) > 1


def _lines(buf: Buffer) -> sympy.Expr:
    nbytes = product(buf.sizes) * buf.dtype.itemsize
    return FloorDiv(nbytes + ALIGN - 1, ALIGN)


def _fits(block, need) -> bool:
    diff = sympy.expand(block - need)
    return diff == 0 or bool(diff.is_nonnegative)


def bounds_reporter(frame: Frame, bounds, folder: str):
    """report_bounds(segment, position): raise BoundsError for the kernel that flagged it."""
    from .wrapper import check_bounds

    def report(segment: int, position: int) -> None:
        g = frame.segments[segment][position]
        params = [(param, buf.name) for param, buf in g.signature.buffers.values()]
        check_bounds(bounds, g.name, params, f"{folder}/{g.source_file}")
    return report


def arena_view(arena: torch.Tensor, offset: int, dtype, sizes, strides,
               element_offset: int = 0) -> torch.Tensor:
    """A view of the arena buffer at byte `offset` (`element_offset` further in), as a tensor
    for an extern call or a tuned kernel. Offsets and the arena's size are multiples of ALIGN,
    so the whole arena views as any dtype (two tensor ops, not three: this runs every step)."""
    return arena.view(dtype).as_strided(sizes, strides, offset // dtype.itemsize + element_offset)


# --- the C++ side ---------------------------------------------------------------------------

def segments_source(frame: Frame, names: dict[int, str]) -> str:
    """The C functions that run each segment's kernels, and each variant of each tuned kernel,
    from the argument arrays. `names`: id(buffer) -> the wrapper variable holding it (for the
    pointer table)."""
    printer = CppPrinter()
    out = [_frame_function(f"segment{k}", [(g.name, g) for g in segment], frame, names, printer)
           for k, segment in enumerate(frame.segments)]
    out += [_frame_function(f"tuned{k}_{j}", [(variant.function, g)], frame, names, printer)
            for k, g in enumerate(frame.launched) for j, variant in enumerate(g.launch)]
    return "\n\n".join(out) + "\n"


def _frame_function(name: str, calls: list[tuple[str, GeneratedKernel]], frame: Frame,
                    names: dict[int, str], printer: CppPrinter) -> str:
    """`name(P, S, F)`: calls each (C function, its kernel) in order; returns -1, or in
    bounds-checked mode the position of the first call that addressed outside a buffer."""
    lines = [f'extern "C" int64_t {name}(void* const* P, const int64_t* S, const double* F) {{',
             "  char* arena = static_cast<char*>(P[%d]);" % frame.pointers.get("arena", 0),
             f"  int32_t* err = static_cast<int32_t*>(P[{frame.pointers['err']}]);",
             f"  int64_t* bounds = static_cast<int64_t*>(P[{frame.pointers['bounds']}]);",
             "  (void)arena; (void)err; (void)bounds;"]
    lines += [f"  const int64_t {sym} = S[{slot}];" for sym, slot in frame.ints.items()
              if sym.startswith("s") and sym[1:].isdigit()]
    for position, (function, g) in enumerate(calls):
        args = [_argument(frame, names, printer, p) for p in g.signature.params()]
        lines.append(f"  {function}({', '.join(args)});")
        if g.signature.checked:
            lines.append(f"  if (bounds[0] != 0) return {position};")
    lines += ["  return -1;", "}"]
    return "\n".join(lines)


def _argument(frame: Frame, names: dict, printer: CppPrinter, param: Param) -> str:
    from .cpp import CTYPE
    if param.kind == BUFFER:
        buf = param.value
        ctype = CTYPE[param.dtype]
        placed = frame.arena.get(id(buf))
        if placed is not None:
            return f"reinterpret_cast<{ctype}*>(arena + {printer.doprint(placed[1])})"
        return f"static_cast<{ctype}*>(P[{frame.pointers[names[id(buf)]]}])"
    if param.kind == SIZE:
        return printer.doprint(param.value)
    if param.kind == SCALAR:
        arg: ScalarArg = param.value
        expr = f"inputs[{arg.input_index}]"
        if param.dtype == torch.float64:
            return f"F[{frame.floats[expr]}]"
        return f"S[{frame.ints[expr]}]"
    if param.kind == EXTENT:
        buf = param.value
        placed = frame.arena.get(id(buf))
        if placed is not None:  # its own planned extent, not the arena's
            span = 1 + sum((n - 1) * st for n, st in zip(buf.sizes, buf.strides))
            return printer.doprint(span)
        return f"S[{frame.ints['extent ' + names[id(buf)]]}]"
    return {ERR: "err", BOUNDS: "bounds"}[param.kind]
