"""The compile pipeline every code-generating backend shares, and the two pieces a backend plugs
into it: a kernel code generator and a launcher.

    lower -> schedule -> generate kernels -> write artifacts -> load (build, bind) -> wrap

A backend's code generator turns the scheduler's Kernels into source files (GeneratedCode); its
launcher loads them and returns one callable per kernel, taking the kernel's parameters in its
KernelSignature order (tensors, sizes, scalars, the error flag). The generated wrapper calls
those and knows nothing else about the backend. If anything fails, the graph runs on the
reference executor instead, with a warning that names the files in the cache dir
(LAZYTRITON_STRICT=1 makes it an error, for tests).
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from .. import donation, logs, metrics
from ..codegen.signature import GeneratedCode
from ..codegen.cpp_frame import FrameWrapperWriter, segments_source
from ..codegen.wrapper import WrapperWriter
from ..graph import Graph
from ..lowering import Lowering
from ..lowering.operands import symbolic_strides
from ..scheduler import Kernel, Schedule, extern_reads, schedule
from ..sizevars import SizeVars
from ..template_fusion import fuse_matmul_templates, templates_wanted
from .backend import Backend
from .disk_cache import atomic_write
from .reference import ReferenceProgram


_warned: set[tuple[str, str]] = set()  # (backend, fallback reason) already reported


class KernelCodegen(Protocol):
    parallel_inner: bool  # inner loops of a kernel without an outer loop run in parallel
    outer_reductions: bool  # prints across members (scheduler.py): reductions over the outer loop
    kernel_dtypes: frozenset  # dtypes kernels can hold; ops on others stay aten calls

    def generate(self, kernels: list[Kernel], sizevars: SizeVars) -> GeneratedCode:
        """Source for these kernels (a graph's, in execution order); `sizevars` gives the
        graph's concrete sizes, for choices such as block sizes (never baked into source)."""


class Launcher(Protocol):
    def load(self, code: GeneratedCode, artifacts: Path) -> tuple[dict[str, Callable], Any]:
        """Build/load the written sources: {kernel name: launch callable}, and an object to keep
        alive as long as the callables are used (a loaded library, modules)."""


class CompiledProgram:
    def __init__(self, call: Callable, guards: dict, keepalive: Any, kernels: list[Kernel],
                 donated: frozenset = frozenset()):
        self.call = call
        self.donated = donated  # output indices returned in their input's buffer
        self.guards = guards  # graph input index -> the scalar value this program assumed
        self.keepalive = keepalive
        self.kernels = kernels

    def __call__(self, inputs):
        return self.call(inputs)


class KernelBackend(Backend):
    """A backend made of a code generator, a launcher and the device its buffers live on."""
    codegen: KernelCodegen
    launcher: Launcher

    dynamic_shapes = True

    def compile(self, graph: Graph, artifacts: Path, symbols: dict | None = None,
                donate: tuple = ()):
        try:
            return compile_graph(graph, artifacts, self.codegen, self.launcher, self.device,
                                 symbols, donate)
        except Exception as e:  # noqa: BLE001 -- any compiler failure must not lose the step
            if logs.strict():
                raise
            self._report_fallback(f"{type(e).__name__}: {e}", artifacts)
            return ReferenceProgram(graph, self.device)

    def _report_fallback(self, reason: str, artifacts: Path) -> None:
        """Count every graph run uncompiled; warn once per reason, so a cause that hits many
        graphs is seen without flooding the log."""
        metrics.counter_inc("FallbackGraph")
        if (self.name, reason) in _warned:
            return
        _warned.add((self.name, reason))
        warnings.warn(f"lazytriton: compiling a graph for {self.name} failed ({reason}); it runs "
                      f"on the reference executor instead (counted as FallbackGraph; this reason "
                      f"is not reported again). Generated files: {artifacts}", RuntimeWarning,
                      stacklevel=3)

    def fingerprint(self, graph: Graph, symbols: dict, donate: tuple = ()) -> str | None:
        try:
            with metrics.uncounted():  # a comparison, not a compile
                lowering, _, _, code, _, wrapper_source = generate_program(
                    graph, self.codegen, self.device, "", symbols, donate)
                return program_fingerprint(lowering, code, wrapper_source)
        except Exception:  # noqa: BLE001 -- no fingerprint: the program stays size-specific
            return None

    def source(self, graph: Graph) -> str:
        """The kernel sources this backend generates for `graph` (debug.dump_ir "backend")."""
        lowering, sched = lower_and_schedule(graph, self.codegen)
        code = self.codegen.generate([s for s in sched.steps if isinstance(s, Kernel)],
                                     lowering.sizevars)
        return "\n".join(f"# --- {name}\n{text}" for name, text in code.files.items())


def lower_and_schedule(graph: Graph, codegen: KernelCodegen, symbols: dict | None = None) -> \
        tuple[Lowering, Schedule]:
    lowering = Lowering(graph, kernel_dtypes=getattr(codegen, "kernel_dtypes", None),
                        symbols=symbols)
    outputs = lowering.outputs()
    sched = schedule(lowering.steps, outputs, lowering_extern_reads(lowering),
                     getattr(codegen, "parallel_inner", True),
                     getattr(codegen, "outer_reductions", False))
    if getattr(codegen, "matmul_templates", False) and templates_wanted():
        sched = fuse_matmul_templates(sched, lowering.sizevars)
    return lowering, sched


def generate_program(graph: Graph, codegen: KernelCodegen, device: torch.device, folder: str,
                     symbols: dict | None = None, donate: tuple = ()):
    """Lower, schedule, grant donations, generate the kernels and the wrapper (and, for a
    code generator that runs segments, their C functions): everything but files and loading."""
    lowering, sched = lower_and_schedule(graph, codegen, symbols)
    granted = donation.grant(lowering.inputs, sched, donate)
    kernels = [s for s in sched.steps if isinstance(s, Kernel)]
    code = codegen.generate(kernels, lowering.sizevars)
    writer_class = FrameWrapperWriter if getattr(codegen, "segments", False) else WrapperWriter
    writer = writer_class(lowering, sched, code.kernels, device, folder,
                          frozenset(j for j, _ in granted.values()))
    wrapper_source = writer.generate()
    if isinstance(writer, FrameWrapperWriter):  # the C functions that run the segments
        code.files[codegen.source_file] += "\n" + segments_source(writer.frame, writer.names)
        code.frame = writer.frame
    return lowering, sched, granted, code, writer, wrapper_source


def compile_graph(graph: Graph, artifacts: Path, codegen: KernelCodegen, launcher: Launcher,
                  device: torch.device, symbols: dict | None = None,
                  donate: tuple = ()) -> CompiledProgram:
    lowering, sched, granted, code, writer, wrapper_source = generate_program(
        graph, codegen, device, str(artifacts), symbols, donate)
    kernels = [s for s in sched.steps if isinstance(s, Kernel)]
    for name, text in code.files.items():
        atomic_write(artifacts / name, text)
    atomic_write(artifacts / "wrapper.py", _wrapper_file(wrapper_source, code))
    atomic_write(artifacts / "kernels.json", json.dumps(kernel_index(code), indent=1))
    launchers, keepalive = launcher.load(code, artifacts) if kernels or code.frame else \
        ({}, None)
    if code.frame is not None:  # segments, their argument arrays and the tuned kernels
        writer.namespace.update(launchers)
    else:
        for emitted in code.kernels:
            writer.namespace[f"k_{emitted.name}"] = launchers.get(emitted.name)
    exec(compile(wrapper_source, str(artifacts / "wrapper.py"), "exec"), writer.namespace)
    program = CompiledProgram(writer.namespace["call"], lowering.guards, keepalive, kernels,
                              frozenset(granted))
    program.frame = code.frame  # the memory plan and segments, where the backend runs them
    if symbols:
        program.fingerprint = program_fingerprint(lowering, code, wrapper_source)
        program.lowered_sizes = lowered_sizes(graph, lowering)
    return program


def lowered_sizes(graph: Graph, lowering: Lowering) -> dict[tuple[int, int], tuple]:
    """(node index, output index) -> the sizes and strides the program gives that computed
    value, in the size symbols. Lowering may match a size to an expression by its value (an
    extern's output to its input's size): what a later graph's sizes must equal for the
    program to serve it (runtime/shapes.py)."""
    found = {}
    for i, node in enumerate(graph.nodes):
        if node.is_leaf:
            continue
        for o, value in enumerate(node.outputs):
            box = lowering.env.get(id(value))
            sizes = getattr(box, "sizes", None)
            if value.meta is None or sizes is None or len(sizes) != len(value.meta.shape):
                continue
            strides = getattr(box, "strides", None)
            if strides is None or len(strides) != len(sizes):  # as it would be stored
                strides = symbolic_strides(list(sizes), value.meta)
            found[(i, o)] = (tuple(sizes), tuple(strides))
    return found


def program_fingerprint(lowering: Lowering, code: GeneratedCode, wrapper_source: str) -> str:
    """Kernel sources and launches, the wrapper, extern arguments and constant tensors, with
    buffer names numbered by first use: what decides whether one program serves two graphs."""
    externs = [(str(e.op), [(name, _constant_args(v)) for name, v in e.args])
               for e in lowering.externs]
    constants = [(c.dtype, tuple(c.tensor.shape), c.tensor.flatten()[:4096].tolist())
                 for c in lowering.constants]
    launches = [[(lc.function, lc.config) for lc in (getattr(g, "launch", None) or [])]
                for g in code.kernels]
    text = "\n".join([*(f"{n}\n{t}" for n, t in sorted(code.files.items())), wrapper_source,
                      repr(externs), repr(constants), repr(launches), repr(lowering.guards)])
    names: dict[str, str] = {}
    return re.sub(r"\b(?:buf|const|ext)\d+\b",
                  lambda m: names.setdefault(m.group(0), f"n{len(names)}"), text)


def _constant_args(value):
    if isinstance(value, (list, tuple)):
        return [_constant_args(v) for v in value]
    return "T" if hasattr(value, "sizes") or hasattr(value, "input_index") else value


def lowering_extern_reads(lowering: Lowering) -> set[int]:
    return {id(buf) for ext in lowering.externs for buf in extern_reads(ext)}


def kernel_index(code: GeneratedCode) -> list[dict]:
    """Which ops each kernel fused and its loop sizes: the cache index people read."""
    return [{"kernel": g.name, "source": g.source_file, "fused_ops": sorted(set(k.origins)),
             "params": [{"name": p.name, "kind": p.kind, "dtype": str(p.dtype).split(".")[-1]}
                        for p in g.signature.params()],
             "outer_loop": [str(s) for s in k.outer],
             "members": [{"buffer": m.buffer.name, "sizes": [str(s) for s in m.node.sizes],
                          "reduction": getattr(m.node, "reduction_type", None) if m.is_reduction
                          else None, "in_register": m.local, "over_outer_loop": m.across}
                         for m in k.members], **g.index}
            for g in code.kernels for k in [g.kernel]]


def _wrapper_file(source: str, code: GeneratedCode) -> str:
    files = ", ".join(sorted(code.files)) or "no kernels"
    launch = "segment<k>() run consecutive kernels, tuned<k>() / k_<name> the tuned ones" \
        if code.frame is not None else \
        "k_<name> launch the kernels"
    return ("# generated by lazytriton: the Python side of one compiled graph.\n"
            f"# {launch} in {files}; externN call aten ops.\n" + source)
