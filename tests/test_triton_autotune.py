"""Autotuning the Triton backend (codegen/triton_tuning.py), under Triton's interpreter: every
candidate a kernel offers gives eager's result (each forced in turn), tuning picks one of them,
writes it to kernels.json and to a record a later session reuses without timing anything.
Shapes are tiny: under the interpreter a kernel has at most three candidates."""
from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.nn.functional as F

import lazytriton
from lazytriton import autotune, metrics
from lazytriton.runtime import triton_backend

pytestmark = pytest.mark.skipif(not triton_backend.triton_installed(), reason="needs triton")


@pytest.fixture
def cache(tmp_path):
    yield tmp_path / "cache"
    lazytriton.wait_device_ops()  # (the next test's init sets its own mode)


def _start(cache, mode: str) -> None:
    lazytriton.init("triton", cache_dir=cache, autotune=mode)
    metrics.reset()


def _entries(cache) -> list[dict]:
    return [e for path in sorted((cache / "graphs").glob("*/kernels.json"))
            for e in json.loads(path.read_text())]


def _labels(cache, prefix: str) -> list[str]:
    (entry,) = [e for e in _entries(cache) if e["kernel"].startswith(prefix)]
    return entry["candidates"]


def _run(fn, inputs: list[torch.Tensor]):
    got = fn(*[t.to("lazy") for t in inputs])
    torch.testing.assert_close(got.cpu(), fn(*inputs), rtol=1e-4, atol=1e-4)


def _softmax_rows(x):
    return torch.softmax(x * 2, dim=1)


def _column_sum(x):
    return x.sum(0)


def _row_sum(x):
    return x.sum(1)


def _pointwise(x):
    return torch.sigmoid(x) * x + 1


def _linear_relu(x, w, b):
    return F.relu(F.linear(x, w, b))


