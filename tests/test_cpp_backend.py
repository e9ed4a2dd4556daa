"""The C++/OpenMP backend: what it fuses, what it writes to the cache, and that from the second batch
size on the compiled kernels are re-used. Values against eager are covered by running the differential
suites (test_ops.py, test_training.py) with LAZYTRITON_TEST_BACKEND=cpp."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import lazytriton
from lazytriton import metrics
from lazytriton.runtime.cpp_build import compiler_command, include_flags
from lazytriton.testing.differential import aten_fallbacks
from lazytriton.testing.models import MLP, pointwise_chain

from cpp_targets import AVX2, NATIVE, Target, is_gcc, no_simd_reason, simd_isa


@pytest.fixture(autouse=True)
def cpp_device(cache_dir):
    lazytriton.init("cpp", cache_dir=cache_dir)
    metrics.reset()
    yield
    lazytriton.wait_device_ops()


def _kernels_of(cache_dir, op_text: str) -> list[dict]:
    """kernels.json of the newest compiled graph whose IR mentions op_text."""
    folders = sorted((p.parent for p in (cache_dir / "graphs").glob("*/kernels.json")),
                     key=lambda p: p.stat().st_mtime)
    matching = [f for f in folders if op_text in (f / "ir.txt").read_text()]
    assert matching, f"no compiled graph with {op_text}"
    return json.loads((matching[-1] / "kernels.json").read_text())


def test_ten_op_pointwise_chain_is_one_kernel(cache_dir):
    x = torch.randn(33, 17)
    got = pointwise_chain(x.to("lazy")).cpu()
    torch.testing.assert_close(got, pointwise_chain(x), rtol=1e-5, atol=1e-6)
    kernels = _kernels_of(cache_dir, "sigmoid.default")
    assert len(kernels) == 1
    assert {"sin.default", "exp.default", "tanh.default", "relu.default",
            "sigmoid.default"} <= set(kernels[0]["fused_ops"])


def _vectorized_loops(source: str, target: Target, tmp_path) -> tuple[int, list[str]]:
    """g++'s vectorizer report for the kernels (not the prelude): loops vectorized, misses."""
    path = tmp_path / "kernels.cpp"
    path.write_text(source)
    first = source[:source.index('extern "C"')].count("\n") + 1
    flags = [f for f in target.flags if f != "-shared"]
    report = subprocess.run([*compiler_command(), *flags, *include_flags(), "-c", str(path), "-o", os.devnull,
                             "-fopt-info-vec-optimized", "-fopt-info-vec-missed"],
                            capture_output=True, text=True, timeout=300).stderr
    lines = [ln for ln in report.splitlines()
             if ln.startswith(str(path) + ":") and int(ln.split(":")[1]) >= first]
    return (sum("loop vectorized" in ln for ln in lines),
            [ln for ln in lines if "control flow in loop" in ln])


@pytest.fixture(scope="module")
def chain_and_softmax_graphs(tmp_path_factory) -> list[Path]:
    """Cache folders of five graphs whose loops g++ once left scalar or could: a sin/exp/tanh
    chain, tanh-relu-sigmoid, softmax, an Adam-like update (sqrt: a libm call unless errno is
    off) and a mask used as a number (dropout's backward: a bool-to-float cast)."""
    cache_dir = tmp_path_factory.mktemp("vectorize-cache")
    lazytriton.init("cpp", cache_dir=cache_dir)  # only these graphs
    x = torch.randn(16, 64)
    pointwise_chain(x.to("lazy")).cpu()
    torch.sigmoid(torch.relu(torch.tanh(x.to("lazy")) - 0.5)).cpu()
    torch.softmax(x.to("lazy") * 2, -1).cpu()
    m, v = x.to("lazy"), (x * x).to("lazy")
    (m - 0.01 * m / (v.sqrt() + 1e-8)).cpu()
    ((m > 0).float() * v * 2.0).cpu()
    folders = [p.parent for p in (cache_dir / "graphs").glob("*/kernels.cpp")]
    assert len(folders) == 5
    return folders


