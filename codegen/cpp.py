"""C++/OpenMP code generation: one function per scheduled kernel, all of a graph's kernels in one
translation unit. Parameter and size names are canonical per kernel (p0, ks0, a0 ... in order of
first use), so the same fused loop nest prints the same source whatever the batch size."""
from __future__ import annotations

from dataclasses import dataclass

import sympy
import torch

from lazytriton import autotune
from lazytriton.loopir import Buffer, Reduction, Scatter
from lazytriton.scheduler import (Kernel, Member, across_rindex, member_index, member_reads,
                                  ranges_of, store_index)
from lazytriton.sizevars import (contiguous_strides, flat_index, index_symbol, product,
                                 same_sizes, simplify_index)

from . import exprtree
from .common import CppPrinter, CSEVariable, KernelBody
from .cpp_hoist import hoisted
from .cpp_loops import FlatLoop, flat_loop, group_loop, shared_loop_groups
from .cpp_ops import CTYPE, HALF, CppOps, access, compute_ctype
from .cpp_variants import (PARALLEL_MIN_WORK, CppLaunch, CppVariant, KernelFacts, LoopConfig,
                           facts, reduction_tree, variants)
from .row_max import nonpositive_exp, row_max_summands
from .signature import (BOUNDS, BUFFER, ERR, SCALAR, GeneratedCode, GeneratedKernel,
                        KernelSignature, Param)

# What every translation unit includes: lazytriton/templates/cpp/prelude.h (with vecmath.h).
# The library's cache key covers the headers' text (runtime/cpp_build.py).
PRELUDE_INCLUDE = '#include "prelude.h"  // lazytriton/templates/cpp/: eager semantics, Philox, math'

_REDUCE_INIT = {
    "sum": lambda dt: "0", "prod": lambda dt: "1", "any": lambda dt: "false",
    "max": lambda dt: (f"-std::numeric_limits<{compute_ctype(dt)}>::infinity()"
                       if dt.is_floating_point else f"std::numeric_limits<{compute_ctype(dt)}>::lowest()"),
    "min": lambda dt: (f"std::numeric_limits<{compute_ctype(dt)}>::infinity()"
                       if dt.is_floating_point else f"std::numeric_limits<{compute_ctype(dt)}>::max()"),
}
_REDUCE_COMBINE = {"sum": "{acc} + {v}", "prod": "{acc} * {v}", "any": "{acc} || {v}",
                   "max": "lt::maximum({acc}, {v})", "min": "lt::minimum({acc}, {v})"}
_BOOL_COMBINE = {"max": "{acc} || {v}", "min": "{acc} && {v}"}
_BOOL_INIT = {"max": "false", "min": "true"}


def _simd_reduction_clause(rtype: str, ctype: str) -> str | None:
    """The OpenMP reduction operator that lets `omp simd` vectorize this reduction."""
    if ctype == "bool":
        return {"any": "||", "max": "||", "min": "&&"}.get(rtype)
    if rtype in ("max", "min"):
        return ("lt" + rtype) if ctype in ("float", "double") else rtype
    return {"sum": "+", "prod": "*"}.get(rtype)


# A float sum longer than this adds blocks of it in float and the blocks' sums in a double
# (CppKernel._blocked_sum): 1e6 values of 0.1 summed 8 lanes at a time in float were off by
# 6e-4 of the total, eager's cascade sum by 6e-8.
SUM_BLOCK = 1024


def _long_float_sum(rtype: str, ctype: str, sizes) -> bool:
    """A float sum over one loop that may run past SUM_BLOCK elements."""
    if rtype != "sum" or ctype != "float" or len(sizes) != 1:
        return False
    n = sympy.sympify(sizes[0])
    return not n.is_Integer or int(n) > SUM_BLOCK


def _acc_ctype(dtype: torch.dtype, rtype: str) -> str:
    if rtype == "any":
        return "bool"
    if dtype in HALF or dtype == torch.float32:
        return "float"
    if dtype == torch.bool:
        return "int64_t" if rtype in ("sum", "prod") else "bool"
    if not dtype.is_floating_point and rtype in ("sum", "prod"):
        return "int64_t"
    return compute_ctype(dtype)


