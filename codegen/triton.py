"""Triton code generation: one module per scheduled kernel, read like hand-written Triton.

A kernel's outer loop nest is one flattened `x` range of XBLOCK lanes per program (per-dim
indices recovered by // and %). Each member's inner dims (its reduction, or the rest of its
row) are a flattened `r` range of RBLOCK lanes: held whole in registers when the row fits
(persistent: a softmax loads its row once), else a loop over RBLOCK chunks. A kernel of
pointwise members over one iteration space is a flat 1-D kernel over all its elements. A
scatter is a copy of its base, then its writes: free dims over lanes, ordered dims in a loop.

The plan (flat/row, persistent/looped, int32/int64 indexing) is decided from the graph's
concrete sizes; sizes themselves are kernel parameters, so a new batch size reuses the source.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import sympy
import torch

from lazytriton import autotune
from lazytriton.loopir import Buffer, Reduction, Scatter
from lazytriton.scheduler import Kernel, Member, kernel_reads, store_index
from lazytriton.sizevars import (FloorDiv, ModularIndexing, SizeVars, index_symbol, product,
                                 simplify_index)
from .common import ExprPrinter, KernelBody
from .signature import SCALAR, SIZE, GeneratedCode, GeneratedKernel, KernelSignature
from .triton_config import (INT32_LIMIT, SIZE_HINT, Launch, cdiv, persistent, pointwise_config,
                            row_config)
from .triton_helpers import helper_block, uses_libdevice
from .triton_ops import HALF, TL_TYPE, TritonOps, TritonVar, compute_dtype, literal, stored
from .triton_tuning import TritonCandidate, variants


class TritonPrinter(ExprPrinter):
    """Index expressions in Triton: // and % truncate like C, so they are printed only where the
    dividend is provably non-negative; elsewhere the floor_div/floor_mod helpers."""

    floor_div = "floor_div"
    floor_mod = "floor_mod"

    def _divide(self, base, div) -> str:
        if base.is_nonnegative:
            return f"({self.paren(base)} // {self.paren(div)})"
        return f"{self.floor_div}({self._print(base)}, {self._print(div)})"


class _NotFlat(Exception):
    """A member reads another's output at another element: the kernel needs rows."""


@dataclass
class _Range:
    """A flattened block range: x (the outer dims) or an r range (a member's inner dims)."""
    prefix: str  # "x", "r", "r1_": names are xindex, rmask, r1_numel, ...
    slot: str  # the block dim it occupies: "x" or "r"
    sizes: list  # the dims it flattens (no 1s)
    vars: list = field(default_factory=list)  # a symbol per dim: x0, r1, r1_0, ...

    def name(self, what: str) -> str:
        return self.prefix + what

    @property
    def flat(self) -> sympy.Symbol:
        return sympy.Symbol(self.name("index"), integer=True, nonnegative=True)

    @property
    def numel(self):
        return product(self.sizes)


_BLOCK = {"x": "XBLOCK", "r": "RBLOCK"}
_COMBINE = {"sum": "add", "prod": "mul", "max": "maximum", "min": "minimum", "any": "maximum"}
_ELEMENTWISE = {"add": "{0} + {1}", "mul": "{0} * {1}", "maximum": "maximum({0}, {1})",
                "minimum": "minimum({0}, {1})"}


@dataclass(frozen=True)
class Plan:
    """What the config of a written kernel is chosen from (and an autotuner's candidates)."""
    kind: str  # poi, per, red
    xnumel: int  # size hints
    rnumel: int  # 0: a flat kernel (no r range)
    persistent: bool  # rows held whole in registers
    grid_numel: object  # the x range's size (sympy), None: one program