@pytest.mark.parametrize("target", [NATIVE, AVX2], ids=lambda t: t.name)
def test_transcendental_chain_and_softmax_loops_vectorize(chain_and_softmax_graphs, target,
                                                          tmp_path):
    # scalar libm calls (or a ?: g++ turns into a branch) would leave these loops scalar; the
    # AVX2 build is only compiled, so a machine with AVX-512 checks it too
    if not is_gcc():
        pytest.skip("vectorizer report needs g++")
    if simd_isa(target) is None:
        pytest.skip(no_simd_reason(target))
    for folder in chain_and_softmax_graphs:
        source = (folder / "kernels.cpp").read_text()
        vectorized, branchy = _vectorized_loops(source, target, tmp_path)
        assert vectorized >= 1 and not branchy, ((folder / "ir.txt").read_text(), branchy)


def _embedding_layer_norm(idx, table, pos):
    return F.layer_norm(F.embedding(idx, table) + pos, (32,))


@pytest.mark.parametrize("target", [NATIVE, AVX2], ids=lambda t: t.name)
def test_embedding_rows_are_read_by_vector_loops(cache_dir, target, tmp_path):
    """A token's embedding row: its index (wrapped, checked) is computed once before the loop
    over the row, which then vectorizes; inside, the check's branch kept it scalar."""
    if not is_gcc():
        pytest.skip("vectorizer report needs g++")
    if simd_isa(target) is None:
        pytest.skip(no_simd_reason(target))
    idx, table, pos = torch.randint(0, 64, (8, 16)), torch.randn(64, 32), torch.randn(16, 32)
    got = _embedding_layer_norm(idx.to("lazy"), table.to("lazy"), pos.to("lazy")).cpu()
    torch.testing.assert_close(got, _embedding_layer_norm(idx, table, pos))
    (folder,) = [k.parent for k in (cache_dir / "graphs").glob("*/kernels.cpp")
                 if "embedding" in (k.parent / "ir.txt").read_text()]
    source = (folder / "kernels.cpp").read_text()
    assert re.search(r"strict_index\(.*\n\s*#pragma omp simd", source), source
    vectorized, branchy = _vectorized_loops(source, target, tmp_path)
    assert vectorized >= 3 and not branchy, branchy


@pytest.mark.parametrize("bad", [64, -1])
def test_an_embedding_index_out_of_range_still_raises(cache_dir, bad):
    idx = torch.tensor([[1, bad]])  # eager's embedding refuses a negative index too
    out = _embedding_layer_norm(idx.to("lazy"), torch.randn(64, 32).to("lazy"),
                                torch.randn(2, 32).to("lazy"))
    # the message names the kernel that read the bad index, the ops it computes and its file
    with pytest.raises(lazytriton.LazyExecutionError,
                       match=r"index out of range.*set by kernel \S+ \(.*embedding\.default.*\) "
                             r"in \S+/graphs/\S+/kernels\.cpp"):
        out.cpu()


@pytest.fixture(scope="module")
def masked_attention_source(tmp_path_factory) -> str:
    """kernels.cpp of causal attention's softmax over rows of 16: where(mask, -inf, s / scale)
    with a bool mask read from memory, the pattern that ran scalar (2.8x slower) until `where`
    became a blend and bools were read as bytes."""
    cache_dir = tmp_path_factory.mktemp("masked-softmax-cache")
    lazytriton.init("cpp", cache_dir=cache_dir)
    scores = torch.randn(8, 4, 16, 16)
    mask = torch.ones(16, 16, dtype=torch.bool).triu(1)
    want = torch.softmax(scores.masked_fill(mask, float("-inf")) / 2.8, -1)
    got = torch.softmax((scores.to("lazy") / 2.8).masked_fill(mask.to("lazy"), float("-inf")), -1)
    torch.testing.assert_close(got.cpu(), want)
    (source,) = [p.read_text() for p in (cache_dir / "graphs").glob("*/kernels.cpp")]
    return source


