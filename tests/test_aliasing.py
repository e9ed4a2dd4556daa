"""Views and in-place ops must behave exactly as in eager: every program here runs twice, on
CPU and on the lazy device, and every tensor it returns must agree."""
from __future__ import annotations

import copy

import pytest
import torch

import lazytriton


def _views_then_writes(x, y):
    v = x[1:, ::2]  # strided slice
    v.add_(y[: v.shape[0], : v.shape[1]])
    x.t()[0].mul_(-1)  # write through a transpose of a row
    return x, v


def _write_base_read_view(x, y):
    v = x.view(-1)[3:9]
    x.mul_(2)  # v must see it
    return v.clone(), x


def _chain_of_views(x, y):
    a = x.unsqueeze(0).transpose(1, 2)  # [1, n, m]
    b = a[0, 1:3]
    b.fill_(7.5)
    c = x.select(1, 0)
    c.copy_(y[: c.shape[0], 0])
    return x, a, b, c


def _copy_broadcast_into_slice(x, y):
    x[:, 2].copy_(y[0, :1].expand(x.shape[0]))
    x[0] = 3.0
    x[-1, :] += y[-1, : x.shape[1]]
    return (x,)


def _split_unbind_chunk(x, y):
    parts = x.split(2, dim=0)
    parts[1].zero_()
    first, *_ = x.unbind(1)
    first.sub_(1)
    left, right = x.chunk(2, dim=1)
    right.mul_(y[: right.shape[0], : right.shape[1]])
    return x, left


def _detach_shares_storage(x, y):
    d = x.detach()
    d.add_(1)
    e = x.data
    e.mul_(3)
    strided = x.t()[1:, ::2].detach()  # a view's layout, kept
    strided.sub_(0.5)
    torch.ops.aten.alias.default(x[1]).div_(2)
    return x, strided


def _out_variants(x, y):
    out = torch.empty_like(x)
    torch.add(x, y[: x.shape[0], : x.shape[1]], alpha=2, out=out)
    small = torch.empty(0)
    torch.mul(x, 2, out=small.to(x.device) if x.device.type == "lazy" else small)
    return (out,)


def _in_place_on_expanded_source(x, y):
    row = y[0:1, : x.shape[1]]
    x.add_(row)  # broadcast source
    x.clamp_(min=-0.5, max=0.5)
    return (x,)


def _diagonal_and_as_strided(x, y):
    x.diagonal().add_(10)
    s = x.as_strided((2, 2), (1, 2), 1)
    s.neg_()
    return x, s


def _overlaps_eager_allows(x, y):
    index = torch.tensor([1, 0]).to(x.device)
    x.index_add_(0, index, x[::2][:2])  # strided: eager does not check, and computes this
    x.mul_(x)  # the same view: read and written alike
    torch.add(x[0], x[1], out=x[0])  # out= over its own input
    x[1:3].copy_(x[3:5])  # one storage, disjoint memory
    x.t()[0].sub_(x[:, 1])  # strided (not dense): eager does not check, and computes this
    x.view(-1)[::2].add_(x.view(-1)[1::2])  # interleaved, disjoint
    expanded = x[:1].expand(3, x.shape[1])
    expanded.copy_(expanded)  # a copy onto itself changes nothing, even expanded
    return (x,)


PROGRAMS = [_views_then_writes, _write_base_read_view, _chain_of_views,
            _copy_broadcast_into_slice, _split_unbind_chunk, _detach_shares_storage,
            _out_variants, _in_place_on_expanded_source, _diagonal_and_as_strided,
            _overlaps_eager_allows]


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.__name__.strip("_"))
@pytest.mark.parametrize("shape", [(5, 6), (7, 4)])
def test_program_matches_eager(program, shape):
    x, y = torch.randn(*shape), torch.randn(8, 8)
    expected = program(x.clone(), y.clone())
    got = program(x.clone().to("lazy"), y.clone().to("lazy"))
    lazytriton.mark_step()
    for e, g in zip(expected, got):
        assert g.device.type == "lazy"
        assert g.shape == e.shape and g.stride() == e.stride()
        torch.testing.assert_close(g.cpu(), e)


