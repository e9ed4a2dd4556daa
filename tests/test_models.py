"""A small model zoo, each trained a few steps on the lazy device against eager: losses,
parameters and buffers must match, and no graph may fall back to the reference executor
(FallbackGraph) nor any op to eager (aten::<op>). Inputs change size between steps where shapes
matter, so every model also runs several graphs of one structure."""
from __future__ import annotations

import warnings
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from lazytriton import metrics
from lazytriton.testing.differential import aten_fallbacks, train_side_by_side
from lazytriton.testing.models import (AttentionClassifier, BatchNormCNN, RecurrentTagger,
                                       TiedLM, TinyUNet, lm_loss)

pytestmark = [pytest.mark.differential, pytest.mark.bounds_checked]  # once per backend (conftest.py)

Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]  # (model inputs, target)


@pytest.fixture(autouse=True)
def fallback_warnings(monkeypatch):
    """A graph the code generator cannot compile becomes a counted fallback here, not an error,
    so the tests check the counter and report the warning's reason."""
    monkeypatch.delenv("LAZYTRITON_STRICT", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _assert_no_fallbacks(caught: list) -> None:
    reasons = [str(w.message) for w in caught if "FallbackGraph" in str(w.message)]
    assert metrics.counter_value("FallbackGraph") is None, reasons
    assert not aten_fallbacks()


def _train_both(model: torch.nn.Module, batches: list[Batch], loss_fn: Callable,
                lr: float = 0.05, clip: float | None = None
                ) -> list[tuple[list[float], torch.nn.Module]]:
    """SGD on an eager copy and a lazy copy of `model`, one step per batch (gradients clipped
    to norm `clip` if given). No momentum: its first step differs from the others, and every
    graph costs a C++ build; optimizers are test_training.py's subject."""
    return train_side_by_side(model, batches, loss_fn,
                              lambda params: torch.optim.SGD(params, lr=lr), clip=clip)


def _assert_same_training(runs, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    (eager_losses, eager), (lazy_losses, lazy) = runs
    assert lazy_losses == pytest.approx(eager_losses, rel=rtol, abs=atol)
    assert len(list(lazy.parameters())) == len(list(eager.parameters()))  # none untied
    half = len(eager_losses) // 2
    assert eager_losses[half] < eager_losses[0]  # the batches come twice: it learned the first
    lazy_state = dict(lazy.named_parameters()) | dict(lazy.named_buffers())
    for name, expected in [*eager.named_parameters(), *eager.named_buffers()]:
        got = lazy_state[name]
        assert got.device.type == "lazy", name
        torch.testing.assert_close(got.detach().cpu(), expected.detach(), rtol=rtol, atol=atol,
                                   msg=lambda m: f"{name}: {m}")


def _twice(batches: list[Batch]) -> list[Batch]:
    return batches + batches


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


# --- the models ----------------------------------------------------------------------------

def test_batchnorm_cnn_trains_and_evaluates_like_eager(fallback_warnings):
    torch.manual_seed(10)
    gen = _gen()
    batches = [((torch.randn(n, 3, h, w, generator=gen),), torch.randint(0, 5, (n,), generator=gen))
               for n, h, w in ((6, 8, 8), (4, 10, 6))]
    runs = _train_both(BatchNormCNN(classes=5), _twice(batches), F.cross_entropy)
    _assert_same_training(runs)  # running statistics included (buffers)
    (_, eager), (_, lazy) = runs
    eager.eval(), lazy.eval()
    for n, h, w in ((3, 8, 8), (1, 12, 10)):  # eval reads the running statistics, any batch size
        x = torch.randn(n, 3, h, w, generator=gen)
        torch.testing.assert_close(lazy(x.to("lazy")).cpu(), eager(x), rtol=1e-4, atol=1e-5)
    _assert_no_fallbacks(fallback_warnings)


def test_tied_lm_trains_like_eager(fallback_warnings):
    torch.manual_seed(11)
    gen = _gen()
    batches = []
    for n, t in ((3, 9), (2, 12)):
        tokens = torch.randint(0, 32, (n, t + 1), generator=gen)
        batches.append(((tokens[:, :-1],), tokens[:, 1:]))
    # clipping, unlike plain SGD, would also tell one tied weight from two aliased ones
    runs = _train_both(TiedLM(vocab=32, dim=16, heads=2, seq=12), _twice(batches), lm_loss,
                       clip=0.5)
    _assert_same_training(runs)
    lazy = runs[1][1]
    assert lazy.head.weight is lazy.tok_emb.weight
    _assert_no_fallbacks(fallback_warnings)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_unet_trains_like_eager(mode, fallback_warnings):
    torch.manual_seed(12)
    gen = _gen()
    batches = [((torch.randn(n, 1, h, w, generator=gen),),
                torch.randint(0, 3, (n, h, w), generator=gen))
               for n, h, w in ((2, 8, 8), (3, 7, 10))]  # odd sizes: upsampling to the skip's
    runs = _train_both(TinyUNet(mode=mode), _twice(batches), F.cross_entropy, lr=0.1)
    _assert_same_training(runs)
    _assert_no_fallbacks(fallback_warnings)


@pytest.mark.parametrize("cell, layers, bidirectional", [("lstm", 2, False), ("gru", 1, True)])
def test_recurrent_tagger_trains_like_eager(cell, layers, bidirectional, fallback_warnings):
    torch.manual_seed(13)
    gen = _gen()
    batches = [((torch.randn(n, t, 6, generator=gen),), torch.randint(0, 4, (n, t), generator=gen))
               for n, t in ((3, 3), (2, 4))]  # short: each step is unrolled in the graph

    def loss_fn(logits, target):
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))
    model = RecurrentTagger(cell, layers=layers, bidirectional=bidirectional)
    runs = _train_both(model, _twice(batches), loss_fn, lr=0.1)
    _assert_same_training(runs)
    _assert_no_fallbacks(fallback_warnings)


@pytest.mark.parametrize("need_weights", [False, True])
def test_multihead_attention_trains_like_eager(need_weights, fallback_warnings):
    torch.manual_seed(14)
    gen = _gen()
    batches = []
    for n, t in ((3, 6), (2, 9)):
        padding = torch.rand(n, t, generator=gen) < 0.3
        padding[:, 0] = False  # every query sees at least the first step
        batches.append(((torch.randn(n, t, 6, generator=gen), padding),
                        torch.randint(0, 3, (n,), generator=gen)))
    runs = _train_both(AttentionClassifier(need_weights=need_weights), _twice(batches),
                       F.cross_entropy, lr=0.1)
    _assert_same_training(runs)
    _assert_no_fallbacks(fallback_warnings)
