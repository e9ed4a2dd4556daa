"""Lowering: a captured Graph becomes loop IR (loopir.py) with symbolic sizes (sizevars.py).

This module is the context (`Lowering`); the table is `registry.py`, filled by one module per
family of ops: pointwise, reductions, views, indexing (gathers, cat, scatter/index_put), random,
externs, prims, optim (optimizer and foreach arithmetic) and decompositions.

Per node: a lowering from the table if there is one; else a decomposition from PyTorch's
own tables (`torch._decomp`), re-traced through lazytriton's tracer into smaller ops that are
lowered in turn; else an extern kernel that calls the aten op on realized inputs (counted as
`aten::<op>`, so nothing unlowered is silent). Every derived size is checked against the size
the trace recorded.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Container

import sympy
import torch

from .. import metrics
from ..graph import Graph
from ..ir import LAZY_DEVICE, InputRef, Node, ScalarNode, SeedRef, TensorMeta, Value
from ..loopir import (Buffer, ComputedBuffer, Computation, ConstantBuffer, ExternBuffer,
                      ExternKernel, Pointwise, Reduction, ScalarArg, Scatter, StridedView,
                      TensorBox, View, input_buffer, new_name)
from ..sizevars import SizeVars, contiguous_strides, flatten, product
from ..storage import untracked
from ..tensor import fresh_tensor, value_of
# each family module registers its ops into the table as it is imported
from . import (decompositions, externs, indexing, optim, pointwise, pooling, prims,  # noqa: F401
               random, reductions, views)
from .externs import extern_output_sizes
from .operands import symbolic_strides
from .registry import DECOMPOSITIONS, LOWERINGS, drop_lowered_decompositions

drop_lowered_decompositions()

# A computation that would make its readers inline more ops than this is stored instead. The
# loaders inline by recursion, a few Python frames per op, and evaluate a value read twice
# twice: unbounded, a chain of a few hundred ops overflows the stack and a value reused at
# each step of a chain doubles the work per step. The three benchmark models inline at most 35.
MAX_INLINED_OPS = 128


class Lowering:
    def __init__(self, graph: Graph, kernel_dtypes: Container[torch.dtype] | None = None,
                 symbols: dict[tuple[int, int], int] | None = None):
        self.graph = graph
        # dtypes the code generator's loops handle (None: all); an op on any other (complex)
        # runs as a counted extern aten call, so one such op never costs the whole graph
        self.kernel_dtypes = kernel_dtypes
        # (input, dim) -> size symbol: the dims that vary (none: every size a constant)
        self.sizevars = SizeVars(symbols or {})
        self.env: dict[int, Any] = {}  # id(Value) -> lowered
        self._keep: list = []  # every Value in env stays alive, so no id is ever reused
        self._realized: dict[int, ComputedBuffer] = {}  # id(Pointwise) -> its buffer
        # id(unrealized Pointwise or View) -> how many ops a reader inlines with it
        self._inlined_ops: dict[int, int] = {}
        self.externs: list[ExternKernel] = []
        self.steps: list = []  # ComputedBuffer and ExternKernel, in execution order
        self.guards: dict[int, Any] = {}  # graph input index -> value it was specialized to
        self.constants: list[ConstantBuffer] = []  # tensors decompositions created
        self.input_index = {id(n): k for k, n in enumerate(graph.inputs)}
        # graph outputs other nodes read: stored when lowered, so readers load them rather than
        # compute them again (and an optimizer's parameter update never re-reads the old state
        # the same kernel launch overwrites: see donation.py)
        read = {id(v) for n in graph.nodes for v in n.inputs}
        self._store_early = {id(v) for v in graph.outputs if id(v) in read}
        self.inputs: list[Any] = [self._lower_leaf(n) for n in graph.inputs]

    # --- leaves -----------------------------------------------------------------------------
    def _lower_leaf(self, node: Node):
        k = self.input_index[id(node)]
        if isinstance(node, ScalarNode):
            return ScalarArg(f"sc{k}", k, node.value)
        meta = node.outputs[0].meta
        sizes = self.sizevars.symbolize(meta.shape, k)
        return input_buffer(k, meta.dtype, sizes, symbolic_strides(sizes, meta))

    # --- values -----------------------------------------------------------------------------
    def lower(self, value: Value):
        found = self.env.get(id(value))
        if found is None:
            node = value.node
            if node.is_leaf:
                k = self.input_index.get(id(node))
                found = self.inputs[k] if k is not None else self._constant_leaf(node)
                self._remember(value, found)
            else:
                self._lower_node(node)
                found = self.env[id(value)]
        return found

    def _constant_leaf(self, node: Node):
        """A leaf a decomposition made (not a graph input): a compile-time constant."""
        if isinstance(node, ScalarNode):
            return node.value
        tensor = node.data.get()
        meta = node.outputs[0].meta
        sizes = [sympy.Integer(s) for s in meta.shape]
        buf = ConstantBuffer(new_name("const"), meta.dtype, sizes,
                             [sympy.Integer(s) for s in meta.stride], tensor=tensor)
        self.constants.append(buf)
        return buf

    def _lower_node(self, node: Node) -> None:
        # inputs first, iteratively: decompositions can make chains deeper than Python's stack
        for v in node.inputs:
            if id(v) not in self.env and not v.node.is_leaf:
                self._lower_chain(v.node)
        args = {name: self._resolve(node, enc) for name, enc in node.args}
        op = node.op
        check_eager_dtype_support(node, args)
        if not self._in_kernel_dtypes(node, args):
            result = self.extern(node, args, fallback=True)
        elif op in LOWERINGS:
            result = LOWERINGS[op](self, node, **args)
        elif op in DECOMPOSITIONS:
            mark = (len(self.steps), len(self.externs))
            try:
                result = self._decompose(node)
            except (ValueError, TypeError, RuntimeError, NotImplementedError):
                # some decompositions check more strictly than eager: run the op itself
                if os.environ.get("LAZYTRITON_DEBUG_DECOMP"):
                    raise
                del self.steps[mark[0]:], self.externs[mark[1]:]  # drop what it half lowered
                result = self.extern(node, args, fallback=True)
        else:
            result = self.extern(node, args, fallback=True)
        results = result if isinstance(result, (list, tuple)) else [result]
        _record_origins(node.op_name, flatten(results), self._realized)
        self._count_inlined_ops(node, results)
        inlined = self._inlined_ops
        results = [self.realize(r) if isinstance(r, (Reduction, Scatter)) or
                   (isinstance(r, Pointwise) and self._stored_early(node, i)) or
                   inlined.get(id(r), 0) > MAX_INLINED_OPS else r
                   for i, r in enumerate(flatten(results))]
        for out, box in zip(node.outputs, results):
            if out.meta is not None and isinstance(box, TensorBox):
                self.sizevars.check(box.sizes, out.meta.shape, f"{node.op_name} output")
            self._remember(out, box)

    def _count_inlined_ops(self, node: Node, results: list) -> None:
        """Note in `_inlined_ops`, for each new result a reader would inline (a Pointwise or a
        View), how many ops it computes: one more than the inputs it reads, counted once per
        use, so a value that two operands read counts twice, as the loader evaluates it twice."""
        known = self._inlined_ops
        flat = flatten(results)
        fresh = [i for i, box in enumerate(flat)
                 if isinstance(box, (Pointwise, View)) and id(box) not in known]
        if fresh:
            upstream = self._upstream_ops(node, len(flat))
            for i in fresh:
                known[id(flat[i])] = 1 + upstream[i]
                self._keep.append(flat[i])  # alive while it is counted: ids are not reused

    def _upstream_ops(self, node: Node, outputs: int) -> list[int]:
        """Per output, the ops its inputs inline. A list argument with one tensor per output
        (a foreach op's) gives output k its k-th element; any other argument, every output."""
        def inlined(ref) -> int:
            return self._inlined_ops.get(id(self.env.get(id(node.inputs[ref.index]))), 0)

        per_output, shared = [0] * outputs, 0
        for _, enc in node.args:
            refs = [e for e in (enc if isinstance(enc, tuple) else (enc,))
                    if isinstance(e, InputRef)]
            if outputs > 1 and isinstance(enc, tuple) and len(refs) == len(enc) == outputs:
                for k, ref in enumerate(refs):
                    per_output[k] += inlined(ref)
            else:
                shared += sum(inlined(ref) for ref in refs)
        return [n + shared for n in per_output]

    def _stored_early(self, node: Node, i: int) -> bool:
        return i < len(node.outputs) and id(node.outputs[i]) in self._store_early

    def _in_kernel_dtypes(self, node: Node, args: dict) -> bool:
        if self.kernel_dtypes is None:
            return True
        dtypes = [out.meta.dtype for out in node.outputs if out.meta is not None]
        dtypes += [box.dtype for box in flatten(list(args.values())) if isinstance(box, TensorBox)]
        return all(dt in self.kernel_dtypes for dt in dtypes)

    def _remember(self, value: Value, lowered) -> None:
        self._keep.append(value)
        self.env[id(value)] = lowered

    def _lower_chain(self, root: Node) -> None:
        """Lower `root`'s not-yet-lowered ancestors in topological order, without recursion."""
        order, stack, seen = [], [(root, False)], set()
        while stack:
            node, ready = stack.pop()
            if ready:
                order.append(node)
                continue
            if id(node) in seen or all(id(o) in self.env for o in node.outputs):
                continue
            seen.add(id(node))
            stack.append((node, True))
            for v in node.inputs:
                if not v.node.is_leaf and id(v) not in self.env:
                    stack.append((v.node, False))
        for node in order:
            if not all(id(o) in self.env for o in node.outputs):
                self._lower_node(node)

    def _resolve(self, node: Node, enc):
        if isinstance(enc, (InputRef, SeedRef)):
            return self.lower(node.inputs[enc.index])
        if enc is LAZY_DEVICE:
            return LAZY_DEVICE
        if isinstance(enc, tuple):
            return [self._resolve(node, e) for e in enc]
        return enc

    # --- scalars ----------------------------------------------------------------------------
    def specialize(self, value):
        """The concrete value of a scalar argument; a graph input becomes a guard on it."""
        if isinstance(value, ScalarArg):
            self.guards[value.input_index] = value.value
            return value.value
        return value

    # --- decompositions ---------------------------------------------------------------------
    def _decompose(self, node: Node):
        with untracked():
            args = _positional_call(node, lambda enc: self._decomp_arg(node, enc))
            out = DECOMPOSITIONS[node.op](*args[0], **args[1])
        flat = flatten(out if isinstance(out, (list, tuple)) else [out])
        return [self.lower(value_of(t)) if isinstance(t, torch.Tensor) else t for t in flat]

    def _decomp_arg(self, node: Node, enc):
        if isinstance(enc, InputRef):
            v = node.inputs[enc.index]
            if isinstance(v.node, ScalarNode):
                return self.specialize(self.lower(v))
            return fresh_tensor(v)
        if enc is LAZY_DEVICE:
            return torch.device("lazy", 0)
        if isinstance(enc, tuple):
            return [self._decomp_arg(node, e) for e in enc]
        return enc

    # --- realizing --------------------------------------------------------------------------
    def realize(self, box, strides=None) -> Buffer | StridedView:
        """Memory for `box`: buffers and strided views as they are, computations into a new
        buffer (contiguous unless `strides` is given)."""
        if isinstance(box, (Buffer, StridedView)) and strides is None:
            return box
        if isinstance(box, ComputedBuffer) and strides is not None and box.strides == strides:
            return box
        if strides is None and id(box) in self._realized:
            return self._realized[id(box)]
        if isinstance(box, (Reduction, Scatter)):  # computed only into memory
            node = box
        else:  # a computation, a view, or a buffer needing another layout: a pointwise loop
            node = Pointwise(box.dtype, list(box.sizes), inner=box.loader(),  # notes origins
                             facts=dict(getattr(box, "facts", {})))
        layout = strides if strides is not None else contiguous_strides(node.sizes)
        buf = ComputedBuffer(new_name(), node.dtype, list(node.sizes), list(layout), node=node)
        self.steps.append(buf)
        if strides is None and isinstance(box, Pointwise):
            # readers lowered from now on load the buffer instead of computing it again
            box.inner = buf.loader()
            box.origins = []  # so they do not claim its ops (earlier readers still compute it)
            self._realized[id(box)] = buf
            self._inlined_ops[id(box)] = 0
            self._keep.append(box)
        return buf

    def extern(self, node: Node, args: dict, fallback: bool = False):
        """Run `node.op` with aten at run time on realized inputs."""
        if fallback:
            metrics.counter_inc(f"aten::{node.op_name.split('.')[0]}")
        realized = {name: _map_tensors(v, self._extern_arg) for name, v in args.items()}
        kernel = ExternKernel(node.op, tuple(realized.items()))
        for i, out in enumerate(node.outputs):
            if out.meta is None:
                kernel.outputs.append(None)
                continue
            sizes = self._extern_sizes(node, i, args)
            kernel.outputs.append(ExternBuffer(new_name("ext"), out.meta.dtype, sizes,
                                               symbolic_strides(sizes, out.meta), extern=kernel,
                                               output_index=i))
        self.externs.append(kernel)
        self.steps.append(kernel)
        return kernel.outputs

    def _extern_arg(self, box) -> Buffer | StridedView:
        """Externs take strided views uncopied: a permuted or reshaped view of a computation
        realizes the computation once, in its own dense layout, and passes a view of that."""
        view = getattr(box, "strided", None)
        base = getattr(box, "base", None)
        if view is None or not isinstance(base, Pointwise):
            return self.realize(box)
        strides, offset, base_strides = view
        evaluate = self.sizevars.evaluate
        same_numel = evaluate(product(box.sizes)) == evaluate(product(base.sizes))
        if not same_numel or list(base_strides) != contiguous_strides(base.sizes):
            return self.realize(box)
        buf = self.realize(base)
        return StridedView(buf, box.dtype, list(box.sizes), list(strides), buf.offset + offset)

    def _extern_sizes(self, node: Node, index: int, args: dict) -> list:
        meta = node.outputs[index].meta
        sizes = extern_output_sizes(self, node, index, args)
        if sizes is not None and [self.sizevars.evaluate(s) for s in sizes] == list(meta.shape):
            return sizes
        tensors = [t for v in args.values() for t in flatten([v]) if isinstance(t, TensorBox)]
        for t in tensors:  # same shape as an input: take its symbolic sizes
            if [self.sizevars.evaluate(s) for s in t.sizes] == list(meta.shape):
                return list(t.sizes)
        # else dim by dim, the first input's where the sizes agree (a pool keeps batch and
        # channels); the session's shape guard checks these against every later graph
        first = tensors[0] if tensors and tensors[0].ndim == len(meta.shape) else None
        return [first.sizes[d] if first is not None and self.sizevars.evaluate(first.sizes[d]) == s
                else sympy.Integer(s) for d, s in enumerate(meta.shape)]

    # --- the whole graph --------------------------------------------------------------------
    def outputs(self) -> list[Buffer | StridedView]:
        """Each graph output realized with exactly the layout its TensorMeta promises."""
        result = []
        for value in self.graph.outputs:
            box = self.lower(value)
            strides = symbolic_strides(list(box.sizes), value.meta)
            if isinstance(box, Buffer) and _same_layout(self, box, value.meta):
                result.append(box)
            else:
                result.append(self.realize(box, strides))
        return result


def _record_origins(op_name: str, results: list, realized: dict) -> None:
    """Name the op on the computations it returned (a decomposed op's on its final result);
    what a kernel inlines from upstream is noted where its loaders run (loopir.Pointwise)."""
    for box in results:
        if isinstance(box, Computation) and id(box) not in realized:
            box.origins = list(dict.fromkeys(box.origins + [op_name]))


def check_eager_dtype_support(node: Node, args: dict) -> None:
    """Raise what eager raises for these dtypes (e.g. lerp on int64, abs on bool): CPU kernels
    check dtypes that meta kernels do not. Probed once per op and dtypes on 1-element tensors."""
    op = node.op
    if not isinstance(op, torch._ops.OpOverload) or torch.Tag.pointwise not in op.tags:
        return
    signature = tuple((name, _probe_key(v)) for name, v in args.items())
    error = _probe(op, signature)
    if error is not None:
        raise type(error)(*error.args)


def _probe_key(value):
    if isinstance(value, TensorBox):
        return ("tensor", value.dtype, value.ndim)
    if isinstance(value, ScalarArg):
        return ("scalar", value.value)
    if isinstance(value, (list, tuple)):
        return tuple(_probe_key(v) for v in value)
    return value if not isinstance(value, torch.Tensor) else ("const", value.dtype)


@functools.lru_cache(maxsize=None)
def _probe(op, signature) -> Exception | None:
    def example(key):
        if isinstance(key, tuple) and key and key[0] == "tensor":
            return torch.ones((1,) * key[2], dtype=key[1])
        if isinstance(key, tuple) and key and key[0] == "scalar":
            return key[1]
        if key is LAZY_DEVICE:
            return torch.device("cpu")
        if isinstance(key, tuple):
            return [example(k) for k in key]
        return key
    try:
        op(**{name: example(k) for name, k in signature})
    except (NotImplementedError, RuntimeError, TypeError) as e:
        return e
    return None


def _same_layout(lowering: Lowering, box: Buffer, meta: TensorMeta) -> bool:
    ev = lowering.sizevars.evaluate
    return [ev(s) for s in box.strides] == list(meta.stride) and ev(box.offset) == 0


def _map_tensors(value, fn):
    if isinstance(value, (list, tuple)):
        return [_map_tensors(v, fn) for v in value]
    if isinstance(value, TensorBox):
        return fn(value)
    return value


def _positional_call(node: Node, convert) -> tuple[list, dict]:
    """Arguments in schema order (decompositions name parameters their own way)."""
    present = dict(node.args)
    args, kwargs = [], {}
    for a in node.op._schema.arguments:
        if a.name in present:
            value = convert(present[a.name])
        elif a.kwarg_only:
            continue
        elif a.has_default_value():
            value = a.default_value
        else:
            raise AssertionError(f"{node.op}: argument {a.name} missing")
        if a.kwarg_only:
            kwargs[a.name] = value
        else:
            args.append(value)
    return args, kwargs
