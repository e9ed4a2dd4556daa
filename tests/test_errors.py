"""Bad input gets the error eager would give, at the op that caused it; the process goes on."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

import lazytriton


def test_mixing_lazy_and_cpu_tensors_raises_device_mismatch():
    lazy = torch.randn(3).to("lazy")
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device.*lazy.*cpu"):
        lazy + torch.randn(3)
    with pytest.raises(RuntimeError, match="same device"):
        torch.mm(torch.randn(2, 3).to("lazy"), torch.randn(3, 2))
    # eager allows CPU scalar tensors with any device: so does the lazy device
    torch.testing.assert_close((lazy * torch.tensor(2.0)).cpu(), lazy.cpu() * 2)
    torch.testing.assert_close((lazy + 1).cpu(), lazy.cpu() + 1)  # and the process goes on


def test_shape_error_surfaces_at_the_op():
    a, b = torch.randn(3, 4).to("lazy"), torch.randn(5, 4).to("lazy")
    with pytest.raises(RuntimeError, match=r"broadcast a dimension of length 5.*\[3, 4\]"):
        a + b
    with pytest.raises(RuntimeError, match=r"same reduction dim, but got \[3, 4\] X \[5, 4\]"):
        a @ b
    with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
        a[:1].add_(a)
    torch.testing.assert_close((a @ b.t()).cpu(), a.cpu() @ b.cpu().t())


INDEXED_WRITES = {  # eager's kernels reject these; the meta kernels do not (shape_checks.py)
    "index_put value to broadcast": (
        lambda y, i: y.index_put((i, i), torch.arange(1., 5., device=y.device)),
        "value tensor of shape \\[4\\] cannot be broadcast to indexing result of shape \\[2, 6\\]"),
    "index_put too many rows": (
        lambda y, i: y.index_put((i,), torch.ones(3, 5, 6, device=y.device), accumulate=True),
        "value tensor of shape \\[3, 5, 6\\] cannot be broadcast"),
    "setitem": (lambda y, i: y.__setitem__(i, torch.ones(4, device=y.device)), "shape mismatch"),
    "index_add source shape": (
        lambda y, i: y.index_add(1, i, torch.ones(3, 2, 6, device=y.device)),
        "source tensor shape must match self tensor shape"),
    "index_add index count": (
        lambda y, i: y.index_add_(0, i, torch.ones(3, 5, 6, device=y.device)),
        "Number of indices \\(2\\) should be equal to source.size\\(dim\\): \\(3\\), for dim: 0"),
}


@pytest.mark.parametrize("name", INDEXED_WRITES)
def test_indexed_writes_check_shapes_as_eager(name):
    """Found by a stress run: the generated kernel read past the end of the value (garbage in
    the result) where eager raises."""
    write, message = INDEXED_WRITES[name]
    y, i = torch.randn(4, 5, 6), torch.tensor([0, 3])
    with pytest.raises(RuntimeError, match=message):
        write(y.clone(), i)  # eager's words, which the lazy device must give too
    lazy = y.to("lazy")
    with pytest.raises(RuntimeError, match=message):
        write(lazy, i.to("lazy"))
    good = lazy.index_put((i.to("lazy"),), torch.ones(5, 6, device="lazy"))  # and it goes on
    torch.testing.assert_close(good.cpu(), y.index_put((i,), torch.ones(5, 6)))


def test_index_select_of_a_matrix_index_raises_as_eager():
    """Found by a stress run: an internal assertion about traced sizes, not eager's error."""
    x = torch.randn(5, 6)
    with pytest.raises(IndexError, match="Index is supposed to be a vector"):
        x.index_select(0, torch.tensor([[0, 1]]))
    with pytest.raises(IndexError, match="Index is supposed to be a vector"):
        x.to("lazy").index_select(0, torch.tensor([[0, 1]]).to("lazy"))
    got = x.to("lazy").index_select(0, torch.tensor([0, 1]).to("lazy")).cpu()
    torch.testing.assert_close(got, x[:2])


