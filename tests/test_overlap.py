"""Whether the next step is traced while this one runs is chosen per machine
(runtime/async_runner.py): only with a core to spare besides the execution threads."""
from __future__ import annotations

import threading

import torch

from lazytriton.runtime import async_runner


def test_overlap_needs_a_spare_core_on_the_cpu(monkeypatch):
    monkeypatch.delenv("LAZYTRITON_OVERLAP", raising=False)
    threads = torch.get_num_threads()
    monkeypatch.setattr(async_runner, "_usable_cores", lambda: threads)
    assert not async_runner.overlap_pays(torch.device("cpu"))
    monkeypatch.setattr(async_runner, "_usable_cores", lambda: threads + 1)
    assert async_runner.overlap_pays(torch.device("cpu"))


def test_an_accelerator_always_overlaps_and_the_environment_forces(monkeypatch):
    monkeypatch.setattr(async_runner, "_usable_cores", lambda: 1)
    monkeypatch.delenv("LAZYTRITON_OVERLAP", raising=False)
    assert async_runner.overlap_pays(torch.device("cuda"))
    monkeypatch.setenv("LAZYTRITON_OVERLAP", "1")
    assert async_runner.overlap_pays(torch.device("cpu"))
    monkeypatch.setenv("LAZYTRITON_OVERLAP", "0")
    assert not async_runner.overlap_pays(torch.device("cuda"))


def test_without_overlap_submit_runs_the_job_on_the_calling_thread():
    """No worker: a second thread's OpenMP team beside the caller's slows aten's kernels."""
    workers = lambda: sum(t.name == "lazytriton-exec" for t in threading.enumerate())  # noqa: E731
    before = workers()
    runner = async_runner.AsyncRunner(overlap=False)
    seen = []
    runner.submit(lambda: seen.append(threading.current_thread()))
    assert seen == [threading.current_thread()] and workers() == before


def test_without_overlap_a_closure_error_surfaces_at_wait():
    runner = async_runner.AsyncRunner(overlap=False)
    runner.submit(lambda: 1 / 0)
    try:
        runner.wait()
    except ZeroDivisionError:
        pass
    else:
        raise AssertionError("the closure's error was lost")
    runner.wait()  # raised once


def test_with_overlap_submit_returns_while_the_job_runs():
    runner = async_runner.AsyncRunner(overlap=True)
    release, seen = threading.Event(), []
    runner.submit(lambda: (release.wait(5), seen.append(1)))
    assert seen == []
    release.set()
    runner.wait()
    assert seen == [1]


def test_a_finished_job_and_what_it_holds_are_freed_before_the_next_arrives():
    """The worker drops a job once it ran: the buffers a step replaced (its inputs) must not
    stay resident until the next step is submitted."""
    import weakref
    runner = async_runner.AsyncRunner(overlap=True)
    held = torch.randn(1000)
    ref = weakref.ref(held)
    runner.submit(lambda held=held: held.sum())
    del held
    runner.wait()
    assert ref() is None
