"""The C++ backend's kernel variants (codegen/cpp_variants.py): every variant of every kernel,
forced one at a time, against eager on random data (float32 and float64, contiguous and not);
the heuristic's choices (softmax stores exp and multiplies by the reciprocal; a column sum runs
its rows outside; layer norm's mean is reduced once); and tuning end to end: a second process
reuses the records without timing anything."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import lazytriton
from lazytriton import autotune, metrics

pytestmark = pytest.mark.skipif("cpp" not in lazytriton.available_backends(),
                                reason="needs a C++ compiler")


def _kernel_entries(cache) -> list[dict]:
    return [e for path in sorted((cache / "graphs").glob("*/kernels.json"))
            for e in json.loads(path.read_text())]


def _layer_norm_backward(x, w, b):
    x = x.detach().requires_grad_()
    w = w.detach().requires_grad_()
    y = torch.nn.functional.layer_norm(x, x.shape[-1:], w, b)
    gx, gw = torch.autograd.grad((y * y.detach().cos()).sum(), (x, w))
    return gx, gw


def _cross_entropy(x, w):
    x = x.detach().requires_grad_()
    loss = torch.nn.functional.cross_entropy(x, torch.arange(x.shape[0], device=x.device) % x.shape[1])
    (g,) = torch.autograd.grad(loss, x)
    return loss, g


CASES = {
    "softmax": (lambda x, w: torch.softmax(x, -1), [(64, 300), (3, 5, 40)]),
    "softmax_dim0": (lambda x, w: torch.softmax(x, 0), [(64, 300)]),
    "log_softmax": (lambda x, w: torch.log_softmax(x, -1), [(64, 300)]),
    "exp_over_sum": (lambda x, w: x.exp() / x.exp().sum(-1, keepdim=True) + w[0], [(32, 700)]),
    "layer_norm": (lambda x, w: torch.nn.functional.layer_norm(x, x.shape[-1:], w, w * 0.5),
                   [(64, 300)]),
    "layer_norm_backward": (lambda x, w: _layer_norm_backward(x, w, w * 0.1), [(32, 200)]),
    "cross_entropy": (_cross_entropy, [(48, 100)]),
    "sum_each_axis": (lambda x, w: (x.sum(0), x.sum(1), x.sum(-1), x.amax(0), x.prod(0)),
                      [(40, 33, 150)]),
    "column_max_min": (lambda x, w: (x.max(0).values, (x > 0).any(0), x.amin(0)), [(300, 520)]),
    "small_pointwise": (lambda x, w: (x * 0.9 + w[0]).sigmoid(), [(24, 30)]),
    "mid_pointwise": (lambda x, w: (x * 0.9 - x.tanh()).relu(), [(64, 300)]),
}


def _inputs(shape, dtype, layout):
    if layout == "transposed":  # the same values, a non-contiguous view
        x = torch.randn(*reversed(shape), dtype=dtype).transpose(0, -1)
    elif layout == "sliced":
        x = torch.randn(*shape[:-1], shape[-1] * 2, dtype=dtype)[..., ::2]
    else:
        x = torch.randn(*shape, dtype=dtype)
    return x, torch.randn(shape[-1], dtype=dtype)


def _flat(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


# non-contiguous inputs in float32; float64 contiguous (its variants differ in type only)
LAYOUTS = [("contiguous", torch.float32), ("transposed", torch.float32),
           ("sliced", torch.float32), ("contiguous", torch.float64)]


@pytest.mark.parametrize("layout,dtype", LAYOUTS, ids=["f32", "f32-transposed", "f32-sliced", "f64"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_variant_matches_eager(case, layout, dtype, tmp_path):
    fn, shapes = CASES[case]
    for n, shape in enumerate(shapes):
        x, w = _inputs(shape, dtype, layout)
        expected = _flat(fn(x, w))
        cache = tmp_path / f"shape{n}"
        lazytriton.init("cpp", cache_dir=cache, autotune="max")
        with autotune.forced("heuristic-only"):  # a label no kernel has: each its heuristic
            _check(fn, x, w, expected)
        labels = {label for e in _kernel_entries(cache) for label in e["candidates"]}
        for label in sorted(labels):
            lazytriton.init("cpp", cache_dir=cache, autotune="max")  # new programs
            with autotune.forced(label):
                _check(fn, x, w, expected)
            chosen = [b["chosen"] for e in _kernel_entries(cache)
                      for b in e.get("autotune", {}).get("buckets", {}).values()]
            assert label in chosen, (label, chosen)


def _check(fn, x, w, expected):
    got = _flat(fn(x.to("lazy"), w.to("lazy")))
    got = lazytriton.to_cpu(got)
    tol = {} if x.dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, **tol)


def _source(tmp_path, fn, *inputs, mode="off") -> str:
    lazytriton.init("cpp", cache_dir=tmp_path, autotune=mode)
    lazytriton.to_cpu(_flat(fn(*[t.to("lazy") for t in inputs])))
    return "\n".join(p.read_text() for p in sorted((tmp_path / "graphs").glob("*/kernels.cpp")))


def test_heuristic_softmax_stores_exp_and_multiplies_by_the_reciprocal(tmp_path):
    source = _source(tmp_path, lambda x: torch.softmax(x, -1), torch.randn(16, 100))
    assert source.count("exp_nonpos_f32(") == 1 and "(1 / (acc1))" in source
    assert "__c1" not in source  # mode off: no variants compiled


def test_layer_norm_reduces_its_mean_once(tmp_path):
    source = _source(tmp_path, lambda x: torch.nn.functional.layer_norm(x, (100,)),
                     torch.randn(16, 100))
    assert source.count("reduction(+:") == 2  # mean and variance; not the mean twice


def test_a_kernel_is_as_parallel_as_its_largest_member(tmp_path):
    """An optimizer kernel updating a 128x9216 weight and its 128-element bias together has
    1.2M elements of work, not 128 (sizes were once compared as text, and "128" > "1179648")."""
    def update(w, b, gw, gb):
        return w.add_(gw, alpha=-0.1), b.add_(gb, alpha=-0.1)
    w, b = torch.randn(128, 9216), torch.randn(128)
    gw, gb = torch.randn(128, 9216), torch.randn(128)
    source = _source(tmp_path, update, w, b, gw, gb)
    assert "#pragma omp parallel for" in source


def test_row_max_tracks_nan_beside_a_plain_max(tmp_path):
    x = torch.randn(8, 300)
    x[2, 17], x[5] = float("nan"), float("-inf")
    x[6, :] = float("nan")
    source = _source(tmp_path, lambda t: (t.amax(-1), t.amin(-1), torch.softmax(t, -1)), x)
    assert "reduction(max:acc0) reduction(|:acc0_nan)" in source and "ltmax" not in source
    lazytriton.init("cpp", cache_dir=tmp_path, autotune="off")
    got = lazytriton.to_cpu([x.to("lazy").amax(-1), x.to("lazy").amin(-1),
                             torch.softmax(x.to("lazy"), -1)])
    for g, e in zip(got, [x.amax(-1), x.amin(-1), torch.softmax(x, -1)]):
        torch.testing.assert_close(g, e, equal_nan=True)


def test_column_sum_runs_its_rows_outside(tmp_path):
    source = _source(tmp_path, lambda x: x.sum(0), torch.randn(300, 200))
    assert "xb += 128" in source


def test_default_mode_offers_variants_only_where_the_heuristic_is_weak(tmp_path):
    # the column sum over other rows than the softmax's: a kernel of its own (over the same
    # rows it would join the softmax's kernel, as partials over its row loop)
    source = _source(tmp_path, lambda x, w, z: (torch.softmax(x, -1), (w * 2).sum(0),
                                                z.cos() + 1),
                     torch.randn(64, 4096), torch.randn(300, 2048), torch.randn(1 << 20),
                     mode="default")
    labels = [e["candidates"] for e in _kernel_entries(tmp_path)]
    assert ["auto-store", "auto"] in labels  # softmax: store or recompute
    assert ["auto-columns128", "auto"] in labels  # column sum: order
    assert ["auto"] in labels  # a large pointwise kernel: nothing to tune
    assert "__c2" not in source


def test_tuned_graph_reuses_records_in_a_second_process(tmp_path):
    script = textwrap.dedent(f"""
        import json, pathlib, torch, lazytriton
        from lazytriton import metrics
        lazytriton.init("cpp", cache_dir={str(tmp_path)!r}, autotune="default")
        torch.manual_seed(0)
        x, y = torch.randn(128, 700), torch.randn(300, 700)  # other rows: two kernels
        got = lazytriton.to_cpu([torch.softmax(x.to("lazy"), -1), y.to("lazy").sum(0)])
        torch.testing.assert_close(got[0], torch.softmax(x, -1))
        torch.testing.assert_close(got[1], y.sum(0), rtol=1e-4, atol=1e-4)
        ways = sorted(b["how"] for p in pathlib.Path({str(tmp_path)!r}).glob("graphs/*/kernels.json")
                      for e in json.loads(p.read_text()) for b in e.get("autotune", {{}}).get(
                          "buckets", {{}}).values())
        print(metrics.counter_value("AutotuneBenchmark"), metrics.counter_value(
            "AutotuneCacheHit"), ",".join(ways))
        assert "AutotuneTime" in metrics.metrics_report() or not metrics.counter_value(
            "AutotuneBenchmark")
    """)
    env = dict(os.environ)
    env.pop("LAZYTRITON_AUTOTUNE", None)
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env=env, timeout=300) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    first, second = (run.stdout.split() for run in runs)
    # two kernels, each with two or more variants (serial against parallel too, near the threshold)
    assert int(first[0]) >= 4 and first[1:] == ["None", "tuned,tuned"]
    assert second == ["None", "2", "record,record"]  # nothing timed the second time


def test_hoisting_moves_only_loop_invariant_declarations():
    from lazytriton.codegen.cpp_hoist import hoisted as _hoisted
    body = ["float tmp0 = p0[(r0 + 8 * x0)];",  # reads memory: stays
            "float tmp1 = (acc0 / static_cast<float>(8.0));",  # invariant: moves
            "float tmp2 = (1 / std::sqrt(tmp1));",  # depends on a moved one only: moves
            "float tmp3 = (tmp0 - tmp1);",  # depends on a load: stays
            "int64_t tmp4 = lt::floordiv_int<int64_t>(a0, a1, err);",  # sets the flag: stays
            "float tmp5 = static_cast<float>(0);",  # assigned below (masked): stays
            "if (tmp3 > 0) {\n    tmp5 = tmp3;\n}",
            "float tmp6 = (tmp2 * static_cast<float>(r0));",  # names the loop var: stays
            "acc1 = acc1 + tmp6;"]
    before, rest = _hoisted(body, ["r0"])
    assert before == body[1:3]
    assert rest == body[:1] + body[3:]
