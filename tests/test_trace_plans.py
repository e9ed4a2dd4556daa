"""The trace plan cache (lazytriton/plans.py) must never serve a plan made for another call:
calls of one op that differ in what a plan depends on (dtypes, shapes, views of a storage,
in-place against functional, a Python number against a tensor, a number's type) each get their
own, and every result agrees with eager. A repeated call reuses its plan; a new scalar value is
a new graph input, not a new plan."""
from __future__ import annotations

import warnings

import torch

import lazytriton
from lazytriton import tracing

aten = torch.ops.aten


def _plans_of(op) -> int:
    tracer = tracing._tracers.get(id(op))
    return 0 if tracer is None else len(tracer.plans)


def _no_plans_yet(op, monkeypatch) -> None:
    """Start `op`'s tracer with an empty plan cache for this test: other tests in this process
    may already have traced the same signatures."""
    ones = torch.ones(2).to("lazy")
    _same(ones * ones, torch.ones(2))  # makes the tracer exist
    monkeypatch.setattr(tracing._tracers[id(op)], "plans", {})


def _same(lazy: torch.Tensor, eager: torch.Tensor) -> None:
    assert lazy.dtype == eager.dtype and lazy.shape == eager.shape
    assert lazy.stride() == eager.stride()
    torch.testing.assert_close(lazy.cpu(), eager)


def test_dtypes_and_shapes_of_one_op_each_get_a_plan(monkeypatch):
    cases = [torch.randn(4, 5), torch.randn(4, 5, dtype=torch.float64), torch.randn(3, 7),
             torch.randint(-9, 9, (4, 5)), torch.randn(5, 4)]
    _no_plans_yet(aten.mul.Tensor, monkeypatch)
    before = _plans_of(aten.mul.Tensor)
    for i, a in enumerate(cases):
        b = torch.randn(a.shape).to(a.dtype) if a.is_floating_point() else a + 1
        la, lb = a.to("lazy"), b.to("lazy")
        if i == len(cases) - 1:  # a transposed view: same sizes as the first case
            a, la = a.t(), la.t()
            b, lb = b.t(), lb.t()
        _same(la * lb, a * b)
    assert _plans_of(aten.mul.Tensor) - before == len(cases)


def test_a_number_a_cpu_scalar_tensor_and_a_lazy_tensor_are_told_apart():
    x = torch.randint(-5, 5, (3, 4))
    lx = x.to("lazy")
    for other in (2, 2.5, True, torch.tensor(1.5), torch.tensor(3), torch.randn(3, 4),
                  torch.tensor(0.25, dtype=torch.float64)):
        lazy_other = other.to("lazy") if isinstance(other, torch.Tensor) and other.dim() else other
        _same(lx + lazy_other, x + other)  # int + float numbers promote, int + int does not
        _same(torch.add(lx, lazy_other, alpha=2), torch.add(x, other, alpha=2))


def test_a_new_scalar_value_reuses_the_plan_and_is_used():
    x = torch.randn(6)
    lx = x.to("lazy")
    _same(lx * 0.5, x * 0.5)
    plans = _plans_of(aten.mul.Tensor)
    for k in range(5):
        _same(lx * (k + 0.25), x * (k + 0.25))
        lazytriton.mark_step()
    assert _plans_of(aten.mul.Tensor) == plans


def test_views_of_one_storage_and_whole_tensors_of_the_same_layout():
    base = torch.randn(4, 5)
    whole = torch.randn(5)
    lbase, lwhole = base.to("lazy"), whole.to("lazy")
    # row 0 and a tensor of its own have the same sizes, strides and offset; row 1 differs
    for lazy, eager in ((lbase[0], base[0]), (lwhole, whole), (lbase[1], base[1]),
                        (lbase[:, 2], base[:, 2])):
        lazy.mul_(3.0)
        eager.mul_(3.0)
        _same(lazy.sin(), eager.sin())
    _same(lbase, base)
    _same(lwhole, whole)


def test_in_place_out_and_functional_calls_of_one_op():
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    lx, ly = x.to("lazy"), y.to("lazy")
    out, lout = torch.empty(3, 4), torch.empty(3, 4, device="lazy")
    for _ in range(2):  # the second round runs the plans the first one made
        _same(torch.sub(lx, ly), torch.sub(x, y))
        torch.sub(lx, ly, out=lout)
        torch.sub(x, y, out=out)
        _same(lout, out)
        lx.sub_(ly)
        x.sub_(y)
        _same(lx, x)
        _same(ly, y)


def test_a_view_of_a_tensor_written_in_place_reads_the_new_value():
    x = torch.randn(4, 4)
    lx = x.to("lazy")
    for _ in range(3):  # the same view, read again after each write, must not be a stale value
        view, lview = x.t(), lx.t()
        _same(lview * 2, view * 2)
        x.add_(1.0)
        lx.add_(1.0)
        _same(lview * 2, view * 2)
        lazytriton.mark_step()


