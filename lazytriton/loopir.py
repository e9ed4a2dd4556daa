"""The loop-level IR lowerings produce and the scheduler groups into kernels.

A tensor is described by how to compute its element at a (symbolic) index: `loader(ops, index)`
calls methods of an `ops` handler (load, add, exp, where, ...) that the code generator supplies,
so the same description prints as C++ or Triton. Pointwise nodes stay unrealized and inline into
their consumers (vertical fusion for free); reductions, extern kernel results, graph outputs,
values used by several kernels and computations too long to inline (lowering.MAX_INLINED_OPS)
become named buffers.
"""
from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import sympy
import torch

from .sizevars import Expr, flat_index

Loader = Callable[[Any, Sequence[Expr]], Any]


class TensorBox:
    """A lowered tensor: dtype, symbolic sizes and a loader."""

    dtype: torch.dtype
    sizes: list[Expr]

    def loader(self) -> Loader:
        raise NotImplementedError

    @property
    def ndim(self) -> int:
        return len(self.sizes)


_origin_sink = threading.local()


@contextmanager
def collecting_origins() -> Iterator[list[str]]:
    """While active, every inlined computation a loader evaluates appends its aten ops (the
    deepest first) to the list yielded: what a kernel computes, as opposed to what it loads."""
    outer = getattr(_origin_sink, "seen", None)
    _origin_sink.seen = seen = []
    try:
        yield seen
    finally:
        _origin_sink.seen = outer


def _noting(origins: tuple[str, ...], inner: Loader) -> Loader:
    def load(ops, index):
        value = inner(ops, index)
        seen = getattr(_origin_sink, "seen", None)
        if seen is not None:
            seen.extend(origins)
        return value
    return load


@dataclass(eq=False)
class Buffer(TensorBox):
    """Memory with a name: a graph input, a kernel's output or an extern kernel's result."""
    name: str
    dtype: torch.dtype
    sizes: list[Expr]
    strides: list[Expr]
    offset: Expr = sympy.Integer(0)

    def loader(self) -> Loader:
        def load(ops, index):
            return ops.load(self, flat_index(index, self.strides, self.offset))
        return load

    def strided_loader(self, sizes, strides, offset) -> "View":
        def load(ops, index):
            return ops.load(self, flat_index(index, strides, offset))
        return View(self.dtype, list(sizes), load, base=self)


@dataclass(eq=False)
class InputBuffer(Buffer):
    input_index: int = -1


@dataclass(eq=False)
class ConstantBuffer(Buffer):
    """A tensor fixed at compile time (made by a decomposition, e.g. a scalar_tensor)."""
    tensor: Any = None


@dataclass(eq=False)
class ComputedBuffer(Buffer):
    """A realized Pointwise or Reduction: the scheduler emits the loops that fill it."""
    node: "Computation | None" = None
    donor: "InputBuffer | None" = None  # an input whose memory it is written into (donation)


@dataclass(eq=False)
class ExternBuffer(Buffer):
    """One output of an extern kernel (an aten call on realized inputs)."""
    extern: "ExternKernel | None" = None
    output_index: int = 0


@dataclass(eq=False)
class View(TensorBox):
    """Re-indexing of another tensor: no copy (permute, expand, slice, reshape, ...)."""
    dtype: torch.dtype
    sizes: list[Expr]
    load: Loader
    base: TensorBox | None = None
    # for an as_strided view of a computation: (strides, offset, the base's dense strides), so
    # an extern call can take a strided view of the realized base instead of a copy
    strided: tuple | None = None

    def loader(self) -> Loader:
        return self.load


@dataclass(eq=False)
class Computation(TensorBox):
    """Common to Pointwise and Reduction: what a kernel loop computes."""
    dtype: torch.dtype
    sizes: list[Expr]
    # the aten ops whose result this computation is (not those it loads or inlines), for the
    # kernel index; a realized Pointwise hands them to the loop that fills its buffer
    origins: list[str] = field(default_factory=list)
    # what the lowering that made it knows of its values, kept when it is realized
    # (max_pool2d's indices: the window they index, which its backward relies on)
    facts: dict = field(default_factory=dict)


@dataclass(eq=False)
class Pointwise(Computation):
    inner: Loader = None

    def loader(self) -> Loader:
        # a reader that inlines this computation performs its ops: it notes them when run
        return _noting(tuple(self.origins), self.inner) if self.origins else self.inner


@dataclass(eq=False)
class Reduction(Computation):
    """Reduces `reduction_sizes` dims for each index of `sizes` (the kept dims)."""
    reduction_sizes: list[Expr] = None
    reduction_type: str = "sum"  # sum, prod, max, min, argmax, argmin, any
    inner: Callable[[Any, Sequence[Expr], Sequence[Expr]], Any] = None  # (ops, index, rindex)
    src_dtype: torch.dtype = torch.float32

    def loader(self) -> Loader:
        raise RuntimeError("a reduction is read through its realized buffer")


@dataclass(eq=False)
class Scatter(Computation):
    """A copy of `base` (sizes `sizes`) with `value` written at `target` for every index of
    `src_sizes`: scatter, scatter_add, index_put, as_strided_scatter. `target(ops, index)` gives
    the output index per dim, or one flat offset into the (contiguous) output when `flat_target`.
    Dims flagged in `ordered` can hit one element twice: they run in order, so accumulation is
    deterministic and the last write wins, as on eager's CPU; the other dims run in parallel."""
    base: Loader = None
    src_sizes: list[Expr] = None
    target: Loader = None
    value: Loader = None
    accumulate: bool = False
    ordered: list[bool] = None
    flat_target: bool = False

    def loader(self) -> Loader:
        raise RuntimeError("a scatter is read through its realized buffer")


@dataclass(eq=False)
class ExternKernel:
    """An aten op run as is on realized buffers (matmul, convolution, and ops not lowered)."""
    op: Any
    args: tuple  # (name, value) with TensorBox values realized to Buffer
    outputs: list[ExternBuffer] = field(default_factory=list)


_names = itertools.count()


def new_name(prefix: str = "buf") -> str:
    return f"{prefix}{next(_names)}"


def input_buffer(index: int, dtype: torch.dtype, sizes: list[Expr], strides: list[Expr]) -> InputBuffer:
    return InputBuffer(f"in{index}", dtype, sizes, strides, sympy.Integer(0), input_index=index)



@dataclass(frozen=True, eq=False)
class ScalarArg:
    """A Python number that is a graph input: a kernel argument, not a constant."""
    name: str
    input_index: int
    value: Any

    @property
    def dtype(self) -> torch.dtype:
        if isinstance(self.value, bool):
            return torch.bool
        return torch.int64 if isinstance(self.value, int) else torch.float64


@dataclass(eq=False)
class StridedView(TensorBox):
    """A view of a buffer by sizes/strides/offset: loads re-index it; externs get it uncopied."""
    base: Buffer
    dtype: torch.dtype
    sizes: list
    strides: list
    offset: Any

    def loader(self):
        return self.base.strided_loader(self.sizes, self.strides, self.offset).loader()
