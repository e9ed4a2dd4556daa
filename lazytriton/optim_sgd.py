"""SGD's update of lazy parameters traced as one op: `lazytriton::sgd_update_`.

torch's foreach SGD (`_multi_tensor_sgd`, what lazy parameters get by default:
optim_defaults.py) traces three foreach ops a step with momentum, plus its grouping and list
work; the MLP benchmark's `optimizer.step()` traced in 1.5x the time the do-nothing dispatch
floor takes for it. The graph is the same either way: the lowering chains the per-tensor
lowerings and the scheduler fuses one parameter's update into one kernel.

`traced_update()` is asked first by optim_defaults' wrapper of `torch.optim.sgd.sgd` (what
SGD.step calls). Where the call would run on lazy float parameters with number
hyperparameters, every momentum buffer already made (the first step makes them by cloning the
gradients: torch's code does that) and no autograd through the step, it traces one
`sgd_update_` doing `_single_tensor_sgd`'s arithmetic, eager's on the CPU: Nesterov momentum
leaves `p.grad` alone, as there. The learning rate and the other numbers are graph inputs, so
a schedule compiles no new program. Anything else runs torch's own function.

The op's CPU implementation (`_reference`) is that arithmetic in torch ops: the reference
executor runs it, and so would a backend that left the op to aten.
"""
from __future__ import annotations

import torch

from .tensor import LazyTensor

_SCHEMA = ("(Tensor[] params, Tensor[] grads, Tensor[] momentum_buffers, *, Scalar neg_lr, "
           "float weight_decay, float momentum, float one_minus_dampening, bool decay, "
           "bool nesterov, bool maximize)")
_MUTATING_SCHEMA = _SCHEMA.replace("Tensor[] params", "Tensor(a!)[] params").replace(
    "Tensor[] momentum_buffers", "Tensor(b!)[] momentum_buffers")

_library: torch.library.Library | None = None


def _reference(params, grads, momentum_buffers, *, neg_lr, weight_decay, momentum,
               one_minus_dampening, decay, nesterov, maximize):
    """New params and momentum buffers (none without momentum), by _single_tensor_sgd's ops."""
    new_params, new_buffers = [], []
    for i, (p, g) in enumerate(zip(params, grads)):
        if maximize:
            g = torch.neg(g)
        if decay:
            g = torch.add(g, p, alpha=weight_decay)
        if momentum_buffers:
            buf = torch.add(torch.mul(momentum_buffers[i], momentum), g,
                            alpha=one_minus_dampening)
            new_buffers.append(buf)
            g = torch.add(g, buf, alpha=momentum) if nesterov else buf
        new_params.append(torch.add(p, g, alpha=neg_lr))
    return new_params, new_buffers


def register_op() -> None:
    """Idempotent: `lazytriton::sgd_update` (functional) and `sgd_update_` (in place)."""
    global _library
    if _library is not None:
        return
    lib = torch.library.Library("lazytriton", "FRAGMENT")  # optim_adam adds to it
    lib.define("sgd_update" + _SCHEMA + " -> (Tensor[], Tensor[])")
    lib.define("sgd_update_" + _MUTATING_SCHEMA + " -> ()")
    lib.impl("sgd_update", _reference, "CompositeExplicitAutograd")
    lib.impl("sgd_update_", _in_place, "CompositeExplicitAutograd")  # meta kernels too
    _library = lib


def _in_place(params, grads, momentum_buffers, **kwargs) -> None:
    new = _reference(params, grads, momentum_buffers, **kwargs)
    for targets, values in zip((params, momentum_buffers), new):
        for target, value in zip(targets, values):
            target.copy_(value)


def traced_update(params, grads, momentum_buffers, args: tuple, kwargs: dict) -> bool:
    """Trace the update of `torch.optim.sgd.sgd(params, grads, momentum_buffers, *args,
    **kwargs)` as one op and say True, or say False and do nothing."""
    if not _traceable(params, grads, momentum_buffers, args, kwargs):
        return False
    register_op()
    momentum, dampening = kwargs["momentum"], kwargs["dampening"]
    weight_decay = kwargs["weight_decay"]
    torch.ops.lazytriton.sgd_update_(
        params, grads, momentum_buffers if momentum != 0 else [],
        neg_lr=-kwargs["lr"], weight_decay=float(weight_decay), momentum=float(momentum),
        one_minus_dampening=float(1 - dampening), decay=weight_decay != 0,
        nesterov=bool(kwargs["nesterov"]), maximize=bool(kwargs["maximize"]))
    return True


def _traceable(params, grads, momentum_buffers, args, kwargs) -> bool:
    """Lazy float parameters and gradients, number hyperparameters, every momentum buffer
    made, no foreach=False, fused, grad scaling, sparse gradients or autograd."""
    if args or not params or kwargs.get("foreach") is False or kwargs.get("fused"):
        return False
    if kwargs.get("has_sparse_grad") or torch.is_grad_enabled():  # differentiable=True
        return False
    if kwargs.get("grad_scale") is not None or kwargs.get("found_inf") is not None:
        return False
    names = ("lr", "weight_decay", "momentum", "dampening")
    if any(type(kwargs.get(k)) not in (int, float) for k in names):
        return False
    if "nesterov" not in kwargs or "maximize" not in kwargs:
        return False
    if kwargs["momentum"] != 0 and any(type(b) is not LazyTensor for b in momentum_buffers):
        return False  # the first step makes them (None), or a buffer elsewhere
    return all(type(p) is LazyTensor and type(g) is LazyTensor and
               p.dtype in (torch.float32, torch.float64) and g.dtype == p.dtype
               for p, g in zip(params, grads)) and len(params) == len(grads)
