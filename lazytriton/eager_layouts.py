"""Output layouts where eager's CPU kernel and the meta kernel disagree.

The tracer gives an op's outputs the strides its meta kernel returns. A convolution's meta
kernel returns contiguous strides for a channels_last input, where eager's CPU kernel keeps
channels_last (at::native's cpu_conv_use_channels_last: a 4-D or 5-D input, and the input or
the weight channels_last). Code that relies on the layout (`y.permute(0, 2, 3, 1).view(...)`)
then worked in eager and failed on the lazy device. `adjust` rewrites such an output's
strides; the convolution extern's result is laid out as recorded (codegen's fix_layout).
"""
from __future__ import annotations

from typing import Any

import torch
from torch._prims_common import suggest_memory_format  # eager's, from shape and strides

from .ir import TensorMeta, interned

aten = torch.ops.aten
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def adjust(op, values: list[Any], metas: Any) -> Any:
    """`metas` (one op's output metadata, as the meta kernel gave it) in eager's layout."""
    if op is aten.convolution.default and isinstance(metas, TensorMeta):
        return _convolution(values[0], values[1], metas)
    return metas


def _convolution(input: torch.Tensor, weight: torch.Tensor, meta: TensorMeta) -> TensorMeta:
    channels_last = _CHANNELS_LAST.get(input.dim())
    if channels_last is None or len(meta.shape) != input.dim():
        return meta
    if channels_last not in (suggest_memory_format(input), suggest_memory_format(weight)):
        return meta
    stride = torch.empty(meta.shape, device="meta", memory_format=channels_last).stride()
    return interned(TensorMeta(meta.shape, tuple(stride), meta.dtype))

