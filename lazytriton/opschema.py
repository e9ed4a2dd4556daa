"""What an aten op's schema says about tracing it: which arguments are tensors, which scalars may
become graph inputs, which outputs alias inputs, what it mutates and its functional twin.

Computed once per op overload and memoized: the trace path only reads the result.
"""
from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

import torch


class ArgKind(enum.Enum):
    TENSOR = "Tensor"
    TENSOR_LIST = "Tensor[]"  # also Tensor?[]
    SCALAR = "Scalar"  # a number that never decides a shape: lifted to a graph input
    SCALAR_LIST = "Scalar[]"
    GENERATOR = "Generator"
    DEVICE = "Device"
    OTHER = "other"  # a constant of the graph (ints, bools, dtypes, lists of ints, strings)


# keyed by str(argument.type), which spells types as Python typing does
_KIND_OF_TYPE = {
    "Tensor": ArgKind.TENSOR,
    "Optional[Tensor]": ArgKind.TENSOR,
    "List[Tensor]": ArgKind.TENSOR_LIST,
    "List[Optional[Tensor]]": ArgKind.TENSOR_LIST,
    "number": ArgKind.SCALAR,
    "Optional[number]": ArgKind.SCALAR,
    "float": ArgKind.SCALAR,
    "Optional[float]": ArgKind.SCALAR,
    "List[number]": ArgKind.SCALAR_LIST,
    "Optional[Generator]": ArgKind.GENERATOR,
    "Generator": ArgKind.GENERATOR,
    "Optional[Device]": ArgKind.DEVICE,
    "Device": ArgKind.DEVICE,
}

# Ops whose scalar arguments decide the output's shape: their scalars stay constants.
_SHAPE_FROM_SCALARS = {"arange", "range", "linspace", "logspace"}


@dataclass(frozen=True)
class ArgSpec:
    name: str
    kwarg_only: bool
    kind: ArgKind
    writes: bool  # the op mutates this argument in place


@dataclass(frozen=True)
class OpInfo:
    op: torch._ops.OpOverload
    args: tuple[ArgSpec, ...]
    # per return: index of the argument it is a view of (read-only alias), else None
    view_of: tuple[int | None, ...]
    # per return: index of the mutated argument it returns (e.g. add_ returns self), else None
    returns_written: tuple[int | None, ...]
    returns_tensors: bool  # every return is a Tensor / Tensor[] / Tensor? (else: needs real data)
    is_random: bool
    shape_from_scalars: bool

    @property
    def mutated(self) -> tuple[int, ...]:
        return tuple(i for i, a in enumerate(self.args) if a.writes)

    @property
    def is_view(self) -> bool:
        return any(v is not None for v in self.view_of)

    @property
    def generator_arg(self) -> int | None:
        return next((i for i, a in enumerate(self.args) if a.kind is ArgKind.GENERATOR), None)


def _arg_kind(arg: torch._C.Argument, shape_from_scalars: bool) -> ArgKind:
    kind = _KIND_OF_TYPE.get(str(arg.type), ArgKind.OTHER)
    if shape_from_scalars and kind in (ArgKind.SCALAR, ArgKind.SCALAR_LIST):
        return ArgKind.OTHER
    return kind


def _alias_set(alias_info) -> frozenset[str]:
    if alias_info is None:
        return frozenset()
    return frozenset(alias_info.before_set) | frozenset(alias_info.after_set)


def _return_alias(ret: torch._C.Argument, schema_args) -> tuple[int | None, int | None]:
    """(view_of, returns_written) for one return."""
    if ret.alias_info is None:
        return None, None
    sets = _alias_set(ret.alias_info)
    if not sets:
        # a list of views (split: `Tensor(a -> *) self` -> `Tensor(a)[]`): the binding hides
        # the element's alias set, but the argument it comes from is marked `-> *`
        sets = frozenset("*")
    for i, a in enumerate(schema_args):
        if a.alias_info is not None and _alias_set(a.alias_info) & sets:
            return (i, None) if not a.alias_info.is_write else (None, i)
    return None, None


