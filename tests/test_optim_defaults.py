"""lazytriton/optim_defaults.py: optimizers over lazy parameters default to torch's foreach
implementation (one traced op per arithmetic step for all parameters), as on CUDA; their
results still match eager's (CPU: the single-tensor loop), CPU optimizers keep their default,
and an explicit foreach=False is honoured."""
from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import _default_to_fused_or_foreach

import lazytriton
from lazytriton import metrics
from lazytriton.testing.differential import aten_fallbacks

OPTIMIZERS = {
    "adam": lambda p, **kw: torch.optim.Adam(p, lr=1e-2, **kw),
    "adamw": lambda p, **kw: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, **kw),
    "sgd_momentum": lambda p, **kw: torch.optim.SGD(p, lr=0.1, momentum=0.9, **kw),
    "sgd_nesterov_decay": lambda p, **kw: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True,
                                                          weight_decay=0.01, **kw),
    "rmsprop": lambda p, **kw: torch.optim.RMSprop(p, lr=1e-2, momentum=0.5, **kw),
    "adagrad": lambda p, **kw: torch.optim.Adagrad(p, lr=0.1, **kw),
    "adadelta": lambda p, **kw: torch.optim.Adadelta(p, lr=0.5, **kw),
}


def _params(device: str) -> list[torch.Tensor]:
    torch.manual_seed(0)
    shapes = [(5, 7), (7,), (3, 5), (3,), (1,)]  # several sizes, as a model's layers
    return [torch.nn.Parameter(torch.randn(s).to(device)) for s in shapes]


def _run(name: str, device: str, steps: int = 3, **kw) -> tuple[list[torch.Tensor], int]:
    """The parameters after `steps` updates from seeded random gradients, and the number of
    ops the lazy tracer recorded for them."""
    params = _params(device)
    opt = OPTIMIZERS[name](params, **kw)
    metrics.reset()
    for step in range(steps):
        torch.manual_seed(100 + step)
        for p in params:
            p.grad = torch.randn(p.shape).to(device)
        opt.step()
        if device == "lazy":
            lazytriton.mark_step()
    traced = metrics.timing_count("trace")
    return [p.detach().cpu() for p in params], traced


def test_lazy_parameters_default_to_foreach_and_cpu_ones_do_not():
    lazy, cpu = _params("lazy"), _params("cpu")
    assert _default_to_fused_or_foreach(lazy, differentiable=False) == (False, True)
    assert _default_to_fused_or_foreach(cpu, differentiable=False) == (False, False)
    assert _default_to_fused_or_foreach(lazy + cpu, differentiable=False) == (False, False)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_default_matches_eager_with_fewer_traced_ops(name):
    want, _ = _run(name, "cpu")  # eager on the CPU: the single-tensor loop
    got, traced_default = _run(name, "lazy")
    looped, traced_loop = _run(name, "lazy", foreach=False)
    for g, l, w in zip(got, looped, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(l, w, rtol=1e-5, atol=1e-6)
    assert traced_default < traced_loop  # foreach by default; foreach=False still a loop


@pytest.mark.parametrize("accumulate", [False, True], ids=["zeroed", "accumulated"])
def test_nesterov_sgd_leaves_the_gradients_as_eager(accumulate):
    """Found by a stress run: torch's foreach SGD with Nesterov momentum (no weight decay) adds
    the momentum buffer into p.grad in place; eager's CPU loop does not. p.grad read after the
    step differed, and gradients accumulated over steps made the parameters differ too."""
    def train(device):
        torch.manual_seed(0)
        w = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64).to(device))
        x = torch.randn(5, 4, dtype=torch.float64).to(device)
        opt = torch.optim.SGD([w], lr=0.1, momentum=0.9, nesterov=True)
        grads = []
        for _ in range(3):
            if not accumulate:
                opt.zero_grad()
            (x @ w).square().sum().backward()
            opt.step()
            grads.append(w.grad.detach().cpu().clone())
            if device == "lazy":
                lazytriton.mark_step()
        return w.detach().cpu(), grads
    want, want_grads = train("cpu")
    got, got_grads = train("lazy")
    torch.testing.assert_close(got, want)
    for g, e in zip(got_grads, want_grads):
        torch.testing.assert_close(g, e)


def test_init_again_wraps_once():
    import torch.optim.optimizer as optimizer
    lazytriton.init("aten")
    lazytriton.init("aten")
    assert optimizer._get_foreach_kernels_supported_devices().count("lazy") == 1
    assert optimizer._foreach_supported_types.count(lazytriton.LazyTensor) == 1
    import torch.utils._foreach_utils as foreach_utils
    assert foreach_utils._get_foreach_kernels_supported_devices().count("lazy") == 1
    import torch.optim.sgd as sgd
    assert not getattr(sgd.sgd.__wrapped__, "_lazytriton_foreach", False)  # wrapped once


@pytest.mark.parametrize("foreach", [True, None, False])
def test_gradient_clipping_as_eager(foreach, tmp_path):
    """clip_grad_norm_ and clip_grad_value_ take foreach=True on lazy parameters (torch's
    foreach utilities list the lazy device) and give eager's gradients either way."""
    lazytriton.init("cpp", cache_dir=tmp_path)
    metrics.reset()
    grads = {}
    for device in ("cpu", "lazy"):
        params = _params(device)
        torch.manual_seed(7)
        for p in params:
            p.grad = (torch.randn(p.shape) * 3).to(device)
        norm = torch.nn.utils.clip_grad_norm_(params, 0.5, foreach=foreach)
        torch.nn.utils.clip_grad_value_(params, 0.05, foreach=foreach)
        grads[device] = [norm.cpu()] + [p.grad.cpu() for p in params]
    for got, expected in zip(grads["lazy"], grads["cpu"]):
        torch.testing.assert_close(got, expected)
    assert not aten_fallbacks()  # _foreach_norm too: kernels
