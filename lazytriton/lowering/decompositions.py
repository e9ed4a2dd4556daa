"""Decompositions: the ops lowered by re-tracing a function in smaller ops rather than a
lowering of their own: torch._decomp's (the _DECOMPOSE list, at the end) and, first, ours for
ops its tables lack.

The upsampling backwards scatter each output gradient to the input positions the forward read
(accumulating index_put), with the forward decomposition's index and weight arithmetic.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch._decomp import decomposition_table
from torch._decomp.decompositions import (_compute_scale, _compute_source_index,
                                          _compute_upsample_nearest_indices)

from .registry import register_decompositions

aten = torch.ops.aten


def upsample_nearest2d_backward(grad_output, output_size, input_size, scales_h=None,
                                scales_w=None):
    shape_only = grad_output.new_empty(input_size)  # the index helper reads sizes and device
    h, w = _compute_upsample_nearest_indices(shape_only, output_size, [scales_h, scales_w])
    return aten._unsafe_index_put(grad_output.new_zeros(input_size), [None, None, h, w],
                                  grad_output, accumulate=True)


def _linear_taps(in_size: int, out_size: int, align_corners: bool, scale, like):
    """Per output position: the two input positions linear interpolation reads, and their
    weights, as the forward decomposition (and eager) computes them."""
    factor = _compute_scale(in_size, out_size, align_corners, scale)
    compute = torch.float64 if like.dtype == torch.float64 else torch.float32
    i = torch.arange(out_size, device=like.device).to(compute)
    src = _compute_source_index(factor, i, align_corners).clamp(min=0.0)
    low = src.to(torch.int64)
    high = (low + 1).clamp(max=in_size - 1)
    frac = (src - low).clamp(0.0, 1.0)
    return ((low, 1 - frac), (high, frac))


def upsample_bilinear2d_backward(grad_output, output_size, input_size, align_corners,
                                 scales_h=None, scales_w=None):
    rows = _linear_taps(input_size[2], output_size[0], align_corners, scales_h, grad_output)
    cols = _linear_taps(input_size[3], output_size[1], align_corners, scales_w, grad_output)
    grad_input = grad_output.new_zeros(input_size, dtype=rows[0][1].dtype)
    g = grad_output.to(grad_input.dtype)
    for h, h_weight in rows:
        for w, w_weight in cols:
            weight = h_weight.unsqueeze(1) * w_weight
            grad_input = aten._unsafe_index_put(grad_input, [None, None, h.unsqueeze(1), w],
                                                g * weight, accumulate=True)
    return grad_input.to(grad_output.dtype)


_NEVER_IN_RANGE = -(2 ** 62)  # negative still after index_put adds the dim's size


def refusing_negative_indices(decomposition: Callable) -> Callable:
    """Eager's index_add and index_copy refuse a negative index; torch's decompositions of
    them write through index_put, which counts one from the end. A negative index becomes one
    that stays out of range there, so the kernel flags it (eager's IndexError, at run time).
    The index becomes int64 first: in an int32 index the sentinel wrapped to 0, a valid row."""
    def decompose(x, dim, index, *args, **kwargs):
        index = index.to(torch.int64)
        index = torch.where(index < 0, torch.full_like(index, _NEVER_IN_RANGE), index)
        return decomposition(x, dim, index, *args, **kwargs)
    return decompose


def wrapping_negative_indices(decomposition: Callable) -> Callable:
    """Eager's index_fill counts a negative index from the end; torch's decomposition of it
    writes through index_copy, which (above) refuses one."""
    def decompose(x, dim, index, *args, **kwargs):
        size = x.shape[dim] if x.ndim else 1
        index = torch.where(index < 0, index + size, index)
        return decomposition(x, dim, index, *args, **kwargs)
    return decompose


# ops torch._decomp lacks, decomposed as torch._decomp would, or differently where eager's
# kernel checks more than the decomposition does
def foreach_norm(tensors, ord=2, dtype=None):
    """clip_grad_norm_(foreach=True): each tensor's vector norm, as eager's _foreach_norm."""
    return [aten.linalg_vector_norm.default(t, ord, dtype=dtype) for t in tensors]


_OWN = {
    aten._foreach_norm.Scalar: foreach_norm,
    aten.upsample_nearest2d_backward.default: upsample_nearest2d_backward,
    aten.upsample_bilinear2d_backward.default: upsample_bilinear2d_backward,
}
_OWN.update({op: refusing_negative_indices(decomposition_table[op])
             for op in (aten.index_add.default, aten.index_copy.default)
             if op in decomposition_table})
_OWN.update({op: wrapping_negative_indices(decomposition_table[op])
             for op in (aten.index_fill.int_Scalar, aten.index_fill.int_Tensor)
             if op in decomposition_table})


_DECOMPOSE = [
    aten._log_softmax.default, aten._softmax.default, aten._log_softmax_backward_data.default,
    aten._softmax_backward_data.default, aten.nll_loss_forward.default,
    aten.nll_loss_backward.default, aten.native_layer_norm.default,
    aten.native_layer_norm_backward.default, aten.gelu.default, aten.gelu_backward.default,
    aten.silu.default, aten.silu_backward.default, aten.sigmoid_backward.default,
    aten.tanh_backward.default, aten.threshold_backward.default, aten.mse_loss.default,
    aten.mse_loss_backward.default, aten.addcmul.default, aten.addcdiv.default,
    aten.lerp.Scalar, aten.lerp.Tensor, aten.hardtanh.default, aten.leaky_relu.default,
    aten.leaky_relu_backward.default, aten.elu.default, aten.elu_backward.default,
    aten.softplus.default, aten.softplus_backward.default, aten.var.correction,
    aten.var_mean.correction, aten.std.correction, aten.mean.dim, aten.mean.default,
    aten.logsumexp.default, aten.rsub.Scalar, aten.rsub.Tensor, aten.linalg_vector_norm.default,
    aten.embedding_dense_backward.default, aten._unsafe_masked_index_put_accumulate.default,
    aten.native_batch_norm.default, aten._native_batch_norm_legit_functional.default,
    aten.native_batch_norm_backward.default, aten.t.default,
    aten.transpose.int, aten.tril.default, aten.triu.default, aten.flip.default,
    aten.roll.default, aten.repeat.default, aten.sigmoid.default, aten.hardsigmoid.default,
    aten.hardswish.default, aten.xlogy.Tensor, aten.log_sigmoid_forward.default,
    aten.binary_cross_entropy.default, aten.binary_cross_entropy_backward.default,
    aten.smooth_l1_loss.default, aten.huber_loss.default, aten.glu.default,
    aten.logit.default, aten.frac.default, aten.deg2rad.default, aten.rad2deg.default,
    aten.addmv.default, aten.baddbmm.default, aten.stack.default, aten.expand_copy.default,
    aten.norm.Scalar, aten.sgn.default, aten.nan_to_num.default, aten.square.default,
    aten.float_power.Tensor_Scalar, aten.float_power.Tensor_Tensor, aten.prod.default,
    aten.all.default, aten.all.dim, aten.max.dim, aten.min.dim, aten.max.default,
    aten.min.default, aten.aminmax.default, aten.heaviside.default, aten.special_xlog1py.default,
    aten.logaddexp.default, aten.trace.default, aten._unsafe_view.default, aten.view.default,
    aten.reshape.default, aten.unsqueeze.default, aten.squeeze.dim, aten.permute.default,
    aten.expand.default, aten.slice.Tensor, aten.select.int, aten.alias.default,
    aten.detach.default,
    # what the model zoo reaches (tests/test_models.py): GRU/LSTM gates (unsafe_split),
    # slicing backwards, per-pixel losses, upsampling, masked attention
    aten.unsafe_split.Tensor, aten.unsafe_split_with_sizes.default,
    aten.slice_backward.default, aten.slice_scatter.default, aten.select_backward.default,
    aten.select_scatter.default, aten._unsafe_masked_index.default,
    aten.nll_loss2d_forward.default, aten.nll_loss2d_backward.default,
    aten.upsample_nearest2d.default, aten.upsample_bilinear2d.default, aten._safe_softmax.default,
    # indexed updates: index_put / scatter underneath, so kernels rather than aten calls
    # (index_add, index_copy and index_fill: _OWN)
]

register_decompositions({op: decomposition_table[op] for op in _DECOMPOSE
                         if op in decomposition_table})
register_decompositions(_OWN)
