"""The Triton backend: what it fuses, what it writes to the cache, that a new batch size reuses
its kernels, and that the kernels it ran (under Triton's interpreter, without a GPU) also
compile ahead of time for sm_90. Values against eager are covered by running the differential
suites (test_ops.py, test_training.py) with LAZYTRITON_TEST_BACKEND=triton."""
from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F

import lazytriton
from lazytriton import metrics
from lazytriton.runtime import triton_backend
from lazytriton.testing.models import pointwise_chain

pytestmark = pytest.mark.skipif(not triton_backend.triton_installed(), reason="needs triton")


@pytest.fixture(autouse=True)
def triton_device(tmp_path):
    lazytriton.init("triton", cache_dir=tmp_path / "cache")  # only this test's graphs
    metrics.reset()
    yield tmp_path / "cache"
    lazytriton.wait_device_ops()


def _folders(cache_dir) -> list:
    return sorted((p.parent for p in (cache_dir / "graphs").glob("*/kernels.json")),
                  key=lambda p: p.stat().st_mtime)


def _graph(cache_dir, op_text: str):
    """The newest compiled graph whose IR mentions op_text: (folder, kernels.json entries)."""
    matching = [f for f in _folders(cache_dir) if op_text in (f / "ir.txt").read_text()]
    assert matching, f"no compiled graph with {op_text}"
    return matching[-1], json.loads((matching[-1] / "kernels.json").read_text())


def _source(folder, entry) -> str:
    return (folder / entry["source"]).read_text()


def test_ten_op_pointwise_chain_is_one_flat_kernel(triton_device):
    x = torch.randn(33, 17)
    torch.testing.assert_close(pointwise_chain(x.to("lazy")).cpu(), pointwise_chain(x),
                               rtol=1e-5, atol=1e-5)
    folder, kernels = _graph(triton_device, "sigmoid.default")
    assert len(kernels) == 1 and kernels[0]["kernel"].startswith("triton_poi_")
    source = _source(folder, kernels[0])
    assert source.count("tl.load(") == 1 and source.count("tl.store(") == 1
    assert "tl.load(p0 + xindex, xmask" in source  # contiguous: the flat index, one mask
    assert "RBLOCK" not in source


@pytest.mark.parametrize("fn, name", [(lambda x: torch.softmax(x, -1), "softmax"),
                                      (lambda x: F.log_softmax(x, 1), "log_softmax"),
                                      (lambda x: F.layer_norm(x, x.shape[-1:]), "layer_norm")])
@pytest.mark.parametrize("row", [31, 3000], ids=["persistent", "looped"])
def test_row_normalizations_are_one_kernel(triton_device, fn, name, row):
    x = torch.randn(9, row) * 4
    torch.testing.assert_close(fn(x.to("lazy")).cpu(), fn(x), rtol=1e-5, atol=1e-5)
    folder, kernels = _graph(triton_device, name)
    assert len(kernels) == 1, kernels
    kind = "per" if row == 31 else "red"
    assert re.fullmatch(f"triton_{kind}_(native_)?{name}_0", kernels[0]["kernel"]), kernels
    assert all(m["in_register"] for m in kernels[0]["members"] if m["reduction"])
    source = _source(folder, kernels[0])
    if row == 31:  # the row is loaded once and stays in registers for every pass
        assert source.count("tl.load(") == 1 and "for roffset" not in source
    else:
        assert "for roffset in range(0, rnumel, RBLOCK):" in source


def test_reductions_over_each_axis_and_argmax(triton_device):
    x = torch.randn(5, 6, 7)
    lx = x.to("lazy")
    got = [lx.sum(0), lx.sum(1), lx.sum(2), lx.sum(), lx.argmax(1), lx.argmin(), lx.amax(2)]
    want = [x.sum(0), x.sum(1), x.sum(2), x.sum(), x.argmax(1), x.argmin(), x.amax(2)]
    lazytriton.mark_step()
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu(), w, rtol=1e-5, atol=1e-5)


def test_argmax_takes_first_maximum_and_nan():
    x = torch.tensor([[1.0, 3.0, 3.0, 2.0], [0.0, float("nan"), 5.0, float("nan")]])
    assert x.to("lazy").argmax(1).cpu().tolist() == [1, 1]
    assert x.to("lazy").argmin(1).cpu().tolist() == [0, 1]