class TritonKernel:
    """Writes one scheduled Kernel as the kernel function(s) of a Triton module."""

    looped_rows = False  # True: loop over RBLOCK chunks even where a row fits (a variant)
    plan: Plan | None = None  # set by generate() for flat and row kernels

    def __init__(self, kernel: Kernel, name: str, sizevars: SizeVars, interpret: bool):
        self.kernel = kernel
        self.name = name
        self.sizevars = sizevars
        self.interpret = interpret
        self.signature = KernelSignature()
        self.ops = TritonOps(self)
        self.printer = TritonPrinter()
        self.body = KernelBody()
        self.locals: dict[str, TritonVar] = {}  # this kernel's reduction results, by buffer
        self.written: set[str] = set()  # buffers stored so far
        self.ranges: dict = {}  # loop symbol -> its size, for simplify_index
        self.sym_dims: dict[str, frozenset] = {}  # symbol name -> block dims it varies over
        self.mask_stack: list[TritonVar] = []  # conditions of enclosing ops.masked
        self.layout: list[str] = []  # a tensor's block dims, in order ("x", "r")
        self.folds: list[_Range] = []  # ranges whose flat index replaces a run of their dims
        self.current_r: _Range | None = None  # the r range of the member being written
        self.before: list[str] = []  # lines ahead of the member's loop (accumulators)
        self.needs_barrier = False
        self.index_dtype = torch.int32 if self._fits_int32() else torch.int64

    def _fits_int32(self) -> bool:
        """int32 index arithmetic when every element index of this graph's sizes fits: the
        iteration space and every buffer the kernel writes or reads (int64 when a size is a
        symbol: any value may come)."""
        extents = []
        for m in self.kernel.members:
            node = m.node
            spans = [node.sizes, getattr(node, "reduction_sizes", None) or [],
                     getattr(node, "src_sizes", None) or []]
            extents += [product(spans[0]) * product(spans[1]), product(spans[2])]
        for buf in [m.buffer for m in self.kernel.members] + kernel_reads(self.kernel):
            extents.append(1 + abs(buf.offset) + sum(abs((s - 1) * st)
                                                     for s, st in zip(buf.sizes, buf.strides)))
        values = [self._evaluate_constant(e) for e in extents]
        return None not in values and max(values) < INT32_LIMIT // 2  # headroom: either sign

    def _evaluate_constant(self, expr) -> int | None:
        expr = sympy.sympify(expr)
        return None if expr.free_symbols else self.sizevars.evaluate(expr)

    def _hint(self, expr) -> int:
        """A size's value for choosing a config: a symbolic size counts as SIZE_HINT, so the
        program is the same whatever value the symbol has in the graph it is compiled from."""
        expr = sympy.sympify(expr)
        return int(expr.xreplace({sym: SIZE_HINT for sym in expr.free_symbols}))

    def _grid(self, numel, block: int) -> tuple:
        """Programs along x: a number, or for a symbolic size a Python expression of the
        kernel's size parameters, evaluated at each launch (triton_backend.bind)."""
        numel = sympy.sympify(numel)
        if not numel.free_symbols:
            return (cdiv(self.sizevars.evaluate(numel), block),)
        return (f"-(-({self.signature.rename_sizes(numel)}) // {block})",)

    # --- printing -----------------------------------------------------------------------------
    def index(self, expr) -> tuple[str, frozenset]:
        expr = simplify_index(expr, self.ranges)
        for rng in self.folds:
            expr = _fold(expr, rng)
        expr = self.signature.rename_sizes(expr)
        dims = frozenset().union(*(self.sym_dims.get(s.name, frozenset())
                                   for s in expr.free_symbols))
        return self.printer.doprint(expr), dims

    def shape(self, dims) -> str:
        return "[" + ", ".join(_BLOCK[d] if d in dims else "1" for d in self.layout) + "]"

    def cse(self, expr: str, dtype, dims, block: bool = False) -> TritonVar:
        found = self.body.block.lookup(expr)
        if found is not None:
            return found
        var = self.new_var(dtype, dims, block)
        self.body.emit(f"{var} = {expr}")
        self.body.block.cache[expr] = var
        return var

    def new_var(self, dtype, dims, block: bool = False) -> TritonVar:
        return TritonVar(f"tmp{next(self.body._counter)}", dtype, frozenset(dims),
                         block=block or bool(dims))

    def mask_for(self, dims) -> tuple[str | None, frozenset]:
        masks = []
        if "x" in dims:
            masks.append("xmask")
        if "r" in dims:
            masks.append(self.current_r.name("mask"))
        for cond in self.mask_stack:
            # a scalar condition (a cat's branch at a constant position) as a one-element
            # block: Triton's interpreter takes no scalar comparison as a load's mask
            masks.append(str(cond) if cond.block else f"(tl.full([1], 1, tl.int1) & {cond})")
            dims = dims | cond.dims
        return (" & ".join(masks) or None), frozenset(dims)

    def _pointer(self, param: str, index: str, dims, target, block: bool = False) -> str:
        """`block`: a one-element block rather than a scalar (in Triton's interpreter a scalar
        comparison broadcast against a block computes garbage)."""
        ptr = f"{param} + {index if _atomic(index) else f'({index})'}"
        if target != dims or (block and not target and self.layout):
            ptr = f"tl.broadcast_to({ptr}, {self.shape(target)})"
        return ptr

    # --- what the ops handler delegates ------------------------------------------------------
    def scalar_param(self, arg) -> str:
        return self.signature.scalar(arg)

    def load(self, buf: Buffer, index) -> TritonVar:
        local = self.locals.get(buf.name)
        if local is not None:
            return local
        param = self.signature.buffer(buf)
        text, dims = self.index(index)
        stored = self.body.block.lookup(f"stored {buf.name} {text}")
        if stored is not None:  # this lane wrote it: the value, not a load
            return stored
        if buf.name in self.written:
            if "r" not in self.layout:
                raise _NotFlat(buf.name)
            self.needs_barrier = True  # another thread of this program may have written it
        mask, target = self.mask_for(dims)
        load = f"tl.load({self._pointer(param, text, dims, target, block=True)}"
        load += f", {mask}, other=0)" if mask else ")"
        if buf.dtype in HALF:
            load += ".to(tl.float32)"
        return self.cse(load, buf.dtype, target, block=bool(self.layout))

    def store(self, buf: Buffer, index, value: TritonVar) -> None:
        param = self.signature.buffer(buf)
        text, dims = self.index(index)
        value = self.ops.to_dtype(value, buf.dtype)
        mask, target = self.mask_for(dims)
        target = target | value.dims
        written = stored(value, buf.dtype)
        line = f"tl.store({self._pointer(param, text, dims, target, block=True)}, {written}"
        self.body.emit(line + (f", {mask})" if mask else ")"))
        self.body.block.cache[f"stored {buf.name} {text}"] = value
        self.written.add(buf.name)

    def indirect(self, var: TritonVar, size, negative_wraps: bool = True) -> sympy.Symbol:
        """An index loaded from memory (common.py): out of range flags error 1, reads 0."""
        bound, _ = self.index(size)
        i = var if var.dtype == torch.int64 else self.cse(f"{var}.to(tl.int64)", torch.int64,
                                                          var.dims, var.block)
        wrapped = self.cse(f"tl.where({i} < 0, {i} + {bound}, {i})", torch.int64, i.dims,
                           i.block) if negative_wraps else i
        bad = self.cse(f"(({wrapped} < 0) | ({wrapped} >= {bound}))", torch.bool, i.dims,
                       i.block)
        self.flag_error(bad, 1)
        safe = self.cse(f"tl.where({bad}, 0, {wrapped})", torch.int64, i.dims, i.block)
        self.sym_dims[safe.name] = safe.dims
        return sympy.Symbol(safe.name, integer=True, nonnegative=True)

    def flag_error(self, cond: TritonVar, code: int) -> None:
        """err = code where cond holds in a live lane (1: index out of range, 2: x / 0)."""
        self.signature.uses_err = True
        mask, dims = self.mask_for(cond.dims)
        block = cond.block or bool(dims) or any(c.block for c in self.mask_stack)
        if mask and block and not cond.block:  # a scalar condition (a divisor argument):
            when = f"tl.where({mask}, {cond}, False)"  # the interpreter's scalar & block is
        else:  # an int32 block, no mask it accepts
            when = f"{cond} & {mask}" if mask else str(cond)
        ptr = f"err + tl.full({self.shape(dims)}, 0, tl.int32)" if block else "err"
        self.body.emit(f"tl.store({ptr}, {code}, {when})")

    def under_mask(self, cond: TritonVar, body):
        self.mask_stack.append(cond)
        self.body.push()  # values computed here are not valid outside
        try:
            value = body()
        finally:
            inner = self.body.pop()
            self.mask_stack.pop()
        self.body.block.lines += inner.lines
        return value

    # --- ranges -------------------------------------------------------------------------------
    def _new_range(self, prefix: str, slot: str, sizes: list) -> _Range:
        rng = _Range(prefix, slot, list(sizes))
        rng.vars = [index_symbol(prefix, k) for k in range(len(sizes))]
        for var, size in zip(rng.vars, sizes):
            self.ranges[var] = size
            self.sym_dims[var.name] = frozenset({slot})
        self.ranges[rng.flat] = rng.numel
        self.sym_dims[rng.flat.name] = frozenset({slot})
        self.folds.append(rng)
        return rng

    def _arange(self, slot: str) -> str:
        expand = ""
        if len(self.layout) == 2:
            expand = "[:, None]" if self.layout.index(slot) == 0 else "[None, :]"
        return f"tl.arange(0, {_BLOCK[slot]}){expand}"

    def _range_lines(self, rng: _Range, index: str) -> list[str]:
        """A range's flat index, mask and per-dim indices (unused ones are dropped later)."""
        lines = [f"{rng.name('index')} = {index}",
                 f"{rng.name('mask')} = {rng.name('index')} < {rng.name('numel')}"]
        stride = sympy.Integer(1)
        dims = []
        for var, size in reversed(list(zip(rng.vars, rng.sizes))):
            dims.append((var, size, stride))
            stride = stride * size
        for k, (var, size, stride) in enumerate(reversed(dims)):
            expr = FloorDiv(rng.flat, stride) if k == 0 else ModularIndexing(rng.flat, stride, size)
            lines.append(f"{var} = {self.printer.doprint(self.signature.rename_sizes(expr))}")
        return lines

    def _x_prologue(self, x: _Range) -> list[str]:
        pid = "tl.program_id(0)" + (".to(tl.int64)" if self.index_dtype == torch.int64 else "")
        return [f"xnumel = {self.index(x.numel)[0]}", f"xoffset = {pid} * XBLOCK"] + \
            self._range_lines(x, f"xoffset + {self._arange('x')}")

    # --- structure ----------------------------------------------------------------------------
    def generate(self) -> tuple[str, list[Launch], str]:
        """(source of the kernel function(s), their launches, kind: poi, per, red or sca)."""
        members = self.kernel.members
        if isinstance(members[0].node, Scatter):
            from .triton_scatter import scatter_kernel  # (imports this module)
            return scatter_kernel(self)
        spaces = {tuple(s for s in m.node.sizes if s != 1) for m in members}
        if not any(m.is_reduction for m in members) and len(spaces) == 1:
            try:
                return self._flat()
            except _NotFlat:
                self.__init__(self.kernel, self.name, self.sizevars, self.interpret)
        return self._rows()

    def _flat(self):
        """Pointwise members over one iteration space: a 1-D kernel over all its elements."""
        sizes = [s for s in self.kernel.members[0].node.sizes if s != 1]
        self.layout = ["x"] if sizes else []
        x = self._new_range("x", "x", sizes)
        for m in self.kernel.members:
            it = iter(x.vars)
            index = [sympy.Integer(0) if s == 1 else next(it) for s in m.node.sizes]
            self.store(m.buffer, store_index(m, index), m.node.inner(self.ops, index))
        config = pointwise_config(self._hint(x.numel), self.interpret)
        prologue = self._x_prologue(x) if sizes else []
        self.plan = Plan("poi", self._hint(x.numel), 0, False, x.numel if sizes else None)
        source = self.function(self.name, prologue, self.body.block.lines)
        return source, [self.launch_for(config)], "poi"

    def launch_for(self, config) -> Launch:
        """This kernel's launch with `config` (its grid follows XBLOCK)."""
        numel = self.plan.grid_numel
        grid = self._grid(numel, config.XBLOCK) if numel is not None else (1,)
        return Launch(self.name, grid, config)

    def _rows(self):
        """x over the outer dims; each member's inner dims an r range, in registers or looped."""
        outer = self.kernel.outer
        self.layout = (["x"] if outer else []) + ["r"]
        x = self._new_range("x", "x", outer)
        groups: dict[tuple, _Range] = {}
        for m in self.kernel.members:
            key = _inner_key(m)
            if key and key not in groups:
                groups[key] = self._new_range("r" if not groups else f"r{len(groups)}_", "r",
                                              list(key))
        rnumels = [self._hint(g.numel) for g in groups.values()]
        # a symbolic row may be longer than any block: looped, never held whole
        rows_fit = persistent(rnumels) and all(self._evaluate_constant(g.numel) is not None
                                               for g in groups.values()) and not self.looped_rows
        lines: list[str] = []
        for m in self.kernel.members:
            lines += self._member(m, x, groups.get(_inner_key(m)), rows_fit)
        config = row_config(self._hint(x.numel), max(rnumels, default=1), rows_fit,
                            self.interpret)
        prologue = self._x_prologue(x) if outer else []
        for rng in groups.values():
            prologue.append(f"{rng.name('numel')} = {self.index(rng.numel)[0]}")
            if rows_fit:
                prologue += self._range_lines(rng, self._arange("r"))
        if not rows_fit and groups:
            prologue.append(f"rbase = {self._arange('r')}")
        kind = "poi"
        if any(m.is_reduction for m in self.kernel.members):
            kind = "per" if rows_fit else "red"
        self.plan = Plan(kind, self._hint(x.numel), max(rnumels, default=1), rows_fit,
                         x.numel if outer else None)
        source = self.function(self.name, prologue, lines)
        return source, [self.launch_for(config)], kind

    def _member(self, m: Member, x: _Range, rng: _Range | None, rows_fit: bool) -> list[str]:
        """One member's lines: its loop over its r range (unless in registers), then its
        reduction's result and store."""
        self.needs_barrier = False
        self.current_r = rng
        self.before = []
        index, rindex = _member_index(m, x.vars, rng.vars if rng else [])
        looped = rng is not None and not rows_fit
        outer_block = self.body.block
        start = len(outer_block.lines)
        if looped:
            self.body.push()
        finish = None
        if m.is_reduction:
            finish = self._reduction(m, index, rindex, rng, looped)
        else:
            self.store(m.buffer, store_index(m, index), m.node.inner(self.ops, index))
        loop = []
        if looped:
            inner = self.body.pop()
            header = f"for {rng.name('offset')} in range(0, {rng.name('numel')}, RBLOCK):"
            defs = self._range_lines(rng, f"{rng.name('offset')} + rbase")
            body = used_definitions(defs, inner.lines) + inner.lines
            loop = [header] + ["    " + line for line in body]
        if finish is not None:
            self._result(m, index, finish())
        emitted = outer_block.lines[start:]
        del outer_block.lines[start:]
        barrier = ["tl.debug_barrier()"] if self.needs_barrier else []
        return barrier + self.before + loop + emitted

    # --- reductions ---------------------------------------------------------------------------
    def _reduction(self, m: Member, index, rindex, rng: _Range | None, looped: bool):
        """Accumulate in the member's loop (or its registers); return what gives the result."""
        node: Reduction = m.node
        rtype = node.reduction_type
        value = node.inner(self.ops, index, rindex)
        if rng is None:  # every reduced dim has size 1: the value itself
            if rtype in ("argmax", "argmin"):
                return lambda: self.ops.constant(0, torch.int64)
            return lambda: self.ops.to_dtype(value, _acc_dtype(node.src_dtype, rtype))
        if rtype in ("argmax", "argmin"):
            return self._arg_reduction(value, rtype, rng, looped)
        return self._reduce(value, rtype, node.src_dtype, rng, looped)

    def _reduce(self, value, rtype: str, src_dtype, rng: _Range, looped: bool):
        acc_dtype = _acc_dtype(src_dtype, rtype)
        work = torch.int8 if acc_dtype == torch.bool else acc_dtype  # bool reduces as int8
        init = _init(rtype, acc_dtype if acc_dtype == torch.bool else work)
        v = self.ops._tensor(self.ops.to_dtype(value, work))
        masked = f"tl.where({rng.name('mask')}, {v}, {init})"
        combine = _COMBINE[rtype]
        reduced = self.layout_dims - {"r"}

        def final(src: str):
            var = self.cse(f"tl.reduce({src}, {self.layout.index('r')}, {combine}){self._keep}",
                           work, reduced)
            return self.ops.to_dtype(var, acc_dtype)
        if not looped:
            result = final(masked)
            return lambda: result
        acc = f"acc{next(self.body._counter)}"
        self.before.append(f"{acc} = tl.full({self.shape(self.layout_dims)}, {init}, "
                           f"{TL_TYPE[work]})")
        self.body.emit(f"{acc} = " + _ELEMENTWISE[combine].format(acc, masked))
        return lambda: final(acc)

    def _arg_reduction(self, value, rtype: str, rng: _Range, looped: bool):
        """(value, index) pairs reduced with eager's rules: NaN wins, ties take the first."""
        work = torch.int8 if value.dtype == torch.bool else compute_dtype(value.dtype)
        v = self.ops._tensor(self.ops.to_dtype(value, work))
        shape = self.shape(self.layout_dims)
        values = f"tl.where({rng.name('mask')}, {v}, {_init(rtype[3:], work)})"
        index = f"tl.broadcast_to({rng.name('index')}.to(tl.int64), {shape})"
        axis = self.layout.index("r")

        def final(vals: str, idx: str):
            var = self.new_var(torch.int64, self.layout_dims - {"r"})
            self.body.emit(f"_, {var} = tl.reduce(({vals}, {idx}), {axis}, {rtype})")
            if self._keep:
                self.body.emit(f"{var} = {var}{self._keep}")
            return var
        if not looped:
            result = final(values, index)
            return lambda: result
        n = next(self.body._counter)
        best, at = f"acc{n}_value", f"acc{n}_index"
        self.before += [f"{best} = tl.full({shape}, {_init(rtype[3:], work)}, {TL_TYPE[work]})",
                        f"{at} = tl.full({shape}, {2**63 - 1}, tl.int64)"]
        self.body.emit(f"{best}, {at} = {rtype}({best}, {at}, {values}, {index})")
        return lambda: final(best, at)

    @property
    def layout_dims(self) -> frozenset:
        return frozenset(self.layout)

    @property
    def _keep(self) -> str:
        """Indexing that keeps a reduced 2-D block 2-D (rows as [XBLOCK, 1])."""
        return "[:, None]" if len(self.layout) == 2 else ""

    def _result(self, m: Member, index, result: TritonVar) -> None:
        node = m.node
        if node.reduction_type not in ("argmax", "argmin"):
            result = self.ops.to_dtype(result, node.dtype)
        self.locals[m.buffer.name] = result
        if not m.local:
            self.current_r = None
            self.store(m.buffer, store_index(m, index), result)

    # --- the function -------------------------------------------------------------------------
    def function(self, name: str, prologue: list[str], body: list[str]) -> str:
        """The @triton.jit function: parameters, then the definitions the body uses."""
        lines = self._param_casts() + prologue
        lines = used_definitions(lines, body) + body
        text = "\n".join(lines)
        params = [p.name for p in self.signature.params()]
        params += [f"{b}: tl.constexpr" for b in ("XBLOCK", "RBLOCK") if re.search(rf"\b{b}\b",
                                                                                   text)]
        scalars = [p.name for p in self.signature.params() if p.kind == SCALAR]
        decorator = f"@triton.jit(do_not_specialize={scalars})" if scalars else "@triton.jit"
        head = f"{decorator}\ndef {name}({', '.join(params)}):"
        return head + "\n" + "\n".join("    " + ln if ln else ln for ln in lines) + "\n"

    def _param_casts(self) -> list[str]:
        """float64 scalars arrive as their bits (Triton would pass a Python float as float32);
        with int64 indexing, sizes are widened before any product."""
        lines = []
        for p in self.signature.params():
            if p.kind == SCALAR and p.dtype == torch.float64:
                lines.append(f"{p.name} = {p.name}.to(tl.int64).to(tl.float64, bitcast=True)")
            elif p.kind == SIZE and self.index_dtype == torch.int64:
                lines.append(f"{p.name} = {p.name}.to(tl.int64)")
        return lines


