"""The Triton matmul template (templates/triton/matmul.py.jinja): with LAZYTRITON_MM_TEMPLATE=1
an mm/addmm and its pointwise consumers are one template kernel, run here under Triton's
interpreter against eager, and compiled ahead of time for sm_90. Shapes are tiny (the
interpreter runs every program in Python) but not multiples of the blocks."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import lazytriton
from lazytriton import metrics
from lazytriton.runtime import triton_backend

pytestmark = pytest.mark.skipif(not triton_backend.triton_installed(), reason="needs triton")

# fp16 products round once per output in eager (float accumulation inside); the template does
# the same, but sums in another order
TOLERANCE = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float16: dict(rtol=2e-3, atol=2e-3),
             torch.bfloat16: dict(rtol=1.6e-2, atol=1.6e-2)}


@pytest.fixture(autouse=True)
def template_device(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYTRITON_MM_TEMPLATE", "1")
    lazytriton.init("triton", cache_dir=tmp_path / "cache")
    metrics.reset()
    torch.manual_seed(0)
    yield tmp_path / "cache"
    lazytriton.wait_device_ops()


def _kernels(cache_dir) -> list[tuple]:
    """(folder, kernels.json entry) of every compiled graph's kernels, oldest graph first."""
    folders = sorted((p.parent for p in (cache_dir / "graphs").glob("*/kernels.json")),
                     key=lambda p: p.stat().st_mtime)
    return [(f, e) for f in folders for e in json.loads((f / "kernels.json").read_text())]


def _templates(cache_dir) -> list[dict]:
    return [e for _, e in _kernels(cache_dir) if e["kernel"].startswith("triton_tem_")]


def _check(fn, *inputs, dtype=torch.float32):
    inputs = [t.to(dtype) for t in inputs]
    want = fn(*inputs)
    got = fn(*[t.to("lazy") for t in inputs])
    torch.testing.assert_close(got.cpu(), want, **TOLERANCE[dtype])


def _linear_relu(x, w, b):
    return F.relu(F.linear(x, w, b))


def _linear_residual(x, w, b, r):
    return F.linear(x, w, b) + r


@pytest.mark.parametrize("m, k, n", [(5, 7, 3), (33, 20, 17), (16, 32, 16), (70, 9, 40)])
def test_mm_and_addmm_any_size(template_device, m, k, n):
    a, b, bias = torch.randn(m, k), torch.randn(k, n), torch.randn(n)
    _check(torch.mm, a, b)
    _check(torch.addmm, bias, a, b)
    _check(lambda c, x, y: torch.addmm(c, x, y, beta=0.5, alpha=2.0), torch.randn(m, n), a, b)
    templates = _templates(template_device)
    assert len(templates) == 3 and all("aten::" not in n for n in metrics.counter_names())


def test_linear_relu_and_residual_are_one_kernel(template_device):
    x, w, b, r = torch.randn(37, 50), torch.randn(70, 50), torch.randn(70), torch.randn(37, 70)
    _check(_linear_relu, x, w, b)
    _check(_linear_residual, x, w, b, r)
    _check(lambda x, w, b, r: F.gelu(F.linear(x, w, b)) * r, x, w, b, r)
    for folder, entry in _kernels(template_device):
        assert entry["kernel"].startswith("triton_tem_addmm_")  # the only kernel of each graph
        assert "extern" not in (folder / "wrapper.py").read_text().split("def call")[1]
    fused = [set(e["fused_ops"]) for e in _templates(template_device)]
    assert {"addmm.default", "relu.default"} <= fused[0]
    assert {"addmm.default", "add.Tensor"} <= fused[1]
    assert {"addmm.default", "gelu.default", "mul.Tensor"} <= fused[2]