class CppKernel:
    """Writes one scheduled Kernel as a C++ function, in the loop shape `config` says
    (cpp_variants.py); `function`: its name (a variant's: kernel__c1); `signature`: the
    heuristic variant's, so every variant takes the same parameters in the same order."""

    def __init__(self, kernel: Kernel, checked: bool = False, config: LoopConfig = LoopConfig(),
                 kernel_facts: KernelFacts | None = None, function: str | None = None,
                 signature: KernelSignature | None = None):
        self.kernel = kernel
        self.config = config
        self.facts = kernel_facts or facts(kernel)
        self.function = function or kernel.name
        self.args = signature or KernelSignature(checked=checked)
        self._reduced: dict[tuple, tuple[str, torch.dtype]] = {}  # reduction key -> its acc
        self._reductions_done: list[Member] = []  # in the order they are printed
        self._across: list[_Partials] = []  # the across members' partials (_across_member)
        self.body = KernelBody()
        self.ops = CppOps(self)
        self.printer = CppPrinter()
        self.locals: dict[str, CSEVariable] = {}
        self._ranges: dict = {}

    def index(self, expr) -> str:
        expr = simplify_index(expr, self._ranges)
        return self.printer.doprint(self.args.rename_sizes(expr))

    # --- structure --------------------------------------------------------------------------
    def generate(self) -> str:
        kernel = self.kernel
        self.parallel_if = self._parallel_condition()
        outer_vars = self._outer_vars = [sympy.Symbol(f"x{k}", integer=True, nonnegative=True)
                                         for k in range(len(kernel.outer))]
        for var, size in zip(outer_vars, kernel.outer):
            self._ranges[var] = size
        if self.config.columns and self.facts.column:
            loops = self._column_reduction(outer_vars)
            return self._signature() + " {\n" + _indent(loops, 1) + "\n}\n"
        flat = None if self.config.columns else flat_loop(kernel, outer_vars, "r0_")
        if flat is not None:
            loops = self._flat(flat, outer_vars)  # before the signature: it names the params
            return self._signature() + " {\n" + _indent(loops, 1) + "\n}\n"
        body_lines: list[str] = []
        groups = shared_loop_groups(kernel.members, outer_vars, self._prefix)
        for group in self._reduction_groups(groups, outer_vars):
            if len(group) > 1 and self._in_shared_reduction(group[0]):
                body_lines += self._shared_reduction(group, outer_vars)
                continue
            merged = group_loop(group, outer_vars, self._prefix(group[0]))
            body_lines += self._shared_loop(group, outer_vars, merged) \
                if len(group) > 1 or merged else self._member(group[0], outer_vars)
        has_inner = any(m.inner_sizes or m.is_reduction for m in kernel.members)
        loops = self._outer_loops(outer_vars, kernel.outer, body_lines, has_inner)
        return self._signature() + " {\n" + _indent(loops, 1) + "\n}\n"

    def _parallel_condition(self) -> str | None:
        """"" when the kernel's work is large enough for a team of threads, None when it is
        too small (a serial loop: waking threads costs more than a few thousand elements take),
        or an `if(...)` clause when that depends on symbolic sizes (decided per call); a
        config may force either."""
        if self.config.parallel != "auto":
            return "" if self.config.parallel == "parallel" else None
        work = self.facts.work
        if work.is_Integer:
            return "" if int(work) >= PARALLEL_MIN_WORK else None
        return f" if({self.index(work)} >= {PARALLEL_MIN_WORK})"

    def _parallel_for(self, n: int, simd: bool = False, extra: str = "") -> list[str]:
        """The pragma spreading `n` collapsed loops over threads (just simd when serial)."""
        if self.parallel_if is None:
            return [self._simd() + extra] if simd and n == 1 else []
        return ["#pragma omp parallel for" + (f" collapse({n})" if n > 1 else "")
                + (" simd" + self._simdlen() if simd and n == 1 else "") + extra + self.parallel_if]

    def _simd(self) -> str:
        return "#pragma omp simd" + self._simdlen()

    def _simdlen(self) -> str:
        """config.width: lanes per vector iteration; twice the machine's vector gives a
        reduction independent accumulators (its adds' latency no longer serializes it)."""
        return f" simdlen({self.config.width})" if self.config.width else ""

    def _outer_loops(self, outer_vars, sizes, body_lines: list[str], has_inner: bool
                     ) -> list[str]:
        if not outer_vars:
            return body_lines
        if self._across:
            return self._outer_loops_with_partials(outer_vars, sizes, body_lines)
        n = len(outer_vars)
        lines = self._parallel_for(n, simd=not has_inner)
        for k, (var, size) in enumerate(zip(outer_vars, sizes)):
            lines.append("  " * k + f"for (int64_t {var} = 0; {var} < {self.index(size)}; {var}++)")
        lines.append("  " * n + "{")
        lines += ["  " * (n + 1) + line for line in body_lines]
        lines.append("  " * n + "}")
        return lines

    def _outer_loops_with_partials(self, outer_vars, sizes, body_lines: list[str]) -> list[str]:
        """The outer loops in a parallel region where each thread first finds its partials
        of the across members; after the region, the partials are combined in thread order
        (the same result every run) and stored."""
        n = len(outer_vars)
        loops = [f"for (int64_t {var} = 0; {var} < {self.index(size)}; {var}++)"
                 for var, size in zip(outer_vars, sizes)]
        loops = ["  " * k + line for k, line in enumerate(loops)] + ["  " * n + "{"] + \
            ["  " * (n + 1) + line for line in body_lines] + ["  " * n + "}"]
        region = [line for p in self._across for line in p.thread_lines]
        if self.parallel_if is not None:
            region.append("#pragma omp for schedule(static)" + (f" collapse({n})" if n > 1 else ""))
        region += loops
        opening = [] if self.parallel_if is None else ["#pragma omp parallel" + self.parallel_if]
        return ([line for p in self._across for line in p.declarations] + opening + ["{"]
                + ["  " + line for line in region] + ["}"]
                + [line for p in self._across for line in p.combined])

    def _signature(self) -> str:
        params = [_declare(p) for p in self.args.params()]
        return f'extern "C" void {self.function}(' + ", ".join(params) + ")"

    # --- members ----------------------------------------------------------------------------
    def _prefix(self, member: Member) -> str:
        return f"r{self.kernel.members.index(member)}_"

    def _flat(self, flat: FlatLoop, outer_vars) -> list[str]:
        """Every member in one loop over the merged trailing dims (cpp_loops.py), inside
        loops over the outer dims that did not merge."""
        self._ranges[flat.var] = flat.size
        body = []
        for member in self.kernel.members:
            index = [sympy.sympify(e).subs(flat.subs)
                     for e in member_index(member, outer_vars, "r0_")[0]]
            lines, value = self._capture(lambda: member.node.inner(self.ops, index))
            body += lines + [self._store(member, index, value)]
        kept = outer_vars[:flat.keep]
        inner = self._loops([flat.var], [flat.size], body, simd=True, parallel=not kept)
        return self._outer_loops(kept, self.kernel.outer[:flat.keep], inner, has_inner=True)

    def _shared_loop(self, group: list[Member], outer_vars, flat: FlatLoop | None
                     ) -> list[str]:
        """Consecutive pointwise members over the same inner sizes in one loop, their inner
        dims merged into one (`flat`) where they can be (cpp_loops.py)."""
        prefix, body = self._prefix(group[0]), []
        sizes = [flat.size] if flat else group[0].inner_sizes
        for member in group:
            index, inner_vars = member_index(member, outer_vars, prefix)
            self._ranges.update(ranges_of(self.kernel, member, outer_vars, inner_vars))
            if flat:
                index, inner_vars = [sympy.sympify(e).subs(flat.subs) for e in index], [flat.var]
                self._ranges[flat.var] = flat.size
            lines, value = self._capture(
                lambda: self._pointwise_value(member, index, inner_vars))
            body += lines + [self._store(member, index, value)]
        return self._loops(inner_vars, sizes, body, simd=True, parallel=not self.kernel.outer)

    def _member(self, member: Member, outer_vars) -> list[str]:
        if member.across:
            return self._across_member(member, outer_vars)
        prefix = self._prefix(member)
        index, inner_vars = member_index(member, outer_vars, prefix)
        self._ranges.update(ranges_of(self.kernel, member, outer_vars, inner_vars))
        if member.is_reduction:
            return self._reduction(member, index, inner_vars)
        if isinstance(member.node, Scatter):
            return self._scatter(member, index, inner_vars)
        return self._pointwise(member, index, inner_vars)

    def _capture(self, fn):
        """Run fn with a fresh body; return (lines, value)."""
        saved, self.body = self.body, KernelBody()
        self.body._counter = saved._counter  # one numbering per kernel: deterministic names
        try:
            value = fn()
            return self.body.block.lines, value
        finally:
            self.body = saved

    def _store(self, member: Member, index, value) -> str:
        buf = member.buffer
        target = access(self.args, self.args.buffer(buf), self.index(store_index(member, index)))
        value = self.ops.to_dtype(value, buf.dtype)
        if buf.dtype in HALF:
            return f"{target} = {HALF[buf.dtype][1]}({value});"
        return f"{target} = {value};"

    def _pointwise(self, member: Member, index, inner_vars) -> list[str]:
        lines, value = self._capture(lambda: self._pointwise_value(member, index, inner_vars))
        body = lines + [self._store(member, index, value)]
        sizes = member.inner_sizes
        if not inner_vars:
            return body
        parallel = not self.kernel.outer
        return self._loops(inner_vars, sizes, body, simd=True, parallel=parallel)

    def _pointwise_value(self, member: Member, index, inner_vars):
        """The member's value; with config.store, a summand an earlier sum stored in this
        member's output is read back, and a division by a row's value is a product with its
        reciprocal (eager's softmax). Either way `exp(v - max(v))` prints the cheaper exp."""
        position = self.kernel.members.index(member)
        summer = next((i for i, (j, _) in self.facts.stores.items() if j == position), None)
        loader = lambda ops: member.node.inner(ops, index)  # noqa: E731
        if not self.config.store or summer is None or len(inner_vars) != len(
                self.kernel.members[summer].node.reduction_sizes):
            # (a loop over the member's dims merged into one matches no summand's dims: it
            # computes its value, and the sum's stores of the same values are overwritten)
            return self._value(loader, inner_vars, member.inner_sizes)
        tree = exprtree.record(loader)
        summand = reduction_tree(self.kernel.members[summer], self._outer_vars, inner_vars)
        stored = lambda: self.ops.load(member.buffer, store_index(member, index))  # noqa: E731
        inner = set(inner_vars)
        cheap_exp = self._cheap_exp(inner_vars, member.inner_sizes)

        def by_reciprocal(node, emit):
            if node.op == "truediv" and _row_invariant(node.args[1], inner):
                return self.ops.mul(emit(node.args[0]), self.ops.reciprocal(emit(node.args[1])))
            return cheap_exp(node, emit) if cheap_exp else None
        return exprtree.replay(tree, self.ops, {summand.key: stored}, by_reciprocal)

    def _value(self, loader, inner_vars, sizes):
        """loader(self.ops), except that an exp of `v - max(v)` over this row prints the
        cheaper exp for arguments <= 0 (row_max.py)."""
        cheap_exp = self._cheap_exp(inner_vars, sizes)
        tree = exprtree.record(loader) if cheap_exp else None
        if tree is None:
            return loader(self.ops)
        return exprtree.replay(tree, self.ops, rewrite=cheap_exp)

    def _cheap_exp(self, inner_vars, sizes):
        """The replay rewrite printing `exp(v - max(v))` by exp_nonpos, for the row maxima this
        kernel computed before, reduced over extents `sizes`; None where there are none."""
        if not inner_vars or not self._reductions_done:
            return None
        maxima = row_max_summands(self._reductions_done, self._outer_vars, inner_vars, sizes)
        return nonpositive_exp(maxima, self.ops.exp_nonpos) if maxima else None

    def _store_summand(self, position: int, value, rvars) -> list[str]:
        """In a sum's loop: its summand stored where the member that reuses it writes."""
        reader = self.kernel.members[self.facts.stores[position][0]]
        index, own = member_index(reader, self._outer_vars, "stored")
        index = [sympy.sympify(i).xreplace(dict(zip(own, rvars))) for i in index]
        lines, store = self._capture(lambda: self._store(reader, index, value))
        return lines + [store]

    def _scatter(self, member: Member, index, out_vars) -> list[str]:
        """The base copied into the output in parallel, then the writes: dims that cannot
        collide in parallel outside, dims that can in order inside."""
        node: Scatter = member.node
        lines, base = self._capture(lambda: node.base(self.ops, index))
        copy = lines + [self._store(member, index, base)]
        if out_vars:
            copy = self._loops(out_vars, node.sizes, copy, simd=True, parallel=True)
        src_vars = [index_symbol("w", k)  # not "s": size symbols are s0, s1, ...
                    for k in range(len(node.src_sizes))]
        self._ranges.update(zip(src_vars, node.src_sizes))
        src_index = [sympy.Integer(0) if size == 1 else var
                     for var, size in zip(src_vars, node.src_sizes)]
        lines, (target, value) = self._capture(
            lambda: (node.target(self.ops, src_index), node.value(self.ops, src_index)))
        buf = member.buffer
        flat = target if node.flat_target else flat_index(target, buf.strides, buf.offset)
        write = self._scatter_write(buf, self.index(flat), self.ops.to_dtype(value, buf.dtype),
                                    node.accumulate)
        dims = sorted(range(len(src_vars)), key=lambda d: node.ordered[d])  # free dims first
        loops = self._loops([src_vars[d] for d in dims], [node.src_sizes[d] for d in dims],
                            lines + [write], simd=False, parallel=False,
                            hoist=False)  # a pragma may go right before these loops
        free = node.ordered.count(False)
        if free:
            loops = self._parallel_for(free) + loops
        return copy + loops

    def _scatter_write(self, buf: Buffer, at: str, value, accumulate: bool) -> str:
        target = access(self.args, self.args.buffer(buf), at)
        if buf.dtype in HALF:
            from_half, to_half = HALF[buf.dtype]
            total = f"{from_half}({target}) + {value}" if accumulate else f"{value}"
            return f"{target} = {to_half}({total});"
        if not accumulate:
            return f"{target} = {value};"
        if buf.dtype == torch.bool:
            return f"{target} = {target} || {value};"
        return f"{target} += {value};"

    def _loops(self, vars_, sizes, body, simd: bool, parallel: bool, extra: str = "",
               hoist: bool = True) -> list[str]:
        """Loops over vars_ around body; `hoist`: the body's declarations that depend on no
        loop variable go before the loops (layer norm's 1/sqrt(var + eps): a call the compiler
        may not move, which also keeps the loop from vectorizing)."""
        surely_runs = all(sympy.sympify(size).is_Integer and int(size) > 0 for size in sizes)
        lines, body = hoisted(body, vars_, surely_runs=surely_runs) if hoist else ([], body)
        n = len(vars_)
        parallel = parallel and self.parallel_if is not None  # small work: serial loops
        if parallel:
            lines += self._parallel_for(n, simd, extra)
        for k, (var, size) in enumerate(zip(vars_, sizes)):
            if k == n - 1 and simd and not parallel:
                lines.append("  " * k + self._simd() + extra)
            lines.append("  " * k + f"for (int64_t {var} = 0; {var} < {self.index(size)}; {var}++)")
        lines.append("  " * n + "{")
        lines += ["  " * (n + 1) + line for line in body]
        lines.append("  " * n + "}")
        return lines

    def _reduction(self, member: Member, index, rvars) -> list[str]:
        node: Reduction = member.node
        rtype = node.reduction_type
        position = self.kernel.members.index(member)
        acc = f"acc{position}"
        storing = self.config.store and position in self.facts.stores
        same = None if storing else self._reduction_key(member)
        if same in self._reduced:  # computed by an earlier member: reuse its accumulator
            self._reductions_done.append(member)
            return self._finish_reduction(member, index, *self._reduced[same])
        lines, value = self._capture(lambda: self._value(
            lambda ops: node.inner(ops, index, rvars), rvars, node.reduction_sizes))
        if storing:
            lines += self._store_summand(position, value, rvars)
        if rtype in ("argmax", "argmin"):
            code = self._arg_reduction(node, acc, lines, value, rvars)
        else:
            ctype = _acc_ctype(node.src_dtype, rtype)
            boolean = ctype == "bool" and rtype in _BOOL_COMBINE
            init = _BOOL_INIT[rtype] if boolean else _REDUCE_INIT[rtype](node.src_dtype)
            combine = _BOOL_COMBINE[rtype] if boolean else _REDUCE_COMBINE[rtype]
            step = f"{acc} = {combine.format(acc=acc, v=value)};"
            if self.kernel.outer and rvars and rtype in ("max", "min") and not boolean \
                    and ctype in ("float", "double"):
                code = self._flagged_extremum(acc, ctype, init, rtype, lines, value, rvars,
                                              node.reduction_sizes)
            else:
                code = self._reduce_loops(rvars, node.reduction_sizes, lines + [step], acc, ctype,
                                          init, rtype, combine)
        acc_dtype = node.dtype if rtype in ("argmax", "argmin") else \
            _dtype_of_ctype(_acc_ctype(node.src_dtype, rtype), node)
        if same is not None:
            self._reduced[same] = (acc, acc_dtype)
        self._reductions_done.append(member)
        return code + self._finish_reduction(member, index, acc, acc_dtype)

    def _across_member(self, member: Member, outer_vars) -> list[str]:
        """A reduction over the kernel's outer loop (scheduler's across member): at each outer
        position, its values over its inner loop combined into the running thread's partials,
        one per output (_outer_loops_with_partials declares, combines and stores them)."""
        index, inner_vars = member_index(member, outer_vars, self._prefix(member))
        self._ranges.update(ranges_of(self.kernel, member, outer_vars, inner_vars))
        lines, value = self._capture(
            lambda: member.node.inner(self.ops, index, across_rindex(member, outer_vars)))
        accumulate = self._across_accumulate(member, index, value)
        return self._loops(inner_vars, member.inner_sizes, lines + [accumulate], simd=True,
                           parallel=False)

    def _across_accumulate(self, member: Member, index, value) -> str:
        """The statement combining `value` into this thread's partial for `index`; declares the
        partials, and their combining and storing after the loop."""
        node: Reduction = member.node
        acc = f"acc{self.kernel.members.index(member)}"
        sizes = member.inner_sizes
        inner_vars = [i for i in index if not sympy.sympify(i).is_Integer]
        rtype = node.reduction_type
        ctype = _acc_ctype(node.src_dtype, rtype)
        init, combine = _REDUCE_INIT[rtype](node.src_dtype), _REDUCE_COMBINE[rtype]
        extent = self.index(product(sizes))
        slot = self.index(flat_index(index, contiguous_strides(sizes)))
        threads = "1" if self.parallel_if is None else "omp_get_max_threads()"
        declarations = [f"const int64_t {acc}_n = {threads};",
                        f"std::vector<{ctype}> {acc}_parts({acc}_n * {extent}, {init});"]
        thread_lines = [f"{ctype}* __restrict__ {acc}_mine = {acc}_parts.data() + "
                        f"static_cast<int64_t>(omp_get_thread_num()) * {extent};"]
        total = f"{acc}_parts[e]"
        fold = [f"for (int64_t t = 1; t < {acc}_n; t++)", "{", "  " + self._simd(),
                f"  for (int64_t e = 0; e < {extent}; e++) "
                f"{total} = {combine.format(acc=total, v=f'{acc}_parts[t * {extent} + e]')};",
                "}"]
        result = CSEVariable(f"{acc}_parts[{slot}]", _dtype_of_ctype(ctype, node))
        store_lines, store = self._capture(lambda: self._store(member, index, result))
        loop_sizes = [s for i, s in zip(index, sizes) if not sympy.sympify(i).is_Integer]
        stores = self._loops(inner_vars, loop_sizes, store_lines + [store], simd=True,
                             parallel=False, hoist=False)
        self._across.append(_Partials(declarations, thread_lines, fold + stores))
        mine = f"{acc}_mine[{slot}]"
        return f"{mine} = {combine.format(acc=mine, v=value)};"

    # --- several reductions over one row in one loop ------------------------------------------
    def _in_shared_reduction(self, member: Member) -> bool:
        """Whether the member may share a loop with other reductions over the same row: an
        across member, or a row sum the plain way (not storing its summand)."""
        if member.across:
            return True
        node = member.node
        if not (member.is_reduction and self.kernel.outer and node.reduction_type == "sum"):
            return False
        if self.config.store and self.kernel.members.index(member) in self.facts.stores:
            return False
        return _simd_reduction_clause("sum", _acc_ctype(node.src_dtype, "sum")) is not None

    def _reduction_groups(self, groups: list[list[Member]], outer_vars) -> list[list[Member]]:
        """Consecutive single members that are reductions over the same row, none reading
        another's result, joined into one group: their loops become one (layer norm's backward:
        two row sums and the weight and bias gradients' partials, one pass over the row)."""
        out: list[list[Member]] = []
        for group in groups:
            last = out[-1] if out else None
            (m,) = group if len(group) == 1 else (None,)
            if m is not None and last and self._in_shared_reduction(m) and \
                    all(self._in_shared_reduction(g) for g in last) and \
                    same_sizes(m.inner_sizes, last[0].inner_sizes) and \
                    not self._reads_any(m, last, outer_vars):
                last.append(m)
            else:
                out.append(list(group))
        return out

    def _reads_any(self, member: Member, group: list[Member], outer_vars) -> bool:
        written = {id(g.buffer) for g in group}
        return any(id(buf) in written for buf, _ in member_reads(member, outer_vars, "q")[0])

    def _shared_reduction(self, group: list[Member], outer_vars) -> list[str]:
        """The group's reductions in one loop over their row (one CSE scope: a load they share
        is read once): each row sum in its own accumulator, each across member into its
        partials. A row sum equal to an earlier one (its key) prints the members one by one."""
        keys = [None if m.across else self._reduction_key(m) for m in group]
        named = [k for k in keys if k is not None]
        if any(k in self._reduced for k in named) or len(set(named)) < len(named):
            return [line for m in group for line in self._member(m, outer_vars)]
        prefix = self._prefix(group[0])
        indices = []
        for m in group:
            index, inner_vars = member_index(m, outer_vars, prefix)
            self._ranges.update(ranges_of(self.kernel, m, outer_vars, inner_vars))
            indices.append(index)

        def values():
            return [m.node.inner(self.ops, index, across_rindex(m, outer_vars)) if m.across
                    else self._value(lambda ops, m=m, index=index: m.node.inner(
                        ops, index, inner_vars), inner_vars, m.node.reduction_sizes)
                    for m, index in zip(group, indices)]
        lines, found = self._capture(values)
        declarations, steps, clauses, finished = [], [], [], []
        for m, index, key, value in zip(group, indices, keys, found):
            if m.across:
                steps.append(self._across_accumulate(m, index, value))
                continue
            acc = f"acc{self.kernel.members.index(m)}"
            ctype = _acc_ctype(m.node.src_dtype, "sum")
            declarations.append(f"{ctype} {acc} = 0;")
            steps.append(f"{acc} = {acc} + {value};")
            clauses.append(f" reduction(+:{acc})")
            acc_dtype = _dtype_of_ctype(ctype, m.node)
            if key is not None:
                self._reduced[key] = (acc, acc_dtype)
            self._reductions_done.append(m)
            finished += self._finish_reduction(m, index, acc, acc_dtype)
        loop = self._loops(inner_vars, group[0].inner_sizes, lines + steps, simd=True,
                           parallel=False, extra="".join(clauses))
        return declarations + loop + finished

    def _flagged_extremum(self, acc, ctype, init, rtype, lines, value, rvars, sizes):
        """A row max/min with its NaN tracked beside it: the loop carries a plain max (one
        instruction on the loop's dependency chain) and an OR of "is NaN" off that chain. The
        NaN-propagating select takes five, which made softmax's max pass latency-bound."""
        flag, op = f"{acc}_nan", ">" if rtype == "max" else "<"
        step = [f"{acc} = ({value} {op} {acc}) ? {value} : {acc};",
                f"{flag} |= ({value} != {value});"]
        extra = f" reduction({rtype}:{acc}) reduction(|:{flag})"
        return ([f"{ctype} {acc} = {init};", f"int {flag} = 0;"]
                + self._loops(rvars, sizes, lines + step, simd=True, parallel=False, extra=extra)
                + [f"if ({flag}) {acc} = std::numeric_limits<{ctype}>::quiet_NaN();"])

    def _finish_reduction(self, member: Member, index, acc: str, acc_dtype) -> list[str]:
        """The accumulator kept in a register (converted to the member's dtype) or stored."""
        node = member.node
        # converting the accumulator (e.g. rounding to bfloat16) declares variables: capture them
        if member.local:
            lines, self.locals[member.buffer.name] = self._capture(
                lambda: self.ops.to_dtype(CSEVariable(acc, acc_dtype), node.dtype)
                if node.reduction_type not in ("argmax", "argmin") else CSEVariable(acc, acc_dtype))
            return lines
        lines, store = self._capture(lambda: self._store(member, index, CSEVariable(acc, acc_dtype)))
        return lines + [store]

    def _reduction_key(self, member: Member) -> tuple | None:
        """What the reduction computes, independent of its position: two members with one key
        (layer norm's mean, traced twice by its decomposition) reduce once. The key holds the
        reduced extents: `h.sum(0)` and `h[:5].sum(0)` load alike but over other ranges."""
        node = member.node
        if node.reduction_type in ("argmax", "argmin"):
            return None
        canonical = [index_symbol("q", k) for k in range(len(node.reduction_sizes))]
        tree = reduction_tree(member, self._outer_vars, canonical)
        return None if tree is None else (node.reduction_type, str(node.dtype),
                                          str(node.src_dtype),
                                          tuple(str(n) for n in node.reduction_sizes), tree.key)

    def _column_reduction(self, outer_vars) -> list[str]:
        """Reductions over dims that are not contiguous (column sums): the reduced dims
        outside, a block of contiguous outputs inside, accumulated in stack arrays (one per
        member) and vectorized over the outputs."""
        members, block = self.kernel.members, self.config.columns
        rvars = member_index(members[0], outer_vars, "r0_")[1]
        indices = [member_index(m, outer_vars, "r0_")[0] for m in members]
        for m in members:
            self._ranges.update(ranges_of(self.kernel, m, outer_vars, rvars))
        last, extent = outer_vars[-1], self.index(self.kernel.outer[-1])
        lines, values = self._capture(lambda: [m.node.inner(self.ops, index, rvars)
                                               for m, index in zip(members, indices)])
        inits, steps, stores = [], [], []
        for k, (m, index, value) in enumerate(zip(members, indices, values)):
            rtype = m.node.reduction_type
            ctype = _acc_ctype(m.node.src_dtype, rtype)
            boolean = ctype == "bool" and rtype in _BOOL_COMBINE
            init = _BOOL_INIT[rtype] if boolean else _REDUCE_INIT[rtype](m.node.src_dtype)
            combine = _BOOL_COMBINE[rtype] if boolean else _REDUCE_COMBINE[rtype]
            slot = f"acc{k}[{last} - xb]"
            inits += [f"{ctype} acc{k}[{block}];",
                      f"for (int64_t {last} = xb; {last} < xe; {last}++) {slot} = {init};"]
            steps.append(f"  {slot} = {combine.format(acc=slot, v=value)};")
            store_lines, store = self._capture(lambda: self._store(
                m, index, CSEVariable(slot, _dtype_of_ctype(ctype, m.node))))
            stores += ["  " + line for line in store_lines + [store]]
        accumulate = [self._simd(), f"for (int64_t {last} = xb; {last} < xe; {last}++)",
                      "{", *["  " + line for line in lines], *steps, "}"]
        reduce = self._loops(rvars, members[0].node.reduction_sizes, accumulate, simd=False,
                             parallel=False)
        body = [f"int64_t xe = std::min<int64_t>({extent}, xb + {block});", *inits, *reduce,
                f"for (int64_t {last} = xb; {last} < xe; {last}++)", "{", *stores, "}"]
        n = len(outer_vars)
        lines = self._parallel_for(n)
        for k, (var, size) in enumerate(zip(outer_vars[:-1], self.kernel.outer[:-1])):
            lines.append("  " * k + f"for (int64_t {var} = 0; {var} < {self.index(size)}; {var}++)")
        lines.append("  " * (n - 1) + f"for (int64_t xb = 0; xb < {extent}; xb += {block})")
        lines.append("  " * n + "{")
        lines += ["  " * (n + 1) + line for line in body]
        lines.append("  " * n + "}")
        return lines

    def _reduce_loops(self, rvars, sizes, body, acc, ctype, init, rtype, combine) -> list[str]:
        if not rvars:
            return [f"{ctype} {acc} = {init};"] + body
        clause = _simd_reduction_clause(rtype, ctype)
        blocked = clause and _long_float_sum(rtype, ctype, sizes)
        if self.kernel.outer and blocked:
            surely_runs = sympy.sympify(sizes[0]).is_Integer
            before, inner = hoisted(body, rvars, surely_runs=surely_runs)
            return [f"{ctype} {acc} = {init};"] + before + self._blocked_sum(
                rvars[0], "0", self.index(sizes[0]), inner, acc)
        if self.kernel.outer:  # parallel over the outer loop already: a sequential reduction
            extra = f" reduction({clause}:{acc})" if clause else ""
            return [f"{ctype} {acc} = {init};"] + self._loops(rvars, sizes, body, simd=bool(extra),
                                                              parallel=False, extra=extra)
        # a whole-tensor reduction: per-thread partials, combined in thread order (deterministic)
        combine = combine.format(acc=acc, v=f"static_cast<{ctype}>({acc}_parts[t])")
        part_type = "unsigned char" if ctype == "bool" else ctype
        if len(rvars) == 1 and clause:  # one static chunk per thread, vectorized within it
            var, size = rvars[0], self.index(sizes[0])
            split = [f"  int64_t {acc}_n = omp_get_num_threads(), {acc}_t = omp_get_thread_num();",
                     f"  int64_t {acc}_chunk = ({size} + {acc}_n - 1) / {acc}_n;",
                     f"  int64_t {acc}_lo = {acc}_t * {acc}_chunk;",
                     f"  int64_t {acc}_hi = std::min<int64_t>({size}, {acc}_lo + {acc}_chunk);"]
            if blocked:
                loops = split + ["  " + line for line in self._blocked_sum(
                    var, f"{acc}_lo", f"{acc}_hi", body, acc)]
            else:
                loops = split + [f"  {self._simd()} reduction({clause}:{acc})",
                                 f"  for (int64_t {var} = {acc}_lo; {var} < {acc}_hi; {var}++)",
                                 "  {"] + ["    " + line for line in body] + ["  }"]
        else:
            loops = ["  #pragma omp for schedule(static)" + (
                f" collapse({len(rvars)})" if len(rvars) > 1 else "")] + [
                "  " + line for line in self._loops(rvars, sizes, body, simd=False, parallel=False,
                                                    hoist=False)]  # right after `omp for`
        return ([f"{ctype} {acc} = {init};",
                 f"std::vector<{part_type}> {acc}_parts(omp_get_max_threads(), {init});",
                 "#pragma omp parallel" + (self.parallel_if or " if(0)"), "{",
                 f"  {ctype} {acc} = {init};"]
                + loops
                + [f"  {acc}_parts[omp_get_thread_num()] = {acc};", "}",
                   f"for (int t = 0; t < static_cast<int>({acc}_parts.size()); t++) "
                   f"{acc} = {combine};"])

    def _blocked_sum(self, var, lo, hi, body, acc) -> list[str]:
        """A long float sum in blocks of SUM_BLOCK elements, each added in float (vectorized,
        so each lane adds SUM_BLOCK / lanes values), the blocks' sums in a double: the error
        grows with the block, not with the whole length, as eager's cascade sum's does. The
        block's accumulator shadows `acc`, which the body names."""
        return [f"double {acc}_total = 0;",
                f"for (int64_t {acc}_b = {lo}; {acc}_b < {hi}; {acc}_b += {SUM_BLOCK})", "{",
                f"  const int64_t {acc}_e = std::min<int64_t>({hi}, {acc}_b + {SUM_BLOCK});",
                f"  float {acc} = 0;",
                f"  {self._simd()} reduction(+:{acc})",
                f"  for (int64_t {var} = {acc}_b; {var} < {acc}_e; {var}++)", "  {"] + [
                "    " + line for line in body] + [
                "  }", f"  {acc}_total += {acc};", "}",
                f"{acc} = static_cast<float>({acc}_total);"]

    def _arg_reduction(self, node, acc, lines, value, rvars) -> list[str]:
        ctype = compute_ctype(node.src_dtype)
        better = ">" if node.reduction_type == "argmax" else "<"
        flat = self.index(flat_index(rvars, contiguous_strides(node.reduction_sizes)))
        step = (f"if ({acc}_i < 0 || ({value} != {value} && {acc}_v == {acc}_v) || "
                f"({acc}_v == {acc}_v && {value} {better} {acc}_v)) "
                f"{{ {acc}_v = {value}; {acc}_i = {flat}; }}")
        loops = self._loops(rvars, node.reduction_sizes, lines + [step], simd=False,
                            parallel=False)
        return [f"{ctype} {acc}_v = 0;", f"int64_t {acc}_i = -1;"] + loops + \
            [f"int64_t {acc} = {acc}_i < 0 ? 0 : {acc}_i;"]


