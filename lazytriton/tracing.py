"""The trace path: every aten op on lazy tensors becomes IR nodes here; nothing is computed.

Per op and argument signature, once: normalize the call against its schema, compute output
metadata with meta kernels, and decide how to record it, as a plan (plans.py):
 - a view (the result shares its input's storage),
 - a mutation (recorded functionally and written back into the mutated tensors' storages), or
 - a plain op (fresh storages).
Every call, the first included, runs its signature's plan: a training loop pays for the
decisions once and for one node per op after that.
Ops that need real data (data-dependent shapes, ops returning Python values) run eagerly on
materialized inputs and the trace continues; each is counted as `aten::<op>`.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch

from . import eager_layouts, failed_values, ir, metrics, philox, plans, shape_checks
from .ir import LAZY_DEVICE, InputRef, SeedRef, TensorMeta, Value
from .opschema import ArgKind, OpInfo, functional_variant, is_out_arg, op_info
from .overlap import FILLS, ListOverlap, is_foreach, overlap_check_of
from .runtime import session
from .sizevars import contiguous_strides
from .tensor import (LAZY_TORCH_DEVICE, LazyTensor, alias_into, fresh_tensor,
                     is_identity_view, reinterpreted_numel, set_router,
                     value_of, view_tensor, write)

aten = torch.ops.aten
_MISSING = plans.MISSING


def record(op: Callable, inputs: tuple[Value, ...], args: tuple,
           out_metas: tuple[TensorMeta | None, ...]) -> tuple[Value, ...]:
    return ir.Node(op, inputs, args, out_metas).outputs


# --- normalizing a call ---------------------------------------------------------------------

class _Call:
    """One op call bound to its schema and encoded for the IR, value-free: where each graph
    input comes from is a getter, so the encoding serves every later call of the same
    signature (plans.py)."""

    __slots__ = ("info", "values", "sources", "getters", "inputs", "encoded")

    def __init__(self, info: OpInfo, args: tuple, kwargs: dict):
        self.info = info
        self.values, self.sources = [], []
        for i, spec in enumerate(info.args):
            positional = not spec.kwarg_only and i < len(args)
            self.values.append(args[i] if positional else kwargs.get(spec.name, _MISSING))
            self.sources.append(plans.Source(i if positional else None, spec.name))
        self.getters = [source.getter() for source in self.sources]  # the raw arguments
        self.inputs: list[plans.Getter] = []
        encoded = []
        for spec, value, source in zip(info.args, self.values, self.sources):
            if value is _MISSING or spec.kind is ArgKind.GENERATOR:
                continue  # random ops get a seed input instead of a generator (_seed_random)
            encoded.append((spec.name, self._encode(spec, value, source)))
        self.encoded = tuple(encoded)

    def _input(self, get: plans.Getter) -> InputRef:
        self.inputs.append(get)
        return InputRef(len(self.inputs) - 1)

    def _encode(self, spec, value, source: plans.Source) -> Any:
        kind = spec.kind
        if kind is ArgKind.TENSOR:
            return self._encode_tensor(spec, value, source)
        if kind is ArgKind.TENSOR_LIST:
            return tuple(self._encode_tensor(spec, v, source.at(i)) for i, v in enumerate(value))
        if kind is ArgKind.SCALAR:
            return self._encode_scalar(value, source)
        if kind is ArgKind.SCALAR_LIST:
            return tuple(self._encode_scalar(v, source.at(i)) for i, v in enumerate(value))
        if kind is ArgKind.DEVICE:
            return _lazy_or_device(value)
        return _freeze(value)

    def _encode_tensor(self, spec, t, source: plans.Source) -> Any:
        if t is None:
            return None
        if isinstance(t, (int, float, complex)):  # a wrapped Python scalar (x * 2)
            return self._encode_scalar(t, source)
        if spec.name == "indices" and isinstance(t, torch.Tensor) and t.device.type == "cpu":
            # x[cpu_index]: eager on an accelerator copies indices over too
            return self._input(plans.mapped(source, lambda t: value_of(_uploaded(t))))
        if isinstance(t, LazyTensor):
            if t._lt_layout is t._lt_storage.value.meta:  # as plans.tensor_signature tells
                return self._input(plans.whole_storage_value(source))
            return self._input(plans.mapped(source, value_of))
        if isinstance(t, torch.Tensor) and t.dim() == 0 and t.device.type == "cpu":
            # eager lets a CPU scalar tensor join ops on any device; snapshot it as a graph input
            return self._input(plans.mapped(source, _cpu_scalar))
        raise _device_mismatch(self.info, spec.name, t)

    def _encode_scalar(self, value, source: plans.Source) -> Any:
        if isinstance(value, (bool, type(None))) or not isinstance(value, (int, float, complex)):
            return value
        return self._input(plans.mapped(source, ir.scalar_value))

    # --- back to call arguments --------------------------------------------------------------
    def meta_args(self, drop_out: bool = False) -> dict[str, Any]:
        """The call's arguments with lazy tensors replaced by meta tensors of the same layout
        (without out= arguments for the functional twin)."""
        out = {}
        for spec, value in zip(self.info.args, self.values):
            if value is _MISSING or (drop_out and is_out_arg(spec)):
                continue
            out[spec.name] = _to_meta(spec.kind, value)
        return out


def _cpu_scalar(t: torch.Tensor) -> Value:
    return ir.data_value(t.detach().clone(), on_cpu=True)


def _uploaded(t: torch.Tensor) -> LazyTensor:
    shape = tuple(t.shape)
    meta = ir.interned(TensorMeta(shape, tuple(contiguous_strides(shape)), t.dtype))
    return fresh_tensor(upload(t, meta))


def _freeze(value):
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _lazy_or_device(value):
    if value is None:
        return None
    dev = torch.device(value)
    return LAZY_DEVICE if dev.type == "lazy" else dev


def _device_mismatch(info: OpInfo, name: str, t) -> RuntimeError:
    where = t.device if isinstance(t, torch.Tensor) else type(t).__name__
    return RuntimeError(
        f"Expected all tensors to be on the same device, but found at least two devices, "
        f"{LAZY_TORCH_DEVICE} and {where}! (when checking argument for argument {name} in method "
        f"{info.op}); move the tensor with .to('lazy')")


def _meta_tensor(t):
    if not isinstance(t, torch.Tensor):
        return t  # a wrapped Python scalar
    if isinstance(t, LazyTensor):
        s = t._lt_storage.meta
        if t.dtype == s.dtype:
            base = torch.empty_strided(s.shape, s.stride, dtype=t.dtype, device="meta")
        else:  # a view reinterpreting the dtype indexes the storage's memory in its own dtype
            base = torch.empty(reinterpreted_numel(s, t.dtype)[0], dtype=t.dtype, device="meta")
        return base.as_strided(t.shape, t.stride(), t.storage_offset())
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")  # CPU


def _to_meta(kind: ArgKind, value):
    if kind is ArgKind.TENSOR:
        return None if value is None else _meta_tensor(value)
    if kind is ArgKind.TENSOR_LIST:
        return [None if v is None else _meta_tensor(v) for v in value]
    if kind is ArgKind.DEVICE and value is not None and torch.device(value).type == "lazy":
        return torch.device("meta")
    if kind is ArgKind.GENERATOR:
        return None
    return value


def _metas_of(result) -> Any:
    """Metadata of a meta-kernel result: TensorMeta, None, or a tuple of those per return."""
    if isinstance(result, torch.Tensor):
        return TensorMeta.of(_dense_only(result))
    if isinstance(result, (list, tuple)):
        return tuple(_metas_of(r) for r in result)
    return result


def _dense_only(t: torch.Tensor) -> torch.Tensor:
    if t.layout != torch.strided:
        raise NotImplementedError(
            f"lazytriton: the lazy device holds dense (strided) tensors only, not {t.layout}; "
            "keep sparse tensors on the CPU")
    return t


# --- entry point: tensor.py calls _route once per op for the op's handler -----------------

def _route(func) -> Callable[[tuple, dict], Any]:
    """How `func` is handled, decided once per op."""
    if func in _SAME_LAYOUT_VIEWS:
        return _same_layout_view
    handler = _SPECIAL.get(func)
    if handler is not None:
        return lambda args, kwargs: handler(*args, **kwargs)
    if _is_composite(func):  # e.g. aten.to: its own kernel says whether it copies or aliases
        def decompose(args, kwargs):
            result = func.decompose(*args, **kwargs)
            return trace_op(func, args, kwargs) if result is NotImplemented else result
        return decompose
    info = op_info(func)
    if not info.returns_tensors:
        return lambda args, kwargs: run_eagerly(func, args, kwargs)
    return _tracer(info)


def _is_composite(func) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(func.name(),
                                                          "CompositeImplicitAutograd")


def trace_op(func, args: tuple, kwargs: dict):
    """Record `func` on lazy tensors (also factories with device="lazy")."""
    info = op_info(func)
    if not info.returns_tensors:
        return run_eagerly(func, args, kwargs)
    return _tracer(info)(args, kwargs)


def _trace(info: OpInfo, args: tuple, kwargs: dict):
    return _tracer(info)(args, kwargs)


class _NeedsRealData(Exception):
    """The op's output shape depends on values: run it eagerly."""


