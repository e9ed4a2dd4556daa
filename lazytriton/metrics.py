"""Counters and timings, named as DESIGN.md says: MarkStep, UncachedCompile, CachedCompile,
KernelCompile, KernelCacheLoad, FallbackGraph, AutotuneBenchmark, AutotuneCacheHit and
aten::<op> per op that fell back to eager; timings for trace, compile, cxx, execute and
AutotuneTime. COUNTER_HELP and TIMING_HELP say what each means,
for the report and for tools that print them (examples/mnist.py's --help). The report ends with
why each graph of an already seen structure was compiled again (note_recompile: the session's
shape families, runtime/shapes.py)."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()  # the async runner records execute times from its thread
_counters: dict[str, int] = {}
_timings: dict[str, list[float]] = {}  # name -> [count, total seconds, max seconds]
_running: dict[str, float] = {}  # name -> perf_counter() at its start, while it runs
_recompiles: list[str] = []  # why each graph of an already seen structure was compiled

COUNTER_HELP: dict[str, str] = {
    "MarkStep": "steps cut by mark_step()",
    "UncachedCompile": "graphs compiled (not found in the in-memory graph cache)",
    "CachedCompile": "graphs found in the graph cache, reused without compiling",
    "KernelCompile": "kernel libraries built from source by the compiler in this process "
                     "(one per compiled graph)",
    "KernelCacheLoad": "kernel libraries loaded from the disk cache instead of built",
    "FallbackGraph": "graphs the code generator could not compile, run on the reference "
                     "executor instead",
    "AutotuneBenchmark": "kernel candidates timed by the autotuner (0 when every choice "
                         "came from a stored record)",
    "AutotuneCacheHit": "tuned kernels whose choice was read from a record in the cache dir",
    "aten::<op>": "calls of this op that fell back to aten (output shape depends on data, "
                  "or no lowering)",
}

TIMING_HELP: dict[str, str] = {
    "trace": "recording ops into the IR",
    "compile": "compiling new graphs, cxx included",
    "cxx": "C++ compiler runs",
    "execute": "running graphs (AutotuneTime included)",
    "AutotuneTime": "timing kernel candidates, at a graph's first execution",
}


def describe_counter(name: str) -> str:
    """The one-line meaning of a counter; every aten::<op> shares one."""
    key = "aten::<op>" if name.startswith("aten::") else name
    return COUNTER_HELP.get(key, "")


def counter_inc(name: str, by: int = 1) -> None:
    with _lock:
        _counters[name] = _counters.get(name, 0) + by


def counter_value(name: str) -> int | None:
    """The counter's value, or None if it never moved (as torch._lazy.metrics does)."""
    return _counters.get(name)


def counter_names() -> list[str]:
    return sorted(_counters)


def note_recompile(reason: str) -> None:
    """Record why a graph whose structure was compiled before was compiled again."""
    with _lock:
        _recompiles.append(reason)


def recompile_reasons() -> list[str]:
    return list(_recompiles)


def add_time(name: str, seconds: float, locked: bool = True) -> None:
    """locked=False: for a timing only one thread records (the trace, once per op), where the
    lock would cost more than the GIL already guarantees for its updates."""
    if not locked:
        add_time_unlocked(name, seconds)
        return
    with _lock:
        add_time_unlocked(name, seconds)


def add_time_unlocked(name: str, seconds: float) -> None:
    """add_time(locked=False), one call less: the tracer records a time for every op."""
    entry = _timings.get(name)
    if entry is None:
        entry = _timings.setdefault(name, [0, 0.0, 0.0])
    entry[0] += 1
    entry[1] += seconds
    if seconds > entry[2]:
        entry[2] = seconds


@contextmanager
def timed(name: str) -> Iterator[None]:
    """Time the block as `name` (recorded only if it succeeds); while it runs, running_for(name)
    says for how long, so a progress display can show a long compile as it happens."""
    start = time.perf_counter()
    _running[name] = start
    try:
        yield
        add_time(name, time.perf_counter() - start)
    finally:
        _running.pop(name, None)


@contextmanager
def uncounted() -> Iterator[None]:
    """Counters moved inside the block are put back: work that is no compile (lowering a graph
    only to compare programs) must not count as one, nor count its aten fallbacks again."""
    with _lock:
        saved = dict(_counters)
    try:
        yield
    finally:
        with _lock:
            _counters.clear()
            _counters.update(saved)


def running_for(name: str) -> float | None:
    """Seconds the `timed(name)` block now running has taken, or None if none runs."""
    start = _running.get(name)
    return None if start is None else time.perf_counter() - start


def timing_total(name: str) -> float:
    """Total seconds spent in `name` ("trace", "compile", "execute") since the last reset."""
    return _timings.get(name, [0, 0.0, 0.0])[1]


def timing_count(name: str) -> int:
    return _timings.get(name, [0, 0.0, 0.0])[0]


def reset() -> None:
    with _lock:
        _counters.clear()
        _timings.clear()
        _recompiles.clear()


def format_timing(name: str, count: int, total: float, longest: float) -> str:
    """One line, one unit: seconds when a call takes a tenth of a second or more, else ms."""
    mean = total / count if count else 0.0
    unit, scale = ("s", 1.0) if mean >= 0.1 else ("ms", 1e3)
    calls = "call" if count == 1 else "calls"
    return (f"{name}: {count} {calls}, total {total * scale:.3f} {unit}, "
            f"mean {mean * scale:.3f} {unit}, max {longest * scale:.3f} {unit}")


def metrics_report() -> str:
    with _lock:
        counters = dict(_counters)
        timings = {k: list(v) for k, v in _timings.items()}
        recompiles = list(_recompiles)
    lines = ["Counters:"]
    width = max(map(len, counters), default=0)
    lines += [f"  {name:<{width}}  {counters[name]:>6}  {describe_counter(name)}".rstrip()
              for name in sorted(counters)] or ["  (none)"]
    lines.append("Timings:")
    # cxx: C++ backend only; AutotuneTime: only when something was tuned
    names = [n for n in TIMING_HELP if n not in ("cxx", "AutotuneTime") or n in timings]
    names += sorted(set(timings) - set(TIMING_HELP))
    rows = [format_timing(name, *timings.get(name, [0, 0.0, 0.0])) for name in names]
    width = max(map(len, rows), default=0)
    for name, row in zip(names, rows):
        lines.append(f"  {row:<{width}}  {TIMING_HELP.get(name, '')}".rstrip())
    if recompiles:
        lines.append("Recompiles (a graph of a structure compiled before, and why):")
        lines += [f"  {i}. {reason}" for i, reason in enumerate(recompiles, 1)]
    return "\n".join(lines)