CASES = {  # kernel name prefix, function, input shapes
    "softmax": ("triton_per_softmax", _softmax_rows, [(6, 40)]),
    "sum0": ("triton_per_sum", _column_sum, [(9, 5)]),
    "sum1": ("triton_per_sum", _row_sum, [(9, 5)]),
    "pointwise": ("triton_poi_sigmoid", _pointwise, [(7, 13)]),
    "template": ("triton_tem_addmm", _linear_relu, [(9, 12), (20, 12), (20,)]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_candidate_gives_eagers_result(cache, monkeypatch, case):
    prefix, fn, shapes = CASES[case]
    torch.manual_seed(0)
    inputs = [torch.randn(s) for s in shapes]
    _start(cache, "max")
    with autotune.forced("heuristic"):  # (no such label: candidate 0) just list them
        _run(fn, inputs)
    labels = _labels(cache, prefix)
    assert len(labels) >= 2, labels
    for label in labels:
        _start(cache, "max")
        with autotune.forced(label):
            _run(fn, inputs)
        (entry,) = [e for e in _entries(cache) if e["kernel"].startswith(prefix)]
        assert entry["autotune"]["buckets"]["static"]["chosen"] == label
    if case == "softmax":
        assert any(label.startswith("looped:") for label in labels)
        source = (next(cache.glob("graphs/*/triton_per_softmax_0.py"))).read_text()
        assert "def triton_per_softmax_0_looped(" in source and "for roffset in" in source
    if case == "template":
        assert labels[0] == "extern"  # aten's mm, then the epilogue kernel: what "off" runs


def test_tuning_persists_and_a_new_session_reuses_it(cache):
    torch.manual_seed(0)
    x, w, b = torch.randn(9, 12), torch.randn(20, 12), torch.randn(20)
    _start(cache, "max")
    _run(_softmax_rows, [x])
    _run(_linear_relu, [x, w, b])
    tuned = {e["kernel"]: e for e in _entries(cache) if "candidates" in e}
    assert len(tuned) == 2
    timed = sum(len(e["candidates"]) for e in tuned.values())
    assert metrics.counter_value("AutotuneBenchmark") == timed >= 5
    for entry in tuned.values():
        choice = entry["autotune"]["buckets"]["static"]
        assert choice["how"] == "tuned" and choice["chosen"] in entry["candidates"]
        assert entry["config"] == next(c["config"] for c in entry["candidate_launches"]
                                       if c["label"] == choice["chosen"])
    assert len(list((cache / "autotune").glob("*/*.json"))) == 2
    _start(cache, "max")  # a new session: new kernels, the records
    _run(_softmax_rows, [x])
    _run(_linear_relu, [x, w, b])
    assert not metrics.counter_value("AutotuneBenchmark")  # nothing timed (None: never counted)
    assert metrics.counter_value("AutotuneCacheHit") == 2


def test_modes_choose_what_is_tuned(cache, monkeypatch):
    """off: no candidates and no extra functions; default: the reductions only (and no
    template: mm stays an extern); max: pointwise kernels and the template too."""
    monkeypatch.delenv("LAZYTRITON_MM_TEMPLATE", raising=False)
    torch.manual_seed(0)
    x, w, b = torch.randn(9, 12), torch.randn(20, 12), torch.randn(20)

    def step(x, w, b):
        return _softmax_rows(_linear_relu(x, w, b)) + _pointwise(x).sum()
    found = {}
    for mode in ("off", "default", "max"):
        _start(cache / mode, mode)
        with autotune.forced("heuristic"):
            _run(step, [x, w, b])
        found[mode] = {e["kernel"].split("_")[1] for e in _entries(cache / mode)
                       if "candidates" in e}
    assert found == {"off": set(), "default": {"per"}, "max": {"per", "poi", "tem"}}
    sources = "".join(p.read_text() for p in (cache / "off").glob("graphs/*/*.py"))
    assert "_looped(" not in sources and "_epilogue(" not in sources


@pytest.mark.slow
def test_candidate_functions_compile_for_sm90(cache, tmp_path, monkeypatch):
    from lazytriton.testing.aot import compile_folder
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-cache"))  # really compile
    torch.manual_seed(0)
    _start(cache, "max")
    with autotune.forced("heuristic"):
        _run(_softmax_rows, [torch.randn(6, 40)])
        _run(_linear_relu, [torch.randn(9, 12), torch.randn(20, 12), torch.randn(20)])
    folders = sorted(p.parent for p in (cache / "graphs").glob("*/kernels.json"))
    compiled = [r for f in folders for r in compile_folder(f, candidates=True)]
    functions = {r["function"] for r in compiled}
    assert "triton_per_softmax_0_looped" in functions
    assert len(compiled) >= 5 and all(r["cubin_bytes"] > 0 for r in compiled)


def test_pointwise_rows_of_two_widths_take_row_configs(cache):
    """Pointwise members over different row widths share a row kernel (an r range per width):
    its candidates are row configs, each giving eager's values."""
    x = torch.randn(4, 6)

    def run():
        lx = x.to("lazy")
        a, b = lx * 2 + 1, lx[:, :3].exp()
        lazytriton.mark_step()
        torch.testing.assert_close(a.cpu(), x * 2 + 1)
        torch.testing.assert_close(b.cpu(), x[:, :3].exp())
    _start(cache, "max")
    with autotune.forced("heuristic"):
        run()
    labels = _labels(cache, "triton_poi_")
    assert len(labels) >= 2 and all("RBLOCK" in label for label in labels)
    for label in labels:
        _start(cache, "max")
        with autotune.forced(label):
            run()


@pytest.mark.parametrize("label", ["extern", "BLOCK_M=16,BLOCK_N=16,BLOCK_K=16,GROUP_M=8,w4,s1"])
def test_template_and_rival_over_batch_sizes_that_change(cache, label):
    """The extern rival (aten's addmm into the product, then the epilogue kernel) and a template
    tile, where the batch is a size symbol and the product is kept (read by a later sum)."""
    torch.manual_seed(0)
    w, b = torch.randn(20, 12), torch.randn(20)
    _start(cache, "max")
    with autotune.forced(label):
        for batch in (8, 13, 29):
            x = torch.randn(batch, 12)
            y = F.linear(x.to("lazy"), w.to("lazy"), b.to("lazy"))
            z, s = y.relu() * 2, y.sum(0)
            lazytriton.mark_step()
            torch.testing.assert_close(z.cpu(), F.linear(x, w, b).relu() * 2, rtol=1e-4,
                                       atol=1e-4)
            torch.testing.assert_close(s.cpu(), F.linear(x, w, b).sum(0), rtol=1e-4, atol=1e-4)
    entries = [e for e in _entries(cache) if e["kernel"].startswith("triton_tem_")]
    assert len(entries) == 2 and all(label in e["candidates"]
                                     for e in entries)


def test_extern_rival_of_a_linear_on_sequences(cache):
    """The rival's epilogue kernel over [batch, seq, out] (a view of the product), for several
    batch sizes (each compiled on its own today: the view's sizes are literals of the IR)."""
    torch.manual_seed(0)
    w, b = torch.randn(20, 12), torch.randn(20)
    _start(cache, "max")
    with autotune.forced("extern"):
        for batch in (2, 3, 7):
            _run(lambda x, w, b, r: F.gelu(F.linear(x, w, b)) + r,
                 [torch.randn(batch, 5, 12), w, b, torch.randn(batch, 5, 20)])
    entries = [e for e in _entries(cache) if e["kernel"].startswith("triton_tem_")]
    assert len(entries) >= 2 and all("extern" in e["candidates"]
                                     for e in entries)


def test_benchmark_names_template_against_extern(monkeypatch):
    """benchmarks/autotune.py's matmul row shows the template's best tile against its rival,
    from the times the tuner wrote into kernels.json."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).parent.parent / "benchmarks" / "autotune.py"
    spec = importlib.util.spec_from_file_location("autotune_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # (its dataclasses look it up)
    spec.loader.exec_module(bench)
    bucket = {"chosen": "extern", "ms": {"extern": 1.5, "BLOCK_M=64,w4": 2.25,
                                         "BLOCK_M=32,w4": 3.0, "BLOCK_M=16,w2": None}}
    assert bench.template_versus_extern(bucket) == \
        " (template 2.250 ms, extern + epilogue 1.500 ms)"
    assert bench.template_versus_extern({"ms": {"XBLOCK=4": 1.0, "XBLOCK=8": 2.0}}) == ""
