"""The differential harness: run a function or a training loop eagerly on the CPU and on the
"lazy" device, and compare. Shared by the tests (every lowering, every model), so they all
compare the same way. Inputs are random, never constant.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import pytest
import torch

import lazytriton
from lazytriton import metrics

F32 = torch.float32
BOOL, U8 = torch.bool, torch.uint8


# --- random data ----------------------------------------------------------------------------

def rnd(*shape, dtype=F32):
    """Random values of any dtype; signed where the dtype is."""
    if dtype.is_floating_point:
        return (torch.randn(shape, dtype=F32) * 2).to(dtype)
    if dtype is BOOL:
        return torch.rand(shape) > 0.5
    if dtype is U8:
        return torch.randint(0, 256, shape, dtype=dtype)
    return torch.randint(-9, 10, shape, dtype=dtype)


def pos(*shape, dtype=F32):
    """Random positive values (log, sqrt, pow bases, ...)."""
    if dtype.is_floating_point:
        return (torch.rand(shape, dtype=F32) * 3 + 0.1).to(dtype)
    return torch.randint(1, 10, shape, dtype=dtype)


def nonzero(*shape, dtype=F32):
    """Random divisors of either sign, bounded away from zero."""
    sign = torch.randint(0, 2, shape) * 2 - 1
    return (pos(*shape, dtype=dtype) * sign.to(dtype)).to(dtype)


def index(high, *shape):
    return torch.randint(0, high, shape)


# --- comparing lazy with eager ---------------------------------------------------------------

def to_lazy(x):
    return x.detach().to("lazy") if isinstance(x, torch.Tensor) else x


def _clone(x):
    return x.detach().clone() if isinstance(x, torch.Tensor) else x


def flat(x) -> list:
    if isinstance(x, (list, tuple)):
        return [y for v in x for y in flat(v)]
    return [x]


def assert_lazy(outputs) -> None:
    for out in flat(outputs):
        if isinstance(out, torch.Tensor):
            assert out.device.type == "lazy", f"a result left the lazy device: {out.device}"


def to_cpu(x):
    if isinstance(x, torch.Tensor):
        return x.cpu()
    if isinstance(x, (list, tuple)):
        return [to_cpu(v) for v in x]
    return x


def assert_same(actual, expected, tol: dict) -> None:
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), f"expected a tensor, got {type(actual)}"
        assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}"
        assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
        torch.testing.assert_close(actual, expected, equal_nan=True, **tol)
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_same(a, e, tol)
    elif isinstance(expected, float):
        assert type(actual) is float and actual == pytest.approx(expected, rel=1e-6, abs=1e-6)
    else:
        assert type(actual) is type(expected) and actual == expected


def _tol(atol, rtol) -> dict:
    return {} if atol is None else dict(atol=atol, rtol=rtol)


def check(fn, *inputs, atol=None, rtol=None, check_stride=False):
    """fn on lazy copies of the inputs equals fn on the CPU inputs; inputs that fn mutates must
    end up equal too. Returns the eager result."""
    lazy_inputs = [to_lazy(x) for x in inputs]
    eager_inputs = [_clone(x) for x in inputs]
    expected = fn(*eager_inputs)
    actual = fn(*lazy_inputs)
    lazytriton.mark_step()
    assert_lazy(actual)
    if check_stride:
        for a, e in zip(flat(actual), flat(expected)):
            assert a.stride() == e.stride(), f"stride {a.stride()} != {e.stride()}"
            assert a.storage_offset() == e.storage_offset()
    tol = _tol(atol, rtol)
    assert_same(to_cpu(actual), expected, tol)
    assert_same(to_cpu(lazy_inputs), eager_inputs, tol)
    return expected


def _run_with_grad(fn, inputs, weights, wrt):
    leaves = [x.requires_grad_() if i in wrt else x for i, x in enumerate(inputs)]
    outs = flat(fn(*leaves))
    floats = [o for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point()]
    if not weights:  # eager run: draw the weights
        weights.extend(torch.randn(o.shape, dtype=o.dtype) for o in floats)
    else:
        weights = [w.to("lazy") for w in weights]
    loss = sum((o * w).sum() for o, w in zip(floats, weights))
    grads = torch.autograd.grad(loss, [leaves[i] for i in wrt], allow_unused=True)
    return [o.detach() if isinstance(o, torch.Tensor) else o for o in outs], list(grads)


def check_grad(fn, *inputs, atol=None, rtol=None, wrt=None):
    """Outputs and gradients of sum(outputs * random weights) w.r.t. the inputs numbered in
    `wrt` (default: the float ones) match."""
    if wrt is None:
        wrt = [i for i, x in enumerate(inputs)
               if isinstance(x, torch.Tensor) and x.is_floating_point()]
    weights: list[torch.Tensor] = []
    lazy_inputs = [to_lazy(x) for x in inputs]
    expected = _run_with_grad(fn, [_clone(x) for x in inputs], weights, wrt)
    assert weights, "nothing differentiable to check"
    actual = _run_with_grad(fn, lazy_inputs, weights, wrt)
    lazytriton.mark_step()
    assert_lazy(actual)
    assert_same(to_cpu(actual), expected, _tol(atol, rtol))


def check_raises(fn, *inputs):
    """Where eager raises, the lazy device raises the same kind of error: while tracing, or
    (when only the kernel can tell) as a LazyExecutionError caused by it at the first read.
    A meta kernel may word the check more generally (RuntimeError for NotImplementedError)."""
    with pytest.raises(Exception) as eager_error:
        fn(*[_clone(x) for x in inputs])
    kind = type(eager_error.value)
    with pytest.raises(Exception) as lazy_error:
        result = fn(*[to_lazy(x) for x in inputs])
        lazytriton.mark_step()
        to_cpu(result)
    error = lazy_error.value
    if isinstance(error, lazytriton.LazyExecutionError):
        error = error.__cause__
    general = type(error) is RuntimeError and issubclass(kind, RuntimeError)
    assert isinstance(error, kind) or general, \
        f"eager raised {kind.__name__}, lazy {lazy_error.value!r}"


# --- whole training loops --------------------------------------------------------------------

Batch = tuple  # (inputs: a tensor or a tuple of tensors, target)


def train_side_by_side(model: torch.nn.Module, batches: Sequence[Batch], loss_fn: Callable,
                       make_opt: Callable, clip: float | None = None,
                       make_sched: Callable | None = None, steps_per_mark: int = 1
                       ) -> list[tuple[list[float], torch.nn.Module]]:
    """Train an eager (CPU) copy and a lazy copy of `model`, one optimizer step per batch
    (gradients clipped to norm `clip`, a scheduler stepped after each step, if given), with a
    mark_step after every `steps_per_mark` lazy steps (and after the last). Returns
    [(losses, model)] for eager, then lazy."""
    runs = []
    for device in ("cpu", "lazy"):
        net = copy.deepcopy(model).to(device)
        opt = make_opt(net.parameters())
        sched = make_sched(opt) if make_sched else None
        losses = []
        for step, (inputs, target) in enumerate(batches, 1):
            inputs = inputs if isinstance(inputs, tuple) else (inputs,)
            opt.zero_grad()
            loss = loss_fn(net(*[x.to(device) for x in inputs]), target.to(device))
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            opt.step()
            if sched:
                sched.step()
            if device == "lazy" and (step % steps_per_mark == 0 or step == len(batches)):
                lazytriton.mark_step()
            losses.append(loss.detach())
        runs.append(([float(loss.cpu()) for loss in losses], net))
    return runs


def aten_fallbacks() -> list[str]:
    """Ops that ran as counted aten calls instead of kernels (`aten::<op>` counters)."""
    return [n for n in metrics.counter_names() if n.startswith("aten::")]
