"""Optimizer updates: all of one parameter's updates (its state and itself) in one kernel, since
equal sizes are known equal; parameters of one size share one. Values equal eager's."""
from __future__ import annotations

import copy
import re

import pytest
import torch

import lazytriton
from lazytriton.testing.models import MLP

pytestmark = [pytest.mark.differential, pytest.mark.skip_backends(
    aten="the reference executor runs ops, not kernels")]

OPTIMIZERS = {
    "adadelta": lambda params, foreach: torch.optim.Adadelta(params, lr=0.5, foreach=foreach),
    "adamw": lambda params, foreach: torch.optim.AdamW(params, lr=1e-2, foreach=foreach),
    "sgd_momentum": lambda params, foreach: torch.optim.SGD(params, lr=0.1, momentum=0.9,
                                                            foreach=foreach),
}


def _random_grads(model, gen):
    return [torch.randn(p.shape, generator=gen) for p in model.parameters()]


def _step(model, opt, grads, device):
    for p, g in zip(model.parameters(), grads):
        p.grad = g.to(device)
    opt.step()


def _state_tensors(opt) -> list[torch.Tensor]:
    return [v for state in opt.state.values() for v in state.values()
            if isinstance(v, torch.Tensor) and v.device.type == "lazy"]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_one_kernel_per_parameter_at_most(test_backend, name, foreach):
    torch.manual_seed(0)
    eager = MLP((24, 40, 40, 7))
    model = copy.deepcopy(eager).to("lazy")
    opt = OPTIMIZERS[name](model.parameters(), foreach)
    eager_opt = OPTIMIZERS[name](eager.parameters(), foreach)
    gen = torch.Generator().manual_seed(3)
    for step in range(3):
        grads = _random_grads(eager, gen)
        _step(eager, eager_opt, grads, "cpu")
        _step(model, opt, grads, "lazy")
        for p in model.parameters():  # the gradients are data, not computed in the step
            p.grad = p.grad.cpu().to("lazy")
        pending = list(model.parameters()) + _state_tensors(opt)
        if step == 2:  # a steady-state step (the first one creates the state)
            nests = lazytriton.debug.dump_ir(pending, "loops")
            kernels = re.findall(r"^kernel\d+:", nests, flags=re.M)
            assert 0 < len(kernels) <= len(list(model.parameters())), nests
            # parameters of one outer size share a kernel, all of their updates in it
            outer_sizes = {p.shape[0] for p in model.parameters()}
            assert len(kernels) <= len(outer_sizes), nests
        lazytriton.mark_step()
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p.cpu(), q, rtol=1e-5, atol=1e-6)
    for lazy_state, eager_state in zip(opt.state.values(), eager_opt.state.values()):
        for key, value in eager_state.items():
            torch.testing.assert_close(lazy_state[key].cpu(), value, rtol=1e-5, atol=1e-6)