def test_new_batch_size_compiles_no_new_kernel():
    from lazytriton.testing.models import MLP
    torch.manual_seed(0)
    model = MLP((20, 32, 6)).to("lazy")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step(n):
        opt.zero_grad()
        x, y = torch.randn(n, 20), torch.randint(0, 6, (n,))
        F.cross_entropy(model(x.to("lazy")), y.to("lazy")).backward()
        opt.step()
        lazytriton.mark_step()
    for n in (16, 16, 16, 7):  # the second batch size: compiled with the batch symbolic
        step(n)
    lazytriton.wait_device_ops()
    compiled = metrics.counter_value("KernelCompile")
    graphs = metrics.counter_value("UncachedCompile")
    for n in (16, 11, 5):  # any size from now on: no compile
        step(n)
    lazytriton.wait_device_ops()
    assert metrics.counter_value("KernelCompile") == compiled
    assert metrics.counter_value("UncachedCompile") == graphs


def test_cache_holds_readable_sources_wrapper_and_index(triton_device):
    x = torch.randn(5, 3)
    (x.to("lazy").cos() * 2).sum(1).cpu()
    folder, kernels = _graph(triton_device, "cos.default")
    names = {p.name for p in folder.iterdir()}
    assert {"ir.txt", "kernels.json", "wrapper.py"} <= names
    for entry in kernels:
        source = _source(folder, entry)
        assert f"def {entry['kernel']}(" in source and source.startswith('"""Generated by')
        assert "import lazytriton" not in source  # self-contained: compiles anywhere
        launch = entry["launches"][0]
        assert launch["grid"] and launch["config"]["XBLOCK"] >= 1
        assert [p["kind"] for p in entry["params"]][:1] == ["buffer"]
    wrapper = (folder / "wrapper.py").read_text()
    assert "def call(inputs)" in wrapper and f"k_{kernels[0]['kernel']}(" in wrapper
    assert "device=device" in wrapper and "c_void_p" not in wrapper


def test_float64_scalars_keep_full_precision():
    x = torch.randn(10, dtype=torch.float64)
    got = (x.to("lazy") * 0.1 + 1e-12).cpu()  # Triton would pass a Python float as float32
    assert torch.equal(got, x * 0.1 + 1e-12)


def test_kernel_errors_raise_like_eager():
    table = torch.randn(4, 3).to("lazy")
    out = F.embedding(torch.tensor([0, 7]).to("lazy"), table)
    # the message names the kernel that read the bad index, its ops and its file
    with pytest.raises(lazytriton.LazyExecutionError,
                       match=r"index out of range.*set by kernel \S+ \(embedding\.default\) in "
                             r"\S+/graphs/\S+\.py"):
        out.cpu()
    out = torch.tensor([4, 5]).to("lazy") // torch.tensor([2, 0]).to("lazy")
    with pytest.raises(lazytriton.LazyExecutionError, match="ZeroDivisionError"):
        out.cpu()


def test_random_numbers_are_uniform_and_normal_and_follow_the_seed():
    torch.manual_seed(3)
    u = torch.rand(20000, device="lazy").cpu()
    n = torch.randn(20000, device="lazy").cpu()
    torch.manual_seed(3)
    again = torch.rand(20000, device="lazy").cpu()
    assert torch.equal(u, again) and 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(n.mean())) < 0.03
    assert abs(float(n.std()) - 1) < 0.03
    x = torch.ones(1000).to("lazy")
    dropped = F.dropout(x, 0.5).cpu()
    assert set(dropped.unique().tolist()) == {0.0, 2.0} and 350 < int((dropped == 0).sum()) < 650


def test_scatter_accumulates_duplicates_in_order():
    torch.manual_seed(4)
    x, rows, values = torch.randn(6, 9), torch.randint(0, 6, (40,)), torch.randn(40, 9)
    got = x.to("lazy").index_put((rows.to("lazy"),), values.to("lazy"), accumulate=True)
    torch.testing.assert_close(got.cpu(), x.index_put((rows,), values, accumulate=True))
    ints = torch.randint(0, 9, (6, 9))  # integers: atomics, order cannot matter
    got = ints.to("lazy").index_put((rows.to("lazy"),), ints[rows].to("lazy"), accumulate=True)
    assert torch.equal(got.cpu(), ints.index_put((rows,), ints[rows], accumulate=True))
    assert not [n for n in metrics.counter_names() if n.startswith("aten::")]


