"""The autotuning framework (lazytriton/autotune.py): modes, choosing by timing on copies of
the written arguments, failing candidates skipped, records persisted and reused by a second
process, corrupted records ignored, the per-graph budget. Kernel-level tests of the C++
backend's variants are in test_cpp_autotune.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import lazytriton
from lazytriton import autotune, metrics


@pytest.fixture(autouse=True)
def default_mode(monkeypatch):
    """These tests set the mode themselves (conftest turns tuning off for the other tests)."""
    monkeypatch.setenv("LAZYTRITON_AUTOTUNE", "default")
    autotune.set_mode(None)
    yield
    autotune.set_mode(None)


def _slow(seconds: float):
    def fn(out, n):
        time.sleep(seconds)
        out.add_(1)
    return fn


def _fast(out, n):
    out.add_(1)


def _broken(out, n):
    raise RuntimeError("this config cannot run")


def _tuned(tmp_path, candidates, budget=10.0, name="k0", source="void k0() {}", **kw):
    return autotune.TunedKernel(name, candidates, source=source, device="cpu",
                                toolchain="test", cache_dir=tmp_path, budget=autotune.Budget(budget),
                                size_args=[1], written=[0], **kw)


def _candidates(*fns):
    return [autotune.Candidate(f"c{i}", {"i": i}, fn) for i, fn in enumerate(fns)]


def test_mode_from_env_and_init(monkeypatch):
    assert autotune.mode() == "default"
    monkeypatch.setenv("LAZYTRITON_AUTOTUNE", "max")
    assert autotune.mode() == "max"
    monkeypatch.setenv("LAZYTRITON_AUTOTUNE", "fast")
    with pytest.raises(ValueError, match="LAZYTRITON_AUTOTUNE"):
        autotune.mode()
    monkeypatch.setenv("LAZYTRITON_AUTOTUNE", "max")
    lazytriton.init("aten", autotune="off")
    assert autotune.mode() == "off"
    with pytest.raises(ValueError, match="autotune must be one of"):
        lazytriton.init("aten", autotune="sometimes")
    assert autotune.mode() == "off"  # a bad argument changes nothing
    lazytriton.init("aten")  # no argument: the environment again
    assert autotune.mode() == "max"


def test_fastest_wins_and_timing_uses_copies(tmp_path):
    out = torch.zeros(3)
    kernel = _tuned(tmp_path, _candidates(_slow(0.003), _fast))
    kernel(out, 5)
    assert kernel.choices[(8,)].label == "c1"
    assert torch.equal(out, torch.ones(3))  # timing wrote to copies; the winner ran once
    assert metrics.counter_value("AutotuneBenchmark") == 2
    assert metrics.timing_count("AutotuneTime") == 1
    kernel(out, 6)  # same bucket: no timing
    assert metrics.counter_value("AutotuneBenchmark") == 2
    assert torch.equal(out, torch.full((3,), 2.0))


def test_failing_candidate_is_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAZYTRITON_LOGS", "autotune")
    out = torch.zeros(2)
    kernel = _tuned(tmp_path, _candidates(_slow(0.002), _broken, _fast))
    kernel(out, 3)
    assert kernel.choices[(4,)].label == "c2"
    assert torch.equal(out, torch.ones(2))
    assert "candidate c1 failed: RuntimeError: this config cannot run" in capsys.readouterr().err
    record = json.loads(next((tmp_path / "autotune").rglob("*.json")).read_text())
    assert record["best"] == "c2" and record["seconds"]["c1"] is None


def test_record_reused_and_size_buckets(tmp_path):
    out = torch.zeros(1)
    _tuned(tmp_path, _candidates(_slow(0.002), _fast))(out, 100)
    metrics.reset()
    again = _tuned(tmp_path, _candidates(_slow(0.002), _fast))
    again(out, 120)  # another size, the same bucket (128): the record serves it
    assert metrics.counter_value("AutotuneBenchmark") is None
    assert metrics.counter_value("AutotuneCacheHit") == 1
    again(out, 300)  # bucket 512: tuned
    assert metrics.counter_value("AutotuneBenchmark") == 2
    assert set(again.choices) == {(128,), (512,)}


def test_record_reused_by_a_second_process(tmp_path):
    script = textwrap.dedent(f"""
        import time, torch
        from lazytriton import autotune, metrics
        def slow(out, n):
            time.sleep(0.002); out.add_(1)
        def fast(out, n):
            out.add_(1)
        cands = [autotune.Candidate("slow", {{"x": 1}}, slow),
                 autotune.Candidate("fast", {{"x": 2}}, fast)]
        k = autotune.TunedKernel("k0", cands, source="src", device="cpu", toolchain="t",
                                 cache_dir={str(tmp_path)!r}, budget=autotune.Budget(10),
                                 size_args=[1], written=[0])
        out = torch.zeros(1)
        k(out, 64)
        assert out.item() == 1
        print(k.choices[(64,)].label, metrics.counter_value("AutotuneBenchmark"),
              metrics.counter_value("AutotuneCacheHit"))
    """)
    env = dict(os.environ, LAZYTRITON_AUTOTUNE="default")
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env=env, check=True).stdout.split() for _ in range(2)]
    assert runs[0] == ["fast", "2", "None"]
    assert runs[1] == ["fast", "None", "1"]  # nothing timed the second time


@pytest.mark.parametrize("corrupt", ["{not json", '{"version": 1}', "[]",
                                     "other key", "unknown label"])
def test_corrupted_record_is_ignored(tmp_path, corrupt):
    out = torch.zeros(1)
    _tuned(tmp_path, _candidates(_slow(0.002), _fast))(out, 8)
    (path,) = (tmp_path / "autotune").rglob("*.json")
    record = json.loads(path.read_text())
    if corrupt == "other key":
        text = json.dumps(dict(record, key="0" * 64))
    elif corrupt == "unknown label":
        text = json.dumps(dict(record, best="c7"))
    else:
        text = corrupt
    path.write_text(text)
    metrics.reset()
    kernel = _tuned(tmp_path, _candidates(_slow(0.002), _fast))
    kernel(out, 8)
    assert kernel.choices[(8,)].label == "c1"
    assert metrics.counter_value("AutotuneBenchmark") == 2  # tuned again, not trusted
    assert json.loads(path.read_text())["best"] == "c1"  # and the record is whole again


def test_a_changed_kernel_is_tuned_again(tmp_path):
    out = torch.zeros(1)
    _tuned(tmp_path, _candidates(_slow(0.002), _fast))(out, 8)
    metrics.reset()
    _tuned(tmp_path, _candidates(_slow(0.002), _fast), source="void k0() { /* new */ }")(out, 8)
    assert metrics.counter_value("AutotuneBenchmark") == 2
    metrics.reset()  # the same source under another kernel name is the same kernel
    _tuned(tmp_path, _candidates(_slow(0.002), _fast), name="k9",
           source="void k9() {}")(out, 8)
    assert metrics.counter_value("AutotuneBenchmark") is None


def test_mode_off_and_spent_budget_run_the_heuristic(tmp_path, monkeypatch):
    out = torch.zeros(1)
    for kernel in (_tuned(tmp_path, _candidates(_slow(0.002), _fast), budget=0.0),
                   _tuned(tmp_path, _candidates(_slow(0.002), _fast, _fast))):
        if kernel.budget.seconds:
            monkeypatch.setenv("LAZYTRITON_AUTOTUNE", "off")
        kernel(out, 8)
        assert kernel.choices[(8,)].label == "c0"
    assert out.item() == 2
    assert metrics.counter_value("AutotuneBenchmark") is None
    assert not (tmp_path / "autotune").exists()  # a choice not measured is not stored


def test_budget_is_shared_by_a_graphs_kernels(tmp_path):
    budget = autotune.Budget(0.01)
    out = torch.zeros(1)
    first = autotune.TunedKernel("k0", _candidates(_fast, _slow(0.004)), source="a",
                                 device="cpu", toolchain="t", cache_dir=tmp_path, budget=budget,
                                 size_args=[1], written=[0])
    second = autotune.TunedKernel("k1", _candidates(_slow(0.004), _fast), source="b",
                                  device="cpu", toolchain="t", cache_dir=tmp_path, budget=budget,
                                  size_args=[1], written=[0])
    first(out, 8)
    assert budget.exhausted and first.choices[(8,)].label == "c0"
    assert len(list((tmp_path / "autotune").rglob("*.json"))) == 1  # both timed: recorded
    second(out, 8)
    assert second.choices[(8,)].label == "c0"  # no time left: the heuristic


def test_forced_candidate_and_kernels_json(tmp_path):
    (tmp_path / "kernels.json").write_text(json.dumps([{"kernel": "k0", "config": {"i": 0}},
                                                       {"kernel": "k1"}]))
    out = torch.zeros(1)
    with autotune.forced("c1"):
        kernel = _tuned(tmp_path, _candidates(_fast, _slow(0.001)),
                        on_choice=autotune.kernels_json_recorder(tmp_path, "k0"))
        kernel(out, 8)
    assert kernel.choices[(8,)].label == "c1"
    assert metrics.counter_value("AutotuneBenchmark") is None
    entries = json.loads((tmp_path / "kernels.json").read_text())
    assert entries[0]["config"] == {"i": 1}
    assert entries[0]["autotune"]["buckets"]["8"]["how"] == "forced"
    assert entries[1] == {"kernel": "k1"}


def test_copy_for_timing_keeps_the_layout():
    base = torch.randn(6, 8)
    view = base[1:, ::2]
    copy = autotune.copy_for_timing(view)
    assert copy.stride() == view.stride() and copy.data_ptr() != view.data_ptr()
    assert torch.equal(copy, view)


def test_cache_clear_removes_the_records(tmp_path):
    from lazytriton.runtime import cache_index
    _tuned(tmp_path, _candidates(_slow(0.001), _fast))(torch.zeros(1), 8)
    assert list((tmp_path / "autotune").rglob("*.json"))
    cache_index.clear(tmp_path)
    assert not (tmp_path / "autotune").exists()


def test_budget_running_out_mid_kernel_keeps_no_record(tmp_path):
    out = torch.zeros(1)
    kernel = _tuned(tmp_path, _candidates(_fast, _slow(0.004), _fast), budget=0.01)
    kernel(out, 8)
    # c0 is timed quickly, c1 uses up the budget (4 calls of 4 ms), c2 is never timed
    assert metrics.counter_value("AutotuneBenchmark") == 2
    assert kernel.choices[(8,)].label == "c0" and out.item() == 1
    assert not (tmp_path / "autotune").exists()


def test_paired_ratio_times_both_in_turns():
    out = torch.zeros(1)
    assert autotune.paired_ratio(_slow(0.003), _fast, [out, 1], "cpu") > 2
    assert autotune.paired_ratio(_fast, _slow(0.003), [out, 1], "cpu") < 0.5


@pytest.mark.parametrize("ratio, chosen", [(0.99, "c0"), (0.5, "c1"), (float("inf"), "c0")])
def test_winner_must_beat_the_heuristic_when_re_timed_beside_it(tmp_path, monkeypatch, ratio,
                                                               chosen):
    """The first timing says c1 (c0 sleeps); the paired re-timing decides: within
    WIN_MARGIN of the heuristic, or failing, the heuristic is kept and that is recorded."""
    monkeypatch.setattr(autotune, "paired_ratio", lambda *a: ratio)
    out = torch.zeros(1)
    kernel = _tuned(tmp_path, _candidates(_slow(0.003), _fast))
    kernel(out, 8)
    assert kernel.choices[(8,)].label == chosen and out.item() == 1
    record = json.loads(next((tmp_path / "autotune").rglob("*.json")).read_text())
    assert record["best"] == chosen
    assert record["paired_ratio"] == (None if ratio == float("inf") else ratio)
    assert record["first_timing_best"] == "c1"
    assert _tuned(tmp_path, _candidates(_slow(0.003), _fast)).__call__(out, 8) is None
    assert metrics.counter_value("AutotuneCacheHit") == 1


def test_kernels_json_reads_as_json_dumps_writes_it(tmp_path):
    """Choices keep kernels.json byte for byte as json.dumps(entries, indent=1) prints it,
    and a write by another process in between is read, not overwritten."""
    entries = [{"kernel": f"k{i}", "config": {"i": 0}, "fused_ops": ["a", "b"]}
               for i in range(3)]
    path = tmp_path / "kernels.json"
    path.write_text(json.dumps(entries, indent=1))
    info = {"chosen": "c1", "config": {"i": 1}, "how": "timed", "mode": "default",
            "bucket": [8], "ms": {"c0": 1.0, "c1": 0.5}}
    autotune.kernels_json_recorder(tmp_path, "k1")(info)
    entries[1]["config"] = {"i": 1}
    entries[1]["autotune"] = {"mode": "default", "buckets": {"8": {
        "chosen": "c1", "config": {"i": 1}, "how": "timed", "ms": {"c0": 1.0, "c1": 0.5}}}}
    assert path.read_text() == json.dumps(entries, indent=1)
    entries.append({"kernel": "k3"})  # another process rewrote it
    path.write_text(json.dumps(entries, indent=2))
    autotune.kernels_json_recorder(tmp_path, "k3")(dict(info, bucket=[]))
    written = json.loads(path.read_text())
    assert written[3]["autotune"]["buckets"]["static"]["chosen"] == "c1"
    assert written[1]["config"] == {"i": 1} and len(written) == 4


def test_only_recent_graphs_kernels_json_stay_parsed(tmp_path):
    """A long run tunes many graphs: only the most recent few kernels.json files stay parsed
    in memory, and a graph tuned again after its file was dropped is read back and updated,
    losing no earlier choice."""
    folders = [tmp_path / f"g{i}" for i in range(autotune._KERNELS_FILES_KEPT + 5)]
    for folder in folders:
        folder.mkdir()
        (folder / "kernels.json").write_text(json.dumps([{"kernel": "k0"}, {"kernel": "k1"}]))
    info = {"chosen": "c1", "config": {"i": 1}, "how": "timed", "mode": "default",
            "bucket": [], "ms": {}}
    for folder in folders:
        autotune.kernels_json_recorder(folder, "k0")(info)
    assert len(autotune._kernels_files) <= autotune._KERNELS_FILES_KEPT
    assert folders[0] / "kernels.json" not in autotune._kernels_files
    autotune.kernels_json_recorder(folders[0], "k1")(dict(info, config={"i": 2}))
    entries = json.loads((folders[0] / "kernels.json").read_text())
    assert [e["config"] for e in entries] == [{"i": 1}, {"i": 2}]
    assert list(autotune._kernels_files)[-1] == folders[0] / "kernels.json"