@dataclass
class _Partials:
    """An across member's per-thread partials: declared before the kernel's parallel region,
    found by each thread in it, combined and stored after it."""
    declarations: list[str]
    thread_lines: list[str]
    combined: list[str]


def _row_invariant(node, inner_vars: set) -> bool:
    """Whether a tree's value is the same for every element of a row (no inner loop var)."""
    for n in exprtree.walk(node):
        if n.op in ("load", "index_expr"):
            expr = n.args[1] if n.op == "load" else n.args[0]
            if sympy.sympify(expr).free_symbols & inner_vars:
                return False
    return True


def _dtype_of_ctype(ctype: str, node) -> torch.dtype:
    return {"float": torch.float32, "double": torch.float64, "int64_t": torch.int64,
            "bool": torch.bool}.get(ctype, node.dtype)


def _indent(lines: list[str], level: int) -> str:
    return "\n".join("  " * level + line for line in lines)


def _declare(param: Param) -> str:
    if param.kind == BUFFER:
        return f"{CTYPE[param.dtype]}* __restrict__ {param.name}"
    if param.kind == SCALAR:
        return f"{'double' if param.dtype == torch.float64 else 'int64_t'} {param.name}"
    if param.kind == ERR:
        return f"int32_t* {param.name}"
    if param.kind == BOUNDS:
        return f"int64_t* {param.name}"
    return f"int64_t {param.name}"  # SIZE, EXTENT


