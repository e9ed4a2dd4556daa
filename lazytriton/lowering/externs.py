"""Ops that run as aten calls on realized buffers (mm, convolution, pooling): their lowering is
`Lowering.extern`, and their output sizes are derived symbolically here."""
from __future__ import annotations

import torch

from ..sizevars import FloorDiv
from .registry import LOWERINGS

aten = torch.ops.aten


# max_pool2d_with_indices and its backward: pooling.py (loops where it can, else this call)
_EXTERN = [aten.mm.default, aten.bmm.default, aten.addmm.default, aten.convolution.default,
           aten.convolution_backward.default, aten.avg_pool2d.default,
           aten.avg_pool2d_backward.default, aten._adaptive_avg_pool2d.default,
           aten._adaptive_avg_pool2d_backward.default]


def _extern_lowering(lowering, node, **args):
    return lowering.extern(node, args)


for _op in _EXTERN:
    LOWERINGS[_op] = _extern_lowering


def extern_output_sizes(lowering, node, index: int, args: dict):
    """Symbolic output sizes of the common extern ops, from their inputs' sizes."""
    op = node.op
    if op is aten.mm.default:
        return [args["self"].sizes[0], args["mat2"].sizes[1]]
    if op is aten.addmm.default:
        return [args["mat1"].sizes[0], args["mat2"].sizes[1]]
    if op is aten.bmm.default:
        return [args["self"].sizes[0], args["self"].sizes[1], args["mat2"].sizes[2]]
    if op is aten.convolution.default and not args.get("transposed"):
        return _conv_sizes(args["input"], args["weight"], args["stride"], args["padding"],
                           args["dilation"])
    if op is aten.convolution_backward.default:
        return list([args["input"], args["weight"], None][index].sizes) if index < 2 else \
            [args["weight"].sizes[0]]
    if op is aten.max_pool2d_with_indices.default:
        x = args["self"]
        kernel = list(args["kernel_size"])
        stride = list(args.get("stride") or kernel)
        padding = list(args.get("padding") or [0, 0])
        dilation = list(args.get("dilation") or [1, 1])
        if args.get("ceil_mode"):
            return None
        spatial = [_conv_dim(x.sizes[-2 + k], kernel[k % len(kernel)],
                             stride[k % len(stride)], padding[k % len(padding)],
                             dilation[k % len(dilation)]) for k in range(2)]
        return list(x.sizes[:-2]) + spatial
    return None


def _conv_sizes(x, w, stride, padding, dilation):
    n = len(x.sizes) - 2
    spatial = [_conv_dim(x.sizes[2 + k], w.sizes[2 + k], stride[k % len(stride)],
                         padding[k % len(padding)], dilation[k % len(dilation)])
               for k in range(n)]
    return [x.sizes[0], w.sizes[0]] + spatial


def _conv_dim(size, kernel, stride, padding, dilation):
    return FloorDiv(size + 2 * padding - dilation * (kernel - 1) - 1, stride) + 1
