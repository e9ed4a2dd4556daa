"""codegen/cpp_loops.py: pointwise members sharing one loop, and trailing dims merged into one.

Each case checks the generated source for the loop shape it should have, and its values
against eager on random data (contiguous, broadcast, sliced, permuted, random, and with index
values or masks that must keep their dims apart), at more than one size."""
from __future__ import annotations

import re

import pytest
import sympy
import torch
import torch.nn.functional as F

import lazytriton
from lazytriton.codegen.cpp_loops import Accesses, _merge_start, elementwise_safe


def _run(tmp_path, fn, *inputs):
    lazytriton.init("cpp", cache_dir=tmp_path, autotune="off")
    out = lazytriton.to_cpu(fn(*[t.to("lazy") for t in inputs]))
    source = "\n".join(p.read_text() for p in sorted((tmp_path / "graphs").glob("*/kernels.cpp")))
    return out, source


def _loop_sizes(source: str, var: str) -> list[int]:
    return [int(n) for n in re.findall(rf"for \(int64_t {var} = 0; {var} < (\d+);", source)]


@pytest.mark.parametrize("shape", [(8, 3, 26, 26), (5, 7, 9, 11)])
def test_contiguous_pointwise_is_one_loop(tmp_path, shape):
    x = torch.randn(shape)
    out, source = _run(tmp_path, lambda t: torch.relu(t) * 2 - 1, x)
    torch.testing.assert_close(out, torch.relu(x) * 2 - 1)
    assert _loop_sizes(source, "y0") == [x.numel()]
    assert "#pragma omp parallel for simd" in source or x.numel() < 8192


def test_broadcast_bias_merges_only_the_dims_it_does_not_vary_along(tmp_path):
    x, b = torch.randn(4, 3, 10, 12), torch.randn(3, 1, 1)
    out, source = _run(tmp_path, lambda t, c: t + c, x, b)
    torch.testing.assert_close(out, x + b)
    assert _loop_sizes(source, "y0") == [120]  # H*W, inside loops over N and C


def test_slices_and_permutes(tmp_path):
    x = torch.randn(6, 5, 9, 8)
    fns = [lambda t: t[:, :, 1:, :] * 3, lambda t: t[:, 1:4] + 1,
           lambda t: t.permute(0, 2, 3, 1).contiguous() * 2, lambda t: t.transpose(2, 3) + t.transpose(2, 3)]
    for k, fn in enumerate(fns):
        out, _ = _run(tmp_path / str(k), fn, x)
        torch.testing.assert_close(out, fn(x))


def test_non_contiguous_input(tmp_path):
    x = torch.randn(7, 12, 10)[:, ::2, :]  # a stride the merged loop must not assume away
    out, source = _run(tmp_path, lambda t: t.exp() + 1, x)
    torch.testing.assert_close(out, x.exp() + 1)


def test_index_values_keep_their_dims(tmp_path):
    """An index used as a value (iota) is not linear in the merged position."""
    x = torch.randn(4, 6, 5)
    fn = lambda t: t + torch.arange(5, dtype=t.dtype, device=t.device)  # noqa: E731
    out, _ = _run(tmp_path, fn, x)
    torch.testing.assert_close(out, fn(x))


def test_masked_loads_keep_their_dims(tmp_path):
    x = torch.randn(3, 4, 6, 7)
    out, _ = _run(tmp_path, lambda t: F.pad(t, (1, 2, 0, 1)) * 2, x)
    torch.testing.assert_close(out, F.pad(x, (1, 2, 0, 1)) * 2)


def test_dropout_offsets_follow_the_merged_position(tmp_path):
    """The random offset is the element's flat index, merged or not: the mask is the same as
    with separate dims (checked by the kept values' scale and the dropped fraction)."""
    x = torch.rand(16, 8, 12, 12) + 1.0
    out, source = _run(tmp_path, lambda t: F.dropout(t, 0.3, training=True), x)
    kept = out != 0
    torch.testing.assert_close(out[kept], x[kept] / 0.7)
    assert 0.25 < 1 - kept.float().mean().item() < 0.35
    assert _loop_sizes(source, "y0") == [x.numel()]


def test_symbolic_batch_merges_too(tmp_path):
    lazytriton.init("cpp", cache_dir=tmp_path, autotune="off")
    for batch in (4, 6, 9):  # the second size makes the batch a symbol
        x = torch.randn(batch, 3, 5, 7)
        out = lazytriton.to_cpu(torch.sigmoid(x.to("lazy")) * 3)
        torch.testing.assert_close(out, torch.sigmoid(x) * 3)


@pytest.mark.parametrize("foreach", [None, False], ids=["default-foreach", "per-parameter"])
def test_optimizer_members_share_one_loop(tmp_path, foreach):
    """Adadelta's updates of one weight (its two states and the weight): one loop, three
    stores, in the steady-state step; also with foreach (lazy parameters' default), which
    traces the two parameters' updates interleaved (scheduler._clustered)."""
    w0, b0 = torch.randn(64, 300), torch.randn(64)

    def train(device, steps=3):
        w = w0.clone().to(device).requires_grad_()
        b = b0.clone().to(device).requires_grad_()
        opt = torch.optim.Adadelta([w, b], lr=1.0, foreach=foreach)
        for _ in range(steps):
            opt.zero_grad()
            ((w * w).sum() + (b.sin()).sum()).backward()
            opt.step()
            if device == "lazy":
                lazytriton.mark_step()
        return [w.detach(), b.detach(), opt.state[w]["square_avg"], opt.state[w]["acc_delta"]]
    expected = train("cpu")
    lazytriton.init("cpp", cache_dir=tmp_path, autotune="off")
    got = lazytriton.to_cpu(train("lazy"))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    source = "\n".join(p.read_text() for p in (tmp_path / "graphs").glob("*/kernels.cpp"))
    loops = re.split(r"#pragma omp", source)
    assert any(len(re.findall(r"\bp\d+\[[^\]]*\] = ", loop)) >= 3 and "y0 < 19200" in loop
               for loop in loops), source


def _acc(loads, stores):
    x = sympy.Symbol("x0", integer=True)
    return Accesses([(n, sympy.sympify(e, locals={"x0": x})) for n, e in loads],
                    [(n, sympy.sympify(e, locals={"x0": x})) for n, e in stores], [])


def test_elementwise_safety():
    assert elementwise_safe(_acc([("a", "x0"), ("b", "x0")], [("b", "x0"), ("c", "x0")]))
    assert not elementwise_safe(_acc([("b", "x0 + 1")], [("b", "x0")]))  # a neighbour
    assert not elementwise_safe(_acc([], [("b", "x0"), ("b", "x0")]))  # written twice
    assert elementwise_safe(_acc([("a", "x0 + 1")], [("b", "x0")]))  # not written here


def test_merge_start():
    x0, x1, x2 = (sympy.Symbol(f"x{k}", integer=True) for k in range(3))
    dims = [(x0, 4), (x1, 5), (x2, 6)]
    assert _merge_start(dims, [30 * x0 + 6 * x1 + x2]) == 0
    assert _merge_start(dims, [30 * x0 + 6 * x1 + x2, x1]) == 2  # x1 broadcast: only x2 alone
    assert _merge_start(dims, [60 * x0 + 6 * x1 + x2]) == 1  # a padded row stride
    assert _merge_start(dims, [x0 + 4 * x1 + 20 * x2]) == 2  # transposed: none merge
