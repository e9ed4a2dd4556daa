"""Lowerings of what optimizers run: addcmul/addcdiv/lerp with runtime scalars, foreach ops
element by element, and the one-hot scatter of nll_loss's backward."""
from __future__ import annotations

import sympy
import torch

from ..loopir import Pointwise
from ..optim_adam import per_param, register_op as register_adam_op
from ..optim_sgd import register_op as register_sgd_op
from .indexing import scatter_along
from .operands import out_dtype, pointwise, scalar_value
from .registry import LOWERINGS, register

aten = torch.ops.aten


# --- optimizer arithmetic: lowered directly so step-dependent scalars stay kernel arguments --

@register(aten.addcmul.default)
def _addcmul(lowering, node, self, tensor1, tensor2, value=1):
    return pointwise(lowering, [self, tensor1, tensor2, value],
                     lambda ops, a, b, c, v: ops.add(a, ops.mul(v, ops.mul(b, c))), out_dtype(node))


@register(aten.addcdiv.default)
def _addcdiv(lowering, node, self, tensor1, tensor2, value=1):
    """Eager's association, (value * tensor1) / tensor2: value * (tensor1 / tensor2) rounds
    apart in about one element in five."""
    return pointwise(lowering, [self, tensor1, tensor2, value],
                     lambda ops, a, b, c, v: ops.add(a, ops.truediv(ops.mul(v, b), c)),
                     out_dtype(node))


@register(aten.lerp.Scalar, aten.lerp.Tensor)
def _lerp(lowering, node, self, end, weight):
    """Eager's formula: from the nearer end, for accuracy at both ends."""
    dtype = out_dtype(node)

    def fn(ops, a, b, w):
        diff = ops.sub(b, a)
        small = ops.lt(ops.abs(w), ops.constant(0.5, dtype))
        one = ops.constant(1, dtype)
        return ops.where(small, ops.add(a, ops.mul(w, diff)),
                         ops.sub(b, ops.mul(diff, ops.sub(one, w))))
    return pointwise(lowering, [self, end, weight], fn, dtype)


@register(aten.scatter.value, aten.scatter.src)
def _scatter(lowering, node, **args):
    """The one-hot case (index has one entry along dim, as nll_loss's backward uses): a compare
    per element. Anything else is a Scatter."""
    self, index, value = args["self"], args["index"], args.get("value")
    dim = args["dim"] % max(self.ndim, 1)
    ev = lowering.sizevars.evaluate
    one_hot = (index.ndim == self.ndim > 0 and ev(index.sizes[dim]) == 1 and "src" not in args
               and all(ev(index.sizes[d]) == ev(self.sizes[d])
                       for d in range(self.ndim) if d != dim))
    if not one_hot:
        value = args["src"] if "src" in args else value
        return scatter_along(node, self, dim, index, value, accumulate=False) or \
            lowering.extern(node, args, fallback=True)
    dtype = out_dtype(node)
    load, iload = self.loader(), index.loader()

    def inner(ops, idx):
        at = list(idx)
        at[dim] = sympy.Integer(0)
        target = ops.indirect(iload(ops, at), self.sizes[dim], negative_wraps=False)  # checked
        hit = ops.eq(ops.index_expr(target, torch.int64), ops.index_expr(idx[dim], torch.int64))
        return ops.where(hit, scalar_value(ops, value, dtype), ops.to_dtype(load(ops, idx), dtype))
    return Pointwise(dtype, list(self.sizes), inner=inner)


class _ElementNode:
    """One element of a foreach op, shaped like an IR node for the per-tensor lowering."""

    def __init__(self, node, op, index: int):
        self.op = op
        self.outputs = [node.outputs[index]]
        self.op_name = str(op)


def _foreach(per_tensor_op, list_args: tuple[str, ...]):
    def lower(lowering, node, **kwargs):
        count = len(kwargs["self"])
        results = []
        for i in range(count):
            args = {name: (value[i] if name in list_args else value)
                    for name, value in kwargs.items()}
            element = _ElementNode(node, per_tensor_op, i)
            if per_tensor_op in LOWERINGS:
                results.append(LOWERINGS[per_tensor_op](lowering, element, **args))
            else:
                return lowering.extern(node, kwargs, fallback=True)
        return results
    return lower


def _register_foreach():
    pairs = {"add": aten.add.Tensor, "sub": aten.sub.Tensor, "mul": aten.mul.Tensor,
             "div": aten.div.Tensor, "maximum": aten.maximum.default,
             "minimum": aten.minimum.default, "pow": aten.pow.Tensor_Tensor}
    for name, op in pairs.items():
        packet = getattr(aten, f"_foreach_{name}", None)
        if packet is None:
            continue
        for overload, lists in (("List", ("self", "other")), ("Scalar", ("self",)),
                                ("ScalarList", ("self", "scalars")), ("Tensor", ("self",))):
            if overload not in packet.overloads():
                continue
            if name == "pow" and overload.startswith("Scalar"):  # a number: sqrt for 0.5
                LOWERINGS[getattr(packet, overload)] = _foreach_renamed(
                    aten.pow.Tensor_Scalar, lists, {"scalar": "exponent", "scalars": "exponent"})
            else:
                LOWERINGS[getattr(packet, overload)] = _foreach_renamed(op, lists)
    for name, op, bound in (("clamp_min", aten.clamp_min.Tensor, "min"),  # clip_grad_value_
                            ("clamp_max", aten.clamp_max.Tensor, "max")):
        packet = getattr(aten, f"_foreach_{name}", None)
        for overload, lists in (("List", ("self", "other")), ("Scalar", ("self",)),
                                ("ScalarList", ("self", "scalars"))):
            if packet is not None and overload in packet.overloads():
                LOWERINGS[getattr(packet, overload)] = _foreach_renamed(
                    op, lists, {"other": bound, "scalar": bound, "scalars": bound})
    for name in ("sqrt", "exp", "neg", "abs", "reciprocal", "sign", "sigmoid", "log"):
        packet = getattr(aten, f"_foreach_{name}", None)
        per_tensor = getattr(aten, name).default
        if packet is not None and "default" in packet.overloads():
            LOWERINGS[packet.default] = _foreach(per_tensor, ("self",))
    for name, op in (("addcmul", aten.addcmul.default), ("addcdiv", aten.addcdiv.default)):
        packet = getattr(aten, f"_foreach_{name}")
        LOWERINGS[packet.Scalar] = _foreach(op, ("self", "tensor1", "tensor2"))
        LOWERINGS[packet.ScalarList] = _foreach_renamed(
            op, ("self", "tensor1", "tensor2", "scalars"), {"scalars": "value"})
    LOWERINGS[aten._foreach_lerp.Scalar] = _foreach_renamed(aten.lerp.Scalar, ("self", "tensors1"),
                                                            {"tensors1": "end"})
    LOWERINGS[aten._foreach_lerp.List] = _foreach_renamed(aten.lerp.Tensor,
                                                          ("self", "tensors1", "weights"),
                                                          {"tensors1": "end", "weights": "weight"})