def generate_translation_unit(kernels: list[Kernel], checked: bool = False, mode: str = "off"
                              ) -> tuple[str, list[tuple[CppKernel, CppLaunch]]]:
    """All kernels of a graph as one C++ source, each with the variants the autotune `mode`
    asks for (cpp_variants.py: none in "off"); `checked`: every access bounds-checked (no
    variants: those builds are for finding bad accesses)."""
    emitted, bodies = [], []
    for kernel in kernels:
        first, launch = _kernel_variants(kernel, checked, "off" if checked else mode)
        emitted.append((first, launch))
        bodies.append(launch.source)
    header = "// generated by lazytriton: the fused kernels of one graph\n" + PRELUDE_INCLUDE + "\n"
    return header + "\n" + "\n".join(bodies), emitted


def _kernel_variants(kernel: Kernel, checked: bool, mode: str) -> tuple[CppKernel, CppLaunch]:
    """The heuristic function, named as the kernel, then kernel__c1, ... for the others."""
    kernel_facts = facts(kernel)
    work = kernel_facts.work
    # symbolic work: the choice of serial or parallel is made per call, at the sizes of that
    # call (the `if` of "auto"); a choice timed at the sizes compiled for would make the
    # program's variants, so its source, depend on them: no program could serve other sizes
    configs = variants(kernel_facts, mode, int(work) if work.is_Integer else None)
    first = CppKernel(kernel, checked, configs[0], kernel_facts)
    texts = [first.generate()]
    found = [CppVariant(configs[0].label, kernel.name, configs[0].as_dict())]
    for config in configs[1:]:
        function = f"{kernel.name}__c{len(found)}"
        other = CppKernel(kernel, checked, config, kernel_facts, function, _copy(first.args))
        text = other.generate()
        if other.args.params() == first.args.params():  # the launcher binds one signature
            texts.append(text)
            found.append(CppVariant(config.label, function, config.as_dict()))
    return first, CppLaunch(found, "\n".join(texts))


