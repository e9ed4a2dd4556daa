"""Adam's and AdamW's update of lazy parameters traced as one op: `lazytriton::adam_update_`.

torch's foreach Adam (`_multi_tensor_adam`, the default lazy parameters get: optim_defaults.py)
is a dozen foreach ops a step, each over every parameter, plus Python list work per parameter
(bias corrections from each step count). The transformer block's optimizer step traced in
about twice the time the do-nothing dispatch floor takes for it. The graph is the same either
way: lowering/optim.py lowers each foreach op per tensor and the scheduler fuses one
parameter's update into one kernel.

`lazy_adam()` replaces `torch.optim.adam.adam` (what Adam.step and AdamW.step call). Where the
call would run the foreach implementation on lazy parameters with plain float
hyperparameters, it computes the step-dependent scalars in Python exactly as the foreach
implementation does, and traces one `adam_update_`. Its lowering (lowering/optim.py) chains
the same per-tensor lowerings the foreach ops reach, in the same order, so the kernels compute
the same values. Everything else (capturable, fused, differentiable, a tensor lr or betas,
grad scaling, complex parameters, foreach=False) goes to torch's own function.

The op's CPU implementation (`_reference`) is the arithmetic in torch ops: the reference
executor runs it, and so would a backend that left the op to aten.
"""
from __future__ import annotations

import functools

import torch

from .tensor import LazyTensor

_PATCHED = "_lazytriton_adam"

_SCHEMA = ("(Tensor[] params, Tensor[] grads, Tensor[] exp_avgs, Tensor[] exp_avg_sqs, "
           "Tensor[] max_exp_avg_sqs, Scalar[] neg_step_sizes, Scalar[] bias_correction2_sqrts, *, "
           "float weight_decay, float param_decay, float one_minus_beta1, float beta2, "
           "float one_minus_beta2, float eps, bool grad_decay, bool decoupled_decay, "
           "bool amsgrad, bool maximize)")
_MUTATING_SCHEMA = _SCHEMA.replace("Tensor[] params", "Tensor(a!)[] params").replace(
    "Tensor[] exp_avgs", "Tensor(b!)[] exp_avgs").replace(
    "Tensor[] exp_avg_sqs", "Tensor(c!)[] exp_avg_sqs").replace(
    "Tensor[] max_exp_avg_sqs", "Tensor(d!)[] max_exp_avg_sqs")

_library: torch.library.Library | None = None


def _reference(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, neg_step_sizes,
               bias_correction2_sqrts, *, weight_decay, param_decay, one_minus_beta1, beta2,
               one_minus_beta2, eps, grad_decay, decoupled_decay, amsgrad, maximize):
    """New params, exp_avgs, exp_avg_sqs and max_exp_avg_sqs, by _multi_tensor_adam's ops.
    The scalar lists hold one value per parameter, or one for all (`per_param`)."""
    new_params, new_avgs, new_sqs, new_maxes = [], [], [], []
    for i, (p, g, m, v) in enumerate(zip(params, grads, exp_avgs, exp_avg_sqs)):
        if maximize:
            g = torch.neg(g)
        if decoupled_decay:
            p = torch.mul(p, param_decay)
        if grad_decay:
            g = torch.add(g, p, alpha=weight_decay)
        m = torch.lerp(m, g, one_minus_beta1)
        v = torch.addcmul(torch.mul(v, beta2), g, g, value=one_minus_beta2)
        if amsgrad:
            new_maxes.append(torch.maximum(max_exp_avg_sqs[i], v))
        denom = torch.add(torch.div(torch.sqrt(new_maxes[-1] if amsgrad else v),
                                    per_param(bias_correction2_sqrts, i)), eps)
        new_params.append(torch.addcdiv(p, m, denom, value=per_param(neg_step_sizes, i)))
        new_avgs.append(m)
        new_sqs.append(v)
    return new_params, new_avgs, new_sqs, new_maxes


def per_param(values: list, i: int):
    """Parameter i's value of a scalar list: one value stands for every parameter."""
    return values[i if len(values) > 1 else 0]


