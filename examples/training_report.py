"""What a training example prints while it runs: a progress bar per epoch that shows the loss
and each graph compile as it happens, or, when stdout is not a terminal (logs, CI, tests),
plain periodic lines; and a summary table whose every row has one unit.

Compiles happen inside `lazytriton.mark_step()` on the training thread, so a bar cannot update
itself then: `watch_compiles` polls `lazytriton.metrics.running_for("compile")` from a small
thread and tells the display while a compile runs. What a step compiled is read afterwards from
the metrics counters (UncachedCompile, KernelCompile, KernelCacheLoad).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tqdm import tqdm

import lazytriton.metrics as metrics

Log = Callable[[str], None]

NOTICE_AFTER_S = 0.5  # a compile shorter than this is not worth a "compiling" notice
POLL_S = 0.2


@dataclass(frozen=True)
class CompileCounts:
    """The counters a step's report compares before and after the step."""
    graphs: int = 0
    kernels_built: int = 0
    kernels_loaded: int = 0
    seconds: float = 0.0

    @staticmethod
    def now() -> CompileCounts:
        return CompileCounts(metrics.counter_value("UncachedCompile") or 0,
                             metrics.counter_value("KernelCompile") or 0,
                             metrics.counter_value("KernelCacheLoad") or 0,
                             metrics.timing_total("compile"))

    def __sub__(self, other: CompileCounts) -> CompileCounts:
        return CompileCounts(self.graphs - other.graphs,
                             self.kernels_built - other.kernels_built,
                             self.kernels_loaded - other.kernels_loaded,
                             self.seconds - other.seconds)

    def describe(self) -> str:
        """e.g. "compiled 1 graph in 2.24 s (kernels: 1 built, 0 loaded from the cache)"."""
        text = f"compiled {_plural(self.graphs, 'graph')} in {self.seconds:.2f} s"
        if self.kernels_built or self.kernels_loaded:
            text += (f" (kernels: {self.kernels_built} built, {self.kernels_loaded} loaded "
                     "from the cache)")
        return text


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class LineProgress:
    """Plain lines through `log`: the loss when the caller has one to show, a notice while a
    long compile runs and a line when it is done (quick compiles are only counted), and one
    line at the end."""

    def __init__(self, desc: str, total: int, log: Log):
        self.desc, self.total, self.log = desc, total, log
        self.done = 0
        self._start = time.perf_counter()
        self._before = CompileCounts.now()
        self._noticed = False  # a "compiling" notice was printed for the compile now running
        # The watcher thread checks for a running compile and shows it under this lock, and
        # step() reports under it too, so a compile that just ended is never shown as running.
        self.lock = threading.Lock()

    def poll(self) -> None:
        """Called from the watcher thread: show a compile that has run for a while."""
        with self.lock:
            seconds = metrics.running_for("compile")
            if seconds is not None and seconds >= NOTICE_AFTER_S:
                self.compiling(seconds)

    def compiling(self, seconds: float) -> None:
        if not self._noticed:
            self._noticed = True
            self.log(f"{self.desc} step {self.done + 1}/{self.total}: compiling a new "
                     "graph...")

    def step(self, loss: tuple[int, float] | None = None) -> CompileCounts:
        """One step done; `loss` = (its step number, value), shown if given."""
        with self.lock:
            self.done += 1
            noticed, compiled = self._noticed, self._compiled()
            if compiled.graphs and (noticed or compiled.seconds >= NOTICE_AFTER_S):
                self.log(f"{self.desc} step {self.done}/{self.total}: {compiled.describe()}")
            if loss is not None:
                self.log(f"{self.desc} step {loss[0]}/{self.total}: loss {loss[1]:.6f}")
            return compiled

    def close(self) -> None:
        seconds = time.perf_counter() - self._start
        rate = self.done / seconds if seconds > 0 else float("nan")
        self.log(f"{self.desc}: {self.done} steps in {seconds:.1f} s ({rate:.2f} steps/s)")

    def _compiled(self) -> CompileCounts:
        now = CompileCounts.now()
        compiled, self._before = now - self._before, now
        if compiled.graphs:
            self._noticed = False
        return compiled


class BarProgress(LineProgress):
    """A tqdm bar on stdout; the postfix shows the latest loss and the graphs compiled so far,
    or "compiling graph N..." with its running time while a compile runs."""

    def __init__(self, desc: str, total: int, log: Log):
        super().__init__(desc, total, log)
        self.bar = tqdm(total=total, desc=desc, unit="step", file=sys.stdout,
                        dynamic_ncols=True, leave=True)
        self.graphs = 0
        self.loss: float | None = None

    def compiling(self, seconds: float) -> None:
        self.bar.set_postfix_str(f"compiling graph {self.graphs + 1}... {seconds:.1f} s")

    def step(self, loss: tuple[int, float] | None = None) -> CompileCounts:
        with self.lock:
            self.done += 1
            compiled = self._compiled()
            self.graphs += compiled.graphs
            if loss is not None:
                self.loss = loss[1]
            self.bar.set_postfix_str(self._status(), refresh=False)
            self.bar.update(1)
            return compiled

    def close(self) -> None:
        self.bar.close()

    def _status(self) -> str:
        loss = "" if self.loss is None else f"loss {self.loss:.4f}, "
        return f"{loss}{_plural(self.graphs, 'graph')} compiled"


def open_progress(desc: str, total: int, log: Log, bar: bool) -> LineProgress:
    return BarProgress(desc, total, log) if bar else LineProgress(desc, total, log)


@contextmanager
def watch_compiles(progress: LineProgress) -> Iterator[None]:
    """While the block runs, report each compile that runs longer than NOTICE_AFTER_S."""
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(POLL_S):
            progress.poll()

    watcher = threading.Thread(target=poll, name="compile-watcher", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def fallback_ops() -> dict[str, int]:
    """aten::<op> counters: calls that fell back to aten instead of being compiled."""
    return {name: metrics.counter_value(name) for name in metrics.counter_names()
            if name.startswith("aten::")}


def metrics_rows() -> list[tuple[str, str]]:
    """The summary's rows read from lazytriton's counters and timings."""
    counter = lambda name: metrics.counter_value(name) or 0  # noqa: E731
    ops = fallback_ops()
    ops_text = str(sum(ops.values()))
    if ops:
        ops_text += " (" + ", ".join(f"{name} x{n}" for name, n in sorted(ops.items())) + ")"
    return [
        ("compile time (s)", f"{metrics.timing_total('compile'):.2f}"),
        ("graphs compiled / found in cache",
         f"{counter('UncachedCompile')} / {counter('CachedCompile')}"),
        ("kernels compiled / loaded from disk cache",
         f"{counter('KernelCompile')} / {counter('KernelCacheLoad')}"),
        ("graphs run uncompiled (FallbackGraph)", str(counter("FallbackGraph"))),
        ("op calls that fell back to eager (aten::*)", ops_text),
    ]


def table(title: str, rows: list[tuple[str, str]]) -> str:
    """Two aligned columns under a title; units belong in the row names."""
    width = max(len(name) for name, _ in rows)
    return "\n".join([title] + [f"  {name:<{width}}  {value}" for name, value in rows])
