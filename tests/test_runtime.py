"""Graph capture, the graph cache, async execution, closures, metrics, IR dumps, disk cache."""
from __future__ import annotations

import json
import re
import threading

import pytest
import torch

import lazytriton
from lazytriton import metrics


def _sgd_step(model, opt, x, y):
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()
    lazytriton.mark_step()


def test_training_loop_compiles_once_or_twice_then_hits_cache():
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    model.to("lazy")
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)  # lr changes each step
    for _ in range(6):
        _sgd_step(model, opt, torch.randn(4, 6).to("lazy"), torch.randn(4, 1).to("lazy"))
        sched.step()
    assert metrics.counter_value("MarkStep") == 6
    assert metrics.counter_value("UncachedCompile") <= 2  # momentum buffers make step 1 differ
    assert metrics.counter_value("CachedCompile") >= 4


def test_changing_float_scalars_do_not_recompile():
    x = torch.randn(5).to("lazy")
    for scale in (0.5, 1.5, -2.25, 3.0):
        y = x * scale + scale
        lazytriton.mark_step()
        torch.testing.assert_close(y.cpu(), x.cpu() * scale + scale)
    assert metrics.counter_value("UncachedCompile") == 1
    assert metrics.counter_value("CachedCompile") == 3


def test_new_shape_or_dtype_is_a_new_graph():
    for shape, dtype in [((3,), torch.float32), ((4,), torch.float32), ((3,), torch.float64)]:
        (torch.randn(shape, dtype=dtype).to("lazy") + 1).cpu()
    assert metrics.counter_value("UncachedCompile") == 3


def test_distinct_inputs_are_not_confused_with_one_input_used_twice():
    a, b = torch.randn(4), torch.randn(4)
    la, lb = a.to("lazy"), b.to("lazy")
    torch.testing.assert_close((la - lb).cpu(), a - b)
    torch.testing.assert_close((la - la).cpu(), torch.zeros(4))


def test_reading_syncs_only_what_it_needs():
    x = torch.randn(8).to("lazy")
    unrelated = x.exp()
    needed = x.sin()
    needed.sum().item()
    text = lazytriton.debug.dump_ir([unrelated])
    assert "exp.default" in text  # still pending: not part of the read's graph
    assert "sin.default" not in text


def test_mark_step_is_async_and_wait_device_ops_waits():
    x = torch.randn(256, 256).to("lazy")
    for _ in range(10):
        x = torch.tanh(x @ x * 0.01)
    lazytriton.mark_step()
    handle = x._lt_storage.value.node.data
    lazytriton.wait_device_ops()
    assert handle.is_ready
    assert torch.isfinite(x.cpu()).all()


def test_sync_and_to_cpu_materialize_just_these():
    a = torch.randn(3).to("lazy") * 2
    b = torch.randn(3).to("lazy") + 5
    lazytriton.sync([a])
    assert not a._lt_storage.is_pending and b._lt_storage.is_pending
    ca, cb = lazytriton.to_cpu([a, b])
    assert ca.device.type == "cpu" and cb.device.type == "cpu"
    torch.testing.assert_close(cb, b.cpu())


def test_step_closures_run_after_execution_in_order():
    seen = []
    x = torch.randn(3).to("lazy")
    y = x * 3
    lazytriton.add_step_closure(lambda t: seen.append(("sync", t.cpu())), args=(y,))
    lazytriton.add_step_closure(lambda: seen.append(("async", threading.current_thread().name)),
                                run_async=True)
    lazytriton.mark_step()
    lazytriton.wait_device_ops()
    assert [s[0] for s in seen] == ["sync", "async"]
    torch.testing.assert_close(seen[0][1], x.cpu() * 3)
    # on the thread that runs graphs: the worker when tracing overlaps execution, else the caller
    from lazytriton.runtime import session
    overlap = session.current().runner.overlap
    assert seen[1][1] == ("lazytriton-exec" if overlap else threading.current_thread().name)


def test_async_closure_error_surfaces_at_wait():
    def boom():
        raise ValueError("closure failed")
    lazytriton.add_step_closure(boom, run_async=True)
    lazytriton.mark_step()
    with pytest.raises(ValueError, match="closure failed"):
        lazytriton.wait_device_ops()
    lazytriton.wait_device_ops()  # reported once; the runtime keeps going
    assert (torch.ones(2).to("lazy") + 1).cpu().tolist() == [2.0, 2.0]


def test_metrics_report_has_counters_and_timings():
    (torch.randn(4).to("lazy") * 2).cpu()
    names = metrics.counter_names()
    assert "UncachedCompile" in names
    report = metrics.metrics_report()
    for word in ("UncachedCompile", "trace", "compile", "execute"):
        assert word in report
    assert metrics.timing_total("trace") > 0 and metrics.timing_count("execute") >= 1
    metrics.reset()
    assert metrics.counter_names() == [] and metrics.counter_value("UncachedCompile") is None


