"""Backend "triton": the shared pipeline (kernel_backend.compile_graph) with Triton kernels.

On CUDA the lazy device's data lives on the GPU and kernels are compiled by Triton's JIT (its
cache inside lazytriton's cache dir). Without a GPU the same kernels run under Triton's
interpreter on CPU tensors: each kernel module is executed with TRITON_INTERPRET=1, which makes
its @triton.jit functions interpreted; the modules use Triton builtins only, so this works
whenever triton was imported (see codegen/triton_helpers.py).

Each kernel is a module in the graph's cache folder (triton_per_softmax_0.py ...). Its launcher
and grid are bound once per graph: a constant grid for fixed sizes, a function of the kernel's
size parameters where a size is a symbol (runtime/shapes.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import os
import struct
import threading
from pathlib import Path
from types import ModuleType
from typing import Callable

import numpy
import torch

from .. import autotune, metrics
from ..codegen.signature import SCALAR, GeneratedCode, GeneratedKernel
from ..codegen.triton import TritonCodegen
from .backend import register_backend
from .compile_pool import warm_kernels, warmup_jobs
from .kernel_backend import KernelBackend

INSTALL_HINT = ('the "triton" backend needs the triton package (3.6 to 3.9): '
                'pip install -e ".[triton]"  (or: pip install "triton>=3.6,<3.10")')
_USER_TRITON_CACHE = "TRITON_CACHE_DIR" in os.environ


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


class TritonLauncher:
    def __init__(self, interpret: bool):
        self.interpret = interpret

    def load(self, code: GeneratedCode, artifacts: Path) -> tuple[dict[str, Callable], list]:
        if not self.interpret and not _USER_TRITON_CACHE:  # Triton's binaries next to ours
            os.environ["TRITON_CACHE_DIR"] = str(artifacts.parent.parent / "kernels" / "triton")
        modules, launchers, warm = [], {}, []
        budget = autotune.budget_for_graph()  # one per graph: tuning time stays bounded
        for emitted in code.kernels:
            path = artifacts / emitted.source_file
            module, new = load_kernel_module(path, self.interpret)
            modules.append(module)
            if new and not self.interpret:
                warm += warmup_jobs(path, _every_launch(emitted))
            heuristic = bind(module, emitted, quiet=self.interpret)
            if len(emitted.candidates) < 2:
                launchers[emitted.name] = heuristic
                continue
            candidates = [autotune.Candidate(c.label, c.config,
                                             self._candidate(module, emitted, c))
                          for c in emitted.candidates]
            launchers[emitted.name] = autotune.TunedKernel(
                emitted.name, candidates, source=path.read_text(), device=self._timed_on(),
                toolchain=self._toolchain(), cache_dir=artifacts.parent.parent, budget=budget,
                size_args=autotune.size_args(emitted), written=_written(emitted),
                on_choice=autotune.kernels_json_recorder(artifacts, emitted.name))
        if warm:  # compiled now, in parallel where there are several, binaries beside sources
            warm_kernels(warm, artifacts)
        return launchers, modules

    def _candidate(self, module: ModuleType, emitted: GeneratedKernel, candidate) -> Callable:
        if candidate.rival is not None:
            return extern_rival_call(module, candidate.rival, emitted, quiet=self.interpret)
        return bind_launches(module, candidate.launches, emitted.signature, quiet=self.interpret)

    def _timed_on(self) -> str:
        return "cpu" if self.interpret else "cuda"

    def _toolchain(self) -> str:
        import triton
        return f"triton {triton.__version__}" + (" interpreter" if self.interpret else "")


def _every_launch(emitted: GeneratedKernel) -> GeneratedKernel:
    """The kernel with its candidates' launches too (an extern rival's epilogue aside: its
    parameters are its own), so tuning finds them all compiled."""
    launches = list(emitted.launch)
    for c in emitted.candidates:
        launches += [lc for lc in c.launches if lc not in launches]
    return dataclasses.replace(emitted, launch=launches)


def _written(emitted: GeneratedKernel) -> list[int]:
    """The arguments a kernel writes: its members' buffers, flags, a template's product."""
    written = autotune.written_args(emitted)
    template = getattr(emitted.kernel, "template", None)
    if template is not None and template.store_output:
        written += [i for i, p in enumerate(emitted.signature.params())
                    if p.kind == "buffer" and p.value is template.output]
    return sorted(set(written))


def bind(module: ModuleType, emitted: GeneratedKernel, quiet: bool = False) -> Callable:
    """A callable taking the kernel's signature arguments that runs its launches in order."""
    return bind_launches(module, emitted.launch, emitted.signature, quiet)


def bind_launches(module: ModuleType, launches, signature, quiet: bool = False) -> Callable:
    """Float64 scalars go as their bits (a Python float would reach the kernel as float32).
    `quiet`: the interpreter computes with numpy, which warns where a GPU silently gives
    inf/NaN (in lanes a tl.where then drops)."""
    steps = []
    names = [p.name for p in signature.params()]
    for launch in launches:
        options = dict(launch.config.constexprs(), num_warps=launch.config.num_warps,
                       num_stages=launch.config.num_stages)
        steps.append((getattr(module, launch.function), _grid(launch.grid, names), options))
    floats = [i for i, p in enumerate(signature.params())
              if p.kind == SCALAR and p.dtype == torch.float64]

    def run(*args):
        if floats:
            args = list(args)
            for i in floats:
                args[i] = float64_bits(args[i])
        with numpy.errstate(all="ignore") if quiet else contextlib.nullcontext():
            for fn, grid, options in steps:
                fn[grid(*args)](*args, **options)
    return run


