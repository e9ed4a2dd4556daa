"""The scheduler's fusion decisions, on loop IR, for no code generator in particular: which
computations share a kernel, which reductions stay in registers, where externs and scatters cut.
(Values are every backend's business: the differential tests.)"""
from __future__ import annotations

import torch

import lazytriton
from lazytriton.graph import build_graph
from lazytriton.loopir import ExternKernel, Scatter
from lazytriton.lowering import Lowering
from lazytriton.runtime.kernel_backend import lowering_extern_reads
from lazytriton import scheduler
from lazytriton.scheduler import Kernel, schedule
from lazytriton.testing.models import pointwise_chain
from lazytriton.tensor import value_of


def _schedule(fn, *inputs: torch.Tensor) -> list:
    """The steps (Kernel or ExternKernel) the scheduler makes of `fn` traced on lazy copies."""
    out = fn(*[x.to("lazy") for x in inputs])
    outs = out if isinstance(out, (list, tuple)) else [out]
    graph = build_graph([value_of(t) for t in outs])
    lowering = Lowering(graph)
    steps = schedule(lowering.steps, lowering.outputs(), lowering_extern_reads(lowering)).steps
    lazytriton.mark_step()  # leave nothing pending for the next test
    return steps


def _kernels(steps: list) -> list[Kernel]:
    return [s for s in steps if isinstance(s, Kernel)]


def test_softmax_is_one_kernel_with_its_reductions_in_registers():
    (kernel,) = _kernels(_schedule(lambda x: torch.softmax(x, -1), torch.randn(6, 33)))
    kinds = [(m.is_reduction, m.local) for m in kernel.members]
    assert kinds == [(True, True), (True, True), (False, False)]  # max, sum of exp, output


def test_a_pointwise_chain_inlines_into_one_loop():
    (kernel,) = _kernels(_schedule(pointwise_chain, torch.randn(5, 40)))
    assert len(kernel.members) == 1 and not kernel.members[0].is_reduction
    assert {"sin.default", "exp.default", "tanh.default"} <= set(kernel.origins)


def test_normalizing_by_a_row_statistic_stays_in_the_row_kernel():
    steps = _schedule(lambda x: (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True),
                      torch.randn(7, 20))
    (kernel,) = _kernels(steps)
    assert kernel.members[-1].is_reduction is False
    assert all(m.local for m in kernel.members if m.is_reduction)


def test_reductions_over_different_axes_get_different_kernels():
    kernels = _kernels(_schedule(lambda x: (x.sum(0), x.sum(1)), torch.randn(9, 13)))
    assert len(kernels) == 2


def test_an_extern_cuts_between_its_producer_and_its_consumer():
    steps = _schedule(lambda x, w: torch.relu(torch.tanh(x) @ w), torch.randn(4, 8),
                      torch.randn(8, 3))
    kinds = ["extern" if isinstance(s, ExternKernel) else "kernel" for s in steps]
    assert kinds == ["kernel", "extern", "kernel"]


def test_a_scatter_is_one_kernel_with_its_base_and_source_inlined():
    index = torch.tensor([0, 2, 2, 1, 0])
    steps = _schedule(lambda x, src: (x * 2).index_put((index.to("lazy"),), src.exp(),
                                                       accumulate=True),
                      torch.randn(3, 4), torch.randn(5, 4))
    scatter_kernels = [k for k in _kernels(steps)
                       if any(isinstance(m.node, Scatter) for m in k.members)]
    assert len(scatter_kernels) == 1 and len(scatter_kernels[0].members) == 1



def _member_sizes(kernel: Kernel) -> list[tuple]:
    return [tuple(int(s) for s in m.node.sizes) for m in kernel.members]


def test_foreach_updates_of_one_parameter_sit_together():
    """A foreach step traces parameter after parameter: w's and b's updates arrive
    interleaved, and w's are moved next to each other so that they can share one loop."""
    def step(w, b):
        w1, b1 = torch._foreach_mul([w, b], 0.9)
        w2, b2 = torch._foreach_add([w1, b1], [w, b])
        return w1, b1, w2, b2
    kernels = _kernels(_schedule(step, torch.randn(64, 300), torch.randn(64)))
    (kernel,) = [k for k in kernels if len(k.members) == 4]
    assert _member_sizes(kernel) == [(64, 300), (64, 300), (64,), (64,)]