class _OpTracer:
    """The one path every traced op takes: find the plan for the call's argument signature
    (making it the first time), run it."""

    def __init__(self, info: OpInfo):
        self.info = info
        self.signature = plans.Signature(info)
        self.plans: dict[tuple, plans.Plan] = {}  # bounded by the signatures a program traces

    def __call__(self, args: tuple, kwargs: dict):
        start = _clock()
        try:
            key = self.signature(args, kwargs)
            plan = self.plans.get(key)
        except (plans.Uncacheable, TypeError):  # TypeError: an unhashable constant
            key = plan = None
        try:
            if plan is None:
                plan = _make_plan(self.info, args, kwargs)
                if key is not None:
                    self.plans[key] = plan
            return plan.run(args, kwargs)
        finally:
            _add_time("trace", _clock() - start)


_clock = time.perf_counter
_add_time = metrics.add_time_unlocked  # only this thread traces: no lock needed


_tracers: dict[int, _OpTracer] = {}  # by id(op), as tensor.py's handlers


def _tracer(info: OpInfo) -> _OpTracer:
    tracer = _tracers.get(id(info.op))
    if tracer is None:
        tracer = _tracers[id(info.op)] = _OpTracer(info)
    return tracer


def _make_plan(info: OpInfo, args: tuple, kwargs: dict) -> plans.Plan:
    call = _Call(info, args, kwargs)
    shape_checks.check(info.op, call.values)  # what eager's kernel rejects and the meta's not
    try:
        if info.is_view and not info.mutated:
            return _plan_view(call)
        if info.mutated:
            return _plan_mutation(call)
        return _plan_functional(call)
    except _NeedsRealData:
        return plans.Plan(None, (), (), (), lambda a, k, _: run_eagerly(info.op, a, k))


