"""Reductions over a kernel's outer loop on the C++ backend (the scheduler's across members): a
sum over the rows a kernel has just read (a layer norm's weight and bias gradients, a bias
gradient beside its activation's backward) joins that kernel, each thread accumulating
partials of every output, combined in thread order after the loop. Each case is checked
against eager on random data, and where it should fuse, that it did; where it must not (the
partials would be too many, the reads strided, a member needs the finished result, or the
backend is Triton), that it did not."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import lazytriton
from lazytriton.graph import build_graph
from lazytriton.lowering import Lowering
from lazytriton.runtime.kernel_backend import lowering_extern_reads
from lazytriton.scheduler import Kernel, schedule
from lazytriton.tensor import value_of


@pytest.fixture
def run_cpp(tmp_path):
    """run_cpp(fn, *inputs): fn's outputs (a tensor or a tuple) on the lazy C++ device, checked
    against eager; returns the graph's kernel index (kernels.json) entries."""
    count = [0]

    def run(fn, *inputs, rtol=1.3e-6, atol=1e-5):
        count[0] += 1
        cache_dir = tmp_path / f"cache{count[0]}"
        lazytriton.init("cpp", cache_dir=cache_dir)
        got = fn(*[t.to("lazy") for t in inputs])
        lazytriton.mark_step()  # one graph of all the outputs
        want = fn(*inputs)
        got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
        for g, w in zip(got, want):
            torch.testing.assert_close(g.cpu(), w, rtol=rtol, atol=atol, equal_nan=True)
        return [k for p in sorted((cache_dir / "graphs").glob("*/kernels.json"))
                for k in json.loads(p.read_text())]
    return run


def _across(kernels: list[dict]) -> list[dict]:
    """The kernels holding an across member (and at least one other member)."""
    return [k for k in kernels if any(m["over_outer_loop"] for m in k["members"])]


def _ln_backward(g, x, mean, rstd, w, b):
    return torch.ops.aten.native_layer_norm_backward(g, x, [x.shape[-1]], mean, rstd, w, b,
                                                     [True, True, True])


@pytest.mark.parametrize("rows,cols", [(300, 96), (37, 50), (8, 2048), (3, 5)])
def test_layer_norm_backward_is_one_kernel(run_cpp, rows, cols):
    x, g = torch.randn(rows, cols), torch.randn(rows, cols)
    mean, rstd = torch.randn(rows, 1) * 0.1, torch.rand(rows, 1) + 0.5
    w, b = torch.randn(cols), torch.randn(cols)
    kernels = run_cpp(_ln_backward, g, x, mean, rstd, w, b, rtol=1e-5, atol=1e-4)
    assert len(kernels) == 1  # input, weight and bias gradients: one pass over the rows
    members = kernels[0]["members"]
    assert [m["over_outer_loop"] for m in members].count(True) == 2


def test_layer_norm_module_gradients(run_cpp):
    def step(x, w, b):
        w, b = w.clone().requires_grad_(), b.clone().requires_grad_()
        x = x.clone().requires_grad_()
        out = F.layer_norm(x, x.shape[-1:], w, b)
        (out * out.detach().roll(1, 0)).sum().backward()
        return x.grad, w.grad, b.grad
    x = torch.randn(4, 33, 64) * 3 + 1
    kernels = run_cpp(step, x, torch.randn(64), torch.randn(64), rtol=2e-5, atol=2e-4)
    assert _across(kernels)


def test_bias_gradient_beside_relu_backward(run_cpp):
    def bias_grad(x, g):
        d = torch.ops.aten.threshold_backward(g, torch.relu(x), 0.0)
        return d, d.sum(0)
    kernels = run_cpp(bias_grad, torch.randn(64, 130), torch.randn(64, 130))
    assert _across(kernels)