# --- helpers --------------------------------------------------------------------------------

def _atomic(text: str) -> bool:
    """Printed so that `p + text` needs no parentheses."""
    return text.isidentifier() or text.isdigit() or (text.startswith("(") and text.endswith(")")
                                                     and text.count("(") == 1)


def _inner_key(m: Member) -> tuple:
    return tuple(s for s in m.inner_sizes if s != 1)


def _member_index(m: Member, xvars: list, rvars: list) -> tuple[list, list]:
    """The member's index per dim of its sizes, and its reduction index; size-1 dims are 0."""
    node = m.node
    it_x, it_r = iter(xvars), iter(rvars)
    zero = sympy.Integer(0)
    if m.is_reduction:
        return ([zero if s == 1 else next(it_x) for s in node.sizes],
                [zero if s == 1 else next(it_r) for s in node.reduction_sizes])
    index = [zero if s == 1 else next(it_x) for s in node.sizes[:m.outer_dims]]
    index += [zero if s == 1 else next(it_r) for s in node.sizes[m.outer_dims:]]
    return index, []


def _fold(expr, rng: _Range):
    """Write a run of the range's innermost dims that the expression indexes contiguously
    (coefficients c * its strides) with the flat index: x1 + 7*x0 -> xindex."""
    n = len(rng.vars)
    if not (expr.free_symbols & set(rng.vars)):
        return expr
    if n == 1:
        return expr.xreplace({rng.vars[0]: rng.flat})
    expr = sympy.expand(expr)
    coeffs = [expr.coeff(v) for v in rng.vars]
    if any(c.free_symbols & set(rng.vars) for c in coeffs) or coeffs[-1] == 0:
        return expr
    c, k, stride = coeffs[-1], n - 1, sympy.Integer(1)
    while k > 0 and sympy.expand(coeffs[k - 1] - c * stride * rng.sizes[k]) == 0:
        stride = stride * rng.sizes[k]
        k -= 1
    if k == n - 1:
        return expr
    span = product(rng.sizes[k:])
    flat = rng.flat if k == 0 else ModularIndexing(rng.flat, 1, span)
    rest = expr - sum((coeffs[i] * rng.vars[i] for i in range(k, n)), sympy.Integer(0))
    return sympy.expand(rest) + c * flat


