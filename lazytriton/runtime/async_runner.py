"""One worker thread executes graphs in submission order, so tracing the next step overlaps
running this one. Order is all the synchronization graphs need: a graph's inputs come from
graphs submitted before it.

Overlap pays only when the machine has a core for the tracing thread besides those execution
uses. On a CPU backend, execution runs on torch's (and the generated code's OpenMP) threads;
with no core left over, the tracing thread and the OpenMP threads take turns on the cores and
an OpenMP region waits for its preempted threads, so a step gets slower than tracing and
running one after the other. `overlap_pays` decides once per session; without overlap there is
no worker thread: `submit` runs the job on the calling thread. A second thread running aten
ops and OpenMP code costs even when the first one waits: the calling thread keeps its OpenMP
team, and a team of the worker's beside it made aten's small matmuls 1.5-4x slower (a
transformer step's graph executed in 8.1 ms on the worker and 3.8 ms inline,
benchmarks/RESULTS.md)."""
from __future__ import annotations

import os
import queue
import threading
from typing import Callable

import torch


def overlap_pays(device: torch.device) -> bool:
    """Trace the next step while this one runs? LAZYTRITON_OVERLAP=1/0 forces the choice."""
    forced = os.environ.get("LAZYTRITON_OVERLAP")
    if forced in ("0", "1"):
        return forced == "1"
    if device.type != "cpu":  # kernels run on the accelerator: the worker thread only launches
        return True
    return _usable_cores() >= torch.get_num_threads() + 1


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class AsyncRunner:
    def __init__(self, overlap: bool = True):
        self.overlap = overlap
        self._errors: list[BaseException] = []
        self._queue: queue.Queue[Callable[[], None]] | None = None
        if overlap:
            self._queue = queue.Queue()
            threading.Thread(target=self._loop, name="lazytriton-exec", daemon=True).start()

    def submit(self, job: Callable[[], None]) -> None:
        if self._queue is None:
            self._run(job)  # errors of closures still surface at wait()
        else:
            self._queue.put(job)

    def wait(self) -> None:
        """Block until every submitted job ran; re-raise the first error of an async closure."""
        if self._queue is not None:
            self._queue.join()
        if self._errors:
            error, self._errors = self._errors[0], []
            raise error

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as e:  # graph errors go to their outputs; this is a closure's
            self._errors.append(e)

    def _loop(self) -> None:
        assert self._queue is not None
        while True:
            job = self._queue.get()
            self._run(job)
            # a finished job's inputs (the buffers a step replaced) are freed now, not when the
            # next job arrives: `job` would hold them until then
            job = None
            self._queue.task_done()