@pytest.mark.parametrize("reduce", ["amax", "amin", "prod"])
def test_other_reductions_over_the_rows(run_cpp, reduce):
    def fn(x):
        y = torch.tanh(x) * 1.5 if reduce == "prod" else x * 2 + 1
        return y, getattr(torch, reduce)(y, 0)
    x = torch.randn(200, 70)
    if reduce != "prod":
        x[5, 3], x[7, 9] = float("nan"), float("inf")
    kernels = run_cpp(fn, x, rtol=1e-5, atol=1e-6)
    assert _across(kernels)


def test_sum_over_two_outer_dims(run_cpp):
    """A kernel over [batch, seq] rows; the sum over both joins it (collapsed outer loops)."""
    def fn(x):
        y = torch.sigmoid(x) * x
        return y, y.sum((0, 1))
    kernels = run_cpp(fn, torch.randn(6, 40, 48), rtol=1e-5, atol=1e-5)
    assert _across(kernels)


def test_a_row_statistic_in_a_register_is_read(run_cpp):
    def fn(x):
        centered = x - x.mean(1, keepdim=True)
        return centered, (centered * centered).sum(0)
    kernels = run_cpp(fn, torch.randn(90, 77) * 5 + 2, rtol=1e-5, atol=1e-4)
    (kernel,) = _across(kernels)
    assert any(m["in_register"] for m in kernel["members"])


def test_a_reader_of_the_sum_does_not_join(run_cpp):
    """The sum is complete only after the loop: what reads it runs after the kernel."""
    def fn(x):
        y = x * 3
        return y - y.sum(0, keepdim=True)
    kernels = run_cpp(fn, torch.randn(50, 40), rtol=1e-5, atol=1e-4)
    for kernel in _across(kernels):
        across = [m["buffer"] for m in kernel["members"] if m["over_outer_loop"]]
        later = kernel["members"][[m["buffer"] for m in kernel["members"]].index(across[0]):]
        assert all(m["over_outer_loop"] for m in later)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16, torch.int64,
                                   torch.int32])
def test_dtypes(run_cpp, dtype):
    def fn(x):
        y = x * 2 - 1
        return y, y.sum(0)
    x = torch.randint(-50, 50, (64, 24)).to(dtype) if not dtype.is_floating_point else \
        torch.randn(64, 24).to(dtype)
    tol = {"rtol": 1e-2, "atol": 1e-1} if dtype in (torch.bfloat16, torch.float16) else {}
    kernels = run_cpp(fn, x, **tol)
    assert _across(kernels)


def test_a_strided_read_along_the_outputs_stays_apart(run_cpp):
    """Summing a transposed view along the kernel's rows would read with a stride in the
    partials' loop: the sum keeps a kernel of its own (vectorized over its outputs)."""
    def fn(x, y):
        z = x * 2
        return z, (y.t() * 3).sum(0)
    kernels = run_cpp(fn, torch.randn(30, 20), torch.randn(20, 30), rtol=1e-5, atol=1e-5)
    assert not _across(kernels)


def test_too_many_outputs_for_partials_stay_apart(run_cpp):
    def fn(x):
        y = x + 1
        return y, y.sum(0)
    kernels = run_cpp(fn, torch.randn(3, 70000), rtol=1e-5, atol=1e-5)
    assert not _across(kernels)


def test_symbolic_sizes(tmp_path):
    """After a second batch size the graph is compiled with a symbolic batch: the partials
    are still per output (the feature dim stays a number), and every size computes right."""
    lazytriton.init("cpp", cache_dir=tmp_path)
    for rows in (16, 24, 40, 7):
        x, g = torch.randn(rows, 48), torch.randn(rows, 48)
        mean, rstd = torch.randn(rows, 1) * 0.1, torch.rand(rows, 1) + 0.5
        w, b = torch.randn(48), torch.randn(48)
        got = _ln_backward(*[t.to("lazy") for t in (g, x, mean, rstd, w, b)])
        lazytriton.mark_step()
        for got, want in zip(got, _ln_backward(g, x, mean, rstd, w, b)):
            torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-4)
    sources = [p.read_text() for p in (tmp_path / "graphs").glob("*/kernels.cpp")]
    generic = [s for s in sources if "ks0" in s]
    assert generic and all("_mine" in s for s in sources)


