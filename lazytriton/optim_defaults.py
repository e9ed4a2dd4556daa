"""torch.optim's default implementation for lazy parameters: foreach, as torch picks for CUDA.

An optimizer built without `foreach=` chooses per step (`_default_to_fused_or_foreach` in
torch/optim/optimizer.py): the foreach implementation, one `_foreach_*` op per arithmetic step
for all parameters together, where every parameter is a plain Tensor or Parameter on a device
torch lists as having foreach kernels (cuda, xpu, mtia, the privateuse1 device); otherwise a
Python loop of single-tensor ops per parameter, which is what CPU tensors get. A lazy
parameter qualifies on neither count (its type is LazyTensor, its device type "lazy"), so Adam
traced seven ops per parameter per step, each paying the dispatcher and the tracer, while the
graph they build is the same either way (lowering/optim.py lowers each foreach op into the
per-tensor computations, and the scheduler fuses them per parameter as before). The
transformer block's step traced 366 ops; with foreach its tracing took 27% less time.

`default_to_foreach()` (called by `lazytriton.init`) adds the lazy device and LazyTensor to what
that choice accepts, in torch.optim.optimizer only. The results are those of torch's own
foreach implementation, which does the same arithmetic as its single-tensor one. CPU
parameters keep their default, and an explicit `foreach=False` is honoured. A torch whose
optimizer module lacks these names is left alone (a warning says so).

SGD goes further: the same wrapper of `torch.optim.sgd.sgd` first asks optim_sgd.py to trace
the whole update as one op. Where that does not apply (the first step, which makes the
momentum buffers, or what the op does not cover), one exception: SGD with Nesterov momentum
(no weight decay, not maximizing). Its foreach implementation adds the momentum buffer into
the user's `p.grad` in place, where the single-tensor one (eager's on the CPU) leaves
`p.grad` alone; gradients read after the step, or accumulated over the next one, would differ
from eager's. Lazy parameters keep the single-tensor implementation there
(`_sgd_as_on_the_cpu`).
"""
from __future__ import annotations

import functools
import warnings

from . import optim_sgd
from .tensor import LAZY_TORCH_DEVICE, LazyTensor

_PATCHED = "_lazytriton_foreach"  # marks the wrapped device list (init may run many times)


def default_to_foreach() -> None:
    import torch.optim.optimizer as optimizer

    devices = getattr(optimizer, "_get_foreach_kernels_supported_devices", None)
    types = getattr(optimizer, "_foreach_supported_types", None)
    if not callable(devices) or not isinstance(types, list):
        warnings.warn("lazytriton: this torch's optimizers choose foreach differently; lazy "
                      "parameters keep torch's default (pass foreach=True to an optimizer "
                      "for fewer traced ops)", stacklevel=2)
        return
    if not getattr(devices, _PATCHED, False):
        optimizer._get_foreach_kernels_supported_devices = _with_lazy(devices)
    if LazyTensor not in types:
        types.append(LazyTensor)
    _foreach_utils_accept_lazy()
    import torch.optim.sgd as sgd
    if callable(getattr(sgd, "sgd", None)) and not getattr(sgd.sgd, _PATCHED, False):
        sgd.sgd = _sgd_as_on_the_cpu(sgd.sgd)  # SGD.step calls the module's `sgd`


def _foreach_utils_accept_lazy() -> None:
    """torch.nn.utils' clip_grad_norm_ and clip_grad_value_ ask torch.utils._foreach_utils,
    which keeps its own device list: without the lazy device there, `foreach=True` raised
    "can't use the foreach API on lazy tensors". Its own list of tensor types stays as it is,
    so the default (foreach=None) keeps the per-tensor ops; both ways are lowered to kernels
    (_foreach_norm by a decomposition into per-tensor norms)."""
    import torch.utils._foreach_utils as foreach_utils
    devices = getattr(foreach_utils, "_get_foreach_kernels_supported_devices", None)
    if callable(devices) and not getattr(devices, _PATCHED, False):
        foreach_utils._get_foreach_kernels_supported_devices = _with_lazy(devices)


def _sgd_as_on_the_cpu(sgd):
    @functools.wraps(sgd)
    def lazy_sgd(params, *args, **kwargs):
        if len(args) >= 2 and optim_sgd.traced_update(params, args[0], args[1], args[2:], kwargs):
            return None  # the whole update as one op (optim_sgd.py)
        if (kwargs.get("foreach") is None and kwargs.get("fused") is None and len(args) < 3
                and kwargs.get("nesterov") and not kwargs.get("weight_decay")
                and not kwargs.get("maximize") and any(isinstance(p, LazyTensor) for p in params)):
            kwargs["foreach"] = False  # see the module's docstring
        return sgd(params, *args, **kwargs)
    setattr(lazy_sgd, _PATCHED, True)
    return lazy_sgd


def _with_lazy(devices):
    def foreach_devices() -> list[str]:
        return [*devices(), LAZY_TORCH_DEVICE.type]
    setattr(foreach_devices, _PATCHED, True)
    foreach_devices.__wrapped__ = devices
    return foreach_devices