REFUSED_OVERLAPS = {  # an elementwise op writing memory it also reads through another view
    "shifted_add": lambda x: x[1:].add_(x[:-1]),
    "transposed_add": lambda x: x.t().add_(x),
    "shifted_copy": lambda x: x[1:].copy_(x[:-1]),
    "addcmul_transposed": lambda x: x.addcmul_(x.t(), x, value=0.5),
    "out_overlapping_input": lambda x: torch.mul(x[1:], 2, out=x[:-1]),
    "reinterpreted_dtype": lambda x: x.view(-1)[:4].add_(x.view(torch.int32).view(-1)[2:6]),
    # these refuse any overlap of what they write with their source, the same view included
    "index_add_source": lambda x: x.index_add_(0, _index([1, 0], x), x[1:3]),
    "index_add_itself": lambda x: x.index_add_(0, _index([1, 0, 3, 2], x), x),
    "index_copy_source": lambda x: x.index_copy_(0, _index([1, 0], x), x[1:3]),
    "scatter_src": lambda x: x.scatter_(0, _index([[0] * 4] * 2, x), x[1:3]),
    "scatter_add_itself": lambda x: x.scatter_add_(0, _index([[0] * 4] * 4, x), x),
    "index_put_values": lambda x: x.index_put_((_index([1, 0], x),), x[1:3]),
    "put_source": lambda x: x.put_(_index([0, 1], x), x.view(-1)[1:3]),
    "cat_out": lambda x: torch.cat([x[:2], x[2:]], out=x),
    "gather_out": lambda x: torch.gather(x, 0, _index([[0] * 4] * 4, x), out=x),
}


def _index(values, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values).to(like.device)


@pytest.mark.parametrize("name", list(REFUSED_OVERLAPS))
def test_partial_overlap_raises_as_eager_and_leaves_the_tensor(name):
    program = REFUSED_OVERLAPS[name]
    x = torch.randn(4, 4)
    with pytest.raises(RuntimeError, match="refer to a single memory location") as eager:
        program(x.clone())
    lazy = x.clone().to("lazy")
    with pytest.raises(RuntimeError) as got:
        program(lazy)
    assert str(got.value) == str(eager.value)
    torch.testing.assert_close(lazy.cpu(), x)  # nothing written; the process goes on
    torch.testing.assert_close((lazy * 2).cpu(), x * 2)


@pytest.mark.differential
@pytest.mark.parametrize("fill", ["fill_", "zero_"])
def test_fill_of_an_expanded_tensor_writes_the_memory_it_shares(test_backend, fill):
    """Eager lets fill_ (with a number) and zero_ write a view whose elements share memory:
    one value everywhere."""
    def program(x):
        expanded = [x[:, :1].expand(5, 4), x[2].expand(3, 2, 6)[:, 1], x.t()[1:4, None]]
        for k, view in enumerate(expanded):
            if fill == "fill_":
                view.fill_(1.5 + k)
            else:
                view.zero_()
        return x
    x = torch.randn(5, 6)
    torch.testing.assert_close(program(x.clone().to("lazy")).cpu(), program(x.clone()))


EXPANDED_WRITES = {
    "add_": lambda t: t.add_(1),
    "copy_": lambda t: t.copy_(torch.randn(t.shape).to(t.device)),
    "clamp_": lambda t: t.clamp_(0, 1),
    "exp_": lambda t: t.exp_(),
    "fill_tensor": lambda t: t.fill_(torch.tensor(2.0).to(t.device)),
}


@pytest.mark.parametrize("name", list(EXPANDED_WRITES))
def test_elementwise_write_into_an_expanded_tensor_raises_as_eager(name):
    x = torch.randn(4)
    with pytest.raises(RuntimeError, match="more than one element of the written-to") as eager:
        EXPANDED_WRITES[name](x.clone().expand(3, 4))
    lazy = x.clone().to("lazy")
    with pytest.raises(RuntimeError) as got:  # at the op, as eager, not when executed
        EXPANDED_WRITES[name](lazy.expand(3, 4))
    assert str(got.value) == str(eager.value)
    torch.testing.assert_close(lazy.cpu(), x)  # unchanged, and still readable


