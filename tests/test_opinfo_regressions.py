"""Focused cases for the bugs the OpInfo suite (test_opinfo.py) found, beyond its samples. Each
runs on the backend under test against eager on the CPU."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lazytriton
from lazytriton import metrics

pytestmark = pytest.mark.differential  # runs once per backend (conftest.py)


def _flat(x) -> list:
    if isinstance(x, (list, tuple)):
        return [y for v in x for y in _flat(v)]
    return [x]


def check(fn, *inputs) -> None:
    """fn on lazy copies of the inputs equals fn on CPU copies: outputs and the inputs after."""
    eager_inputs = [x.clone() for x in inputs]
    lazy_inputs = [x.to("lazy") for x in inputs]
    expected = _flat(fn(*eager_inputs)) + eager_inputs
    actual = lazytriton.to_cpu(_flat(fn(*lazy_inputs)) + lazy_inputs)
    for got, want in zip(actual, expected, strict=True):
        assert (got.dtype, got.shape) == (want.dtype, want.shape)
        torch.testing.assert_close(got, want, equal_nan=True)
    assert not metrics.counter_value("FallbackGraph")


def fallbacks() -> list[str]:
    return [n for n in metrics.counter_names() if n.startswith("aten::")]


# --- reductions over 0-dim tensors and zero-size dims: lowered, no fallback -----------------

REDUCTIONS = {
    "sum": lambda x, d: x.sum(d), "mean": lambda x, d: x.mean(d),
    "prod": lambda x, d: x.prod(d), "any": lambda x, d: (x > 0).any(d),
    "all": lambda x, d: (x > 0).all(d), "logsumexp": lambda x, d: x.logsumexp(d),
    "sum_keepdim": lambda x, d: x.sum(d, keepdim=True),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@pytest.mark.parametrize("shape, dim", [((0, 3), 0), ((3, 0), 1), ((0, 3), 1), ((), 0),
                                        ((), -1)])
def test_reduction_over_zero_size_or_zero_dim(name, shape, dim):
    fn = REDUCTIONS[name]
    check(lambda x: fn(x, dim), torch.randn(shape))
    assert not fallbacks()


@pytest.mark.parametrize("name", ["amax", "amin", "argmax", "argmin"])
def test_max_like_reduction_of_zero_dim_tensor(name):
    check(lambda x: getattr(x, name)(0, keepdim=True) + 0, torch.randn(()))
    assert not fallbacks()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_reductions(dtype):
    """The C++ accumulator's rounding to 16 bits used to be declared outside the kernel."""
    check(lambda x: (x.sum(), x.sum(1), x.amax(0), x - x.amax(1, keepdim=True), x[0, 0].sum()),
          torch.randn(5, 7).to(dtype))


# --- complex values: conjugation, and on the C++ backend counted extern calls -----------------

def test_conj_of_complex_values():
    z = torch.randn(4, 3, dtype=torch.complex64)
    check(lambda z: (z.conj(), z.conj() * 2, torch.fft.ifft(z.real)), z)


def test_complex_ops_in_a_graph_are_counted_externs():
    x = torch.randn(6, 4)

    def fn(x):
        z = torch.complex(x.exp(), x * 2) * (1 + 2j)
        return z.abs() + x.sin()
    check(fn, x)
    if lazytriton.backend_name() == "cpp":  # float ops still compile; complex ones are named
        assert {"aten::complex", "aten::mul", "aten::abs"} <= set(fallbacks())
        assert metrics.counter_value("KernelCompile") or metrics.counter_value("KernelCacheLoad")


# --- index tensors on the CPU (eager on an accelerator accepts them) -------------------------

def test_index_put_with_cpu_bool_mask():
    x = torch.randn(4, 5)
    mask = torch.randn(4, 5) > 0
    check(lambda x: x.index_put((mask,), torch.tensor(2.0).to(x.device)), x)


def test_indexing_with_cpu_index_tensors():
    x = torch.randn(5, 3)
    rows, mask = torch.tensor([4, 0, 2]), torch.tensor([True, False, True, True, False])

    def fn(x):
        picked = x[rows] * 2
        x[mask] = 1.0
        x.index_put_((rows,), torch.ones(3, 3).to(x.device), accumulate=True)
        return picked, x[mask]
    check(fn, x)


# --- views that reinterpret the dtype --------------------------------------------------------

def test_view_as_complex_and_real_read_and_write_through():
    def fn(x):
        y = x * 1
        z = torch.view_as_complex(y.view(4, 3, 2))
        z.mul_(2j)  # writes y
        r = torch.view_as_real(z * (1 + 1j))
        r[:, 1:, 0] = 7.0
        return y, z, r
    check(fn, torch.randn(4, 6))