@pytest.mark.slow
def test_int64_indexing_runs_and_compiles(triton_device, tmp_path, monkeypatch):
    """Sizes past int32 are too big for a test: take the int64 path at small sizes."""
    from lazytriton.codegen.triton import TritonKernel
    from lazytriton.testing.aot import compile_folder
    monkeypatch.setattr(TritonKernel, "_fits_int32", lambda self: False)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-cache"))
    for rows in (9, 12):  # the second size: compiled with the rows a size parameter
        x, idx = torch.randn(rows, 31), torch.randint(0, 31, (rows, 40))
        src = torch.randn(rows, 40)
        lx = x.to("lazy")
        got = [torch.softmax(lx, 1), lx.argmax(0), (lx * 2).sum(), lx.t().exp(),
               lx.scatter_add(1, idx.to("lazy"), src.to("lazy"))]
        want = [torch.softmax(x, 1), x.argmax(0), (x * 2).sum(), x.t().exp(),
                x.scatter_add(1, idx, src)]
        lazytriton.mark_step()
        for g, w in zip(got, want):
            torch.testing.assert_close(g.cpu(), w, rtol=1e-5, atol=1e-5)
    folder, = [f for f in _folders(triton_device)
               if (f / "ir.txt").read_text().startswith("# size symbols")]
    for entry in json.loads((folder / "kernels.json").read_text()):
        source = _source(folder, entry)
        assert entry["index_dtype"] == "int64" and "ks0 = ks0.to(tl.int64)" in source
        assert "tl.program_id(0) *" not in source
    assert compile_folder(folder)


