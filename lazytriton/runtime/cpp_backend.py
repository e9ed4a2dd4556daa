"""Backend "cpp": a graph lowered to fused loop nests, printed as C++/OpenMP, built by g++ into
one shared library per graph, and run by a generated Python wrapper.

The pipeline is the shared one (kernel_backend.compile_graph); this module is the launcher:
build the translation unit, look each kernel up by name and call it through ctypes. A kernel
the code generator emitted in several variants (name, name__c1, ...: codegen/cpp.py) becomes
an autotune.TunedKernel over them, which picks one per size bucket at its first call. A framed
program (codegen/cpp_frame.py) gets one callable per segment, bound to its argument arrays,
and for each tuned kernel, which runs between segments, its TunedKernel `k_<name>` (called
with tensors until it has chosen) and `tuned<k>` (FramedChoice: the chosen variant from the
arrays).
"""
from __future__ import annotations

import ctypes
import functools
import os
import shutil
from pathlib import Path
from typing import Callable

import torch

from .. import autotune
from ..codegen.cpp import CppCodegen, CppVariant
from ..codegen.cpp_frame import arena_view, bounds_reporter
from ..codegen.signature import SCALAR, GeneratedCode, GeneratedKernel, Param
from .backend import register_backend
from .cpp_build import CXX_FLAGS, _compiler_version, build_library, compiler_command
from .kernel_backend import KernelBackend


class CppLauncher:
    def __init__(self):
        self.arena = Arena()  # one for every program of this backend: they run one at a time

    def load(self, code: GeneratedCode, artifacts: Path) -> tuple[dict[str, Callable], object]:
        if code.frame is not None:
            return self._load_segments(code, artifacts)
        (source,) = code.files.values()
        library = build_library(source, artifacts.parent.parent)
        budget = autotune.budget_for_graph()  # one per graph: tuning time stays bounded
        launchers = {emitted.name: _launcher(library, emitted, artifacts, budget)
                     for emitted in code.kernels}
        return launchers, library

    def _load_segments(self, code: GeneratedCode, artifacts: Path):
        """The wrapper's namespace entries: argument arrays, the arena, one callable per
        segment, bound to the arrays once, and k_<name> for each tuned kernel."""
        frame = code.frame
        arrays = FrameArrays(frame)
        entries = {"P": arrays.P, "S": arrays.S, "F": arrays.F, "err": arrays.err,
                   "bounds": arrays.bounds, "grow_arena": self.arena.grow,
                   "arena_view": self.arena.view,
                   "err_tensor": torch.frombuffer(arrays.err, dtype=torch.int32),
                   "report_bounds": bounds_reporter(frame, arrays.bounds, str(artifacts))}
        library = None
        if frame.segments or frame.launched:
            (source,) = code.files.values()
            library = build_library(source, artifacts.parent.parent)
            addresses = [ctypes.addressof(a) for a in (arrays.P, arrays.S, arrays.F)]

            def frame_function(name: str) -> Callable[[], int]:
                fn = library.function(name, [ctypes.c_void_p] * 3)
                fn.restype = ctypes.c_int64
                return functools.partial(fn, *addresses)
            for k in range(len(frame.segments)):
                entries[f"segment{k}"] = frame_function(f"segment{k}")
            budget = autotune.budget_for_graph()
            for k, emitted in enumerate(frame.launched):
                launcher = entries[f"k_{emitted.name}"] = _launcher(library, emitted, artifacts,
                                                                     budget)
                functions = {v.label: frame_function(f"tuned{k}_{j}")
                             for j, v in enumerate(emitted.launch.variants)}
                entries[f"tuned{k}"] = FramedChoice(launcher, functions,
                                                    _variants(emitted)[0].label)
        return entries, LoadedFrame(library, arrays)


class FramedChoice:
    """`tuned<k>(*sizes)` in a framed wrapper: runs the variant the kernel's TunedKernel chose
    for these sizes from the frame's arrays (one foreign call) and returns True; False while
    it has not chosen (the wrapper then calls the TunedKernel with tensors, which times the
    variants on them and chooses). A kernel with one candidate (mode "off") runs it."""

    def __init__(self, launcher, functions: dict[str, Callable[[], int]], heuristic: str):
        self.tuned = launcher if isinstance(launcher, autotune.TunedKernel) else None
        self.functions = functions
        self.heuristic = heuristic
        self._by_sizes: dict[tuple, Callable[[], int]] = {}

    def __call__(self, *sizes) -> bool:
        fn = self._by_sizes.get(sizes)
        if fn is None:
            chosen = self.heuristic if self.tuned is None else self.tuned.chosen(sizes)
            if chosen is None:
                return False
            if len(self._by_sizes) > 4096:  # many sizes of one bucket: forget the oldest
                self._by_sizes.clear()
            fn = self._by_sizes[sizes] = self.functions[chosen]
        fn()
        return True


class LoadedFrame:
    """What a framed program keeps alive: its library (None without kernels) and arrays."""

    def __init__(self, library, arrays: "FrameArrays"):
        self.library, self.arrays = library, arrays

    @property
    def path(self):
        """The built library's file, as a plain launcher's library names it (cache index)."""
        return None if self.library is None else self.library.path


