"""A kernel's parameters, described once: the code generator declares them, the wrapper passes
them and the launcher binds them, all from the same ordered list.

Names are canonical per kernel (p0, ks0, a0 ... in order of first use), so the same fused loop
nest prints the same source whatever the batch size: a size is a parameter, never a constant.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sympy
import torch

from lazytriton.loopir import Buffer

# what a parameter is, in the order a kernel takes them
BUFFER, SIZE, SCALAR, ERR, EXTENT, BOUNDS = "buffer", "size", "scalar", "err", "extent", "bounds"
POINTERS = (BUFFER, ERR, BOUNDS)


@dataclass(frozen=True)
class Param:
    kind: str  # one of BUFFER, SIZE, SCALAR, ERR, EXTENT, BOUNDS
    name: str  # the kernel's name for it
    dtype: torch.dtype  # element type of a pointer, or the type of a number
    value: Any = None  # BUFFER/EXTENT: the Buffer; SIZE: the graph's symbol; SCALAR: ScalarArg

    @property
    def is_pointer(self) -> bool:
        return self.kind in POINTERS


@dataclass
class KernelSignature:
    """A kernel's parameters in order of first use, under canonical names."""
    buffers: dict[str, tuple[str, Buffer]] = field(default_factory=dict)  # buffer name -> param
    sizes: dict[sympy.Symbol, sympy.Symbol] = field(default_factory=dict)  # graph sym -> ks
    scalars: dict[str, tuple[str, Any]] = field(default_factory=dict)  # ScalarArg -> aN
    uses_err: bool = False  # an int32 flag the kernel sets on a bad index or division by zero
    checked: bool = False  # bounds-checked accesses: an extent per buffer, and a report slot

    def buffer(self, buf: Buffer) -> str:
        buf = getattr(buf, "donor", None) or buf  # a donated output is its input's memory
        if buf.name not in self.buffers:
            self.buffers[buf.name] = (f"p{len(self.buffers)}", buf)
        return self.buffers[buf.name][0]

    def rename_sizes(self, expr):
        """expr in the kernel's size parameters (graph symbols s0, s1, ... -> ks0, ks1, ...)."""
        expr = sympy.sympify(expr)
        for s in sorted(expr.free_symbols, key=lambda s: s.name):
            if s.name.startswith("s") and s.name[1:].isdigit() and s not in self.sizes:
                self.sizes[s] = sympy.Symbol(f"ks{len(self.sizes)}", integer=True, positive=True)
        return expr.xreplace(self.sizes)

    def scalar(self, arg) -> str:
        if arg.name not in self.scalars:
            self.scalars[arg.name] = (f"a{len(self.scalars)}", arg)
        return self.scalars[arg.name][0]

    def params(self) -> list[Param]:
        out = [Param(BUFFER, name, buf.dtype, buf) for name, buf in self.buffers.values()]
        out += [Param(SIZE, str(ks), torch.int64, sym) for sym, ks in self.sizes.items()]
        out += [Param(SCALAR, name, arg.dtype, arg) for name, arg in self.scalars.values()]
        if self.uses_err:
            out.append(Param(ERR, "err", torch.int32))
        if self.checked:
            out += [Param(EXTENT, f"{name}_n", torch.int64, buf)
                    for name, buf in self.buffers.values()]
            out.append(Param(BOUNDS, "bounds", torch.int64))
        return out


@dataclass
class GeneratedKernel:
    """One scheduled kernel as a backend printed it."""
    kernel: Any  # the scheduler's Kernel
    name: str  # its function name in the source
    signature: KernelSignature
    source_file: str  # the file in the graph's cache folder that holds it
    index: dict = field(default_factory=dict)  # extra facts for kernels.json (e.g. its config)
    launch: Any = None  # what the backend's launcher needs beyond the signature (grids, configs)
    sample_sizes: dict[str, int] = field(default_factory=dict)  # size param -> this graph's value
    candidates: list = field(default_factory=list)  # other forms an autotuner may choose


@dataclass
class GeneratedCode:
    """A graph's kernels and the source files to write next to its IR."""
    kernels: list[GeneratedKernel]
    files: dict[str, str]  # file name -> text
    frame: Any = None  # cpp_frame.Frame when kernels run in segments from argument arrays