@pytest.mark.parametrize("target", [NATIVE, AVX2], ids=lambda t: t.name)
def test_masked_softmax_exp_is_vector_code(masked_attention_source, target, tmp_path):
    # g++'s report said "loop vectorized" for the scalar version too, so read the assembly:
    # exp's polynomial is fused multiply-adds, packed (…ps) in vector code, scalar (…ss) not
    if not is_gcc():
        pytest.skip("checks g++'s x86 assembly")
    if simd_isa(target) not in ("AVX-512", "AVX2"):
        pytest.skip(no_simd_reason(target) if simd_isa(target) is None else "not x86")
    path = tmp_path / "kernels.cpp"
    path.write_text(masked_attention_source)
    flags = [f for f in target.flags if f not in ("-shared", "-fPIC")]
    asm = subprocess.run([*compiler_command(), *flags, *include_flags(), "-S", str(path), "-o",
                          "-"], capture_output=True, text=True, timeout=300, check=True).stdout
    packed = len(re.findall(r"\bvfn?m(?:add|sub)\d+ps\b", asm))
    scalar = len(re.findall(r"\bvfn?m(?:add|sub)\d+ss\b", asm))
    assert packed >= 5 and scalar == 0, (packed, scalar)


@pytest.mark.parametrize("fn, name", [(lambda x: torch.softmax(x, -1), "_softmax"),
                                      (lambda x: F.log_softmax(x, 1), "_log_softmax"),
                                      (lambda x: F.layer_norm(x, x.shape[-1:]), "native_layer_norm")])
def test_row_normalizations_fuse_into_one_kernel(cache_dir, fn, name):
    x = torch.randn(9, 31) * 4
    torch.testing.assert_close(fn(x.to("lazy")).cpu(), fn(x), rtol=1e-5, atol=1e-5)
    kernels = _kernels_of(cache_dir, name)
    assert len(kernels) == 1, kernels
    reductions = [m for m in kernels[0]["members"] if m["reduction"]]
    assert reductions and all(m["in_register"] for m in reductions)  # never written to memory


def test_log_softmax_and_nll_loss_in_two_kernels(cache_dir):
    x, y = torch.randn(12, 10), torch.randint(0, 10, (12,))
    got = F.nll_loss(F.log_softmax(x.to("lazy"), 1), y.to("lazy")).cpu()
    torch.testing.assert_close(got, F.nll_loss(F.log_softmax(x, 1), y))
    assert len(_kernels_of(cache_dir, "nll_loss_forward")) <= 2


def _train_steps(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(model(x.to("lazy")), y.to("lazy")).backward()
        opt.step()
        lazytriton.mark_step()
    lazytriton.wait_device_ops()


def test_new_batch_size_compiles_no_new_kernel():
    torch.manual_seed(0)
    model = MLP((20, 32, 6)).to("lazy")
    batch = lambda n: (torch.randn(n, 20), torch.randint(0, 6, (n,)))  # noqa: E731
    _train_steps(model, [batch(16) for _ in range(3)])  # compiled for batch 16
    # a second batch size: each graph (the optimizer's first step, a later step) compiled
    # once more with the batch symbolic
    _train_steps(model, [batch(7), batch(9)])
    compiled = metrics.counter_value("KernelCompile")
    graphs = metrics.counter_value("UncachedCompile")
    _train_steps(model, [batch(16), batch(11), batch(5)])  # any size from now on: no compile
    assert metrics.counter_value("KernelCompile") == compiled
    assert metrics.counter_value("UncachedCompile") == graphs
    assert metrics.counter_value("CachedCompile") >= 3


def test_bounds_checked_graphs_get_folders_of_their_own(tmp_path, monkeypatch):
    """The checked and the plain build of one graph differ in kernels.cpp: a person reading the
    cache must find each under its own folder, not whichever compiled last."""
    x = torch.randn(5, 6)
    for check in ("", "bounds"):
        monkeypatch.setenv("LAZYTRITON_CHECK", check)
        lazytriton.init("cpp", cache_dir=tmp_path)
        torch.testing.assert_close(torch.softmax(x.to("lazy"), 1).cpu(), torch.softmax(x, 1))
    folders = sorted((p.name for p in (tmp_path / "graphs").iterdir()),
                     key=lambda name: not name.startswith("cpp-bounds-"))
    assert len(folders) == 2 and folders[0].startswith("cpp-bounds-"), folders
    assert not folders[1].startswith("cpp-bounds-"), folders
    checked, plain = ((tmp_path / "graphs" / f / "kernels.cpp").read_text() for f in folders)
    assert "lt::checked" in checked and "lt::checked" not in plain


def test_kernels_load_from_disk_in_a_new_process(cache_dir):
    code = (
        "import torch, lazytriton\n"
        f"lazytriton.init('cpp', cache_dir={str(cache_dir)!r})\n"
        "x = torch.arange(12.0).reshape(3, 4).to('lazy')\n"
        "print((torch.softmax(x * 0.5, -1) + 1).sum().item())\n"
        "m = lazytriton.metrics\n"
        "print(m.counter_value('KernelCompile'), m.counter_value('KernelCacheLoad'))\n")
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=300)
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    value1, value2 = first.stdout.splitlines()[0], second.stdout.splitlines()[0]
    assert float(value1) == pytest.approx(15.0) and value1 == value2
    assert second.stdout.splitlines()[1] == "None 1"  # loaded, not compiled