REFUSED_DTYPES = {  # eager's kernels refuse these dtypes; the meta kernels do not
    "argmax of bool": (lambda d: torch.tensor([False, True], device=d).argmax(),
                       RuntimeError, "does not support bool input"),
    "softmax of int": (lambda d: torch.tensor([1, 2, 3], device=d).softmax(0),
                       NotImplementedError, "not implemented for 'Long'"),
    "std of int": (lambda d: torch.tensor([1, 2, 3], dtype=torch.int32, device=d).std(),
                   RuntimeError, "std and var only support floating point"),
    "uniform_ of int": (lambda d: torch.zeros(3, dtype=torch.int64, device=d).uniform_(),
                        NotImplementedError, "check_uniform_bounds"),
    "int32 target": (lambda d: torch.nn.functional.cross_entropy(
        torch.randn(2, 3, device=d), torch.tensor([0, 2], dtype=torch.int32, device=d)),
        RuntimeError, "expected target dtype to be Long or Byte, but got Int"),
    "int.mul_(float)": (lambda d: torch.tensor([1, 2], device=d).mul_(
        torch.tensor([0.5, 1.5], device=d)), RuntimeError,
        "result type Float can't be cast to the desired output type Long"),
    "int.mul_(number)": (lambda d: torch.tensor([1, 2], device=d).mul_(1.5), RuntimeError,
                         "result type Float can't be cast to the desired output type Long"),
    "bool.mul_(int)": (lambda d: torch.tensor([True], device=d).mul_(torch.tensor([2], device=d)),
                       RuntimeError, "result type Long can't be cast to the desired output type Bool"),
    "int.addcmul_(float)": (lambda d: torch.tensor([1, 2], device=d).addcmul_(
        torch.tensor([0.5, 1.5], device=d), torch.tensor([2., 3.], device=d), value=2),
        RuntimeError, "result type Float can't be cast to the desired output type Long"),
    "int.addcdiv_(float)": (lambda d: torch.tensor([1, 2], device=d).addcdiv_(
        torch.tensor([0.5, 1.5], device=d), torch.tensor([2., 3.], device=d)),
        RuntimeError, "result type Float can't be cast to the desired output type Long"),
    "max of nothing": (lambda d: torch.randn(0, 3, device=d).max(), RuntimeError,
                       r"max\(\): Expected reduction dim to be specified"),
    "min over an empty dim": (lambda d: torch.randn(2, 0, device=d).min(1), IndexError,
                              r"min\(\): Expected reduction dim 1 to have non-zero size"),
    "2-d loss target of other size": (lambda d: torch.nn.functional.cross_entropy(
        torch.randn(2, 3, 7, 4, device=d), torch.zeros(2, 5, 4, dtype=torch.int64, device=d)),
        RuntimeError, r"size mismatch \(got input: \[2, 3, 7, 4\] , target: \[2, 5, 4\]"),
}


def test_in_place_ops_that_eager_allows_still_run():
    a, f = torch.tensor([1, 2]), torch.tensor([0.5, 1.5])
    cases = [lambda a, f: a.mul_(3), lambda a, f: f.mul_(a), lambda a, f: f.addcmul_(f, a, value=2),
             lambda a, f: f.addcdiv_(f, f + 1), lambda a, f: a.clone().mul_(a),
             lambda a, f: a.view(2, 1)[:, :0].max(0)]  # over a dim that is not empty
    for case in cases:
        expected = case(a.clone(), f.clone())
        got = case(a.clone().to("lazy"), f.clone().to("lazy"))
        for g, e in zip(flat_tensors(got), flat_tensors(expected)):
            torch.testing.assert_close(g.cpu(), e)


def flat_tensors(value):
    return [value] if isinstance(value, torch.Tensor) else list(value)


@pytest.mark.parametrize("name", REFUSED_DTYPES)
def test_dtypes_eager_refuses_are_refused(name):
    """Found by a stress run: each returned a value (softmax of ints: zeros)."""
    make, kind, message = REFUSED_DTYPES[name]
    for device in ("cpu", "lazy"):
        with pytest.raises(kind, match=message):
            make(device)
    torch.testing.assert_close((torch.arange(3.).to("lazy") + 1).cpu(), torch.arange(1., 4.))


