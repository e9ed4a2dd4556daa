"""The ResNet-style CNN against eager at several input sizes: its stacked strided convs and
pools give size formulas with nested floor divisions whose intermediate values are negative,
which the generated code once computed with C's truncating division (NaN, then heap
corruption). Also: the same model under the bounds-checked mode, and a small graph built with
AddressSanitizer as DESIGN.md's recipe says."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import lazytriton
from lazytriton.testing.differential import aten_fallbacks, train_side_by_side
from lazytriton.testing.resnet import ResNetStyleCNN

# the model tests run once per backend (conftest.py); the C++-only tests init "cpp" themselves
differential = pytest.mark.differential
# Triton's interpreter (no GPU here) takes minutes per ResNet step: too slow for CI; the model's
# kind of kernels (conv epilogues, BN reductions) is covered by the zoo's BN CNN on triton
not_interpreted = pytest.mark.skip_backends(**({} if torch.cuda.is_available() else {
    "triton": "a ResNet step takes minutes under Triton's interpreter; run on a GPU instead"}))
needs_cpp = pytest.mark.skipif("cpp" not in lazytriton.available_backends(),
                               reason="needs a C++ compiler")


def _train_both(model, batches, lr=0.01):
    """SGD with momentum and cross-entropy, eager and lazy side by side; the loss lists."""
    return train_side_by_side(model, batches, F.cross_entropy,
                              lambda params: torch.optim.SGD(params, lr=lr, momentum=0.9))


def _batches(batch: int, px: int, steps: int, seed: int, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 3, px, px, generator=gen, dtype=dtype),
             torch.randint(0, 10, (batch,), generator=gen)) for _ in range(steps)]


def _assert_matches(runs, rtol=1e-7, atol=1e-9):
    """float64 by default: a CNN's float32 rounding differences (summation order) flip ReLU and
    max-pool choices and grow over steps, while float64 leaves any real error visible."""
    (eager_losses, eager), (lazy_losses, lazy) = runs
    assert all(l == l for l in lazy_losses), lazy_losses  # no NaN
    assert lazy_losses == pytest.approx(eager_losses, rel=rtol, abs=atol)
    for (name, pe), (_, pl) in zip(eager.state_dict().items(), lazy.state_dict().items()):
        torch.testing.assert_close(pl.cpu(), pe, rtol=rtol, atol=atol,
                                   msg=lambda m: f"{name}: {m}")





@not_interpreted
@differential
@pytest.mark.slow
@pytest.mark.parametrize("px", [32, 64, 96, 128])
def test_resnet_style_cnn_matches_eager(px):
    """32 px brings the last stage down to 1x1, 96 px to 3x3: odd sizes through stride 2."""
    torch.manual_seed(0)
    batch = 8 if px <= 64 else 4  # keeps the eager side of 128 px quick on 2 cores
    _assert_matches(_train_both(ResNetStyleCNN().double(), _batches(batch, px, 3, seed=px)))
    assert not aten_fallbacks()


@not_interpreted
@differential
@pytest.mark.slow
def test_resnet_style_cnn_in_float32_trains_like_eager():
    """In float32 the losses agree to rounding (first step) and stay close."""
    torch.manual_seed(0)
    (eager, _), (lazy, _) = _train_both(ResNetStyleCNN(),
                                        _batches(8, 32, 3, seed=5, dtype=torch.float32))
    assert lazy[0] == pytest.approx(eager[0], rel=1e-5)
    assert lazy == pytest.approx(eager, rel=2e-2)
    assert not aten_fallbacks()


@not_interpreted
@differential
@pytest.mark.slow
def test_resnet_style_cnn_batch_size_change_matches_eager():
    """A smaller last batch at an odd size: a new graph whose sizes are all re-derived."""
    torch.manual_seed(1)
    batches = _batches(8, 40, 2, seed=1) + _batches(3, 40, 1, seed=2)
    _assert_matches(_train_both(ResNetStyleCNN(widths=(8, 16, 16, 32)).double(), batches))


_SMALL_GRAPH = textwrap.dedent("""
    import torch, lazytriton
    from lazytriton.testing.resnet import BasicBlock
    lazytriton.init("cpp", cache_dir={cache!r})
    torch.manual_seed(0)
    block = BasicBlock(3, 8, stride=2)
    x = torch.randn(2, 3, 13, 11)
    expected = block(x).sum(dim=(0, 2, 3))
    lazy = block.to("lazy")
    got = lazy(x.to("lazy")).sum(dim=(0, 2, 3)).cpu()
    torch.testing.assert_close(got, expected.detach(), rtol=1e-4, atol=1e-4)
    print("ok", lazytriton.metrics.counter_value("KernelCompile"))