_DEFINITION = re.compile(r"^(\w+)(?:,\s*\w+)* = ")
_NAME = re.compile(r"\b[A-Za-z_]\w*\b")


def used_definitions(definitions: list[str], body: list[str]) -> list[str]:
    """The definitions that `body` needs, directly or through other definitions (no dead code)."""
    needed = set(_NAME.findall("\n".join(body)))
    kept = []
    for line in reversed(definitions):
        match = _DEFINITION.match(line)
        name = match.group(1) if match else None
        if name is None or name in needed:
            kept.append(line)
            needed |= set(_NAME.findall(line.split("=", 1)[1] if name else line))
    return list(reversed(kept))


def _acc_dtype(dtype: torch.dtype, rtype: str) -> torch.dtype:
    if rtype == "any":
        return torch.bool
    if dtype in HALF or dtype == torch.float32:
        return torch.float32
    if dtype == torch.bool:
        return torch.int64 if rtype in ("sum", "prod") else torch.bool
    if not dtype.is_floating_point and rtype in ("sum", "prod"):
        return torch.int64
    return dtype


def _init(rtype: str, dtype: torch.dtype) -> str:
    """The identity of a reduction, as a literal of dtype."""
    if rtype == "sum":
        return literal(0, dtype)
    if rtype == "prod":
        return literal(1, dtype)
    high = rtype in ("max", "any")
    if dtype == torch.bool:  # as int8: any/max of nothing is False, all/min of nothing True
        return "0" if high else "1"
    if dtype.is_floating_point:
        return literal(float("-inf") if high else float("inf"), dtype)
    info = torch.iinfo(dtype)
    return str(info.min if high else info.max)