def test_product_read_elsewhere_is_stored_too(template_device):
    x, w, b = torch.randn(9, 12), torch.randn(20, 12), torch.randn(20)
    lx, lw, lb = x.to("lazy"), w.to("lazy"), b.to("lazy")
    y = F.linear(lx, lw, lb)
    z = y.relu()
    s = y.sum(0)  # reads the product at other rows: not the template's epilogue
    torch.testing.assert_close(y.cpu(), F.linear(x, w, b), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(z.cpu(), F.linear(x, w, b).relu(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(s.cpu(), F.linear(x, w, b).sum(0), rtol=1e-4, atol=1e-4)


def test_linear_on_sequences_fuses_its_3d_consumers(template_device):
    """A linear layer on [batch, seq, features] is an addmm on a [batch*seq, features] view;
    its consumers over [batch, seq, out] (GELU, a residual broadcast over seq) are the
    epilogue, each sequence position a row of the tile."""
    x, w, b = torch.randn(3, 5, 12), torch.randn(20, 12), torch.randn(20)
    _check(lambda x, w, b: F.gelu(F.linear(x, w, b)), x, w, b)
    _check(_linear_residual, x, w, b, torch.randn(3, 1, 20))
    for batch in (2, 7):
        _check(_linear_residual, torch.randn(batch, 5, 12), w, b, torch.randn(batch, 5, 20))
    for folder, entry in _kernels(template_device):
        assert entry["kernel"].startswith("triton_tem_addmm_")  # the only kernel of each graph
        assert entry["members"] and len(entry["members"][0]["sizes"]) == 3


@pytest.mark.parametrize("layout", ["a.t()", "b.t()", "both", "slice"])
def test_transposed_and_sliced_operands(template_device, layout):
    a, b, bias = torch.randn(21, 13), torch.randn(13, 19), torch.randn(19)

    def fn(a, b, bias):
        if layout in ("a.t()", "both"):
            a = a.t().contiguous().t()  # column-major A: a strided view of a transpose
        if layout in ("b.t()", "both"):
            b = b.t().contiguous().t()
        if layout == "slice":
            a, b = torch.cat([a, a], 1)[:, 3:16], b
        return torch.addmm(bias, a, b).relu()
    _check(fn, a, b, bias)
    _check(lambda x: x.t() @ x + 1.0, torch.randn(11, 6))  # both operands views of one input


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision(template_device, dtype):
    x, w, b, r = torch.randn(19, 24), torch.randn(33, 24), torch.randn(33), torch.randn(19, 33)
    _check(_linear_relu, x, w, b, dtype=dtype)
    _check(_linear_residual, x, w, b, r, dtype=dtype)
    assert len(_templates(template_device)) == 2


def test_batch_sizes_that_change_reuse_one_template(template_device):
    """The second batch size makes M a size symbol: one shape-generic program serves the rest."""
    w, b = torch.randn(24, 10), torch.randn(24)
    for batch in (8, 13, 29, 5):
        _check(_linear_relu, torch.randn(batch, 10), w, b)
    generic = [e for f, e in _kernels(template_device)
               if (f / "ir.txt").read_text().startswith("# size symbols")]
    assert len(generic) == 1 and metrics.counter_value("UncachedCompile") == 2
    assert isinstance(generic[0]["launches"][0]["grid"][0], str)  # depends on the batch


def test_training_step_matches_eager(template_device):
    """Forward and backward mm's as templates (grad @ W, X^T @ grad): an MLP's SGD steps."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(12, 20), torch.nn.ReLU(), torch.nn.Linear(20, 5))
    lazy = torch.nn.Sequential(*[torch.nn.Linear(12, 20), torch.nn.ReLU(), torch.nn.Linear(20, 5)])
    lazy.load_state_dict(model.state_dict())
    lazy = lazy.to("lazy")
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, lazy)]
    for step in range(3):
        x, y = torch.randn(10, 12), torch.randint(0, 5, (10,))
        for m, opt, (xx, yy) in zip((model, lazy), opts,
                                    [(x, y), (x.to("lazy"), y.to("lazy"))]):
            opt.zero_grad()
            F.cross_entropy(m(xx), yy).backward()
            opt.step()
        lazytriton.mark_step()
    for p, q in zip(model.parameters(), lazy.parameters()):
        torch.testing.assert_close(q.cpu(), p, rtol=1e-4, atol=1e-4)
    fused = [set(e["fused_ops"]) for e in _templates(template_device)]
    assert len(fused) >= 4
    assert any({"mm.default", "threshold_backward.default"} <= f for f in fused)  # ReLU's grad
    # a weight's update (SGD's one op from its second step: optim_sgd.py) in the template's
    # epilogue
    assert any({"mm.default", "sgd_update.default"} <= f for f in fused), fused


def test_without_the_switch_mm_stays_an_extern(template_device, monkeypatch):
    monkeypatch.setenv("LAZYTRITON_MM_TEMPLATE", "0")
    _check(_linear_relu, torch.randn(6, 4), torch.randn(5, 4), torch.randn(5))
    assert not _templates(template_device)


@pytest.mark.slow
def test_template_kernels_compile_for_sm90(template_device, tmp_path, monkeypatch):
    from lazytriton.testing.aot import compile_folder
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-cache"))  # really compile
    x, w, b, r = torch.randn(19, 24), torch.randn(33, 24), torch.randn(33), torch.randn(19, 33)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        _check(_linear_residual, x, w, b, r, dtype=dtype)
    _check(lambda a, b: a.t() @ b, torch.randn(7, 5), torch.randn(7, 9))
    for batch in (8, 13):  # shape-generic: sizes as parameters
        _check(_linear_relu, torch.randn(batch, 24), w, b)
    folders = {f for f, e in _kernels(template_device) if e["kernel"].startswith("triton_tem_")}
    compiled = [r for f in sorted(folders) for r in compile_folder(f)]
    assert len(compiled) == 6 and all(r["cubin_bytes"] > 0 for r in compiled)


def test_dropout_in_the_epilogue_draws_the_same_mask(template_device, monkeypatch):
    """Random numbers are keyed by the element's flat offset: fused into the template's
    epilogue, dropout keeps exactly the elements it keeps after an extern mm."""
    x, w, b = torch.randn(9, 12), torch.randn(20, 12), torch.randn(20)
    results = []
    for forced in ("1", "0"):
        monkeypatch.setenv("LAZYTRITON_MM_TEMPLATE", forced)
        lazytriton.init("triton", cache_dir=template_device / forced)
        torch.manual_seed(3)
        results.append(F.dropout(F.linear(x.to("lazy"), w.to("lazy"), b.to("lazy")), 0.5).cpu())
    template, extern = results
    assert torch.equal(template == 0, extern == 0) and 0 < int((template == 0).sum()) < 180
    torch.testing.assert_close(template, extern, rtol=1e-5, atol=1e-5)
    assert "native_dropout" in _templates(template_device / "1")[0]["kernel"]


@pytest.mark.slow
def test_gpu_candidate_tiles_compile_for_sm90(template_device, tmp_path, monkeypatch):
    """The tiles mode "max" times on a GPU (not those the interpreter uses), each compiled for
    sm_90 from the same source: a source never depends on its config."""
    from lazytriton.codegen.triton_config import matmul_candidates
    from lazytriton.testing.aot import compile_kernel
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-cache"))
    x, w, b = torch.randn(20, 24), torch.randn(40, 24), torch.randn(40)
    _check(_linear_relu, x, w, b, dtype=torch.float16)  # run small, compiled with large tiles
    ((folder, entry),) = [(f, e) for f, e in _kernels(template_device)
                          if e["kernel"].startswith("triton_tem_")]
    configs = [c.as_dict() for c in matmul_candidates(300, 512, 256, interpret=False)]
    assert len(configs) >= 6
    entry = dict(entry, launches=[{"function": entry["kernel"], "config": c} for c in configs])
    compiled = compile_kernel(folder, entry)
    assert len(compiled) == len(configs) and all(r["cubin_bytes"] > 0 for r in compiled)
