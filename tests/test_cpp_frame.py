"""The C++ backend's execution frame (codegen/cpp_frame.py): kernels between extern calls run
from one generated C function, intermediates live at planned offsets in an arena, reused
after their last reader, kept across calls and shared by the programs. Values always match
eager."""
from __future__ import annotations

import pytest
import torch

import lazytriton
from lazytriton.runtime import session


@pytest.fixture(autouse=True)
def cpp_device(cache_dir):
    lazytriton.init("cpp", cache_dir=cache_dir)
    yield
    lazytriton.wait_device_ops()


def _programs():
    return [p for programs in session.current()._compiled.values() for p in programs]


def _two_layers(x, w):
    h1 = (x * 2).tanh()  # an intermediate only the first matmul reads
    h2 = (h1 @ w * 3).tanh()  # same size, made after h1's last reader: may take h1's block
    return (h2 @ w).sum(1)


def test_dead_intermediate_blocks_are_reused_and_values_match_eager(cache_dir):
    x, w = torch.randn(48, 32), torch.randn(32, 32)
    got = _two_layers(x.to("lazy"), w.to("lazy")).cpu()
    torch.testing.assert_close(got, _two_layers(x, w), rtol=1e-5, atol=1e-5)
    (program,) = _programs()
    offsets = sorted(str(offset) for _, offset in program.frame.arena.values())
    assert len(offsets) == 2 and offsets[0] == offsets[1] == "0"  # h1 and h2 share a block
    wrapper = _wrapper(cache_dir, "tanh")
    assert wrapper.count("torch.empty_strided") == 1  # the output: intermediates are planned
    assert "arena_view(arena, 0," in wrapper  # the matmuls read h1 and h2 in the arena


def _wrapper(cache_dir, op_text: str) -> str:
    folders = [p.parent for p in (cache_dir / "graphs").glob("*/wrapper.py")
               if op_text in (p.parent / "ir.txt").read_text()]
    return (max(folders, key=lambda f: f.stat().st_mtime) / "wrapper.py").read_text()


def test_consecutive_kernels_run_from_one_segment(cache_dir):
    x = torch.randn(30, 17)
    f = lambda t: ((t.exp() + 1).sum(1), t.cos().amax(0), (t * t).mean())  # noqa: E731
    got = lazytriton.to_cpu(list(f(x.to("lazy"))))
    for g, e in zip(got, f(x)):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
    (program,) = _programs()
    assert len(program.frame.segments) == 1 and len(program.frame.segments[0]) >= 2


def test_arena_is_kept_across_calls_and_shared_by_programs():
    w = torch.randn(32, 32).to("lazy")
    results = []
    arena = session.current().backend.launcher.arena
    for step in range(3):
        x = torch.randn(48, 32)
        results.append((_two_layers(x.to("lazy"), w).cpu(), _two_layers(x, w.cpu())))
        if step == 0:
            pointer, size = arena.memory.data_ptr(), arena.memory.numel()
    assert size > 0 and arena.memory.data_ptr() == pointer
    x = torch.randn(8, 32)  # another program (another graph), with smaller intermediates
    results.append(((x.to("lazy").sin() @ w).cos().cpu(), (x.sin() @ w.cpu()).cos()))
    assert len(_programs()) == 2 and arena.memory.data_ptr() == pointer
    for got, expected in results:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_arena_views_are_made_once_and_dropped_when_the_arena_grows():
    arena = session.current().backend.launcher.arena
    w = torch.randn(32, 32)
    lw = w.to("lazy")
    for rows in (8, 8, 256, 8):  # 256 rows: intermediates past the arena's size, it grows
        x = torch.randn(rows, 32)
        torch.testing.assert_close(_two_layers(x.to("lazy"), lw).cpu(), _two_layers(x, w),
                                   rtol=1e-5, atol=1e-5)
        memory = arena.memory
        views = list(arena._views.values())
        assert views and all(v.untyped_storage().data_ptr() == memory.data_ptr() for v in views)
        if rows == 8 and memory.numel() < 256 * 32 * 4:  # before the growth
            before = dict(arena._views)
    # the views of the small program, made again after the growth, view the new memory
    assert arena.memory.numel() >= 256 * 32 * 4
    assert all(arena._views.get(key) is not view for key, view in before.items())
    again = arena.view(arena.memory, 0, torch.float32, (8, 32), (32, 1), 0)
    assert again is arena.view(arena.memory, 0, torch.float32, (8, 32), (32, 1), 0)
