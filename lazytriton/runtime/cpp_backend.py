"""Backend "cpp": a graph lowered to fused loop nests, printed as C++/OpenMP, built by g++ into
one shared library per graph, and run by a generated Python wrapper.

The compile pipeline reads top to bottom: lower -> schedule -> generate C++ -> build -> wrap.
If anything fails, the graph runs on the reference executor instead, counted as FallbackGraph,
with a warning (once per reason) that names the files in the cache dir (LAZYTRITON_STRICT=1 makes
it an error, for tests).
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import torch

from .. import metrics
from ..codegen.cpp import CTYPE, generate_translation_unit
from ..codegen.wrapper import WrapperWriter
from ..graph import Graph
from ..lowering import Lowering
from ..scheduler import Kernel, extern_reads, schedule
from .backend import Backend, register_backend
from .cpp_build import build_library, compiler_command
from .disk_cache import atomic_write
from .reference import ReferenceProgram


class CppProgram:
    def __init__(self, call, guards: dict, library, kernels: list[Kernel]):
        self.call = call
        self.guards = guards
        self.library = library  # keeps the shared library loaded
        self.kernels = kernels

    def __call__(self, inputs):
        return self.call(inputs)


def _extern_reads(lowering: Lowering) -> set[int]:
    return {id(buf) for ext in lowering.externs for buf in extern_reads(ext)}


class CppBackend(Backend):
    name = "cpp"

    def __init__(self):
        self.device = torch.device("cpu")
        self._warned: set[str] = set()  # fallback reasons already reported
        self.check = os.environ.get("LAZYTRITON_CHECK", "")  # "bounds": checked accesses

    @classmethod
    def is_available(cls) -> bool:
        return shutil.which(compiler_command()[0]) is not None

    def compile(self, graph: Graph, artifacts: Path):
        try:
            return self._compile(graph, artifacts)
        except Exception as e:  # noqa: BLE001 -- any compiler failure must not lose the step
            if os.environ.get("LAZYTRITON_STRICT"):
                raise
            self._report_fallback(f"{type(e).__name__}: {e}", artifacts)
            return ReferenceProgram(graph, self.device)

    def _report_fallback(self, reason: str, artifacts: Path) -> None:
        """Count every graph run uncompiled; warn once per reason, so a cause that hits many
        graphs is seen without flooding the log."""
        metrics.counter_inc("FallbackGraph")
        if reason in self._warned:
            return
        self._warned.add(reason)
        warnings.warn(f"lazytriton: compiling a graph for C++ failed ({reason}); it runs on the "
                      f"reference executor instead (counted as FallbackGraph; this reason is not "
                      f"reported again). Generated files: {artifacts}", RuntimeWarning,
                      stacklevel=3)

    def source(self, graph: Graph) -> str:
        lowering = Lowering(graph)
        sched = schedule(lowering.steps, lowering.outputs(), _extern_reads(lowering))
        kernels = [s for s in sched.steps if isinstance(s, Kernel)]
        return generate_translation_unit(kernels, checked=self.check == "bounds")[0]

    def _compile(self, graph: Graph, artifacts: Path) -> CppProgram:
        lowering = Lowering(graph, kernel_dtypes=CTYPE)
        outputs = lowering.outputs()
        sched = schedule(lowering.steps, outputs, _extern_reads(lowering))
        kernels = [s for s in sched.steps if isinstance(s, Kernel)]
        source, emitted = generate_translation_unit(kernels, checked=self.check == "bounds")
        writer = WrapperWriter(lowering, sched, emitted, str(artifacts / "kernels.cpp"))
        wrapper_source = writer.generate()
        atomic_write(artifacts / "kernels.cpp", source)
        atomic_write(artifacts / "wrapper.py", _wrapper_file(wrapper_source))
        atomic_write(artifacts / "kernels.json", json.dumps(_kernel_index(kernels, emitted),
                                                            indent=1))
        library = build_library(source, artifacts.parent.parent) if kernels else None
        for kernel, cpp in zip(kernels, emitted):
            ctypes_args = _ctypes_signature(cpp)
            writer.namespace[f"k_{kernel.name}"] = library.function(kernel.name, ctypes_args)
        exec(compile(wrapper_source, str(artifacts / "wrapper.py"), "exec"), writer.namespace)
        return CppProgram(writer.namespace["call"], lowering.guards, library, kernels)


def _ctypes_signature(cpp) -> list:
    import ctypes
    args = [ctypes.c_void_p] * len(cpp.args.buffers)
    args += [ctypes.c_int64] * len(cpp.args.sizes)
    args += [ctypes.c_double if arg.dtype == torch.float64 else ctypes.c_int64
             for _, arg in cpp.args.scalars.values()]
    if cpp.args.uses_err:
        args.append(ctypes.c_void_p)
    if cpp.args.checked:
        args += [ctypes.c_int64] * len(cpp.args.buffers) + [ctypes.c_void_p]
    return args


def _kernel_index(kernels: list[Kernel], emitted) -> list[dict]:
    """Which ops each kernel fused and its loop sizes: the cache index people read."""
    return [{"kernel": k.name, "fused_ops": sorted(set(k.origins)),
             "outer_loop": [str(s) for s in k.outer],
             "members": [{"buffer": m.buffer.name, "sizes": [str(s) for s in m.node.sizes],
                          "reduction": getattr(m.node, "reduction_type", None) if m.is_reduction
                          else None, "in_register": m.local} for m in k.members]}
            for k in kernels]


def _wrapper_file(source: str) -> str:
    return ("# generated by lazytriton: the Python side of one compiled graph.\n"
            "# k_kernelN are the C++ functions in kernels.cpp; externN call aten ops.\n" + source)


register_backend("cpp", CppBackend)