""")


def _run_small_graph(tmp_path, env: dict) -> subprocess.CompletedProcess:
    script = _SMALL_GRAPH.format(cache=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)


@needs_cpp
def test_bounds_checked_mode_reports_the_kernel_buffer_and_index(tmp_path, monkeypatch):
    """A kernel indexing past its buffer raises BoundsError naming all three, instead of
    reading foreign memory; the process stays usable."""
    from lazytriton.codegen import common
    monkeypatch.setenv("LAZYTRITON_CHECK", "bounds")
    lazytriton.init("cpp", cache_dir=tmp_path)
    real = common.ExprPrinter._print_Symbol
    # a deliberately wrong index: every loop variable x0 reads one element further
    monkeypatch.setattr(common.ExprPrinter, "_print_Symbol",
                        lambda self, e: f"({real(self, e)} + 1)" if e.name == "x0"
                        else real(self, e))
    x = torch.randn(5, 7)
    with pytest.raises(lazytriton.LazyExecutionError, match=r"bounds check: kernel kernel\d+ "
                       r"\(.*kernels\.cpp\) accessed buffer \w+ \(parameter p\d+\) at index "
                       r"\d+, outside its extent \[0, 35\)"):
        (x.to("lazy").exp() * 2).sum(dim=1).cpu()
    monkeypatch.undo()
    lazytriton.init("cpp", cache_dir=tmp_path)
    torch.testing.assert_close((x.to("lazy") * 2).cpu(), x * 2)


@pytest.mark.slow
@needs_cpp
def test_resnet_style_cnn_is_clean_under_the_bounds_checked_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYTRITON_CHECK", "bounds")
    lazytriton.init("cpp", cache_dir=tmp_path)
    torch.manual_seed(2)
    _assert_matches(_train_both(ResNetStyleCNN(widths=(8, 16, 16, 32)).double(),
                                _batches(4, 32, 2, seed=3)))


def _asan_runtime() -> str | None:
    try:
        path = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.mark.slow
@needs_cpp
@pytest.mark.skipif(_asan_runtime() is None, reason="g++ has no AddressSanitizer runtime")
def test_address_sanitizer_recipe_runs_a_small_graph_clean(tmp_path):
    """DESIGN.md's recipe: the kernels built with -fsanitize=address, libasan preloaded."""
    run = _run_small_graph(tmp_path, {
        "LAZYTRITON_CXX": "g++ -fsanitize=address -fno-omit-frame-pointer",
        "LD_PRELOAD": _asan_runtime(), "ASAN_OPTIONS": "detect_leaks=0"})
    assert run.returncode == 0 and "ERROR: AddressSanitizer" not in run.stderr, run.stderr
    assert run.stdout.split()[:1] == ["ok"], run.stdout + run.stderr
    libraries = list((tmp_path / "cache").rglob("*.so"))
    assert libraries
    symbols = subprocess.run(["nm", "-D", str(libraries[0])], capture_output=True,
                             text=True).stdout
    assert "__asan_" in symbols  # the sanitizer really was compiled in


@differential
def test_batch_norm_updates_running_stats_in_training():
    """native_batch_norm writes the running stats without its schema saying so: the update
    must be traced, not lost in a decomposition working on a copy."""
    torch.manual_seed(3)
    bn = torch.nn.BatchNorm2d(5, momentum=0.3)
    lazy = copy.deepcopy(bn).to("lazy")
    for _ in range(2):
        x = torch.randn(4, 5, 3, 7) * 3 + 1
        expected = bn(x)
        got = lazy(x.to("lazy"))
        lazytriton.mark_step()
        torch.testing.assert_close(got.cpu(), expected.detach(), rtol=1e-4, atol=1e-5)
    for name, value in bn.state_dict().items():
        torch.testing.assert_close(lazy.state_dict()[name].cpu(), value, msg=name)
    assert not aten_fallbacks()
