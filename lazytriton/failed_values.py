"""A tensor whose graph failed: the ops that recover it.

Every output of a graph that failed holds the error, raised where it is read (runtime/
session.py). An in-place op that writes every element of self and reads none of it gives the
tensor a value of its own again, as eager's tensor never broke: its plan (tracing.py) takes a
fresh buffer in place of one known to have failed, so the new value's graph does not read the
failed one. (A partial write, `t[:2] = 1`, reads the old value and still raises.)
"""
from __future__ import annotations

import torch

from . import ir, plans
from .device_data import DeviceData
from .runtime import session

aten = torch.ops.aten

OVERWRITES = {aten.fill_.Scalar, aten.fill_.Tensor, aten.zero_.default, aten.copy_.default}


def not_failed(get_self: plans.Getter) -> plans.Getter:
    """`get_self`, with a fresh buffer standing in for a failed one: none of it is read."""
    def get(args, kwargs):
        value = get_self(args, kwargs)
        node = value.node
        if type(node) is ir.DataNode and not node.on_cpu and node.data.failed:
            meta = value.meta
            fresh = torch.empty_strided(meta.shape, meta.stride, dtype=meta.dtype,
                                        device=session.current().device)
            return ir.device_leaf(DeviceData(fresh), meta)
        return value
    return get
