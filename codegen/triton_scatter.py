"""Scatter kernels in Triton (scatter, scatter_add, index_put, writes through a view): two
functions in one module, launched in order. The first copies the base into the output; the
second makes the writes, with the source dims that cannot collide spread over lanes and the
dims that can run in order in a loop inside each program, so accumulation is deterministic and
the last write wins, as on eager's CPU. Integer accumulation, where order cannot matter, uses
atomics over all dims instead."""
from __future__ import annotations

import sympy
import torch

from lazytriton.loopir import Scatter
from lazytriton.scheduler import store_index
from lazytriton.sizevars import flat_index
from .common import KernelBody
from .triton import used_definitions
from .triton_config import Launch, pointwise_config
from .triton_ops import HALF, TL_TYPE, stored

_ATOMIC_DTYPES = (torch.int32, torch.int64)


def scatter_kernel(k) -> tuple[str, list[Launch], str]:
    """k: the TritonKernel of a one-member Scatter kernel."""
    member = k.kernel.members[0]
    node: Scatter = member.node
    copy = _copy(k, member)
    writes = _writes(k, member, node)
    sources = [k.function(name, prologue, body) for name, prologue, body, _ in (copy, writes)]
    launches = [Launch(name, grid, config) for name, _, _, (grid, config) in (copy, writes)]
    return "\n\n".join(sources), launches, "sca"


def _phase(k, layout: list[str]) -> None:
    """Fresh per-function state; the signature is shared by both functions."""
    k.body = KernelBody()
    k.layout = layout
    k.folds, k.ranges, k.written, k.locals = [], {}, set(), {}


def _copy(k, member):
    node = member.node
    sizes = [s for s in node.sizes if s != 1]
    _phase(k, ["x"] if sizes else [])
    x = k._new_range("x", "x", sizes)
    it = iter(x.vars)
    index = [sympy.Integer(0) if s == 1 else next(it) for s in node.sizes]
    k.store(member.buffer, store_index(member, index), node.base(k.ops, index))
    return _launchable(k, f"{k.name}_copy", x, sizes)


def _writes(k, member, node: Scatter):
    buf = member.buffer
    atomic = node.accumulate and buf.dtype in _ATOMIC_DTYPES  # order cannot matter
    dims = [d for d, s in enumerate(node.src_sizes) if s != 1]
    free = [d for d in dims if atomic or not node.ordered[d]]
    ordered = [d for d in dims if d not in free]
    _phase(k, ["x"] if free else [])
    x = k._new_range("x", "x", [node.src_sizes[d] for d in free])
    seq = k._new_range("o", "o", [node.src_sizes[d] for d in ordered])
    for var in seq.vars + [seq.flat]:
        k.sym_dims[var.name] = frozenset()  # the same for every lane
    src_index = [sympy.Integer(0)] * len(node.src_sizes)
    for d, var in zip(free, x.vars):
        src_index[d] = var
    for d, var in zip(ordered, seq.vars):
        src_index[d] = var
    if ordered:
        k.body.push()
    target = node.target(k.ops, src_index)
    value = k.ops.to_dtype(node.value(k.ops, src_index), buf.dtype)
    flat = target if node.flat_target else flat_index(target, buf.strides, buf.offset)
    _write(k, buf, flat, value, node.accumulate, atomic)
    if ordered:
        inner = k.body.pop()
        defs = k._range_lines(seq, "")[2:]  # per-dim indices of the loop counter
        # the counter as a Triton value: under Triton's interpreter a range() counter is a
        # Python int, and the indices computed from it have no .to()
        k.body.emit("for ocount in range(0, onumel):")
        counter = [f"oindex = tl.full([], ocount, {TL_TYPE[k.index_dtype]})"]
        for line in counter + used_definitions(defs, inner.lines) + inner.lines + \
                ["tl.debug_barrier()"]:
            k.body.emit("    " + line)
        k.body.block.lines.insert(0, f"onumel = {k.index(seq.numel)[0]}")
    return _launchable(k, k.name, x, x.sizes)


def _write(k, buf, flat, value, accumulate: bool, atomic: bool) -> None:
    param = k.signature.buffer(buf)
    text, dims = k.index(flat)
    mask, target = k.mask_for(dims | value.dims)
    ptr = k._pointer(param, text, dims, target, block=True)
    masked = f", {mask}" if mask else ""
    if atomic:
        k.body.emit(f"tl.atomic_add({ptr}, {value}{masked})")
        return
    if accumulate:
        old = f"tl.load({ptr}{masked}{', other=0' if mask else ''})"
        if buf.dtype in HALF:
            old += ".to(tl.float32)"
        combine = "|" if buf.dtype == torch.bool else "+"
        value = k.cse(f"{old} {combine} {value}", torch.float32 if buf.dtype in HALF
                      else buf.dtype, target)
        value = k.ops.to_dtype(value, buf.dtype)  # eager rounds each sum to a half type
    written = stored(value, buf.dtype)
    k.body.emit(f"tl.store({ptr}, {written}{masked})")


def _launchable(k, name: str, x, sizes: list):
    config = pointwise_config(k._hint(x.numel), k.interpret)
    prologue = k._x_prologue(x) if sizes else []
    grid = k._grid(x.numel, config.XBLOCK) if sizes else (1,)
    return name, prologue, k.body.block.lines, (grid, config)