def test_floor_division_of_negative_index_terms():
    """Triton's // and % truncate like C: a possibly negative dividend gets floor helpers."""
    from lazytriton.codegen.triton import TritonPrinter
    from lazytriton.sizevars import FloorDiv, ModularIndexing, index_symbol, size_symbol
    s0, s1, x = size_symbol(0), size_symbol(1), index_symbol("x", 0)
    printer = TritonPrinter()
    assert printer.doprint(FloorDiv(x + s0, 2)) == "((x0 + s0) // 2)"
    assert printer.doprint(FloorDiv(s0 - s1, 2)).startswith("floor_div(")
    assert printer.doprint(ModularIndexing(x - 3, 1, s0)).startswith("floor_mod(")
    # and on data: a conv-like size (s - k) // 2 where s < k
    x = torch.arange(-7, 8)
    got = (x.to("lazy") // 3, x.to("lazy") % 3, torch.div(x.to("lazy"), -2, rounding_mode="floor"))
    want = (x // 3, x % 3, torch.div(x, -2, rounding_mode="floor"))
    for g, w in zip(got, want):
        assert torch.equal(g.cpu(), w)


def test_floor_helpers_match_python_on_negative_dividends(tmp_path):
    from lazytriton.codegen.triton import module_source
    kernel = ("@triton.jit\n"
              "def floors(p0, p1, p2, XBLOCK: tl.constexpr):\n"
              "    i = tl.arange(0, XBLOCK)\n"
              "    a = tl.load(p0 + i)\n"
              "    tl.store(p1 + i, floor_div(a, 3))\n"
              "    tl.store(p2 + i, floor_mod(a, 3))\n")
    path = tmp_path / "floors.py"
    path.write_text(module_source("floors", [], [kernel]))
    module, _ = triton_backend.load_kernel_module(path, interpret=not torch.cuda.is_available())
    a = torch.arange(-8, 8, device=lazytriton.runtime.session.current().device)
    q, r = torch.empty_like(a), torch.empty_like(a)
    module.floors[(1,)](a, q, r, XBLOCK=16)
    assert torch.equal(q.cpu(), a.cpu() // 3) and torch.equal(r.cpu(), a.cpu() % 3)


def test_ops_handlers_answer_every_element_op():
    from lazytriton.lowering import pointwise
    from lazytriton.codegen.common import ELEMENT_OPS, missing_ops
    from lazytriton.codegen.cpp import CppOps
    from lazytriton.codegen.triton_ops import TritonOps
    assert missing_ops(CppOps(None)) == [] and missing_ops(TritonOps(None)) == []
    used = set(pointwise._UNARY.values()) | set(pointwise._BINARY.values()) | \
        set(pointwise._COMPARE.values())
    assert used <= ELEMENT_OPS


def test_auto_is_cpp_without_cuda_and_missing_triton_says_how_to_install(monkeypatch, tmp_path):
    if not torch.cuda.is_available():
        lazytriton.init("auto", cache_dir=tmp_path)
        assert lazytriton.backend_name() in ("cpp", "aten")
    monkeypatch.setattr(triton_backend, "triton_installed", lambda: False)
    with pytest.raises(RuntimeError, match=re.escape('pip install -e ".[triton]"')):
        lazytriton.init("triton", cache_dir=tmp_path)


# --- ahead-of-time compile for sm_90 --------------------------------------------------------

def _representative_graphs():
    """The graphs whose kernels must all compile for a GPU."""
    from lazytriton.testing.models import TutorialNet
    torch.manual_seed(0)
    x = torch.randn(6, 40)
    lx = x.to("lazy")
    pointwise_chain(lx).cpu()
    torch.softmax(lx * 2, -1).cpu()
    w = torch.randn(40).to("lazy").requires_grad_()
    xg = lx.detach().requires_grad_()
    y = F.layer_norm(xg, (40,), w)
    torch.autograd.grad((y * y).sum(), [xg, w])[0].cpu()
    t = torch.randn(3, 4, 5).to("lazy")
    lazytriton.to_cpu([t.sum(0), t.sum(1), t.sum(2), t.argmax(1)])
    idx = torch.randint(0, 5, (3, 4, 7)).to("lazy")
    t.scatter_add(2, idx, torch.randn(3, 4, 7).to("lazy")).cpu()
    F.dropout(lx, 0.3).cpu()
    (lx.bfloat16() * 2).exp().cpu()
    lazytriton.to_cpu([(lx.half() * 3).float(), (lx.bfloat16() + 1).sum()])  # rounded, then read
    lx.half().index_fill(0, torch.tensor([1, 4]).to("lazy"), -2).cpu()  # a number into f16
    F.pad(torch.randint(-9, 10, (9,), dtype=torch.int32).to("lazy") % 4, (1, 2)).cpu()
    (torch.cat([lx[:2], lx[2:] * 2])[3] + 1).cpu()  # a cat's branch at a constant position
    ints = (torch.randint(1, 10, (2, 9), dtype=torch.int32) * torch.tensor([1, -1]).repeat(5)[:9]
            ).int().to("lazy")  # no zero divisor, both signs
    lazytriton.to_cpu([ints // ints[1], ints % ints[0], ints // -1])  # -1 divides apart
    lazytriton.to_cpu([lx.clamp(min=-0.5), lx.clamp(max=float("nan")),  # NaN bounds: NaN
                       torch.clamp(lx, lx * 0.1, lx + 1), lx.pow(0.5), lx.pow(-0.5)])
    net = TutorialNet().to("lazy")  # the tutorial's training step, dropout included
    opt = torch.optim.Adadelta(net.parameters(), lr=1.0)
    opt.zero_grad()
    images, labels = torch.randn(2, 1, 28, 28).to("lazy"), torch.tensor([1, 7]).to("lazy")
    F.nll_loss(net(images), labels).backward()
    opt.step()
    lazytriton.mark_step()
    lazytriton.wait_device_ops()


@pytest.mark.slow
def test_every_kernel_compiles_for_sm90(triton_device, tmp_path, monkeypatch):
    from lazytriton.testing.aot import compile_folder
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-cache"))  # really compile
    _representative_graphs()
    folders = _folders(triton_device)
    compiled = [r for folder in folders for r in compile_folder(folder)]
    names = {r["function"] for r in compiled}
    kernels = sum(len(json.loads((f / "kernels.json").read_text())) for f in folders)
    # every kernel of every graph (a scatter's has two functions), none empty
    assert kernels and len(compiled) >= kernels and all(r["cubin_bytes"] > 0 for r in compiled)
    assert any("max_pool2d" in n for n in names)  # the Net's pool, as loops
    for kind in ("poi", "per", "sca"):
        assert any(n.startswith(f"triton_{kind}_") for n in names), (kind, names)
    assert any("_copy" in n for n in names)  # a scatter's two functions


# --- math beyond Triton's core: libdevice on a GPU, core-op formulas under the interpreter ----

def _normal(scale, shift=0.0):
    return lambda: torch.randn(64) * scale + shift


def _uniform(low, high):
    return lambda: torch.rand(64) * (high - low) + low


_UNARY_MATH = {  # helper: (torch reference, inputs)
    "tanh": (torch.tanh, _normal(4)), "sinh": (torch.sinh, _normal(3)),
    "cosh": (torch.cosh, _normal(3)), "tan": (torch.tan, _normal(1)),
    "asin": (torch.asin, _uniform(-1, 1)), "acos": (torch.acos, _uniform(-1, 1)),
    "atan": (torch.atan, _normal(5)), "atanh": (torch.atanh, _uniform(-0.9, 0.9)),
    "asinh": (torch.asinh, _normal(5)), "acosh": (torch.acosh, _uniform(1, 10)),
    "erfc": (torch.erfc, _normal(2)), "lgamma": (torch.lgamma, _normal(6)),
    "log1p": (torch.log1p, _uniform(-0.9, 4)), "expm1": (torch.expm1, _normal(3)),
    "log10": (torch.log10, _uniform(1e-3, 100)), "nearbyint": (torch.round, _normal(4)),
}
_BINARY_MATH = {
    "pow": (torch.pow, lambda: (torch.rand(64) * 3 + 0.1, torch.randn(64) * 3)),
    "atan2": (torch.atan2, lambda: (torch.randn(64), torch.randn(64))),
    "hypot": (torch.hypot, lambda: (torch.randn(64), torch.randn(64))),
    "fmod": (torch.fmod, lambda: (torch.randn(64) * 9, torch.randn(64).abs() + 0.5)),
}


def _math_module(tmp_path, name: str, calls: list[str], arity: int):
    from lazytriton.codegen.triton import module_source
    args = ", ".join(f"tl.load(p{k} + i)" for k in range(arity))
    out = " + ".join(f"{c}({args})" for c in calls)
    params = ", ".join(f"p{k}" for k in range(arity + 1))
    kernel = (f"@triton.jit\ndef {name}({params}, XBLOCK: tl.constexpr):\n"
              f"    i = tl.arange(0, XBLOCK)\n    tl.store(p{arity} + i, {out})\n")
    path = tmp_path / f"{name}.py"
    path.write_text(module_source(name, [], [kernel]))
    return path


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter forms")
@pytest.mark.parametrize("name", list(_UNARY_MATH) + list(_BINARY_MATH))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_interpreter_math_matches_torch(tmp_path, name, dtype):
    table = _UNARY_MATH if name in _UNARY_MATH else _BINARY_MATH
    reference, make = table[name]
    torch.manual_seed(5)
    inputs = make()
    inputs = [t.to(dtype) for t in (inputs if isinstance(inputs, tuple) else (inputs,))]
    path = _math_module(tmp_path, "math_" + name, [name], len(inputs))
    out = torch.empty_like(inputs[0])
    getattr(triton_backend.load_kernel_module(path, True)[0], "math_" + name)[(1,)](
        *inputs, out, XBLOCK=64)
    tol = dict(rtol=2e-7, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-12)
    torch.testing.assert_close(out, reference(*inputs), **tol)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter forms")
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # atan2 reads 1 / +-0's sign
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_interpreter_math_keeps_tails_and_float64_constants(tmp_path, dtype):
    """Found by a stress run: erfc's tail, relative (1 - erf(x) gave erfc(6) = 0 where it is
    2e-17, and log(erfc) -inf), and atan2(+-0, x < 0) = +-pi in float64 (the constant came out
    float32)."""
    tiny = float(torch.finfo(dtype).tiny)
    x = torch.linspace(2.0, 26.0 if dtype == torch.float64 else 9.0, 64, dtype=dtype)
    module = triton_backend.load_kernel_module(_math_module(tmp_path, "math_erfc", ["erfc"], 1),
                                               True)[0]
    out = torch.empty_like(x)
    module.math_erfc[(1,)](x, out, XBLOCK=64)
    want = torch.erfc(x)
    assert ((out - want).abs() <= 1e-12 * want.abs() + tiny * 16).all() if dtype == \
        torch.float64 else torch.allclose(out, want, rtol=2e-7, atol=0), (out, want)
    zeros = torch.tensor([0.0, -0.0] * 32, dtype=dtype)
    module = triton_backend.load_kernel_module(
        _math_module(tmp_path, "math_atan2", ["atan2"], 2), True)[0]
    out = torch.empty_like(zeros)
    module.math_atan2[(1,)](zeros, -torch.rand(64, dtype=dtype) - 0.5, out, XBLOCK=64)
    assert torch.equal(out, torch.atan2(zeros, -torch.ones(64, dtype=dtype))), out


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp32", "fp64"])
def test_libdevice_math_compiles_for_sm90(tmp_path, monkeypatch, dtype):
    import triton
    from triton.backends.compiler import GPUTarget
    from lazytriton.testing.aot import load_compiled
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-cache"))
    for arity, names in ((1, list(_UNARY_MATH)), (2, list(_BINARY_MATH))):
        fn = getattr(load_compiled(_math_module(tmp_path, f"math{arity}", names, arity)),
                     f"math{arity}")
        signature = {f"p{k}": f"*{dtype}" for k in range(arity + 1)} | {"XBLOCK": "constexpr"}
        compiled = triton.compile(triton.compiler.ASTSource(fn, signature, {"XBLOCK": 64}),
                                  target=GPUTarget("cuda", 90, 32))
        assert compiled.asm["cubin"]
