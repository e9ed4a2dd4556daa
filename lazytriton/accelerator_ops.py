"""Ops the tracer runs as eager does on an accelerator, where the meta kernels alone would not:
`_pack_padded_sequence` (its lengths and batch sizes stay CPU tensors) and shifts of bool
tensors (promoted, as eager's CPU kernel does; the meta kernel refuses bool). They join the
tracer's table of special handlers (`tracing._SPECIAL`) when this module is imported, as
`lazytriton/__init__.py` does.

`one_hot` decomposes above the dispatcher, so it gets a kernel of its own on the lazy
device's autograd key (`AUTOGRAD_KERNELS`, registered by device.py): for a tensor subclass
torch's composite compares with an arange and checks nothing, and a class out of range gave a
row of zeros."""
from __future__ import annotations

import torch

from .opschema import op_info
from .tensor import LAZY_TORCH_DEVICE, LazyTensor
from .tracing import _SPECIAL, trace_op
from .tracing import _device_mismatch as device_mismatch
from .tracing import _meta_tensor as meta_tensor

aten = torch.ops.aten


def _pack_padded_sequence(input, lengths, batch_first=False):
    """nn.utils.rnn.pack_padded_sequence's op, as eager runs it on an accelerator: `lengths`
    on the CPU (the Python function puts it there), and so are the batch sizes it returns,
    which the packed RNN ops and the op's backward read as numbers. The batch sizes and
    eager's checks of the lengths come from the op itself on a meta copy of the input; the
    data is the input's rows they select, one time step after another, traced."""
    if not isinstance(input, LazyTensor):
        raise device_mismatch(op_info(aten._pack_padded_sequence.default), "input", input)
    if isinstance(lengths, LazyTensor):  # as eager says of lengths on an accelerator
        raise RuntimeError(f"'lengths' argument should be a 1D CPU int64 tensor, but got "
                           f"{lengths.dim()}D {LAZY_TORCH_DEVICE} {lengths.dtype} tensor; "
                           f"pass lengths.cpu() or a list")
    _, batch_sizes = aten._pack_padded_sequence.default(meta_tensor(input), lengths,
                                                        batch_first)
    steps = input.transpose(0, 1) if batch_first else input
    data = torch.cat([steps[t, :size] for t, size in enumerate(batch_sizes.tolist())])
    return data, batch_sizes


def _shift(op):
    """Eager's CPU kernel shifts a bool tensor as the promoted integer type (bool << 2 is
    int64); the meta kernel refuses bool, so bool operands are converted first."""
    def handler(self, other):
        dtype = torch.result_type(self, other)
        if dtype != torch.bool:
            self, other = (x.to(dtype) if isinstance(x, LazyTensor) and x.dtype == torch.bool
                           else x for x in (self, other))
        return trace_op(op, (self, other), {})
    return handler


_SPECIAL[aten._pack_padded_sequence.default] = _pack_padded_sequence
_SPECIAL.update({op: _shift(op) for op in (
    aten.__lshift__.Scalar, aten.__lshift__.Tensor, aten.__rshift__.Scalar,
    aten.__rshift__.Tensor, aten.bitwise_left_shift.Tensor, aten.bitwise_left_shift.Tensor_Scalar,
    aten.bitwise_right_shift.Tensor, aten.bitwise_right_shift.Tensor_Scalar)})


def _one_hot(self, num_classes: int = -1):
    """F.one_hot as eager runs it on an accelerator: a scatter of ones, whose index check
    (when the kernel runs) raises for a class out of range, as CUDA's device assert does;
    the number of classes is read from the data only when not given, as eager reads it."""
    if self.dtype != torch.int64:
        raise RuntimeError("one_hot is only applicable to index tensor of type LongTensor.")
    with torch._C._AutoDispatchBelowAutograd():  # an int64 result: nothing to differentiate
        if self.numel() == 0:
            if num_classes <= 0:
                raise RuntimeError("Can not infer total number of classes from empty tensor.")
            return torch.empty((*self.shape, num_classes), dtype=torch.int64,
                               device=self.device)
        if num_classes == -1:
            num_classes = int(self.max().item()) + 1
        out = torch.zeros((*self.shape, num_classes), dtype=torch.int64, device=self.device)
        return out.scatter_(-1, self.unsqueeze(-1), 1)


AUTOGRAD_KERNELS = {aten.one_hot.default: _one_hot}  # op -> kernel on the AutogradLazy key