def _call_meta(op, call: _Call) -> Any:
    """Output metadata of `op` (the traced op, its functional twin or a CloneAndCall)."""
    twin = op is not call.info.op
    try:
        result = op(**call.meta_args(drop_out=twin and not isinstance(op, CloneAndCall)))
    except NotImplementedError as e:  # no data-independent meta kernel: shape needs data
        raise _NeedsRealData() from e
    except RuntimeError as e:  # repeat_interleave(repeats) says so in its own words
        if "a meta tensor without" in str(e):
            raise _NeedsRealData() from e
        raise
    return _metas_of(result)


def _flat_metas(metas) -> tuple[TensorMeta | None, ...]:
    """Per output, the metadata of a fresh value: its own buffer, from offset 0 (a meta kernel
    may return a view into an input for an op that copies, e.g. unsafe_split)."""
    if isinstance(metas, TensorMeta) and metas.storage_offset:
        return (ir.interned(TensorMeta(metas.shape, metas.stride, metas.dtype)),)
    if isinstance(metas, TensorMeta) or metas is None:
        return (metas,)
    out = []
    for m in metas:
        out.extend(_flat_metas(m))
    return tuple(out)


def _per_return(op, metas) -> tuple:
    """The meta result split per schema return (a Tensor[] return is one tuple)."""
    return (metas,) if len(op._schema.returns) == 1 else tuple(metas)