def test_view_dtype_bit_casts():
    def fn(x):
        y = x + 1
        bits = y[1:, 2:].view(torch.int32)
        bits.add_(1)  # changes y's low bits there
        return y, bits, x.to(torch.bfloat16).view(torch.int16) + 1
    check(fn, torch.randn(4, 6))


# --- resize_ -------------------------------------------------------------------------------

def test_resize_grows_keeping_contents_and_aliases():
    def fn(x):
        y = x + 0
        head = y.view(-1)[:4]
        y.resize_(40)
        y[24:] = 3.0  # eager leaves the grown part uninitialized: write it before reading
        head.mul_(2)  # still a view of the (grown) storage
        return y, head
    check(fn, torch.randn(4, 6))


def test_resize_shrinks_and_grows_a_transposed_tensor():
    def fn(x):
        y = (x + 0).t()
        y.resize_(7, 4)
        y[6:].fill_(1.0)
        z = x + 0
        z.resize_(2, 5)
        return y, z
    check(fn, torch.randn(4, 6))


# --- batch norm in eval mode -------------------------------------------------------------------

@pytest.mark.parametrize("op", [torch.ops.aten.native_batch_norm.default,
                                torch.ops.aten._native_batch_norm_legit.default])
def test_batch_norm_eval_saves_running_stats(op):
    """Eager's CPU kernel returns empty save_mean/save_invstd in eval mode; meta and CUDA, and so
    the lazy device, return the running mean and 1/sqrt(running_var + eps)."""
    x, weight, bias, mean = torch.randn(3, 2, 4), torch.randn(2), torch.randn(2), torch.randn(2)
    var = torch.rand(2) + 0.5
    lazy = [t.to("lazy") for t in (x, weight, bias, mean, var)]
    out, save_mean, save_invstd = lazytriton.to_cpu(op(*lazy, False, 0.1, 1e-5))
    torch.testing.assert_close(out, op(x, weight, bias, mean, var, False, 0.1, 1e-5)[0])
    torch.testing.assert_close(save_mean, mean)
    torch.testing.assert_close(save_invstd, (var + 1e-5).rsqrt())


def test_batch_norm_training_updates_running_stats():
    """native_batch_norm's schema does not say it writes the running stats; eager's does."""
    def fn(x, mean, var):
        return torch.native_batch_norm(x, None, None, mean, var, True, 0.3, 1e-5)
    check(fn, torch.randn(4, 3, 5), torch.randn(3), torch.rand(3) + 0.5)
    check(lambda x, mean, var: F.batch_norm(x, mean, var, training=True, momentum=0.3),
          torch.randn(4, 3, 5), torch.randn(3), torch.rand(3) + 0.5)
    assert not fallbacks()


def test_batch_norm_module_eval_matches_eager():
    bn = torch.nn.BatchNorm2d(3).eval()
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2)
    lazy_bn = torch.nn.BatchNorm2d(3).eval().to("lazy")
    lazy_bn.load_state_dict(bn.state_dict())
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(lazy_bn(x.to("lazy")).cpu(), bn(x))


# --- the rest ---------------------------------------------------------------------------------

def test_unsafe_split_pieces_are_their_own_values():
    check(lambda x: (torch.unsafe_split(x * 1, 2), torch.unsafe_chunk(x, 3, 1)),
          torch.randn(5, 6))


def test_linalg_ops_raise_eagers_error_on_bad_input():
    singular = torch.zeros(3, 3)
    with pytest.raises(torch.linalg.LinAlgError):
        torch.linalg.cholesky(singular)
    with pytest.raises(torch.linalg.LinAlgError):
        torch.linalg.cholesky(singular.to("lazy"))
    a = torch.randn(4, 4)
    check(lambda a: (torch.linalg.inv(a @ a.T + torch.eye(4, device=a.device)),), a)


def test_sparse_results_raise_a_clear_error():
    x = torch.randn(3, 4)
    with pytest.raises(NotImplementedError, match="dense"):
        x.to("lazy").to_sparse()
    with pytest.raises(NotImplementedError, match="dense"):
        x.to_sparse().to("lazy")


def test_to_cpu_of_a_tensor_and_its_view():
    x = (torch.randn(4, 3).to("lazy") * 2)
    whole, row = lazytriton.to_cpu([x, x[1]])
    torch.testing.assert_close(row, whole[1])
