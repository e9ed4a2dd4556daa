"""The loop shapes a C++ kernel can be printed in, and which of them the autotuner tries.

A `LoopConfig` says how codegen/cpp.py prints one scheduled Kernel:
- parallel: "auto" (a team of threads when the work reaches PARALLEL_MIN_WORK; an `if(...)`
  per call where the work is symbolic), "serial" or "parallel";
- store: a pointwise member that recomputes an expensive summand of an earlier sum in its
  kernel (softmax's `exp(x - max)`) reads it back instead: the sum's loop stores it in the
  member's output, and a division by the row's sum becomes a product with its reciprocal (as
  eager's softmax does);
- columns: a kernel of reductions over dims that are not contiguous (column sums; none
  reading another's result) runs the reduced dims outside and a block of `columns` contiguous
  outputs inside, vectorized over the outputs (0: the plain order, each output's reduction
  innermost);
- width: `simdlen` of the vectorized loops (0: the compiler's choice); 16 or 32 float lanes are
  two or four AVX2/AVX-512 vectors per iteration, so a row reduction keeps independent
  accumulators.

`facts(kernel)` finds what applies to a kernel; `heuristic(facts)` is the config without
tuning (what mode "off" runs); `variants(facts, mode, work)` the configs worth timing, the
heuristic first: in mode "default" only the choices whose heuristic is known to be weak
(recompute or store; row or column order; serial or parallel near the threshold), in "max"
every applicable one."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import sympy

from lazytriton.scheduler import Kernel, Member, member_index
from lazytriton.sizevars import index_symbol, product

from .exprtree import EXPENSIVE_OPS, Node, contains, record, uses_op, walk

# below this many elements of work a kernel runs serially (an OpenMP team costs ~µs to wake)
PARALLEL_MIN_WORK = 8192
# "default" tunes serial against parallel only for work within this factor of the threshold
PARALLEL_DOUBT = 16
COLUMN_BLOCK = 128  # outputs a column reduction accumulates at once (a stack array)
WIDTHS = (16, 32)  # simdlen variants tried in mode "max"
_COLUMN_REDUCTIONS = ("sum", "prod", "max", "min", "any")


@dataclass(frozen=True)
class LoopConfig:
    parallel: str = "auto"  # "auto" | "serial" | "parallel"
    store: bool = False
    columns: int = 0
    width: int = 0

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        words = [self.parallel] + (["store"] if self.store else []) + \
            ([f"columns{self.columns}"] if self.columns else []) + \
            ([f"w{self.width}"] if self.width else [])
        return "-".join(words)


@dataclass
class KernelFacts:
    work: sympy.Expr  # elements of work (the largest member's iteration space)
    stores: dict[int, tuple[int, tuple]]  # sum member -> (reader member, summand's key)
    column: bool  # one reduction whose reduced dims are not contiguous, its outputs are
    symbolic: bool
    vector_loops: bool  # members with inner loops (what `width` changes)


def reduction_tree(member: Member, outer_vars, inner_vars) -> Node | None:
    index, _ = member_index(member, outer_vars, "unused")
    return record(lambda ops: member.node.inner(ops, index, inner_vars))


def pointwise_tree(member: Member, outer_vars, inner_vars) -> Node | None:
    index, own = member_index(member, outer_vars, "v")
    index = [sympy.sympify(i).xreplace(dict(zip(own, inner_vars))) for i in index]
    return record(lambda ops: member.node.inner(ops, index))


def kernel_work(kernel: Kernel) -> sympy.Expr:
    works = [sympy.expand(product(m.node.sizes) * product(
        getattr(m.node, "reduction_sizes", None) or getattr(m.node, "src_sizes", None) or []))
        for m in kernel.members]
    return max(works, default=sympy.Integer(1), key=_magnitude)


def _magnitude(work: sympy.Expr) -> float:
    """A size to compare works by: symbolic sizes count as large (a batch is not 1)."""
    return float(work.subs({s: 1024 for s in work.free_symbols}))


def facts(kernel: Kernel) -> KernelFacts:
    work = kernel_work(kernel)
    outer_vars = [index_symbol("x", k) for k in range(len(kernel.outer))]
    return KernelFacts(work, _stores(kernel, outer_vars) if kernel.outer else {},
                       _column(kernel, outer_vars), not work.is_Integer,
                       any(m.inner_sizes or m.is_reduction for m in kernel.members))


def _stores(kernel: Kernel, outer_vars) -> dict[int, tuple[int, tuple]]:
    """Sum members whose summand a later pointwise member of the same rows recomputes."""
    found: dict[int, tuple[int, tuple]] = {}
    readers_taken: set[int] = set()
    for i, r in enumerate(kernel.members):
        if not r.is_reduction or r.across or r.node.reduction_type != "sum":
            continue
        inner = [index_symbol("q", k) for k in range(len(r.node.reduction_sizes))]
        summand = reduction_tree(r, outer_vars, inner)
        if summand is None or not uses_op(summand, EXPENSIVE_OPS):
            continue
        for j in range(i + 1, len(kernel.members)):
            p = kernel.members[j]
            if (j in readers_taken or p.is_reduction or p.local or
                    p.buffer.dtype != r.node.src_dtype or not p.buffer.dtype.is_floating_point
                    or p.buffer.dtype.itemsize < 4
                    or [sympy.sympify(s) for s in p.inner_sizes] !=
                    [sympy.sympify(s) for s in r.node.reduction_sizes]):
                continue
            tree = pointwise_tree(p, outer_vars, inner)
            if tree is not None and contains(tree, summand.key):
                found[i] = (j, summand.key)
                readers_taken.add(j)
                break
    return found


def _column(kernel: Kernel, outer_vars) -> bool:
    """Every member a reduction of the same dims, stored, whose loads are contiguous along the
    last outer dim and not along a reduced one, or do not depend on the last outer dim: column
    sums, like a layer norm's weight and bias gradients (which read a row's mean and rstd)."""
    members = kernel.members
    if not outer_vars or not all(m.is_reduction and not m.local and not m.across and
                                 m.node.reduction_type in _COLUMN_REDUCTIONS for m in members):
        return False
    sizes = [str(s) for s in members[0].node.reduction_sizes]
    if any([str(s) for s in m.node.reduction_sizes] != sizes for m in members):
        return False
    inner = [index_symbol("q", k) for k in range(len(sizes))]
    last = outer_vars[-1]
    contiguous = False
    produced = {m.buffer.name for m in members}
    for m in members:
        tree = reduction_tree(m, outer_vars, inner)
        if tree is None:
            return False
        for n in walk(tree):
            if n.op == "load" and n.args[0].name in produced:
                return False  # it needs another member's finished result (softmax over dim 0)
            if n.op not in ("load", "index_expr"):
                continue
            e = sympy.expand(n.args[0 if n.op == "index_expr" else 1])
            if not e.free_symbols & set(inner):
                continue
            if e.coeff(last) == 0:  # the same for a block of outputs (a row's mean)
                continue
            if e.coeff(last) != 1 or any(e.coeff(q) == 1 for q in inner):
                return False
            contiguous = True
    return contiguous


def heuristic(f: KernelFacts) -> LoopConfig:
    return LoopConfig(store=bool(f.stores), columns=COLUMN_BLOCK if f.column else 0)


def variants(f: KernelFacts, mode: str, work: int | None) -> list[LoopConfig]:
    """The configs to time, the heuristic first; `work`: the kernel's work at the sizes it
    was compiled for (None: unknown)."""
    base = heuristic(f)
    if mode == "off":
        return [base]
    out = [base]
    if f.stores:
        out.append(replace(base, store=not base.store))
    if f.column:
        out.append(replace(base, columns=0))
    near = work is not None and PARALLEL_MIN_WORK // PARALLEL_DOUBT <= work <= \
        PARALLEL_MIN_WORK * PARALLEL_DOUBT
    if mode == "max" or near:
        out += [replace(base, parallel=p) for p in ("serial", "parallel")
                if _differs(base, p, work)]
    if mode == "max" and f.vector_loops:
        out += [replace(base, width=w) for w in WIDTHS]
    return list(dict.fromkeys(out))


def _differs(base: LoopConfig, parallel: str, work: int | None) -> bool:
    """Whether forcing `parallel` prints other code than the heuristic's threshold does."""
    if work is None:
        return True
    chosen = "parallel" if work >= PARALLEL_MIN_WORK else "serial"
    return parallel != chosen


@dataclass(frozen=True, eq=False)
class CppVariant:
    """One compiled form of a kernel: its function, a label and the config it was built with."""
    label: str
    function: str
    config: dict = field(default_factory=dict)


@dataclass
class CppLaunch:
    """A kernel's variants, the heuristic one first, and their source (the autotuner's key)."""
    variants: list[CppVariant]
    source: str

    def __iter__(self):  # as Triton's launches: what a program fingerprint compares
        return iter(self.variants)
