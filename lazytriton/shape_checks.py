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


def _eager_name(dtype: torch.dtype) -> str:
    """As eager's messages name a dtype: 'Int', 'Long', 'Bool'."""
    names = {torch.int32: "Int", torch.int64: "Long", torch.int16: "Short", torch.int8: "Char",
             torch.uint8: "Byte", torch.bool: "Bool"}
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
    aten.nll_loss2d_forward.default: _nll_target,
    aten.index_select.default: _index_select,
    **{op: _index_put for op in (aten.index_put.default, aten.index_put_.default,
                                 aten._index_put_impl_.default, aten._index_put_impl.default)},
    aten.index_add.default: _index_add,
    aten.index_add_.default: _index_add,
}