def test_cache_holds_readable_source_and_wrapper(cache_dir):
    x = torch.randn(5, 3)
    (x.to("lazy").cos() * 2).cpu()
    folder = [p.parent for p in (cache_dir / "graphs").glob("*/ir.txt")
              if "cos.default" in p.read_text()][-1]
    source = (folder / "kernels.cpp").read_text()
    assert "#pragma omp" in source and "lt::cos_f32(" in source
    wrapper = (folder / "wrapper.py").read_text()
    # the kernels between externs run from one C function, reading argument arrays
    assert "def call(inputs)" in wrapper and "segment0()  # kernel0" in wrapper
    assert 'extern "C" int64_t segment0(void* const* P' in source and "kernel0(" in source


def test_compile_failure_falls_back_to_eager_with_a_warning(cache_dir, monkeypatch):
    monkeypatch.delenv("LAZYTRITON_STRICT", raising=False)
    monkeypatch.setenv("LAZYTRITON_CXX", "g++ -DLAZYTRITON_BROKEN=1 -include /nonexistent.h")
    x = torch.randn(6)
    with pytest.warns(RuntimeWarning, match="reference executor instead.*graphs"):
        got = (x.to("lazy").tan() + 3).cpu()
    torch.testing.assert_close(got, x.tan() + 3)
    assert metrics.counter_value("FallbackGraph") == 1


def test_codegen_failure_is_counted_per_graph_and_warned_once_per_reason(cache_dir,
                                                                           monkeypatch):
    from lazytriton.codegen import cpp
    monkeypatch.delenv("LAZYTRITON_STRICT", raising=False)
    reason = ["no C++ for this kernel"]

    def broken(kernels, *args, **kwargs):
        raise NotImplementedError(reason[0])
    monkeypatch.setattr(cpp, "generate_translation_unit", broken)
    x = torch.randn(7)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ops = [torch.exp, torch.sin, torch.cos]
        got = [op(x.to("lazy")).cpu() for op in ops]  # three graphs, one reason
        reason[0] = "another cause"
        (x.to("lazy") - 1).cpu()
    for op, g in zip(ops, got):
        torch.testing.assert_close(g, op(x))
    assert metrics.counter_value("FallbackGraph") == 4
    texts = [str(w.message) for w in caught if "FallbackGraph" in str(w.message)]
    assert len(texts) == 2, texts
    assert "NotImplementedError: no C++ for this kernel" in texts[0]
    assert "another cause" in texts[1]
    assert all(str(cache_dir / "graphs") in t for t in texts)  # names the graph's folder


