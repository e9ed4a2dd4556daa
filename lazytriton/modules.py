"""Moving an nn.Module to or from the lazy device keeps tensors its modules share shared.

A language model whose head reuses the embedding's weight (GPT-2) must still have one weight
after `.to("lazy")`, or training silently diverges from eager. torch's Module._apply converts
each module's tensors separately. Eager's `.to("cuda")` keeps a shared Parameter by assigning
`param.data` in place, which a tensor of another kind (a lazy one) cannot take, so _apply makes
a new Parameter per module; buffers it always replaces with `fn(buf)` per module. (Its other
path, torch.utils.swap_tensors, refuses tensors an autograd graph still holds.)

So while a module tree is converted, each source tensor is converted once, and afterwards every
module slot that held one tensor before holds one tensor again.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .tensor import LazyTensor

_original_apply: Callable | None = None


class _ConvertOnce:
    """The `fn` of one Module._apply over a tree: one result per source tensor where either
    is lazy (other conversions keep their own semantics)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        self.fn = fn
        self.done: dict[int, tuple[torch.Tensor, int, torch.Tensor, int]] = {}

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        hit = self.done.get(id(t))
        # _cdata changes when swap_tensors moves a tensor's contents: such a hit is stale
        if hit is not None and hit[0] is t and hit[1] == t._cdata and hit[3] == hit[2]._cdata:
            return hit[2]
        out = self.fn(t)
        if isinstance(out, LazyTensor) or isinstance(t, LazyTensor):
            self.done[id(t)] = (t, t._cdata, out, out._cdata)  # holds t: its id stays unique
        return out


Slot = tuple[nn.Module, str, str, torch.Tensor]  # module, "_parameters"/"_buffers", name, tensor


def _slots(module: nn.Module, recurse: bool) -> list[Slot]:
    modules = module.modules() if recurse else [module]
    return [(m, table, name, t) for m in modules for table in ("_parameters", "_buffers")
            for name, t in getattr(m, table).items() if t is not None]


def _retie(before: list[Slot]) -> None:
    """Slots of one kind that shared a tensor before the conversion share the first's result."""
    first: dict[tuple[int, str], torch.Tensor] = {}
    for module, table, name, old in before:
        new = getattr(module, table).get(name)
        kept = first.setdefault((id(old), table), new)
        if kept is not new and (isinstance(old, LazyTensor) or isinstance(kept, LazyTensor)):
            setattr(module, name, kept)  # setattr: modules like nn.RNN track their weights


def _apply_keeping_shared(self: nn.Module, fn: Callable, recurse: bool = True):
    if isinstance(fn, _ConvertOnce):  # a child of a tree being converted: the root reties
        return _original_apply(self, fn, recurse)
    before = _slots(self, recurse)
    result = _original_apply(self, _ConvertOnce(fn), recurse)
    _retie(before)
    return result


def keep_shared_tensors_on_conversion() -> None:
    """Idempotent; done by init()."""
    global _original_apply
    if _original_apply is None:
        _original_apply = nn.Module._apply
        nn.Module._apply = _apply_keeping_shared