def extern_rival_call(module: ModuleType, rival, emitted: GeneratedKernel,
                      quiet: bool = False) -> Callable:
    """A template kernel's computation done the old way, with the template's arguments: aten's
    mm/addmm into the product (a new buffer where the template keeps it in registers), then
    the epilogue kernel (codegen/triton_template.ExternRival)."""
    names = [p.name for p in emitted.signature.params()]
    views = [(i, _exprs(sizes, names), _exprs(strides, names), _exprs((offset,), names))
             for i, sizes, strides, offset in rival.operands]
    scales = [(lambda *args, i=s[1]: args[i]) if isinstance(s, tuple) else
              (lambda *args, v=s: v) for s in rival.scales]
    if rival.output[0] == "arg":
        index = rival.output[1]
        output = lambda *args: args[index]  # noqa: E731
    else:
        _, sizes, strides, dtype = rival.output
        shape, layout, kind = _exprs(sizes, names), _exprs(strides, names), getattr(torch, dtype)
        output = lambda *args: torch.empty_strided(  # noqa: E731
            shape(*args), layout(*args), dtype=kind, device=args[views[0][0]].device)
    epilogue = bind_launches(module, rival.epilogue_launches, rival.epilogue_signature, quiet) \
        if rival.epilogue_launches else None
    op = getattr(torch.ops.aten, rival.op.split(".")[0])

    def run(*args):
        tensors = [args[i].as_strided(sizes(*args), strides(*args),
                                      args[i].storage_offset() + offset(*args)[0])
                   for i, sizes, strides, offset in views]
        out = output(*args)
        if len(tensors) == 2:
            op.out(tensors[0], tensors[1], out=out)
        else:
            alpha, beta = (scale(*args) for scale in scales)
            op.out(tensors[2], tensors[0], tensors[1], beta=beta, alpha=alpha, out=out)
        if epilogue is not None:
            epilogue(*[out if i < 0 else args[i] for i in rival.epilogue_args])
    return run


def _exprs(exprs, params: list[str]) -> Callable[..., tuple]:
    """Python expressions of a kernel's parameters -> a function of its arguments."""
    body = "".join(f"{e}, " for e in exprs)
    return eval(f"lambda {', '.join(params)}: ({body})",  # noqa: S307 -- our own expressions
                {"FloorDiv": lambda a, b: a // b,
                 "ModularIndexing": lambda a, b, c: (a // b) % c})


def _grid(grid: tuple, params: list[str]) -> Callable[..., tuple]:
    """The grid from the launch's arguments (positional, in signature order): constant for
    fixed sizes, else computed from the kernel's size parameters (ks0, ks1, ...)."""
    if all(isinstance(g, int) for g in grid):
        return lambda *args: grid
    body = "".join(f"{g}, " for g in grid)  # ints, and expressions of the parameters
    return eval(f"lambda {', '.join(params)}: ({body})",  # noqa: S307 -- our own expressions
                {"FloorDiv": lambda a, b: a // b,
                 "ModularIndexing": lambda a, b, c: (a // b) % c})


def float64_bits(value) -> int:
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


_modules: dict[tuple[str, bool], ModuleType] = {}
_lock = threading.Lock()
_ENV = threading.Lock()


def load_kernel_module(path: Path, interpret: bool) -> tuple[ModuleType, bool]:
    """The kernel module in `path`, executed once per process per source text (a new graph with
    the same kernel reuses it, and on CUDA Triton's compiled binaries with it); and whether
    it was executed just now."""
    text = path.read_text()
    key = (hashlib.sha256(text.encode()).hexdigest(), interpret)
    with _lock:
        module = _modules.get(key)
        if module is not None:
            return module, False
        module = _execute(path, f"lazytriton_kernels.{path.stem}_{key[0][:12]}", interpret)
        _modules[key] = module
        metrics.counter_inc("KernelCompile")
    return module, True


def _execute(path: Path, name: str, interpret: bool) -> ModuleType:
    import triton  # noqa: F401  (before the environment changes: its own functions stay JIT)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    with _ENV:
        saved = os.environ.get("TRITON_INTERPRET")
        os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
        try:
            spec.loader.exec_module(module)
        finally:
            if saved is None:
                del os.environ["TRITON_INTERPRET"]
            else:
                os.environ["TRITON_INTERPRET"] = saved
    return module


class TritonBackend(KernelBackend):
    name = "triton"
    device_types = ("cuda", "cpu")  # cpu: Triton's interpreter

    def __init__(self, device: torch.device | None = None):
        if not triton_installed():
            raise RuntimeError(INSTALL_HINT)
        self.device = device or self.default_device()
        # TRITON_INTERPRET=1 interprets on a GPU machine too (debugging; data stays on the GPU)
        interpret = self.device.type == "cpu" or os.environ.get("TRITON_INTERPRET") == "1"
        self.codegen = TritonCodegen(interpret=interpret)
        self.launcher = TritonLauncher(interpret=interpret)

    @classmethod
    def is_available(cls) -> bool:
        return triton_installed()

    @classmethod
    def unavailable_reason(cls) -> str:
        return INSTALL_HINT

    @classmethod
    def interpreted(cls) -> bool:
        """Without a GPU, kernels run under Triton's interpreter: for tests, not for speed
        ("auto" then picks the C++ backend)."""
        return not torch.cuda.is_available()


register_backend("triton", TritonBackend)