def test_metrics_report_one_unit_per_line_and_explains_counters():
    # The line was "compile: 6, 5563.003 ms, 927167.2 us, 2239.584 ms".
    assert (metrics.format_timing("compile", 6, 5.563003, 2.239584)
            == "compile: 6 calls, total 5.563 s, mean 0.927 s, max 2.240 s")
    assert metrics.format_timing("trace", 1000, 0.02, 0.001).endswith(
        "total 20.000 ms, mean 0.020 ms, max 1.000 ms")  # a 20 us mean is not 0.000 s
    metrics.counter_inc("aten::nonzero")
    y = torch.randn(4).to("lazy") * 2
    lazytriton.mark_step()
    y.cpu()
    lines = metrics.metrics_report().splitlines()
    for line in lines:
        if line.strip().split(":")[0] in metrics.TIMING_HELP:
            units = set(re.findall(r"\d (s|ms|us)\b", line))
            assert len(units) == 1, line
    for name in ("UncachedCompile", "MarkStep", "aten::nonzero"):
        line = next(line for line in lines if line.strip().startswith(name))
        assert metrics.describe_counter(name) and metrics.describe_counter(name) in line


def test_accessors_name_backend_device_and_cache_dir(cache_dir):
    assert lazytriton.cache_dir() == cache_dir
    assert lazytriton.backend_name() in lazytriton.available_backends()
    gpu = torch.cuda.is_available() and lazytriton.backend_name() in ("aten", "triton")
    assert lazytriton.backend_device().type == ("cuda" if gpu else "cpu")


def test_running_for_sees_a_timed_block_while_it_runs():
    assert metrics.running_for("compile") is None
    with metrics.timed("compile"):
        assert metrics.running_for("compile") >= 0
    assert metrics.running_for("compile") is None and metrics.timing_count("compile") == 1


def test_dump_ir_text_and_dot():
    x = torch.randn(2, 3).to("lazy")
    y = torch.relu(x @ x.t()) + 1.5
    text = lazytriton.debug.dump_ir([y])
    lines = text.strip().splitlines()
    assert lines[-1].startswith("return %")
    assert any("mm.default" in line for line in lines)
    assert any(line.endswith("scalar : float") for line in lines)  # 1.5 is a graph input
    dot = lazytriton.debug.dump_ir([y], "dot")
    assert dot.startswith("digraph") and "->" in dot and "relu" in dot
    with pytest.raises(ValueError, match="format"):
        lazytriton.debug.dump_ir([y], "png")


def test_disk_cache_holds_readable_ir_per_graph(tmp_path):
    cache_dir = tmp_path / "cache"
    backend = lazytriton.backend_name()
    lazytriton.init(backend, cache_dir=cache_dir)  # only this test's graphs
    x = torch.randn(7).to("lazy")
    (x.cos() * 4).cpu()
    folders = [p.parent for p in (cache_dir / "graphs").glob("*/ir.txt")]
    matching = [f for f in folders if "cos.default" in (f / "ir.txt").read_text()]
    assert matching
    index = json.loads((matching[0] / "index.json").read_text())
    assert index["backend"] == backend and index["outputs"] == ["float32[7]"]
    assert not list((cache_dir / "graphs").glob("**/*.tmp"))


def test_dropout_follows_manual_seed_and_differs_across_steps():
    x = torch.ones(1000).to("lazy")
    torch.manual_seed(7)
    a = torch.nn.functional.dropout(x, 0.5).cpu()
    torch.manual_seed(7)
    b = torch.nn.functional.dropout(x, 0.5).cpu()
    c = torch.nn.functional.dropout(x, 0.5).cpu()
    torch.testing.assert_close(a, b)
    assert not torch.equal(b, c)
    assert set(a.unique().tolist()) == {0.0, 2.0}
    assert 350 < int((a == 0).sum()) < 650


def test_init_switches_and_rejects_unknown_backend(cache_dir, test_backend):
    assert lazytriton.backend_name() == test_backend
    assert "aten" in lazytriton.available_backends()
    with pytest.raises(ValueError, match="unknown lazytriton backend 'nope'"):
        lazytriton.init("nope")
    lazytriton.init("auto", cache_dir=cache_dir)  # falls back to what this machine has
    assert lazytriton.backend_name() in lazytriton.available_backends()


def test_available_backends_can_leave_out_interpreted_ones():
    compiled = lazytriton.available_backends(interpreted=False)
    assert set(compiled) <= set(lazytriton.available_backends())
    assert "aten" in compiled
    if "triton" in lazytriton.available_backends():  # its interpreter is all a CPU machine has
        assert ("triton" in compiled) == torch.cuda.is_available()