def _reads_across(kernels: list[Kernel]) -> list[tuple[int, int]]:
    """(reader's kernel, producer's kernel) for each member reading another kernel's member."""
    kernel_of = {id(m.buffer): k for k, kernel in enumerate(kernels) for m in kernel.members}
    return [(k, kernel_of[id(buf)]) for k, kernel in enumerate(kernels) for m in kernel.members
            for buf, _ in scheduler._all_reads(m.buffer)
            if id(buf) in kernel_of and kernel_of[id(buf)] != k]


def test_a_kernel_of_too_many_members_splits_keeping_each_parameters_update_whole(monkeypatch):
    """Seven same-sized parameters' updates would share one kernel: with room for 6 members
    (two parameters of three members each) they take four kernels, each parameter's update in
    one of them, so its intermediates stay in registers."""
    monkeypatch.setattr(scheduler, "MAX_MEMBERS", 6)

    def step(*params):
        scaled = torch._foreach_mul(params, 0.9)
        shifted = torch._foreach_add(scaled, 1.0)
        return list(scaled) + list(shifted) + list(torch._foreach_mul(shifted, params))
    kernels = _kernels(_schedule(step, *[torch.randn(40, 30) for _ in range(7)]))
    assert sorted(len(k.members) for k in kernels) == [3, 6, 6, 6]
    assert [k.name for k in kernels] == [f"kernel{i}" for i in range(4)]
    assert _reads_across(kernels) == []


def test_a_chain_longer_than_a_kernel_holds_is_cut_in_order(monkeypatch):
    monkeypatch.setattr(scheduler, "MAX_MEMBERS", 2)

    def chain(x):
        a = x * 2
        b = a + 1
        c = b * a
        return a, b, c
    kernels = _kernels(_schedule(chain, torch.randn(17, 5)))
    assert [len(k.members) for k in kernels] == [2, 1]
    assert set(_reads_across(kernels)) == {(1, 0)}  # the second reads the first: runs after it


def test_a_member_never_moves_ahead_of_what_it_reads():
    def step(w, b):
        a = w * 2
        c = b * 3 + 1
        d = a + c[:, :1] * 3  # over w's sizes, reading c: it must stay after c
        return a, c, d
    kernels = _kernels(_schedule(step, torch.randn(64, 300), torch.randn(64, 10)))
    (kernel,) = [k for k in kernels if len(k.members) == 3]
    assert _member_sizes(kernel) == [(64, 300), (64, 10), (64, 300)]


def test_a_computation_moves_ahead_of_an_extern_it_does_not_need():
    """The bias gradient's sum reads the activation's gradient, not the weight gradient's
    matmul traced before it: it joins the kernel that computes what it sums (Triton's view:
    both are kernels over the same rows), ahead of the extern."""
    def fn(x, g, h):
        d = torch.ops.aten.threshold_backward(g, torch.relu(x), 0.0)
        weight_grad = d.t() @ h
        return weight_grad, d * 2
    steps = _schedule(fn, torch.randn(16, 8), torch.randn(16, 8), torch.randn(16, 4))
    assert isinstance(steps[-1], ExternKernel)  # both computations run before the matmul
    (kernel,) = _kernels(steps)
    assert {"threshold_backward.default", "mul.Tensor"} <= set(kernel.origins)


def test_a_computation_needing_an_externs_result_stays_after_it():
    def fn(x, w):
        y = torch.relu(x)
        return y @ w, (y @ w) * 2 + y.sum()
    steps = _schedule(fn, torch.randn(6, 5), torch.randn(5, 3))
    kinds = [type(s).__name__ for s in steps]
    assert kinds.index("ExternKernel") < max(i for i, k in enumerate(kinds) if k == "Kernel")


def test_an_update_of_an_input_an_extern_reads_stays_after_it():
    """Moved ahead, the update could no longer be written over the input's buffer (the
    matmul still reads the old value): donation.py would refuse it."""
    def fn(x, w, g):
        out = x @ w
        return out, w - 0.1 * g
    steps = _schedule(fn, torch.randn(4, 6), torch.randn(6, 6), torch.randn(6, 6))
    assert isinstance(steps[0], ExternKernel) and isinstance(steps[-1], Kernel)
