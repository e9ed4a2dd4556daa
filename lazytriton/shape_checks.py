"""Shape and dtype checks that eager's CPU kernels make and the meta kernels skip.

The tracer learns an op's output from its meta kernel. For a few ops the meta kernel accepts
arguments that eager's kernel rejects: the generated code would then read past the end of a
buffer (an index_put value that does not broadcast to the indexed result) or return a value
where eager raises (softmax of integers). Each check
runs when a trace plan is made: a plan's signature holds every shape it depends on, so the
check covers every later call of that plan too. The messages are eager's.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .plans import MISSING

aten = torch.ops.aten


def check(op, values: list[Any]) -> None:
    """Raise as eager would for `op` called with these arguments (schema order)."""
    checker = _CHECKS.get(op)
    if checker is not None:
        checker(*values)


def _expandable(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """`shape` expands to `target` (c10's is_expandable_to: no extra leading dims)."""
    if len(shape) > len(target):
        return False
    return all(s == t or s == 1 for s, t in zip(reversed(shape), reversed(target)))


def _indexed_shape(self: torch.Tensor, indices) -> tuple[int, ...] | None:
    """The shape of self[indices] (None: a bool mask, whose shape depends on its data)."""
    metas = []
    for index in indices:
        if index is None:
            metas.append(None)
        elif index.dtype in (torch.bool, torch.uint8):
            return None
        else:
            metas.append(torch.empty(index.shape, dtype=index.dtype, device="meta"))
    base = torch.empty(self.shape, dtype=self.dtype, device="meta")
    return tuple(aten.index.Tensor(base, metas).shape)


def _index_put(self: torch.Tensor, indices, values: torch.Tensor, *_) -> None:
    result = _indexed_shape(self, indices)
    if result is not None and not _expandable(tuple(values.shape), result):
        raise RuntimeError(f"shape mismatch: value tensor of shape {list(values.shape)} cannot "
                           f"be broadcast to indexing result of shape {list(result)}")


def _index_add(self: torch.Tensor, dim: int, index: torch.Tensor, source, *_) -> None:
    dim = dim + self.dim() if dim < 0 else dim
    if self.dim() > 1 or source.dim() > 1:
        same = source.dim() == self.dim() and all(
            source.shape[d] == self.shape[d] for d in range(self.dim()) if d != dim)
        if not same:
            raise RuntimeError(
                "source tensor shape must match self tensor shape, excluding the specified "
                f"dimension. Got self.shape = {list(self.shape)} source.shape = "
                f"{list(source.shape)}")
    rows = source.shape[dim] if source.dim() else 1
    if index.numel() != rows:
        raise RuntimeError(f"index_add_(): Number of indices ({index.numel()}) should be equal "
                           f"to source.size(dim): ({rows}), for dim: {dim}")


def _index_select(self: torch.Tensor, dim: int, index: torch.Tensor, *_) -> None:
    if index.dim() > 1:
        raise IndexError("index_select(): Index is supposed to be a vector")


def _no_bool(name: str):
    def check(self: torch.Tensor, *_) -> None:
        if self.dtype == torch.bool:
            raise RuntimeError(f"{name}(): does not support bool input")
    return check


def _floating(kernel: str):
    def check(self: torch.Tensor, *_) -> None:
        if not (self.dtype.is_floating_point or self.dtype.is_complex):
            name = _eager_name(self.dtype)
            raise NotImplementedError(f'"{kernel}" not implemented for \'{name}\'')
    return check


def _var_std(self: torch.Tensor, *_) -> None:
    if not (self.dtype.is_floating_point or self.dtype.is_complex):
        raise RuntimeError("std and var only support floating point and complex dtypes")


def _nll_target(self: torch.Tensor, target: torch.Tensor, *_) -> None:
    if target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError("expected target dtype to be Long or Byte, but got "
                           f"{_eager_name(target.dtype)}")


def _nll2d_target(self: torch.Tensor, target: torch.Tensor, *_) -> None:
    _nll_target(self, target)
    if self.dim() == 4 and (target.dim() != 3 or target.shape[0] != self.shape[0] or
                            tuple(target.shape[1:]) != tuple(self.shape[2:])):
        raise RuntimeError(f"size mismatch (got input: {list(self.shape)} , target: "
                           f"{list(target.shape)}")


def _extremum_of_all(name: str):
    def check(self: torch.Tensor, *_) -> None:
        if self.numel() == 0:
            raise RuntimeError(f"{name}(): Expected reduction dim to be specified for "
                               f"input.numel() == 0. Specify the reduction dim with the 'dim' "
                               f"argument.")
    return check


def _extremum_over(name: str):
    def check(self: torch.Tensor, dim: int, *_) -> None:
        if self.dim() and self.shape[dim] == 0:
            raise IndexError(f"{name}(): Expected reduction dim {dim % self.dim()} to have "
                             f"non-zero size.")
    return check


def _in_place(functional, keyword: str | None = None):
    """An in-place op writes its result's dtype into self: one self's dtype cannot hold (an
    int tensor times a float) is refused, as eager's TensorIterator does (the meta kernels of
    mul_, addcmul_ and addcdiv_ do not)."""
    def check(self: torch.Tensor, *args) -> None:
        metas = [torch.empty(a.shape, dtype=a.dtype, device="meta")
                 if isinstance(a, torch.Tensor) else a for a in (self, *args)
                 if a is not MISSING]
        options = {keyword: metas.pop()} if keyword and len(metas) > 3 else {}  # `value`
        result = functional(*metas, **options).dtype
        if not torch.can_cast(result, self.dtype):
            raise RuntimeError(f"result type {_eager_name(result)} can't be cast to the "
                               f"desired output type {_eager_name(self.dtype)}")
    return check


def _eager_name(dtype: torch.dtype) -> str:
    """As eager's messages name a dtype: 'Int', 'Long', 'Bool', 'Float'."""
    names = {torch.int32: "Int", torch.int64: "Long", torch.int16: "Short", torch.int8: "Char",
             torch.uint8: "Byte", torch.bool: "Bool", torch.float32: "Float",
             torch.float64: "Double", torch.float16: "Half", torch.bfloat16: "BFloat16"}
    return names.get(dtype, str(dtype).removeprefix("torch."))


_CHECKS: dict[Any, Callable[..., None]] = {
    aten.argmax.default: _no_bool("argmax"),
    aten.argmin.default: _no_bool("argmin"),
    aten._softmax.default: _floating("softmax_lastdim_kernel_impl"),
    aten._log_softmax.default: _floating("log_softmax_lastdim_kernel_impl"),
    aten.uniform_.default: _floating("check_uniform_bounds"),
    aten.uniform.default: _floating("check_uniform_bounds"),
    aten.normal_.default: _floating("normal_kernel_cpu"),
    aten.var.correction: _var_std,
    aten.std.correction: _var_std,
    aten.var_mean.correction: _var_std,
    aten.std_mean.correction: _var_std,
    aten.nll_loss_forward.default: _nll_target,
    aten.nll_loss2d_forward.default: _nll2d_target,
    aten.max.default: _extremum_of_all("max"),
    aten.min.default: _extremum_of_all("min"),
    aten.max.dim: _extremum_over("max"),
    aten.min.dim: _extremum_over("min"),
    aten.mul_.Tensor: _in_place(aten.mul.Tensor),
    aten.mul_.Scalar: _in_place(aten.mul.Scalar),
    aten.addcmul_.default: _in_place(aten.addcmul.default, "value"),
    aten.addcdiv_.default: _in_place(aten.addcdiv.default, "value"),
    aten.index_select.default: _index_select,
    **{op: _index_put for op in (aten.index_put.default, aten.index_put_.default,
                                 aten._index_put_impl_.default, aten._index_put_impl.default)},
    aten.index_add.default: _index_add,
    aten.index_add_.default: _index_add,
}
