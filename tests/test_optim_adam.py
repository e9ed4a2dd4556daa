"""lazytriton/optim_adam.py: Adam and AdamW on lazy parameters trace one `adam_update_` op per
step; parameters and state match eager's (CPU: the single-tensor loop) on every backend, a
learning rate that changes every step compiles no new program, and what the op does not cover
runs torch's own implementation."""
from __future__ import annotations

import copy

import pytest
import torch

import lazytriton
from lazytriton import metrics
from lazytriton.testing.differential import aten_fallbacks

pytestmark = pytest.mark.differential

CONFIGS = {
    "adam": (torch.optim.Adam, dict(lr=1e-2)),
    "adamw": (torch.optim.AdamW, dict(lr=1e-2)),  # decoupled weight decay 0.01
    "adam_weight_decay": (torch.optim.Adam, dict(lr=1e-2, weight_decay=0.1)),
    "adam_amsgrad_maximize": (torch.optim.Adam, dict(lr=1e-2, amsgrad=True, maximize=True)),
    "adamw_amsgrad": (torch.optim.AdamW, dict(lr=2e-2, amsgrad=True, weight_decay=0.3,
                                              betas=(0.8, 0.95), eps=1e-6)),
    "adam_maximize_decay_f64": (torch.optim.Adam, dict(lr=1e-2, maximize=True,
                                                       weight_decay=0.2)),
}


def _model(dtype=torch.float32) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(),
                               torch.nn.Linear(7, 3)).to(dtype)


def _train(model, make_opt, device: str, steps: int = 4, groups: bool = False):
    """Seeded gradients (data, so that only the update is compared), a StepLR halving the
    learning rate every step; the parameters and the optimizer state after `steps`."""
    params = list(model.parameters())
    opt = make_opt([{"params": params[:2]}, {"params": params[2:], "lr": 3e-2,
                                             "betas": (0.5, 0.9)}] if groups else params)
    schedule = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
    gen = torch.Generator().manual_seed(3)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(device)
        opt.step()
        schedule.step()
        if device == "lazy":
            lazytriton.mark_step()
    state = [(name, value) for p in params for name, value in sorted(opt.state[p].items())]
    return [p.detach().cpu() for p in params], state


def _check(name, groups=False):
    cls, kwargs = CONFIGS[name]
    dtype = torch.float64 if name.endswith("f64") else torch.float32
    eager = _model(dtype)
    lazy = copy.deepcopy(eager).to("lazy")
    make = lambda p: cls(p, **kwargs)  # noqa: E731
    want_params, want_state = _train(eager, make, "cpu", groups=groups)
    metrics.reset()
    got_params, got_state = _train(lazy, make, "lazy", groups=groups)
    assert not aten_fallbacks()
    for got, want in zip(got_params, want_params):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert [n for n, _ in got_state] == [n for n, _ in want_state]
    for (n, got), (_, want) in zip(got_state, want_state):
        if n == "step":  # the step counts stay CPU tensors, as eager's
            assert got.device.type == "cpu" and torch.equal(got, want)
        else:
            torch.testing.assert_close(got.cpu(), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_adam_matches_eager(name):
    _check(name)


def test_parameter_groups_with_their_own_hyperparameters():
    _check("adamw_amsgrad", groups=True)


def test_one_op_per_step_and_no_program_for_a_new_learning_rate():
    """The step counts, bias corrections and learning rate are graph inputs: a learning rate
    halved every step compiles no new program after the first two steps (the first creates
    the state)."""
    model = _model().to("lazy")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
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
        if step:  # the update and the CPU step counts' increment are not traced op by op
            assert traced == 1, traced
    assert compiles[2:] == [0, 0, 0], compiles


@pytest.mark.parametrize("kwargs", [lambda: dict(foreach=False),
                                    lambda: dict(lr=torch.tensor(1e-2), foreach=False),
                                    lambda: dict(betas=(torch.tensor(0.8), torch.tensor(0.9)))],
                         ids=["foreach_false", "tensor_lr", "tensor_betas"])
def test_what_the_op_does_not_cover_runs_torchs_adam(kwargs):
    eager, lazy = _model(), _model().to("lazy")
    make = lambda p: torch.optim.Adam(p, **{"lr": 1e-2, **kwargs()})  # noqa: E731
    want, _ = _train(eager, make, "cpu", steps=2)
    metrics.reset()
    got, _ = _train(lazy, make, "lazy", steps=2)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_parameters_with_different_step_counts():
    """A parameter without a gradient is skipped, so its step count falls behind: the bias
    corrections are then per parameter (one value stands for all where the counts agree)."""
    def run(model, device):
        params = list(model.parameters())
        opt = torch.optim.Adam(params, lr=1e-2)
        gen = torch.Generator().manual_seed(5)
        for step in range(4):
            opt.zero_grad(set_to_none=True)
            for p in params[:2] if step < 2 else params:
                p.grad = torch.randn(p.shape, generator=gen).to(device)
            opt.step()
            if device == "lazy":
                lazytriton.mark_step()
        assert [opt.state[p]["step"].item() for p in params] == [4, 4, 2, 2]
        return [p.detach().cpu() for p in params]

    eager = _model()
    want = run(eager, "cpu")
    metrics.reset()
    got = run(copy.deepcopy(_model()).to("lazy"), "lazy")
    assert not aten_fallbacks()
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-7)