def test_index_out_of_range_raises_like_eager():
    table = torch.randn(4, 3).to("lazy")
    bad = torch.tensor([0, 7]).to("lazy")
    out = F.embedding(bad, table)
    lazytriton.mark_step()
    with pytest.raises(lazytriton.LazyExecutionError, match="index out of range"):
        out.cpu()


def test_dump_ir_loops_shows_the_fused_loop_nests():
    x = torch.randn(6, 10).to("lazy")
    text = lazytriton.debug.dump_ir([torch.softmax(x * 3, -1)], "loops")
    kernels = [line for line in text.splitlines() if line.startswith("kernel")]
    assert len(kernels) == 1 and "_softmax.default" in kernels[0]
    assert "reduce max" in text and "reduce sum" in text and "-> register" in text


def test_dropout_backward_is_lowered_not_a_fallback():
    torch.manual_seed(3)
    x = torch.randn(8, 16, requires_grad=True)
    lazy_x = x.detach().to("lazy").requires_grad_()
    out = F.dropout(lazy_x, 0.3)
    (grad,) = torch.autograd.grad((out * 2).sum(), [lazy_x])
    kept = (out.detach().cpu() != 0)
    torch.testing.assert_close(grad.cpu(), kept.float() * 2 / 0.7)
    assert not [n for n in metrics.counter_names() if n.startswith("aten::")]


def test_tutorial_net_smaller_last_batch_compiles_no_new_kernel():
    # the flatten's backward splits [B, 9216] into [B, 64, 12, 12]: the batch must stay a symbol
    from lazytriton.testing.models import TutorialNet
    torch.manual_seed(1)
    net = TutorialNet(dropout=0.0).to("lazy")
    opt = torch.optim.Adadelta(net.parameters(), lr=1.0)

    def step(n):
        opt.zero_grad()
        x, y = torch.randn(n, 1, 28, 28), torch.randint(0, 10, (n,))
        F.nll_loss(net(x.to("lazy")), y.to("lazy")).backward()
        opt.step()
        lazytriton.mark_step()
    step(8)
    step(8)
    step(5)  # the second batch size: compiled with the batch symbolic
    compiled = metrics.counter_value("KernelCompile")
    for n in (8, 3, 6):
        step(n)
    lazytriton.wait_device_ops()
    assert metrics.counter_value("KernelCompile") == compiled





@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.int64])
def test_accumulating_writes_are_kernels_with_duplicates_summed_in_order(dtype):
    # many duplicate targets: every one must be added, as eager's CPU kernels add them
    torch.manual_seed(4)
    x = (torch.randn(6, 9) * 4).to(dtype)
    rows = torch.randint(0, 6, (40,))
    values = (torch.randn(40, 9) * 4).to(dtype)
    cols = torch.randint(0, 9, (6, 30))
    src = (torch.randn(6, 30) * 4).to(dtype)
    lx, lrows, lvalues, lcols, lsrc = (t.to("lazy") for t in (x, rows, values, cols, src))
    got_put = lx.index_put((lrows,), lvalues, accumulate=True)
    got_scatter = lx.scatter_add(1, lcols, lsrc)
    got_index = lx[lrows[:7], 2:5]
    lazytriton.mark_step()
    tol = dict(rtol=2e-2, atol=1e-1) if dtype == torch.bfloat16 else {}
    torch.testing.assert_close(got_put.cpu(), x.index_put((rows,), values, accumulate=True), **tol)
    torch.testing.assert_close(got_scatter.cpu(), x.scatter_add(1, cols, src), **tol)
    torch.testing.assert_close(got_index.cpu(), x[rows[:7], 2:5])
    assert not aten_fallbacks()


def test_writes_through_views_are_kernels_and_reuse_across_batch_sizes():
    def step(n):
        x = torch.randn(n, 10)
        lazy = x.to("lazy")
        lazy[:, 3:7] *= 2  # as_strided_scatter into the storage
        lazy[1] = 0.5
        x[:, 3:7] *= 2
        x[1] = 0.5
        lazytriton.mark_step()
        torch.testing.assert_close(lazy.cpu(), x)
    step(8)
    step(13)  # the second size: compiled with the batch symbolic
    compiled = metrics.counter_value("KernelCompile")
    step(5)
    step(21)
    assert metrics.counter_value("KernelCompile") == compiled
    assert not aten_fallbacks()


