"""lazytriton/optim_sgd.py: SGD on lazy parameters traces one `sgd_update_` op per step once
its momentum buffers exist; parameters, buffers and gradients match eager's (CPU: the
single-tensor loop) on every backend, a learning rate that changes every step compiles no new
program, and what the op does not cover runs torch's own implementation."""
from __future__ import annotations

import copy

import pytest
import torch

import lazytriton
from lazytriton import metrics
from lazytriton.testing.differential import aten_fallbacks

pytestmark = pytest.mark.differential

CONFIGS = {
    "plain": dict(lr=0.1),
    "momentum": dict(lr=0.1, momentum=0.9),
    "nesterov_decay": dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
    "nesterov": dict(lr=0.05, momentum=0.8, nesterov=True),
    "dampening_maximize_decay": dict(lr=0.1, momentum=0.5, dampening=0.3, maximize=True,
                                     weight_decay=0.2),
    "maximize_f64": dict(lr=0.2, maximize=True),
}


def _model(dtype=torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(),
                               torch.nn.Linear(7, 3)).to(dtype)


def _train(model, make_opt, device: str, steps: int = 4, groups: bool = False):
    """Seeded gradients (data, so that only the update is compared), a StepLR halving the
    learning rate every step; the parameters, gradients and momentum buffers after `steps`."""
    params = list(model.parameters())
    opt = make_opt([{"params": params[:2]}, {"params": params[2:], "lr": 0.3,
                                             "momentum": 0.5}] if groups else params)
    schedule = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    gen = torch.Generator().manual_seed(3)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(device)
        opt.step()
        schedule.step()
        if device == "lazy":
            lazytriton.mark_step()
    buffers = [opt.state[p].get("momentum_buffer") for p in params]
    return ([p.detach().cpu() for p in params], [p.grad.cpu() for p in params],
            [None if b is None else b.cpu() for b in buffers])


def _check(name, groups=False):
    kwargs = CONFIGS[name]
    dtype = torch.float64 if name.endswith("f64") else torch.float32
    eager = _model(dtype)
    lazy = copy.deepcopy(eager).to("lazy")
    make = lambda p: torch.optim.SGD(p, **kwargs)  # noqa: E731
    want = _train(eager, make, "cpu", groups=groups)
    metrics.reset()
    got = _train(lazy, make, "lazy", groups=groups)
    assert not aten_fallbacks()
    for got_list, want_list in zip(got, want):  # parameters, gradients, buffers
        for g, w in zip(got_list, want_list):
            if w is None:
                assert g is None
            else:
                torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_sgd_matches_eager(name):
    _check(name)


def test_parameter_groups_with_their_own_hyperparameters():
    _check("nesterov_decay", groups=True)


@pytest.mark.parametrize("momentum", [0.9, 0.0])
def test_one_op_per_step_and_no_program_for_a_new_learning_rate(momentum):
    """The learning rate is a graph input: halved every step, it compiles no new program after
    the first two steps (the first makes the momentum buffers: torch's code, several ops)."""
    model = _model().to("lazy")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=momentum)
    schedule = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    compiles = []
    for step in range(5):
        for p in model.parameters():
            p.grad = torch.randn(p.shape).to("lazy")
        metrics.reset()
        opt.step()
        traced = metrics.timing_count("trace")
        schedule.step()
        lazytriton.mark_step()
        compiles.append(metrics.counter_value("UncachedCompile") or 0)
        if step or not momentum:
            assert traced == 1, traced
    assert compiles[2:] == [0, 0, 0], compiles


@pytest.mark.parametrize("kwargs", [lambda: dict(foreach=False),
                                    lambda: dict(lr=torch.tensor(0.1))],
                         ids=["foreach_false", "tensor_lr"])
def test_what_the_op_does_not_cover_runs_torchs_sgd(kwargs):
    eager, lazy = _model(), _model().to("lazy")
    make = lambda p: torch.optim.SGD(p, **{"lr": 0.1, "momentum": 0.9, **kwargs()})  # noqa: E731
    want, _, _ = _train(eager, make, "cpu", steps=3)
    metrics.reset()
    got, _, _ = _train(lazy, make, "lazy", steps=3)
    assert metrics.timing_count("trace") > 3 * len(got)  # op by op, not one op a step
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