def test_random_ops_draw_a_new_seed_every_call():
    x = torch.ones(1000, device="lazy")
    first = torch.nn.functional.dropout(x, 0.5)
    second = torch.nn.functional.dropout(x, 0.5)
    assert not torch.equal(first.cpu(), second.cpu())


def test_in_place_writes_into_views_other_dtypes_and_resized_outputs():
    """The one-tensor in-place plan (write the new value, return the argument) against the ops
    it must leave to the general write-back: a cast to the written tensor's dtype, an out=
    tensor that has to be resized."""
    x, y = torch.randn(4, 6), torch.randn(4, 6)
    half = torch.randn(4, 6).to(torch.float16)
    lx, ly, lhalf = x.to("lazy"), y.to("lazy"), half.to("lazy")
    for _ in range(2):  # the second round runs the plans the first one made
        lx[1:3].mul_(ly[1:3])  # a view of part of the storage: a scatter into it
        x[1:3].mul_(y[1:3])
        _same(lx, x)
        assert lhalf.add_(ly) is lhalf  # float16 += float32: the sum is cast back
        half.add_(y)
        _same(lhalf, half)
        out, lout = torch.empty(2), torch.empty(2, device="lazy")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "An output with one or more elements was resized"
            torch.add(x, y, out=out)
            torch.add(lx, ly, out=lout)
        _same(lout, out)
        lazytriton.mark_step()


def test_node_outputs_are_the_same_values_while_held_and_revived_after():
    from lazytriton import ir
    x = torch.randn(3, 4).to("lazy")
    value = x._lt_storage.value
    meta = value.meta
    one = ir.Node(aten.neg.default, (value,), (("self", ir.InputRef(0)),), (meta,))
    first = one.outputs
    assert one.outputs == first and one.outputs[0] is first[0]
    del first
    revived = one.outputs[0]  # nobody held it: made again, then kept by the node
    assert revived.node is one and revived.index == 0 and revived.meta is meta
    assert one.outputs[0] is revived
    two = ir.Node(aten.var_mean.correction, (value,), (("self", ir.InputRef(0)),), (meta, meta))
    a, b = two.outputs
    del a
    again = two.outputs
    assert again[1] is b and again[0].index == 0 and two.outputs[0] is again[0]


def test_foreach_in_place_writes_each_element_through_its_views(monkeypatch):
    """A foreach op writing lists (optimizers' updates) runs one plan for every call: whole
    tensors, a transposed view and a row of a bigger tensor each get their new value, a tensor
    aliasing an element sees it, and a float64 element keeps its dtype."""
    ones = [torch.ones(2).to("lazy")]
    torch._foreach_addcmul_(ones, ones, ones)  # makes the tracer exist
    monkeypatch.setattr(tracing._tracers[id(aten._foreach_addcmul_.Scalar)], "plans", {})
    big = torch.randn(6, 5)
    targets = [torch.randn(4, 3), torch.randn(5, 4).t(), big[2],
               torch.randn(7, dtype=torch.float64)]
    t1 = [torch.randn(t.shape, dtype=t.dtype) for t in targets]
    t2 = [torch.randn(t.shape, dtype=t.dtype) for t in targets]
    lazy_big = big.to("lazy")
    lazy_targets = [targets[0].to("lazy"), targets[1].t().contiguous().to("lazy").t(),
                    lazy_big[2], targets[3].to("lazy")]
    alias = lazy_targets[0].view(12)
    for step in range(3):
        value = 0.5 + step
        torch._foreach_addcmul_(targets, t1, t2, value=value)
        torch._foreach_addcmul_(lazy_targets, [t.to("lazy") for t in t1],
                                [t.to("lazy") for t in t2], value=value)
        lazytriton.mark_step()
        for lazy, eager in zip(lazy_targets, targets):
            _same(lazy, eager)
        _same(lazy_big, big)
        _same(alias, targets[0].reshape(12))
    assert _plans_of(aten._foreach_addcmul_.Scalar) == 1


def _overlapping_foreach_calls(device: str) -> list[torch.Tensor]:
    """Foreach calls whose elements read or write what another element writes, as eager runs
    them element by element; then one without overlap of the same layouts (the same plan)."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device)
    base, x, y, p, q = rand(6), rand(3), rand(3), rand(5), rand(5)
    torch._foreach_add_([base, base[1:4]], [rand(6), rand(3)], alpha=2)  # a view of an element
    torch._foreach_add_([x, y], [y, x])  # each reads the other: x first, then y sees the new x
    torch._foreach_mul_([p, q, p[:2]], [1.5, -2.0, 3.0])  # a scalar per element
    torch._foreach_addcmul_([q, p], [p, q], [q, q], value=0.5)
    torch._foreach_lerp_([x, y], [y, y], 0.25)
    u, v = rand(3), rand(3)
    torch._foreach_add_([u, v], [rand(3), rand(3)])  # no overlap: the plan of the second call
    return [base, x, y, p, q, u, v]


def test_foreach_lists_that_overlap_follow_eager_element_order():
    for lazy, eager in zip(_overlapping_foreach_calls("lazy"), _overlapping_foreach_calls("cpu")):
        torch.testing.assert_close(lazy.cpu(), eager)
