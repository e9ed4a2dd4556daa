"""Entering the lazy device: Python kernels on the `Lazy` dispatch key.

A factory call with device="lazy" (torch.empty, zeros, randn, arange, torch.tensor, .to("lazy"))
reaches the `Lazy` key before any LazyTensor exists; these kernels create one. From then on the
tensor's Python dispatch key routes every op to LazyTensor.__torch_dispatch__.
"""
from __future__ import annotations

import warnings

import torch

from . import tracing
from .runtime import session

aten = torch.ops.aten

# Factories whose composite kernels resize an empty output (arange, eye, ...): traced whole.
_FACTORIES = {
    "empty": ("memory_format",),
    "empty_strided": ("default",),
    "arange": ("default", "start", "start_step"),
    "range": ("default", "step"),
    "eye": ("default", "m"),
    "linspace": ("default",),
    "logspace": ("default",),
    "randperm": ("default", "generator"),
    # kernels per device (a device stub, or no composite at all): traced whole, run by aten
    "tril_indices": ("default",),
    "triu_indices": ("default",),
    "kaiser_window": ("default", "periodic", "beta"),
}

_library: torch.library.Library | None = None


def _factory_kernel(op):
    def kernel(*args, **kwargs):
        session.current()  # a clear error before init
        return tracing.trace_op(op, args, kwargs)
    return kernel


def _copy_from(self, dst, non_blocking=False):
    """torch.tensor(..., device="lazy") copies host data into a fresh lazy tensor this way."""
    session.current()
    return tracing.copy_into(dst, self)


def register_lazy_kernels() -> None:
    """Idempotent. Done by init(), so importing lazytriton leaves torch._lazy's device alone."""
    global _library
    if _library is not None:
        return
    lib = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overriding torch._lazy's registrations is intended
        for name, overloads in _FACTORIES.items():
            for overload in overloads:
                op = getattr(getattr(aten, name), overload)
                lib.impl(op, _factory_kernel(op), "Lazy")
        lib.impl(aten._copy_from.default, _copy_from, "Lazy")
        from .accelerator_ops import AUTOGRAD_KERNELS  # (it imports the tracer)
        for op, kernel in AUTOGRAD_KERNELS.items():
            lib.impl(op, kernel, "AutogradLazy")
    _library = lib
