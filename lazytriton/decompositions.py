"""Decompositions for ops that PyTorch's tables (torch._decomp) lack, used like theirs.

The upsampling backwards scatter each output gradient to the input positions the forward read
(accumulating index_put), with the forward decomposition's index and weight arithmetic.
"""
from __future__ import annotations

import torch
from torch._decomp.decompositions import (_compute_scale, _compute_source_index,
                                          _compute_upsample_nearest_indices)

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


DECOMPOSITIONS = {
    aten.upsample_nearest2d_backward.default: upsample_nearest2d_backward,
    aten.upsample_bilinear2d_backward.default: upsample_bilinear2d_backward,
}