def _foreach_renamed(op, lists, rename=None):
    """A foreach op whose argument names differ from the per-tensor op's (scalar(s) -> other)."""
    rename = dict(rename or {})
    rename.setdefault("scalar", "other")
    rename.setdefault("scalars", "other")
    inner = _foreach(op, tuple(rename.get(n, n) for n in lists))

    def lower(lowering, node, **kwargs):
        return inner(lowering, node, **{rename.get(k, k): v for k, v in kwargs.items()})
    return lower


_register_foreach()


@register(aten.native_dropout_backward.default)
def _dropout_backward(lowering, node, grad_output, mask, scale):
    return pointwise(lowering, [grad_output, mask, scale],
                     lambda ops, g, m, k: ops.mul(ops.mul(g, m), k), out_dtype(node))


# --- Adam's update as one op (optim_adam.py) --------------------------------------------------

register_adam_op()


@register(torch.ops.lazytriton.adam_update.default)
def _adam_update(lowering, node, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs,
                 neg_step_sizes, bias_correction2_sqrts, weight_decay, param_decay,
                 one_minus_beta1, beta2, one_minus_beta2, eps, grad_decay, decoupled_decay,
                 amsgrad, maximize):
    """Per parameter, the per-tensor lowerings _multi_tensor_adam's foreach ops reach, in its
    order, so that the kernels compute what foreach Adam computes. Outputs: new params, then
    exp_avgs, exp_avg_sqs and (amsgrad) max_exp_avg_sqs, as the functional op returns them."""
    new_params, new_avgs, new_sqs, new_maxes = [], [], [], []
    for i, (p, g) in enumerate(zip(params, grads)):
        def call(op, **args):  # a per-tensor lowering, in parameter i's dtype
            return LOWERINGS[op](lowering, _ElementNode(node, op, i), **args)
        if maximize:
            g = call(aten.neg.default, self=g)
        if decoupled_decay:
            p = call(aten.mul.Tensor, self=p, other=param_decay)
        if grad_decay:
            g = call(aten.add.Tensor, self=g, other=p, alpha=weight_decay)
        m = call(aten.lerp.Scalar, self=exp_avgs[i], end=g, weight=one_minus_beta1)
        v = call(aten.addcmul.default, self=call(aten.mul.Tensor, self=exp_avg_sqs[i], other=beta2),
                 tensor1=g, tensor2=g, value=one_minus_beta2)
        if amsgrad:
            new_maxes.append(call(aten.maximum.default, self=max_exp_avg_sqs[i], other=v))
        root = call(aten.sqrt.default, self=new_maxes[-1] if amsgrad else v)
        corrected = call(aten.div.Tensor, self=root, other=per_param(bias_correction2_sqrts, i))
        denom = call(aten.add.Tensor, self=corrected, other=eps)
        new_params.append(call(aten.addcdiv.default, self=p, tensor1=m, tensor2=denom,
                               value=per_param(neg_step_sizes, i)))
        new_avgs.append(m)
        new_sqs.append(v)
    return new_params + new_avgs + new_sqs + new_maxes


# --- SGD's update as one op (optim_sgd.py) ----------------------------------------------------

register_sgd_op()


@register(torch.ops.lazytriton.sgd_update.default)
def _sgd_update(lowering, node, params, grads, momentum_buffers, neg_lr, weight_decay, momentum,
                one_minus_dampening, decay, nesterov, maximize):
    """Per parameter, the per-tensor lowerings of _single_tensor_sgd's ops, in its order.
    Outputs: new params, then (with momentum) new momentum buffers."""
    new_params, new_buffers = [], []
    for i, (p, g) in enumerate(zip(params, grads)):
        def call(op, **args):  # a per-tensor lowering, in parameter i's dtype
            return LOWERINGS[op](lowering, _ElementNode(node, op, i), **args)
        if maximize:
            g = call(aten.neg.default, self=g)
        if decay:
            g = call(aten.add.Tensor, self=g, other=p, alpha=weight_decay)
        if momentum_buffers:
            buf = call(aten.add.Tensor, self=call(aten.mul.Tensor, self=momentum_buffers[i],
                                                  other=momentum),
                       other=g, alpha=one_minus_dampening)
            new_buffers.append(buf)
            g = call(aten.add.Tensor, self=g, other=buf, alpha=momentum) if nesterov else buf
        new_params.append(call(aten.add.Tensor, self=p, other=g, alpha=neg_lr))
    return new_params + new_buffers