def test_parameter_updated_in_place_and_summed(run_cpp):
    """A sum that reads an input whose buffer a member of the same kernel writes (donated,
    in place) still reads the old values."""
    def fn(p, g):
        p = p.clone()
        total = (p * g).sum(0)
        p.add_(g, alpha=-0.1)
        return p, total
    run_cpp(fn, torch.randn(128, 64), torch.randn(128, 64), rtol=1e-5, atol=1e-5)


def _schedule_for(fn, *inputs, outer_reductions: bool) -> list[Kernel]:
    out = fn(*[x.to("lazy") for x in inputs])
    graph = build_graph([value_of(t) for t in out])
    lowering = Lowering(graph)
    steps = schedule(lowering.steps, lowering.outputs(), lowering_extern_reads(lowering),
                     outer_reductions=outer_reductions).steps
    lazytriton.mark_step()
    return [s for s in steps if isinstance(s, Kernel)]


def test_only_a_backend_that_prints_partials_gets_them():
    """Triton's code generator has no partials across programs: there (outer_reductions
    False) the column sums stay a kernel of their own."""
    lazytriton.init("aten")
    inputs = (torch.randn(32, 16), torch.randn(32, 16), torch.randn(32, 1), torch.rand(32, 1) + 1,
              torch.randn(16), torch.randn(16))
    apart = _schedule_for(_ln_backward, *inputs, outer_reductions=False)
    fused = _schedule_for(_ln_backward, *inputs, outer_reductions=True)
    assert len(apart) == 2 and not any(m.across for k in apart for m in k.members)
    assert len(fused) == 1 and sum(m.across for m in fused[0].members) == 2


@pytest.mark.parametrize("reduce", ["amax", "amin", "prod"])
def test_integer_extrema_and_products_over_the_rows(run_cpp, reduce):
    def fn(x):
        y = x * 3 - 7 if reduce != "prod" else x % 3 - 1  # products in -1..1: no overflow
        return y, getattr(torch, reduce)(y, 0)
    kernels = run_cpp(fn, torch.randint(-1000, 1000, (64, 40)))
    assert _across(kernels)


def test_layer_norm_backward_sums_share_one_loop_over_the_row(tmp_path):
    """Its two row sums and the weight and bias gradients' partials read the same row: one
    loop computes them all (a load they share is read once); the input gradient, which needs
    the row sums, is a second loop."""
    lazytriton.init("cpp", cache_dir=tmp_path)
    rows, cols = 50, 96
    inputs = (torch.randn(rows, cols), torch.randn(rows, cols), torch.randn(rows, 1) * 0.1,
              torch.rand(rows, 1) + 0.5, torch.randn(cols), torch.randn(cols))
    got = _ln_backward(*[t.to("lazy") for t in inputs])
    lazytriton.mark_step()
    for g, w in zip(got, _ln_backward(*inputs)):
        torch.testing.assert_close(g.cpu(), w, rtol=1e-5, atol=1e-4)
    (source,) = [p.read_text() for p in (tmp_path / "graphs").glob("*/kernels.cpp")]
    kernel = source[source.index('extern "C" void kernel0('):]
    kernel = kernel[:kernel.index("\n}\n")]
    assert "#pragma omp simd reduction(+:acc0) reduction(+:acc1)" in kernel
    row_loops = [line for line in kernel.splitlines()
                 if "for (int64_t r" in line and "< 96" in line]
    assert len(row_loops) == 2 + 2, row_loops  # the shared loop, dx's, two partials stores


def test_a_row_sum_reading_another_keeps_its_own_loop(run_cpp):
    """The variance's sum reads the mean's: it needs the finished mean, so a loop of its own."""
    def fn(x):
        centered = x - x.mean(1, keepdim=True)
        return (centered * centered).sum(1), x.sum(1)
    run_cpp(fn, torch.randn(40, 300) * 3 + 5, rtol=1e-5, atol=1e-3)
