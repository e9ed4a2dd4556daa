"""Long pointwise chains: computations inline into their readers by recursion, so without a
bound a chain of a few hundred ops overflowed Python's stack (the graph fell back to the
reference executor) and a value read twice at each step of a chain doubled the lowering's work
per step (20 steps took minutes). Lowering stores a computation whose readers would inline
more than `MAX_INLINED_OPS` ops; these check the values and that nothing fell back."""
from __future__ import annotations

import pytest
import torch

import lazytriton
from lazytriton import metrics
from lazytriton.graph import build_graph
from lazytriton.loopir import ComputedBuffer, Pointwise, View
from lazytriton.lowering import MAX_INLINED_OPS, Lowering
from lazytriton.tensor import value_of

pytestmark = pytest.mark.differential  # runs once per backend (conftest.py)


def _long_chain(x: torch.Tensor, steps: int) -> torch.Tensor:
    for k in range(steps):  # two ops a step, each reading the previous one once
        x = x * (1.0 + 1e-3 * (k % 7)) - 0.01
    return x


def _reused_chain(x: torch.Tensor, steps: int) -> torch.Tensor:
    for _ in range(steps):  # each step reads the previous value twice
        x = torch.sin(x) * 0.5 + x * 0.5
    return x


def _run_lazy(fn, x: torch.Tensor, steps: int) -> torch.Tensor:
    out = fn(x.to("lazy"), steps)
    lazytriton.mark_step()
    return out.cpu()


@pytest.mark.parametrize("shape", [(7,), (5, 33)])
def test_a_chain_of_a_thousand_ops_compiles_and_matches_eager(shape):
    x = torch.randn(shape)
    got = _run_lazy(_long_chain, x, 500)
    torch.testing.assert_close(got, _long_chain(x, 500), rtol=1e-4, atol=1e-4)
    assert not metrics.counter_value("FallbackGraph")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_value_read_twice_at_every_step_compiles_and_matches_eager(dtype):
    x = torch.randn(4, 9, dtype=dtype)
    got = _run_lazy(_reused_chain, x, 40)  # 2**40 evaluations if inlined all the way
    torch.testing.assert_close(got, _reused_chain(x, 40))
    assert not metrics.counter_value("FallbackGraph")


def test_no_computation_left_inline_exceeds_the_bound():
    out = _reused_chain(_long_chain(torch.randn(3, 5).to("lazy"), 200), 30)
    lowering = Lowering(build_graph([value_of(out)]))
    lowering.outputs()
    lazytriton.mark_step()
    stored = [s for s in lowering.steps if isinstance(s, ComputedBuffer)]
    inline = [box for box in lowering.env.values()
              if isinstance(box, (Pointwise, View)) and id(box) not in lowering._realized]
    assert len(stored) > 2  # the chain was cut, more than once
    assert inline and all(lowering._inlined_ops[id(box)] <= MAX_INLINED_OPS for box in inline)


def test_a_short_chain_still_inlines_into_one_stored_buffer():
    x = torch.randn(6, 4).to("lazy")
    out = _long_chain(x, 20)
    lowering = Lowering(build_graph([value_of(out)]))
    lowering.outputs()
    lazytriton.mark_step()
    assert len([s for s in lowering.steps if isinstance(s, ComputedBuffer)]) == 1


def test_a_tuned_kernel_of_more_arguments_than_ctypes_passes_runs_from_its_frame(tmp_path,
                                                                                  test_backend):
    """600 steps: 1200 graph scalars in one kernel, more arguments than a ctypes function
    takes (1024). Tuned, its variants are launched from Python with tensors; such a kernel
    runs its heuristic variant from the frame's argument arrays instead of falling back."""
    if test_backend != "cpp":
        pytest.skip("ctypes launches kernels on the C++ backend only")
    lazytriton.init("cpp", cache_dir=tmp_path, autotune="default")
    x = torch.randn(64, 33)  # (with 5 rows the kernel had a single variant: nothing tuned)
    got = _run_lazy(_long_chain, x, 600)
    torch.testing.assert_close(got, _long_chain(x, 600), rtol=1e-4, atol=1e-4)
    assert not metrics.counter_value("FallbackGraph")