def register_op() -> None:
    """Idempotent: `lazytriton::adam_update` (functional) and `adam_update_` (in place)."""
    global _library
    if _library is not None:
        return
    lib = torch.library.Library("lazytriton", "FRAGMENT")  # optim_sgd adds to it
    lib.define("adam_update" + _SCHEMA + " -> (Tensor[], Tensor[], Tensor[], Tensor[])")
    lib.define("adam_update_" + _MUTATING_SCHEMA + " -> ()")
    lib.impl("adam_update", _reference, "CompositeExplicitAutograd")
    lib.impl("adam_update_", _in_place, "CompositeExplicitAutograd")  # meta kernels too
    _library = lib


def _in_place(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *args, **kwargs) -> None:
    new = _reference(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *args, **kwargs)
    for targets, values in zip((params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs), new):
        for target, value in zip(targets, values):
            target.copy_(value)


def update_op():
    return torch.ops.lazytriton.adam_update_.default


def patch_adam() -> None:
    """Idempotent; leaves a torch whose adam module differs alone (foreach Adam still works)."""
    import torch.optim.adam as adam
    fn = getattr(adam, "adam", None)
    if callable(fn) and not getattr(fn, _PATCHED, False):
        register_op()
        adam.adam = _lazy_adam(fn)


def _lazy_adam(adam):
    @functools.wraps(adam)
    def lazy_adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps,
                  *args, **kwargs):
        if not _traceable(params, state_steps, args, kwargs):
            if _foreach_would_refuse(kwargs):  # eager's CPU loop takes them: so does ours
                kwargs = {**kwargs, "foreach": False}
            return adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps,
                        *args, **kwargs)
        _traced_update(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps,
                       **kwargs)
    setattr(lazy_adam, _PATCHED, True)
    return lazy_adam


def _foreach_would_refuse(kwargs) -> bool:
    """Tensor betas by default: torch's foreach Adam raises where its loop (eager's default on
    the CPU, and so what lazy parameters must match) accepts them. torch already keeps a
    tensor lr off foreach by default this way."""
    return kwargs.get("foreach") is None and not kwargs.get("fused") and \
        not kwargs.get("capturable") and any(isinstance(kwargs.get(name), torch.Tensor)
                                             for name in ("beta1", "beta2"))


def _traceable(params, state_steps, args, kwargs) -> bool:
    """The call would run foreach Adam on lazy float parameters with CPU step counts and
    float hyperparameters, nothing else set."""
    if args or not params or kwargs.get("foreach") is False or kwargs.get("fused"):
        return False
    if kwargs.get("capturable") or kwargs.get("differentiable") or kwargs.get("has_complex"):
        return False
    if kwargs.get("grad_scale") is not None or kwargs.get("found_inf") is not None:
        return False
    if any(type(kwargs.get(k)) is not float for k in ("lr", "beta1", "beta2", "eps")):
        return False
    if type(kwargs.get("weight_decay")) not in (int, float):
        return False
    return all(type(p) is LazyTensor and p.dtype in (torch.float32, torch.float64)
               for p in params) and all(
        isinstance(s, torch.Tensor) and s.device.type == "cpu" and s.numel() == 1
        for s in state_steps)


def _traced_update(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *,
                   amsgrad, beta1, beta2, lr, weight_decay, eps, maximize,
                   decoupled_weight_decay=False, **_):
    """_multi_tensor_adam's step, its scalars computed as it computes them, as one op."""
    torch._foreach_add_(state_steps, 1)  # CPU tensors: run now, as torch's step does
    steps = [s.item() for s in state_steps]
    if all(step == steps[0] for step in steps):  # the usual case: two graph inputs, not 2 per
        steps = steps[:1]                          # parameter (each costs the trace and the run)
    neg_step_sizes = [(lr / (1 - beta1 ** step)) * -1 for step in steps]
    bias_correction2_sqrts = [(1 - beta2 ** step) ** 0.5 for step in steps]
    update_op()(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else [],
                neg_step_sizes, bias_correction2_sqrts, weight_decay=float(weight_decay),
                param_decay=1 - lr * weight_decay, one_minus_beta1=1 - beta1, beta2=beta2,
                one_minus_beta2=1 - beta2, eps=eps,
                grad_decay=weight_decay != 0 and not decoupled_weight_decay,
                decoupled_decay=weight_decay != 0 and bool(decoupled_weight_decay),
                amsgrad=amsgrad, maximize=maximize)