def test_one_hot_of_a_class_out_of_range_raises():
    """Found by a stress run: torch's composite gives a tensor subclass an arange comparison
    without eager's checks, and a class out of range became a row of zeros. As on an
    accelerator, the error comes when the result is read."""
    for bad in ([0, 5], [0, -1]):
        with pytest.raises(RuntimeError, match="Class values must be"):
            torch.nn.functional.one_hot(torch.tensor(bad), 3)
        labels = torch.tensor(bad).to("lazy")
        with pytest.raises(lazytriton.LazyExecutionError, match="out of (range|bounds)"):
            torch.nn.functional.one_hot(labels, 3).cpu()
    good = torch.tensor([[0, 2], [1, 1]])
    for classes in (3, -1):
        torch.testing.assert_close(torch.nn.functional.one_hot(good.to("lazy"), classes).cpu(),
                                   torch.nn.functional.one_hot(good, classes))
    empty = torch.nn.functional.one_hot(torch.zeros(0, dtype=torch.int64).to("lazy"), 4)
    assert empty.shape == (0, 4) and empty.dtype == torch.int64


def test_execution_error_is_raised_where_the_result_is_read():
    table = torch.randn(4, 2).to("lazy")
    bad = torch.tensor([1, 9]).to("lazy")  # out of range: only known when it runs
    looked_up = torch.nn.functional.embedding(bad, table)
    lazytriton.mark_step()
    with pytest.raises(lazytriton.LazyExecutionError, match="index out of range"):
        looked_up.cpu()
    torch.testing.assert_close((table * 2).cpu(), table.cpu() * 2)


def test_a_failure_read_steps_later_names_its_cause_once():
    """A graph that reads a failed input fails with that input's error. The message grew one
    "lazy graph execution failed:" per step the failure passed through."""
    t = torch.randn(3, 4).to("lazy")
    t.add_(t.gather(1, torch.tensor([[9]]).to("lazy")))  # out of range: t's graph fails
    lazytriton.mark_step()
    for _ in range(3):
        t.mul_(2)
        lazytriton.mark_step()
    with pytest.raises(lazytriton.LazyExecutionError) as raised:
        t.cpu()
    assert str(raised.value).count("lazy graph execution failed") == 1
    assert re.search("out of (range|bounds)", str(raised.value))
    assert not isinstance(raised.value.__cause__, lazytriton.LazyExecutionError)


@pytest.mark.parametrize("overwrite", ["fill_", "zero_", "copy_"])
def test_a_tensor_whose_graph_failed_recovers_by_an_overwrite(overwrite):
    """Found by a stress run: a tensor computed in a graph that failed stays failed (each read
    raises), and fill_/zero_/copy_ over all of it kept raising: the new value's graph took the
    failed buffer as an input, which these ops never read. In training, model.weight.fill_()
    could not reset a parameter after a bad label."""
    t = torch.randn(3, 4).to("lazy")
    t.add_(t.gather(1, torch.tensor([[9]]).to("lazy")))  # out of range: t's graph fails
    lazytriton.mark_step()
    with pytest.raises(lazytriton.LazyExecutionError, match="out of (range|bounds)"):
        t.cpu()
    new = torch.arange(12.).reshape(3, 4)
    {"fill_": lambda: t.fill_(5.0), "zero_": lambda: t.zero_(),
     "copy_": lambda: t.copy_(new.to("lazy"))}[overwrite]()
    want = {"fill_": torch.full((3, 4), 5.0), "zero_": torch.zeros(3, 4), "copy_": new}[overwrite]
    torch.testing.assert_close(t.cpu(), want)
    torch.testing.assert_close((t + 1).cpu(), want + 1)


def test_before_init_mark_step_says_what_to_do_and_import_takes_nothing_over():
    code = ("import torch, lazytriton\n"
            "try:\n    lazytriton.mark_step()\nexcept RuntimeError as e:\n    print('ERR', e)\n"
            "try:\n    torch.zeros(2, device='lazy')\nexcept NotImplementedError:\n"
            "    print('LAZY KEY UNTOUCHED')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "call lazytriton.init()" in out.stdout, out.stdout + out.stderr
    assert "LAZY KEY UNTOUCHED" in out.stdout  # torch._lazy can still own the device


def test_sync_rejects_non_lazy_tensors():
    with pytest.raises(TypeError, match="expected lazy tensors"):
        lazytriton.sync([torch.randn(2)])