# --- modules ------------------------------------------------------------------------------------

_COMPOSITE: set[str] | None = None
_PLUMBING = {"clone", "copy", "view", "reshape", "expand", "permute", "alias", "to_copy",
             "unsqueeze", "squeeze", "slice", "select", "as_strided", "detach", "t", "transpose",
             "unsafe_view", "convert_element_type", "zeros_like", "ones_like", "full_like",
             "empty_like", "full", "zero", "fill", "new_zeros", "new_ones", "scalar_tensor"}


def kernel_name(kernel: Kernel, kind: str, number: int) -> str:
    """triton_<kind>_<ops>_<n>, by the op a person would name: the outermost decomposed op
    (softmax, not amax/sub/exp/sum/div), else the first few ops fused."""
    global _COMPOSITE
    if _COMPOSITE is None:
        from lazytriton.lowering.registry import DECOMPOSITIONS
        _COMPOSITE = {str(op).split(".", 1)[1].split(".")[0].lstrip("_") for op in DECOMPOSITIONS}
    ops = [o.split(".")[0].lstrip("_") for o in kernel.origins]
    ops = list(dict.fromkeys(o for o in ops if o not in _PLUMBING)) or ["copy"]
    composite = [o for o in ops if o in _COMPOSITE]
    named = ops[:3] if kind == "tem" else composite[-1:] or ops[:3]  # a template: its mm first
    return f"triton_{kind}_{'_'.join(named)}_{number}"