def _returns_tensors(schema, args: tuple[ArgSpec, ...]) -> bool:
    """Every return is a tensor (or list of them). An op that returns nothing and writes
    nothing is there for its effect on real data (_linalg_check_errors raises on a failed
    factorization), so it does not count: it runs on real data, as eager."""
    if not schema.returns and not any(a.writes for a in args):
        return False
    return all(_is_tensor_type(str(r.type)) for r in schema.returns)


def _is_tensor_type(type_str: str) -> bool:
    return type_str in ("Tensor", "Optional[Tensor]", "List[Tensor]", "List[Optional[Tensor]]")


@functools.lru_cache(maxsize=None)
def op_info(op: torch._ops.OpOverload) -> OpInfo:
    schema = op._schema
    base_name = schema.name.split("::")[-1]
    shape_from_scalars = base_name in _SHAPE_FROM_SCALARS
    args = tuple(
        ArgSpec(a.name, a.kwarg_only, _arg_kind(a, shape_from_scalars),
                a.alias_info is not None and a.alias_info.is_write)
        for a in schema.arguments
    )
    aliases = [_return_alias(r, schema.arguments) for r in schema.returns]
    return OpInfo(
        op=op,
        args=args,
        view_of=tuple(v for v, _ in aliases),
        returns_written=tuple(w for _, w in aliases),
        returns_tensors=_returns_tensors(schema, args),
        is_random=torch.Tag.nondeterministic_seeded in op.tags,
        shape_from_scalars=shape_from_scalars,
    )


def is_out_arg(arg: ArgSpec) -> bool:
    """An out= argument: written and keyword-only. The functional twin drops it; an in-place
    op's written `self` stays an input."""
    return arg.writes and arg.kwarg_only


def _functional_signature(op: torch._ops.OpOverload) -> list[tuple[str, str]]:
    """(name, type) of the arguments a functional twin must take, in order."""
    return [(a.name, str(a.type)) for a, spec in zip(op._schema.arguments, op_info(op).args)
            if not is_out_arg(spec)]


def _overload(packet_name: str, overload: str,
              namespace: str = "aten") -> torch._ops.OpOverload | None:
    packet = getattr(getattr(torch.ops, namespace), packet_name, None)
    if packet is None or overload not in packet.overloads():
        return None
    return getattr(packet, overload)


def _candidates(op: torch._ops.OpOverload):
    """Functional twins to try, by PyTorch's naming conventions."""
    namespace, name = op._schema.name.split("::")
    overload = op._overloadname
    if name.endswith("_") and not name.endswith("__"):
        yield _overload(name[:-1], overload, namespace)  # lazytriton's own ops too
        yield _overload(name[:-1] + "_functional", "default")
        base = getattr(torch.ops.aten, name[:-1], None)
        if base is not None:  # a restride named otherwise: transpose_.default -> transpose.int
            for other in base.overloads():
                if op_info(getattr(base, other)).is_view:
                    yield getattr(base, other)
    yield _overload(name + "_functional", "default")
    packet = getattr(torch.ops.aten, name, None)
    if packet is not None:  # out= variants: same op, the overload without the out arguments
        for other in packet.overloads():
            yield getattr(packet, other)


@functools.lru_cache(maxsize=None)
def functional_variant(op: torch._ops.OpOverload) -> torch._ops.OpOverload | None:
    """The out-of-place op computing what `op` writes, with the same non-mutated arguments.

    Its returns are: `op`'s non-aliased returns, then the new value of each mutated argument.
    None when PyTorch has no such op; the tracer then clones and calls `op` itself.
    """
    wanted = _functional_signature(op)
    n_written = sum(1 for a in op._schema.arguments if a.alias_info and a.alias_info.is_write)
    n_fresh_returns = sum(1 for r in op._schema.returns if r.alias_info is None)
    for cand in _candidates(op):
        if cand is None or cand is op or op_info(cand).mutated:
            continue
        if [(a.name, str(a.type)) for a in cand._schema.arguments] != wanted:
            continue  # e.g. pow_.Scalar must not map to pow.Scalar(Scalar self, ...)
        if len(cand._schema.returns) == n_fresh_returns + n_written or _is_list_return(cand):
            return cand
    return None


def _is_list_return(op: torch._ops.OpOverload) -> bool:
    """Foreach ops return one Tensor[] holding a value per mutated list element."""
    returns = op._schema.returns
    return len(returns) == 1 and str(returns[0].type) == "List[Tensor]"