def _copy(signature: KernelSignature) -> KernelSignature:
    return KernelSignature(dict(signature.buffers), dict(signature.sizes),
                           dict(signature.scalars), signature.uses_err, signature.checked)


class CppCodegen:
    """The C++ backend's kernel code generator: one translation unit per graph."""
    source_file = "kernels.cpp"
    parallel_inner = True  # `omp parallel for` over the inner loop when there is no outer one
    outer_reductions = True  # across members: per-thread partials over the outer loop
    # kernels between externs run from one C function (cpp_frame.py), except a kernel in
    # several variants: launched from Python between segments, so the autotuner can time and
    # choose them (autotune.TunedKernel)
    segments = True
    kernel_dtypes = frozenset(CTYPE)  # ops on others (complex) stay aten calls

    def __init__(self, checked: bool = False):
        self.checked = checked

    def generate(self, kernels: list[Kernel], sizevars=None) -> GeneratedCode:
        source, emitted = generate_translation_unit(kernels, self.checked, autotune.mode())
        return GeneratedCode(
            [GeneratedKernel(e.kernel, e.kernel.name, e.args, self.source_file,
                             {"config": launch.variants[0].config,
                              "candidates": [v.label for v in launch.variants]}, launch)
             for e, launch in emitted],
            {self.source_file: source})