def test_unsafe_split_outputs_written_in_place():
    """unsafe_split/unsafe_chunk return views their schemas do not declare; nn.GRU and nn.LSTM
    cells update their gates in place through them. Each output must hold its own values."""
    def program(x, y):
        a, b, c = torch.unsafe_split(x * 1, 4, dim=1)
        b.add_(y).sigmoid_()
        d, e = (x + 1).unsafe_chunk(2, dim=0)
        e.mul_(2)
        return a * 1, b * 1, c * 1, d * 1, e * 1
    x, y = torch.randn(4, 12), torch.randn(4, 4)
    expected = program(x, y)
    got = program(x.to("lazy"), y.to("lazy"))
    for e, g in zip(expected, got):
        torch.testing.assert_close(g.cpu(), e)


def test_batch_norm_running_statistics_update_is_traced():
    """native_batch_norm writes the running statistics without its schema saying so: the write
    must be in the trace (read before any mark_step), not a side effect of running the graph."""
    eager = torch.nn.BatchNorm2d(3)
    lazy = copy.deepcopy(eager).to("lazy")
    x = torch.randn(4, 3, 5, 5)
    eager(x), lazy(x.to("lazy"))
    torch.testing.assert_close(lazy.running_mean.cpu(), eager.running_mean)
    torch.testing.assert_close(lazy.running_var.cpu(), eager.running_var)
    assert int(lazy.num_batches_tracked.cpu()) == 1


def test_transpose_in_place_restrides_without_a_copy():
    """transpose_'s out-of-place twin is transpose.int (another overload name): it restrides
    like t_ and unsqueeze_ (nn.GRU's batch_first output goes through it)."""
    x = torch.randn(3, 4, 2)
    lazy = x.to("lazy")
    x.transpose_(0, 1)
    lazy.transpose_(0, 1)
    assert lazy.shape == x.shape and lazy.stride() == x.stride()
    assert "clone_and_call" not in lazytriton.debug.dump_ir([lazy * 1])
    torch.testing.assert_close(lazy.cpu(), x)


def test_view_written_after_mark_step_still_aliases():
    x = torch.randn(4, 4).to("lazy")
    row = x[2]
    lazytriton.mark_step()
    row.fill_(1.0)
    lazytriton.mark_step()
    torch.testing.assert_close(x.cpu()[2], torch.ones(4))
    x.mul_(2)
    torch.testing.assert_close(row.cpu(), torch.full((4,), 2.0))


def test_set_and_data_assignment_alias_storages():
    a = torch.randn(3).to("lazy")
    b = torch.randn(5).to("lazy")
    a.set_(b)
    assert a.shape == (5,)
    b.add_(1)
    torch.testing.assert_close(a.cpu(), b.cpu())
    p = torch.nn.Parameter(torch.randn(2, 2).to("lazy"))
    new = torch.randn(3).to("lazy")
    p.data = new
    assert p.shape == (3,) and p.requires_grad
    new.mul_(0.5)
    torch.testing.assert_close(p.detach().cpu(), new.cpu())


def test_detach_in_place_keeps_values_and_drops_grad():
    w = torch.randn(3, requires_grad=True)
    x = (w.to("lazy") * 2)
    x.detach_()
    assert not x.requires_grad
    torch.testing.assert_close(x.cpu(), w.detach() * 2)


def test_optimizer_updates_parameters_in_place():
    model = torch.nn.Linear(3, 2).to("lazy")
    weight_object = model.weight
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = model.weight.detach().cpu()
    model(torch.randn(4, 3).to("lazy")).sum().backward()
    grad = model.weight.grad.cpu()
    opt.step()
    lazytriton.mark_step()
    assert model.weight is weight_object
    torch.testing.assert_close(model.weight.detach().cpu(), before - 0.5 * grad)


def test_transposed_result_layout_matches_eager():
    x = torch.randn(3, 5)
    lazy = x.to("lazy").t() * 2  # eager keeps the transposed layout
    assert lazy.stride() == (x.t() * 2).stride()
    assert not lazy.is_contiguous()
    torch.testing.assert_close(lazy.view(-1) if lazy.is_contiguous() else lazy.reshape(-1).cpu(),
                               (x.t() * 2).reshape(-1))
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        lazy.view(-1)