def _assemble(results: list):
    """Python return value from per-return results: one value, or a tuple of them."""
    return results[0] if len(results) == 1 else tuple(results)


def _fill(metas, tensors) -> Any:
    """Rebuild one return's structure (tensor, None or list) from an iterator of tensors."""
    if isinstance(metas, TensorMeta) or metas is None:
        return next(tensors)
    return [_fill(m, tensors) for m in metas]


# --- views --------------------------------------------------------------------------------

def _plan_view(call: _Call) -> plans.Plan:
    if any(v is None for v in call.info.view_of):
        raise _NeedsRealData()  # returns both views and fresh tensors: no such op in training
    per_return = _per_return(call.info.op, _call_meta(call.info.op, call))
    bases = [call.getters[i] for i in call.info.view_of]
    if len(bases) == 1 and isinstance(per_return[0], TensorMeta):
        base, meta = bases[0], per_return[0]
        return plans.Plan(None, (), (), (), lambda a, k, _: view_tensor(base(a, k), meta))
    return plans.Plan(None, (), (), (), lambda a, k, _: _assemble(
        [_view_of(base(a, k), m) for base, m in zip(bases, per_return)]))


def _view_of(base: LazyTensor, metas):
    if isinstance(metas, tuple):
        return [_view_of(base, m) for m in metas]
    return view_tensor(base, metas)  # also one reinterpreting the dtype (tensor.py says how)


# --- plain ops ----------------------------------------------------------------------------

def _plan_functional(call: _Call) -> plans.Plan:
    op, extra_args = call.info.op, ()
    if call.info.is_random:
        op, extra_args = _seed_random(call)
    metas = eager_layouts.adjust(call.info.op, call.values, _call_meta(call.info.op, call))
    flat = _flat_metas(metas)
    if len(flat) == 1 and isinstance(metas, TensorMeta):
        finish = _single_output(flat[0])
    else:
        per_return = _per_return(call.info.op, metas)

        def finish(args, kwargs, outputs):
            tensors = iter([None if m is None else _fresh(v) for v, m in zip(outputs, flat)])
            return _assemble([_fill(m, tensors) for m in per_return])
    return plans.Plan(op, call.encoded + extra_args, flat, tuple(call.inputs), finish)


def _single_output(meta: TensorMeta) -> plans.Finisher | None:
    if meta.is_whole_buffer:
        return None  # Plan.run's own way: a new tensor over the output
    return lambda args, kwargs, outputs: _fresh(outputs[0])


def _fresh(value: Value) -> LazyTensor:
    """A new storage holding `value`, which must be a whole buffer at offset 0 (tensor.py).
    An op that returns views without saying so in its schema (unsafe_split, which nn.GRU and
    nn.LSTM cells split their gates with, then update in place) gets a dense copy: its contract
    lets the outputs be independent of the input."""
    meta = value.meta
    if not meta.is_whole_buffer:
        dense = TensorMeta(meta.shape, tuple(contiguous_strides(meta.shape)), meta.dtype)
        value = record(aten.clone.default, (value,), (("self", InputRef(0)),), (dense,))[0]
    return fresh_tensor(value)


# --- mutations ----------------------------------------------------------------------------