class FrameArrays:
    """A program's argument arrays, made once."""

    def __init__(self, frame):
        self.P = (ctypes.c_void_p * max(len(frame.pointers), 1))()
        self.S = (ctypes.c_int64 * max(len(frame.ints), 1))()
        self.F = (ctypes.c_double * max(len(frame.floats), 1))()
        self.err = (ctypes.c_int32 * 1)()
        self.bounds = (ctypes.c_int64 * 3)()
        self.P[frame.pointers["err"]] = ctypes.addressof(self.err)
        self.P[frame.pointers["bounds"]] = ctypes.addressof(self.bounds)


class Arena:
    """The memory the programs' intermediates live in, grown when a call needs more. Shared by
    the programs of one backend, which the session's runner thread calls one at a time; no
    program's outputs are in it (an extern result viewing it is copied), so nothing reads it
    once a call has returned. One per program would keep every program's peak resident, the
    first step's and the steady step's alike."""

    def __init__(self):
        self.memory = torch.empty(0, dtype=torch.uint8)
        self._views: dict[tuple, torch.Tensor] = {}  # arena_view's results on `memory`

    def grow(self, nbytes: int) -> torch.Tensor:
        if self.memory.numel() < nbytes:
            self._views.clear()  # they hold the old block
            self.memory = torch.empty(0, dtype=torch.uint8)  # the old block goes first
            self.memory = torch.empty(nbytes, dtype=torch.uint8)
        return self.memory

    def view(self, memory: torch.Tensor, offset: int, dtype, sizes, strides,
             element_offset: int = 0) -> torch.Tensor:
        """`arena_view` of this arena's memory, made once per layout: a wrapper makes one for
        each extern argument and tuned kernel buffer in the arena, every call. Views are never
        a program's outputs (fix_layout copies them) and nothing changes their metadata."""
        key = (offset, dtype, sizes, strides, element_offset)
        found = self._views.get(key)
        if found is None:
            assert memory is self.memory, "a view of memory that is not the arena's"
            if len(self._views) >= 4096:  # many sizes of symbolic programs: start afresh
                self._views.clear()
            found = self._views[key] = arena_view(memory, offset, dtype, sizes, strides,
                                                  element_offset)
        return found


def _launcher(library, emitted: GeneratedKernel, artifacts: Path,
              budget: autotune.Budget) -> Callable:
    """A kernel's launcher taking tensors: its function, or a TunedKernel over its variants."""
    params = emitted.signature.params()
    if len(params) > _MAX_FOREIGN_ARGS:
        return _FrameOnly(emitted.name, len(params))
    argtypes = [_ctype(p) for p in params]
    candidates = [autotune.Candidate(v.label, v.config,
                                     _bind(library.function(v.function, argtypes), params))
                  for v in _variants(emitted)]
    if len(candidates) == 1:
        return candidates[0].fn
    return autotune.TunedKernel(
        emitted.name, candidates, source=emitted.launch.source, device="cpu",
        toolchain=_toolchain(), cache_dir=artifacts.parent.parent, budget=budget,
        size_args=autotune.size_args(emitted), written=autotune.written_args(emitted),
        on_choice=autotune.kernels_json_recorder(artifacts, emitted.name))


# ctypes refuses a function of more arguments (its CTYPES_MAX_ARGCOUNT); a kernel over a few
# hundred tensors (a foreach step of a large model) or a thousand graph scalars has more
_MAX_FOREIGN_ARGS = 1024


class _FrameOnly:
    """In place of the launcher of a kernel with more arguments than ctypes passes: it runs
    only from its frame's argument arrays, in its heuristic variant (FramedChoice sees no
    TunedKernel), so nothing calls this."""

    def __init__(self, name: str, count: int):
        self.name, self.count = name, count

    def __call__(self, *args):
        raise RuntimeError(f"lazytriton: kernel {self.name} takes {self.count} arguments, more "
                           f"than ctypes passes ({_MAX_FOREIGN_ARGS}); it runs from its frame")


def _variants(emitted: GeneratedKernel) -> list[CppVariant]:
    """The kernel's variant functions, the heuristic one first (just it in mode "off")."""
    launch = emitted.launch
    if launch is None:
        return [CppVariant("heuristic", emitted.name, {})]
    return launch.variants[:1] if autotune.mode() == "off" else launch.variants


def _toolchain() -> str:
    return f"{_compiler_version(tuple(compiler_command()))} {' '.join(CXX_FLAGS)}"


def _ctype(param: Param):
    if param.is_pointer:
        return ctypes.c_void_p
    if param.kind == SCALAR and param.dtype == torch.float64:
        return ctypes.c_double
    return ctypes.c_int64


def _bind(fn, params: list[Param]) -> Callable:
    """A launcher taking tensors where the C function takes pointers."""
    pointers = tuple(i for i, p in enumerate(params) if p.is_pointer)

    def launch(*args):
        args = list(args)
        for i in pointers:
            args[i] = args[i].data_ptr()
        fn(*args)
    return launch


class CppBackend(KernelBackend):
    name = "cpp"

    def __init__(self, device: torch.device = torch.device("cpu")):
        self.device = device
        checked = os.environ.get("LAZYTRITON_CHECK", "") == "bounds"  # every access checked
        self.variant = "bounds" if checked else ""
        self.codegen = CppCodegen(checked=checked)
        self.launcher = CppLauncher()

    @classmethod
    def is_available(cls) -> bool:
        return shutil.which(compiler_command()[0]) is not None


register_backend("cpp", CppBackend)