def test_embedding_backward_accumulates_in_a_kernel():
    torch.manual_seed(5)
    weight = torch.randn(11, 6, requires_grad=True)
    ids = torch.randint(0, 11, (4, 25))  # many repeats
    lazy_w = weight.detach().to("lazy").requires_grad_()
    (F.embedding(ids.to("lazy"), lazy_w) ** 2).sum().backward()
    (F.embedding(ids, weight) ** 2).sum().backward()
    torch.testing.assert_close(lazy_w.grad.cpu(), weight.grad)
    assert not aten_fallbacks()


def test_dump_ir_loops_shows_scatter_order():
    x = torch.randn(5, 3).to("lazy")
    rows = torch.tensor([0, 2, 2, 4]).to("lazy")
    text = lazytriton.debug.dump_ir([x.index_put((rows,), torch.ones(4, 3).to("lazy"), True)],
                                    "loops")
    assert "copy, then accumulate over ['4', '3'] (in order over ['4'])" in text, text


def test_matmul_takes_a_transposed_computation_without_a_copy(tmp_path):
    cache_dir = tmp_path / "cache"
    lazytriton.init("cpp", cache_dir=cache_dir)  # only this test's graphs
    x, w = torch.randn(8, 5), torch.randn(8, 3)
    y = torch.relu(x.to("lazy") * 2)
    got = (y.t() @ w.to("lazy"), y + 1)  # y is read transposed by mm and as is by the add
    lazytriton.mark_step()
    torch.testing.assert_close(got[0].cpu(), torch.relu(x * 2).t() @ w)
    torch.testing.assert_close(got[1].cpu(), torch.relu(x * 2) + 1)
    kernels = _kernels_of(cache_dir, "mm.default")
    # one kernel computes y and y + 1 (the add needs nothing of the mm), and none is a copy
    assert len(kernels) == 1 and {"relu.default", "add.Tensor"} <= set(kernels[0]["fused_ops"])
    folder = [p.parent for p in (cache_dir / "graphs").glob("*/ir.txt")
              if "mm.default" in p.read_text()][-1]
    assert ".as_strided((" in (folder / "wrapper.py").read_text()


def test_permuted_slice_of_a_computation_is_indexed_without_division(tmp_path):
    """A view that walks its base's dims (a permutation, a leading slice) loads by those dims:
    no flat index divided back into dims (slow sympy in deep view chains, slow C++)."""
    cache_dir = tmp_path / "cache"
    lazytriton.init("cpp", cache_dir=cache_dir)
    x = torch.randn(6, 10)
    got = ((x.to("lazy") * 2).permute(1, 0)[:4] + 1).cpu()
    torch.testing.assert_close(got, (x * 2).permute(1, 0)[:4] + 1)
    (source,) = [p.read_text() for p in (cache_dir / "graphs").glob("*/kernels.cpp")]
    loads = [line for line in source[source.index('extern "C"'):].splitlines() if "p0[" in line]
    assert loads and not any("/" in line or "%" in line for line in loads), loads


@pytest.mark.parametrize("dim", [0, 1])
def test_cat_loads_each_input_only_in_its_segment(tmp_path, monkeypatch, dim):
    """Each element of a cat reads one input; reading the others too (then discarding them)
    indexes them out of bounds, which the bounds-checked mode reports (a U-Net's skip joins)."""
    monkeypatch.setenv("LAZYTRITON_CHECK", "bounds")
    lazytriton.init("cpp", cache_dir=tmp_path)
    a, b, c = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    got = torch.cat([a.to("lazy") * 2, b.to("lazy") + 1, c.to("lazy").exp()], dim=dim)
    torch.testing.assert_close(got.cpu(), torch.cat([a * 2, b + 1, c.exp()], dim=dim))