def _plan_mutation(call: _Call) -> plans.Plan:
    info = call.info
    _call_meta(info.op, call)  # eager's own checks: e.g. an in-place op must not broadcast self
    if info.op in failed_values.OVERWRITES and call.inputs:  # self is the first input
        call.inputs[0] = failed_values.not_failed(call.inputs[0])
    variant = functional_variant(info.op)
    if variant is not None and op_info(variant).is_view:
        return _plan_restride(call, variant)
    if variant is not None:
        op = variant
        encoded = tuple((n, e) for (n, e) in call.encoded if not is_out_arg(_spec(info, n)))
    else:
        op = CloneAndCall(info.op)
        encoded = call.encoded
    metas = _call_meta(op, call)
    extra_args = ()
    if info.is_random:
        op, extra_args = _seed_random(call, op)
    flat = _flat_metas(metas)
    n_fresh = sum(1 for w in info.returns_written if w is None)
    targets = [call.getters[i] if call.values[i] is not _MISSING else None
               for i in info.mutated]
    returned = [None if w is None else call.getters[w] for w in info.returns_written]
    overlap_check = overlap_check_of(call)
    if _writes_one_tensor_in_place(call, flat, n_fresh):  # x.add_(y), x.mul_(2): most mutations
        target = targets[0]
        fills = info.op in FILLS  # eager lets these write an expanded tensor

        def write_and_return(args, kwargs, outputs):
            t = target(args, kwargs)
            if overlap_check is not None:
                overlap_check(t, args, kwargs)
            write(t, outputs[0], fills)
            return t
        return plans.Plan(op, encoded + extra_args, flat, tuple(call.inputs), write_and_return)
    overlap = ListOverlap(call) if is_foreach(info) else None
    if _writes_lists_in_place(call, flat, n_fresh):  # _foreach_add_(params, ...): optimizers
        lists = tuple(targets)

        def write_lists(args, kwargs, outputs):
            if overlap is not None and overlap.found(args, kwargs):
                return overlap.one_by_one(args, kwargs)
            k = 0
            for target in lists:
                for t in target(args, kwargs):
                    write(t, outputs[k])
                    k += 1
        return plans.Plan(op, encoded + extra_args, flat, tuple(call.inputs), write_lists)

    def finish(args, kwargs, outputs):
        if overlap is not None and overlap.found(args, kwargs):
            return overlap.one_by_one(args, kwargs)
        if overlap_check is not None:
            overlap_check(targets[0](args, kwargs), args, kwargs)
        fresh = iter([None if v.meta is None else _fresh(v) for v in outputs[:n_fresh]])
        new_values = iter(outputs[n_fresh:])
        for target in targets:
            _write_back(_MISSING if target is None else target(args, kwargs), new_values)
        results = [next(fresh) if get is None else get(args, kwargs) for get in returned]
        return _assemble(results) if results else None
    return plans.Plan(op, encoded + extra_args, flat, tuple(call.inputs), finish)


def _writes_one_tensor_in_place(call: _Call, flat: tuple, n_fresh: int) -> bool:
    """The op writes one tensor argument, which it returns, with a new value of the same shape
    and dtype (as the signature fixes the argument's layout, this holds for every call)."""
    info = call.info
    if n_fresh or len(info.mutated) != 1 or info.returns_written != info.mutated:
        return False
    target = call.values[info.mutated[0]]
    new = flat[0] if len(flat) == 1 else None
    return (isinstance(target, LazyTensor) and new is not None
            and tuple(target.shape) == new.shape and target.dtype == new.dtype)


def _writes_lists_in_place(call: _Call, flat: tuple, n_fresh: int) -> bool:
    """The op returns nothing and writes lists of lazy tensors, each with a new value of its
    shape and dtype (the signature fixes every element's layout: this holds for every call)."""
    info = call.info
    if n_fresh or info.returns_written or not info.mutated:
        return False
    written = []
    for i in info.mutated:
        value = call.values[i]
        if info.args[i].kind is not ArgKind.TENSOR_LIST or not isinstance(value, (list, tuple)):
            return False
        written.extend(value)
    return len(written) == len(flat) and all(
        isinstance(t, LazyTensor) and new is not None and tuple(t.shape) == new.shape
        and t.dtype == new.dtype for t, new in zip(written, flat))


def _plan_restride(call: _Call, view_op) -> plans.Plan:
    """t_, transpose_, unsqueeze_, as_strided_, ...: same storage, new sizes and strides."""
    target = call.getters[call.info.mutated[0]]
    meta = _call_meta(view_op, call)

    def finish(args, kwargs, outputs):
        t = target(args, kwargs)
        alias_into(t, view_tensor(t, meta))
        return t
    return plans.Plan(None, (), (), (), finish)