def _softmax_matches_eager():
    x = torch.randn(4, 7)
    torch.testing.assert_close(torch.softmax(x.to("lazy") * 3, 1).cpu(), torch.softmax(x * 3, 1))


def test_init_device_cpu_keeps_the_oracle_on_the_cpu(cache_dir):
    lazytriton.init("aten", cache_dir=cache_dir, device="cpu")
    assert lazytriton.backend_device() == torch.device("cpu")
    _softmax_matches_eager()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_init_device_cuda_runs_the_oracle_on_the_gpu(cache_dir):
    lazytriton.init("aten", cache_dir=cache_dir, device="cuda")
    assert lazytriton.backend_device().type == "cuda"
    _softmax_matches_eager()


def test_a_device_the_backend_cannot_hold_is_refused_and_the_old_one_stays(cache_dir):
    lazytriton.init("aten", cache_dir=cache_dir, device="cpu")
    with pytest.raises(ValueError, match="backend 'cpp' keeps data on cpu, not 'cuda'"):
        lazytriton.init("cpp", cache_dir=cache_dir, device="cuda")
    with pytest.raises(RuntimeError, match="Invalid device string"):
        lazytriton.init("aten", cache_dir=cache_dir, device="tpu-ish")
    assert lazytriton.backend_name() == "aten"
    _softmax_matches_eager()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_without_a_gpu_says_so(cache_dir):
    with pytest.raises(ValueError, match="torch sees no CUDA device"):
        lazytriton.init("aten", cache_dir=cache_dir, device="cuda")


def test_lazytriton_device_env_picks_the_device(cache_dir, monkeypatch):
    monkeypatch.setenv("LAZYTRITON_DEVICE", "cpu")
    lazytriton.init("aten", cache_dir=cache_dir)
    assert lazytriton.backend_device() == torch.device("cpu")
    if "cpp" in lazytriton.available_backends():  # auto on the CPU is the C++ backend
        lazytriton.init("auto", cache_dir=cache_dir)
        assert lazytriton.backend_name() == "cpp"
    _softmax_matches_eager()


def test_a_promise_holds_its_readers_until_set_or_failed():
    from lazytriton.device_data import DeviceData, LazyExecutionError
    for resolve in ("set", "fail"):
        promise, got = DeviceData(), []

        def read():
            try:
                got.append(promise.get())
            except LazyExecutionError as e:
                got.append(e)
        readers = [threading.Thread(target=read) for _ in range(3)]
        for r in readers:
            r.start()
        readers[0].join(0.05)
        assert not promise.is_ready and got == []
        if resolve == "set":
            promise.set(torch.ones(2))
        else:
            promise.fail(ValueError("boom"))
        for r in readers:
            r.join(5)
        assert promise.is_ready and len(got) == 3
        if resolve == "set":
            assert all(torch.equal(t, torch.ones(2)) for t in got)
            assert torch.equal(promise.get(), torch.ones(2))
        else:
            assert all(isinstance(e, LazyExecutionError) and "boom" in str(e) for e in got)


def test_graph_key_tells_wiring_apart_and_repeats_for_the_same_program():
    from lazytriton.graph import build_graph
    from lazytriton.tensor import value_of
    a, b = torch.randn(4).to("lazy"), torch.randn(4).to("lazy")

    def key(fn):
        return build_graph([value_of(fn())]).key
    assert key(lambda: (a + b) * a) == key(lambda: (a + b) * a)
    assert key(lambda: (a + b) * a) != key(lambda: (a + b) * b)
    assert key(lambda: (a - b) * a) != key(lambda: (b - a) * a)
    # the same producer, another of its outputs
    assert key(lambda: torch.std_mean(a)[0] + a) != key(lambda: torch.std_mean(a)[1] + a)
    lazytriton.mark_step()


def test_device_leaf_is_a_data_node_built_field_by_field():
    """ir.device_leaf skips DataNode.__init__ for speed: it must set every slot alike."""
    from lazytriton.device_data import DeviceData
    from lazytriton.ir import DataNode, Node, TensorMeta, device_leaf
    meta = TensorMeta.of(torch.empty(3, 2))
    handle = DeviceData(torch.empty(3, 2))
    fast, slow = device_leaf(handle, meta), DataNode(handle, meta).outputs[0]
    slots = [s for cls in (Node, DataNode) for s in cls.__slots__ if s != "__weakref__"]
    for name in slots:
        a, b = getattr(fast.node, name), getattr(slow.node, name)
        assert (a() is fast and b() is slow) if name == "_out_refs" else a == b, name
    assert fast.node.outputs[0] is fast and (fast.index, fast.meta) == (slow.index, slow.meta)
