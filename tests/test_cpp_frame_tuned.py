"""Execution frames with autotuning on (codegen/cpp_frame.py): a kernel with several variants
is launched from Python through its autotune.TunedKernel between segments; every other kernel
still runs inside a segment. Values always match eager: graphs mixing tuned and untuned
kernels around an extern, a training step (parameters donated, updated in place), changing
batch sizes (symbolic sizes, a growing arena) and the error flag set by a tuned kernel."""
from __future__ import annotations

import copy

import pytest
import torch

import lazytriton
from lazytriton import autotune
from lazytriton.codegen.cpp_frame import is_tuned
from lazytriton.runtime import session
from lazytriton.testing.models import MLP

pytestmark = pytest.mark.skipif("cpp" not in lazytriton.available_backends(),
                                reason="needs a C++ compiler")


@pytest.fixture(params=["default", "max"])
def tuned_cpp(request, monkeypatch, cache_dir):
    """The C++ backend with tuning on (conftest turns it off for the other tests)."""
    monkeypatch.setenv("LAZYTRITON_AUTOTUNE", request.param)
    autotune.set_mode(None)
    lazytriton.init("cpp", cache_dir=cache_dir)
    yield request.param
    lazytriton.wait_device_ops()


def _programs():
    return [p for programs in session.current()._compiled.values() for p in programs]


def _wrapper(program) -> str:
    """The program's wrapper.py (the file its call() was compiled from)."""
    with open(program.call.__code__.co_filename, encoding="utf-8") as f:
        return f.read()


def _check_frame(program, mode: str) -> None:
    """Untuned kernels run in segments, tuned ones (and only they) from Python."""
    frame = program.frame
    in_segments = [g for segment in frame.segments for g in segment]
    assert frame.launched and all(is_tuned(g) for g in frame.launched)
    assert not any(is_tuned(g) for g in in_segments)
    if mode == "default":  # max mode gives nearly every kernel variants
        assert in_segments
    calls = [line.split("(")[0].strip() for line in _wrapper(program).splitlines()
             if line.strip().startswith("k_")]
    assert calls == [f"k_{g.name}" for g in frame.launched]


def _mixed(x, w, z):
    big = z.cos() + 1  # a large pointwise kernel: one variant in default mode
    h = torch.softmax(x * 2, -1)  # tuned, written in the arena; read by the extern and...
    cols = h.sum(0)  # ...a column sum: tuned
    y = h @ w  # the extern
    act = (y.tanh() * 3 + big[: y.numel()].view(y.shape)).relu()  # after the extern
    return cols, act, act.sum(0), torch.softmax(act, -1)


def _inputs(rows=512):
    return torch.randn(rows, 300), torch.randn(300, 512) * 0.05, torch.randn(1 << 18)


def _no_tensor_launches(program) -> None:
    """Make the tuned kernels' tensor launchers fail: once chosen, they must not run."""
    def refuse(*args):
        raise AssertionError("a chosen tuned kernel was launched with tensors")
    for g in program.frame.launched:
        program.call.__globals__[f"k_{g.name}"] = refuse


def test_tuned_kernels_run_between_segments_and_match_eager(tuned_cpp):
    for step in range(3):  # the first call tunes; later ones run the winners from the frame
        x, w, z = _inputs()
        got = lazytriton.to_cpu(list(_mixed(x.to("lazy"), w.to("lazy"), z.to("lazy"))))
        for g, e in zip(got, _mixed(x, w, z)):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)
        (program,) = _programs()
        _no_tensor_launches(program)
    _check_frame(program, tuned_cpp)
    # h, in the arena, reaches a tuned kernel as a view when it is timed
    assert any(line.strip().startswith("k_") and "arena_view(arena," in line
               for line in _wrapper(program).splitlines())


def _step(model, opt, x, y):
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def _buffer(t: torch.Tensor) -> torch.Tensor:
    lazytriton.wait_device_ops()
    return t._lt_storage.value.node.data.get()


def test_training_step_matches_eager_and_parameters_stay_in_place(tuned_cpp):
    torch.manual_seed(0)
    eager = MLP((64, 128, 128, 10))
    lazy = copy.deepcopy(eager).to("lazy")
    make = lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9)  # noqa: E731
    opt_e, opt_l = make(eager.parameters()), make(lazy.parameters())
    x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
    pointers = []
    for _ in range(4):
        _step(eager, opt_e, x, y)
        _step(lazy, opt_l, x.to("lazy"), y.to("lazy"))
        lazytriton.mark_step()
        pointers.append([_buffer(p).data_ptr() for p in lazy.parameters()])
    for pe, pl in zip(eager.parameters(), lazy.parameters()):
        torch.testing.assert_close(pl.detach().cpu(), pe.detach(), rtol=1e-4, atol=1e-5)
    assert pointers[1] == pointers[2] == pointers[3]  # donated: updated in place
    steady = max(_programs(), key=lambda p: len(p.frame.launched) + len(p.frame.segments))
    _check_frame(steady, tuned_cpp)


def _rows_then_columns(x, w, v):
    h = torch.softmax(x * w, -1)  # in the arena (the extern reads it), its size symbolic
    return h.sum(0), (h * 2).sum(1), h @ v, h.exp().amax(0)


def test_changing_batch_sizes_use_symbolic_frames_and_a_growing_arena(tuned_cpp):
    w, v = torch.randn(700), torch.randn(700, 8)
    arena = session.current().backend.launcher.arena
    sizes = []
    for rows in (64, 64, 29, 90, 200):  # 29: compiled again with the batch symbolic
        x = torch.randn(rows, 700)
        got = lazytriton.to_cpu(list(_rows_then_columns(x.to("lazy"), w.to("lazy"),
                                                         v.to("lazy"))))
        for g, e in zip(got, _rows_then_columns(x, w, v)):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)
        sizes.append(arena.memory.numel())
    assert sizes[-1] > sizes[2]  # grown for the larger batches
    symbolic = [p for p in _programs() if p.frame.ints and any(
        k.startswith("s") and k[1:].isdigit() for k in p.frame.ints)]
    assert symbolic
    for program in symbolic:
        assert program.frame.launched and all(is_tuned(g) for g in program.frame.launched)


def _gather(w, idx):
    return (w[idx] * 2).sum(1), w[idx].sum(0)


def test_error_flag_set_by_a_tuned_kernel_raises(tuned_cpp):
    w = torch.randn(1000, 64)
    idx = torch.randint(0, 1000, (100,))
    got = lazytriton.to_cpu(list(_gather(w.to("lazy"), idx.to("lazy"))))
    for g, e in zip(got, _gather(w, idx)):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    tuned_with_err = [g for p in _programs() for g in p.frame.launched if g.signature.uses_err]
    assert tuned_with_err
    for program in _programs():
        _no_tensor_launches(program)
    bad = idx.clone()
    bad[7] = 5000  # flagged by the chosen variant, run from the frame
    with pytest.raises(Exception, match="index out of range"):
        lazytriton.to_cpu(list(_gather(w.to("lazy"), bad.to("lazy"))))