def _spec(info: OpInfo, name: str):
    return next(a for a in info.args if a.name == name)


def _write_back(target, new_values) -> None:
    if target is _MISSING:  # an optional mutated argument not passed: it has no new value
        return
    if target is None:
        next(new_values, None)
        return
    if isinstance(target, (list, tuple)):
        for t in target:
            _write_back(t, new_values)
        return
    new = next(new_values)
    if new.meta is None:
        return
    if tuple(target.shape) != new.meta.shape:
        # out= resizes its output in place, as eager does: same storage and offset, so a view
        # given as out= (fft_fftfreq's slice of its result) writes into its base
        _resize_(target, new.meta.shape)
    write(target, _cast(new, target.dtype))


def _cast(value: Value, dtype: torch.dtype) -> Value:
    if value.meta.dtype == dtype:
        return value
    meta = TensorMeta(value.meta.shape, value.meta.stride, dtype)
    return record(aten._to_copy.default, (value,),
                  (("self", InputRef(0)), ("dtype", dtype)), (meta,))[0]


class CloneAndCall:
    """Functional form of a mutating op with no functional twin: clone what it writes, call it,
    return (its fresh returns..., the written clones...)."""

    def __init__(self, op):
        self.op = op
        self.info = op_info(op)
        self.__name__ = f"clone_and_call[{op}]"

    def __eq__(self, other):
        return isinstance(other, CloneAndCall) and other.op is self.op

    def __hash__(self):
        return hash(("clone_and_call", self.op))

    def __call__(self_, /, **kwargs):  # noqa: N805 -- ops take an argument named "self"
        self = self_
        written = []
        for index in self.info.mutated:
            name = self.info.args[index].name
            if name in kwargs:
                kwargs[name] = _clone(kwargs[name])
                written.append(kwargs[name])
        result = self.op(**kwargs)
        results = result if isinstance(result, tuple) else (result,)
        fresh = [r for r, w in zip(results, self.info.returns_written) if w is None]
        return tuple(fresh) + tuple(written)


def _clone(value):
    if isinstance(value, (list, tuple)):
        return [_clone(v) for v in value]
    return None if value is None else value.clone()


# --- random ops ---------------------------------------------------------------------------