def module_source(name: str, origins: list[str], functions: list[str]) -> str:
    """A self-contained module: imports, the helpers its functions call, the functions."""
    code = "\n\n\n".join(f.rstrip("\n") for f in functions)
    helpers = helper_block(code)
    imports = ["import triton", "import triton.language as tl"]
    if uses_libdevice(helpers):
        imports = ["import os", ""] + imports + [
            "from triton.language.extra import libdevice", "",
            'INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"']
    ops = ", ".join(sorted(set(origins))) or "copy"
    parts = [f'"""Generated by lazytriton: {name} ({ops})."""\n' + "\n".join(imports)]
    parts += [helpers] if helpers else []
    return "\n\n\n".join(parts + [code]) + "\n"


class TritonCodegen:
    """The Triton backend's code generator: a module per kernel, named by what it computes."""
    parallel_inner = False  # without an outer range a kernel is one program
    outer_reductions = False  # a column sum is a kernel of its own (programs share no partials)
    kernel_dtypes = frozenset(TL_TYPE)  # ops on others (complex) stay aten calls

    matmul_templates = True  # mm + epilogue as one kernel (lazytriton/template_fusion.py)

    def __init__(self, interpret: bool):
        self.interpret = interpret  # only block sizes differ: the source is the same

    @staticmethod
    def _writer(kernel: Kernel) -> type[TritonKernel]:
        from lazytriton.template_fusion import TemplateKernel
        if isinstance(kernel, TemplateKernel):
            from .triton_template import TritonMatmulKernel  # (imports this module)
            return TritonMatmulKernel
        return TritonKernel

    def generate(self, kernels: list[Kernel], sizevars: SizeVars) -> GeneratedCode:
        out, files = [], {}
        mode = autotune.mode()
        for number, kernel in enumerate(kernels):
            writer = self._writer(kernel)(kernel, f"KERNEL_{number}", sizevars, self.interpret)
            source, launches, kind = writer.generate()
            extra, candidates = variants(kernel, writer, launches, sizevars, self.interpret, mode)
            name = kernel_name(kernel, kind, number)
            placeholder = re.compile(rf"\bKERNEL_{number}(?!\d)")
            sources = [placeholder.sub(name, text) for text in [source] + extra]
            launches = [_renamed(lc, placeholder, name) for lc in launches]
            candidates = [_renamed_candidate(c, placeholder, name) for c in candidates]
            file = f"{name}.py"
            files[file] = module_source(name, kernel.origins, sources)
            index = {"launches": [{"function": lc.function, "grid": list(lc.grid),
                                   "config": lc.config.as_dict()} for lc in launches],
                     "index_dtype": str(writer.index_dtype).replace("torch.", "")}
            if candidates:  # labels, as the C++ backend lists them; then what each runs
                index["candidates"] = [c.label for c in candidates]
                index["candidate_launches"] = [
                    {"label": c.label, "config": c.config,
                     "functions": [lc.function for lc in c.launches]} for c in candidates]
            sample_sizes = {str(ks): sizevars.evaluate(sym)
                            for sym, ks in writer.signature.sizes.items()}
            out.append(GeneratedKernel(kernel, name, writer.signature, file, index, launches,
                                       sample_sizes, candidates))
        return GeneratedCode(out, files)


def _renamed(launch: Launch, placeholder: re.Pattern, name: str) -> Launch:
    return Launch(placeholder.sub(name, launch.function), launch.grid, launch.config)


def _renamed_candidate(c: TritonCandidate, placeholder: re.Pattern, name: str):
    rival = c.rival
    if rival is not None:
        rival = dataclasses.replace(rival, epilogue_launches=tuple(
            _renamed(lc, placeholder, name) for lc in rival.epilogue_launches))
    return dataclasses.replace(c, launches=tuple(_renamed(lc, placeholder, name)
                                                 for lc in c.launches), rival=rival)
