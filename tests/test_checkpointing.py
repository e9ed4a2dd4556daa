"""Activation checkpointing (torch.utils.checkpoint) on the lazy device. It looks the device's
runtime module up as `torch.lazy` (rng state, device selection); lazytriton.init registers
one (lazytriton/device_module.py). The lazy device's random ops draw their seeds from the CPU
generator, which checkpoint forks and restores around the recomputation, so a dropout mask
recomputed in backward is the one the forward drew."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import lazytriton

pytestmark = pytest.mark.differential  # runs once per backend (conftest.py)


class Net(nn.Module):
    def __init__(self, checkpointed: bool, reentrant: bool = False, p: float = 0.0):
        super().__init__()
        self.inp, self.mid, self.out = nn.Linear(12, 16), nn.Linear(16, 16), nn.Linear(16, 3)
        self.checkpointed, self.reentrant, self.p = checkpointed, reentrant, p

    def block(self, h: torch.Tensor) -> torch.Tensor:
        return F.dropout(torch.tanh(self.mid(h)), self.p, training=self.training) * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.inp(x))
        if self.checkpointed:
            h = checkpoint(self.block, h, use_reentrant=self.reentrant)
        else:
            h = self.block(h)
        return self.out(h)


def _train(model: nn.Module, device: str, batches) -> list[torch.Tensor]:
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(model(x.to(device)), y.to(device)).backward()
        opt.step()
        if device == "lazy":
            lazytriton.mark_step()
    return [p.detach().cpu() for p in model.parameters()]


def _batches(sizes) -> list:
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(n, 12, generator=g), torch.randint(0, 3, (n,), generator=g))
            for n in sizes]


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpointed_training_matches_eager(reentrant):
    torch.manual_seed(0)
    model = Net(checkpointed=True, reentrant=reentrant)
    batches = _batches([8, 8, 5, 8])
    eager = _train(copy.deepcopy(model), "cpu", batches)
    lazy = _train(copy.deepcopy(model), "lazy", batches)
    for e, got in zip(eager, lazy):
        torch.testing.assert_close(got, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reentrant", [False, True])
def test_a_recomputed_dropout_mask_is_the_forwards(reentrant):
    """Eager's dropout draws differently from the lazy device's, so the reference is the lazy
    device without checkpointing: the same seeds in the same order give the same masks, and a
    recomputation drawing a new mask would change the gradients."""
    torch.manual_seed(0)
    start = Net(False, p=0.5).state_dict()
    batches = _batches([8, 6, 8])

    def trained(checkpointed: bool, seed: int) -> list[torch.Tensor]:
        model = Net(checkpointed, reentrant, p=0.5)
        model.load_state_dict(start)
        torch.manual_seed(seed)
        return _train(model, "lazy", batches)
    reference = trained(False, seed=1)
    for r, g in zip(reference, trained(True, seed=1)):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
    # a different seed draws different masks: the comparison above can fail
    assert any(not torch.allclose(o, r) for o, r in zip(trained(False, seed=2), reference))


def test_torch_finds_the_lazy_runtime_module():
    module = torch.get_device_module("lazy")
    assert module is torch.get_device_module(torch.device("lazy", 0))
    assert module.device_count() == 1 and module.is_available()
    assert module.get_rng_state().numel() == 0
    with pytest.raises(ValueError, match="CPU generator"):
        module.set_rng_state(torch.ones(3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="lazy:0"):
        with module.device(1):
            pass


def test_fork_rng_on_the_lazy_device_repeats_its_random_draws():
    x = torch.ones(64, device="lazy")
    with torch.random.fork_rng(device_type="lazy"):
        first = F.dropout(x, 0.5).cpu()
    second = F.dropout(x, 0.5).cpu()
    torch.testing.assert_close(second, first)
    assert 0 < int((first == 0).sum()) < 64