def _draw_seed(generator: torch.Generator | None) -> int:
    """A seed from the user's generator (default: torch's global one, so manual_seed holds)."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


def _seed_random(call: _Call, op=None):
    """(op, extra encoded args): the op gets a generator seeded from a fresh graph input."""
    op = op or call.info.op
    gen_index = call.info.generator_arg
    passed = gen_index is not None and call.values[gen_index] is not _MISSING
    user_gen = call.getters[gen_index] if passed else (lambda args, kwargs: None)
    seed_ref = SeedRef(len(call.inputs))
    call.inputs.append(lambda args, kwargs: ir.scalar_value(_draw_seed(user_gen(args, kwargs))))
    if gen_index is not None or isinstance(op, CloneAndCall):
        if gen_index is None:
            raise _NeedsRealData()
        return op, (("generator", seed_ref),)
    seeded = philox.SEEDED_TWINS.get(call.info.op)
    if seeded is None:
        raise _NeedsRealData()
    return seeded, (("generator", seed_ref),)


# --- ops needing real data ----------------------------------------------------------------

def materialize(t: LazyTensor) -> torch.Tensor:
    """The real data of `t` on the backend device (a view of an immutable buffer)."""
    session.current().sync([t._lt_storage])
    storage = t._lt_storage
    data = storage.value.node.data.get()
    if data.dtype != t.dtype:  # a view reinterpreting the dtype
        n_new, n_old = reinterpreted_numel(storage.meta, t.dtype)
        data = data.as_strided((n_old,), (1,), 0).view(t.dtype)
    return data.as_strided(t.shape, t.stride(), t.storage_offset())


def _real(value, cloned: bool):
    if isinstance(value, LazyTensor):
        real = materialize(value)
        return real.clone() if cloned else real
    if isinstance(value, (list, tuple)) and any(isinstance(v, LazyTensor) for v in value):
        return type(value)(_real(v, cloned) for v in value)
    return value


def run_eagerly(func, args: tuple, kwargs: dict):
    """Fallback: run the op on real data and wrap its results as new lazy data."""
    metrics.counter_inc(f"aten::{func._schema.name.split('::')[-1]}")
    info = op_info(func)
    mutated = {info.args[i].name for i in info.mutated}
    names = [a.name for a in info.args]
    real_args = [_real(a, names[i] in mutated if i < len(names) else False)
                 for i, a in enumerate(args)]
    real_kwargs = {k: _lazy_device_to_real(_real(v, k in mutated)) for k, v in kwargs.items()}
    result = func(*real_args, **real_kwargs)
    for i, name in enumerate(names):  # write mutated clones back through the storages
        if name in mutated:
            lazy = args[i] if i < len(args) else kwargs.get(name)
            real = real_args[i] if i < len(args) else real_kwargs.get(name)
            _write_real(lazy, real)
    return _wrap_real(result)


def _lazy_device_to_real(value):
    if isinstance(value, torch.device) and value.type == "lazy":
            return session.current().device
    return value


def _write_real(lazy, real) -> None:
    if isinstance(lazy, (list, tuple)):
        for lz, rl in zip(lazy, real):
            _write_real(lz, rl)
    elif isinstance(lazy, LazyTensor):
        write(lazy, ir.data_value(_own_buffer(real)))


def _own_buffer(t: torch.Tensor) -> torch.Tensor:
    """A storage value must own a dense buffer at offset 0 (views of it are as_strided)."""
    if t.storage_offset() == 0 and t.is_contiguous():
        return t
    return t.clone(memory_format=torch.contiguous_format)


def _wrap_real(result):
    if isinstance(result, torch.Tensor):
        return fresh_tensor(ir.data_value(_own_buffer(_dense_only(result))))
    if isinstance(result, (list, tuple)):
        return type(result)(_wrap_real(r) for r in result)
    return result


def upload(src: torch.Tensor, meta: TensorMeta) -> Value:
    """Copy host data into a fresh device buffer laid out as `meta` (broadcasting, converting)."""
    buf = torch.empty_strided(meta.shape, meta.stride, dtype=meta.dtype,
                              device=session.current().device)
    buf.copy_(src.detach())
    return ir.data_value(buf, meta)


# --- special cases ------------------------------------------------------------------------

def copy_into(dst: torch.Tensor, src: torch.Tensor, non_blocking: bool = False):
    if not isinstance(dst, LazyTensor):  # lazy -> host
        dst.copy_(materialize(src))
        return dst
    if src is dst:  # eager returns at once (even for an expanded tensor): nothing changes
        return dst
    if isinstance(src, LazyTensor):
        return _trace(op_info(aten.copy_.default), (dst, src), {})
    storage = dst._lt_storage
    if is_identity_view(dst, storage) and storage.meta.is_whole_buffer:
        storage.set_value(upload(src, storage.meta))  # whole buffer overwritten: upload now
        return dst
    src_meta = TensorMeta(tuple(src.shape), tuple(contiguous_strides(src.shape)), src.dtype)
    return copy_into(dst, fresh_tensor(upload(src, src_meta)))


def _to_copy(self, **kwargs):
    device = kwargs.get("device")
    if device is not None and torch.device(device).type != "lazy":
        real = materialize(self)
        return aten._to_copy.default(real, **kwargs)
    return _trace(op_info(aten._to_copy.default), (self,), kwargs)


def _local_scalar_dense(self):
    return materialize(self).item()


def _set_source_tensor(self, source):
    alias_into(self, source)
    return self


def _detach_(self):
    return self


def _resize_(self, size, memory_format=None):
    """As eager: same storage and offset, contiguous strides (or memory_format's); a storage too
    small grows, keeping its contents (the new elements, uninitialized in eager, are zeros)."""
    size = tuple(size)
    if size == tuple(self.shape) and memory_format is None:
        return self
    stride = torch.empty(size, device="meta",
                         memory_format=memory_format or torch.contiguous_format).stride()
    meta = TensorMeta(size, tuple(stride), self.dtype, self.storage_offset())
    storage = self._lt_storage
    needed = -(-meta.storage_numel * self.dtype.itemsize // storage.meta.dtype.itemsize)
    if needed > storage.meta.storage_numel:
        _grow(storage, needed)
    alias_into(self, view_tensor(self, meta))
    return self


def _grow(storage, numel: int) -> None:
    """The storage becomes a 1-D buffer of `numel` elements starting with its memory now."""
    meta = storage.meta
    whole = LazyTensor(storage, meta.shape, meta.stride, 0, meta.dtype)
    span = meta.storage_numel
    flat = whole.as_strided((span,), (1,), 0)
    zeros = torch.zeros(numel - span, dtype=meta.dtype, device=LAZY_TORCH_DEVICE)
    storage.set_value(value_of(torch.cat([flat, zeros])))


def _is_pinned(self, device=None):
    return False


def _conj(self):
    """x.conj() of a complex tensor: eager sets a conjugate bit on a view; a lazy tensor has no
    such bit (the view's values would come out unconjugated), so the values are conjugated
    now. Writes through the result do not reach `self` (eager writes them back conjugated)."""
    return _trace(op_info(aten.conj_physical.default), (self,), {})


def _neg_view(self):
    """The negative bit's counterpart of _conj."""
    return _trace(op_info(aten.neg.default), (self,), {})


def _batch_norm(op):
    """Batch norm as eager computes it on an accelerator.

    Eval mode is traced through PyTorch's decomposition: eager's CPU kernel returns empty
    save_mean/save_invstd there, while meta (which shapes lazy tensors) and CUDA return the
    running mean and 1/sqrt(running_var + eps); as smaller ops, every backend computes that.
    In training, native_batch_norm updates the running stats although its schema does not say
    so: it is traced as _native_batch_norm_legit, whose schema does."""
    from torch._decomp import decomposition_table
    decomposition = decomposition_table[op]
    names = [a.name for a in op._schema.arguments]

    def handler(*args, **kwargs):
        bound = dict(zip(names, args), **kwargs)
        if not bound.get("training", False):
            return decomposition(*args, **kwargs)
        stats = bound.get("running_mean") is not None and bound.get("running_var") is not None
        if op is aten.native_batch_norm.default and stats:
            return trace_op(aten._native_batch_norm_legit.default, args, kwargs)
        return trace_op(op, args, kwargs)
    return handler


def _same_layout_view(args: tuple, kwargs: dict) -> LazyTensor:
    """detach and alias: another tensor over the same storage in the same layout. No node and
    no plan: autograd detaches every gradient it accumulates and each parameter the
    optimizer reads, a few dozen calls a step."""
    self = args[0] if args else kwargs["self"]
    return view_tensor(self, self._lt_layout)


_SAME_LAYOUT_VIEWS = (aten.detach.default, aten.alias.default)

_SPECIAL = {
    aten.copy_.default: copy_into,
    aten._to_copy.default: _to_copy,
    aten._local_scalar_dense.default: _local_scalar_dense,
    aten.set_.source_Tensor: _set_source_tensor,
    aten.detach_.default: _detach_,
    aten.resize_.default: _resize_,
    aten.resize_as_.default: lambda self, the_template, memory_format=None: _resize_(
        self, the_template.shape, memory_format),
    aten.is_pinned.default: _is_pinned,
    aten._conj.default: _conj,
    aten._neg_view.default: _neg_view,
}  # accelerator_ops.py adds the ops traced as eager runs them on an accelerator
_SPECIAL.update({op: _batch_norm(op) for op in (
    aten.native_batch_norm.default, aten._native_batch_norm_legit.default,
    aten._native_batch_norm_legit_no_training.default)})

set_router(_route)
