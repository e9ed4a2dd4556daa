"""Moving an nn.Module to the lazy device keeps tensors its modules share shared.

A language model whose head reuses the embedding's weight (GPT-2) must still have one weight
after `.to("lazy")`, or training silently diverges from eager. torch's Module._apply converts
each module's tensors separately:
 - parameters: it swaps the converted tensor into the existing Parameter object for traceable
   wrapper subclasses, which LazyTensor is (tensor.py), so a shared Parameter stays one object
   (eager's `.to("cuda")` keeps it through `param.data = ...`, which a lazy tensor cannot take);
 - buffers: it stores `fn(buf)` per module, a new tensor each time. So while a module tree is
   converted, conversions that give a lazy tensor are memoized by source tensor.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .tensor import LazyTensor

_original_apply: Callable | None = None


class _SameSourceSameResult:
    """`fn` of one Module._apply call, returning one lazy result per source tensor."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        self.fn = fn
        self.done: dict[int, tuple[torch.Tensor, int, torch.Tensor, int]] = {}

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        hit = self.done.get(id(t))
        # _cdata changes when swap_tensors moves a tensor's contents: such a hit is stale
        if hit is not None and hit[0] is t and hit[1] == t._cdata and hit[3] == hit[2]._cdata:
            return hit[2]
        out = self.fn(t)
        if isinstance(out, LazyTensor):
            self.done[id(t)] = (t, t._cdata, out, out._cdata)  # holds t: its id stays unique
        return out


def _apply_keeping_shared(self: nn.Module, fn: Callable, recurse: bool = True):
    if not isinstance(fn, _SameSourceSameResult):  # children get the parent's memo
        fn = _SameSourceSameResult(fn)
    return _original_apply(self, fn, recurse)


def keep_shared_tensors_on_conversion() -> None:
    """Idempotent; done by init()."""
    global _original_apply
    if _original_apply is None:
        _original_apply = nn.Module._apply
        nn.Module._apply = _apply_keeping_shared
