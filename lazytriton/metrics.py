"""Counters and timings, named as DESIGN.md says: MarkStep, UncachedCompile, CachedCompile,
KernelCompile, KernelCacheLoad, FallbackGraph and aten::<op> per op that fell back to eager;
timings for trace, compile and execute."""
from __future__ import annotations

import threading

_lock = threading.Lock()  # the async runner records execute times from its thread
_counters: dict[str, int] = {}
_timings: dict[str, list[float]] = {}  # name -> [count, total seconds, max seconds]


def counter_inc(name: str, by: int = 1) -> None:
    with _lock:
        _counters[name] = _counters.get(name, 0) + by


def counter_value(name: str) -> int | None:
    """The counter's value, or None if it never moved (as torch._lazy.metrics does)."""
    return _counters.get(name)


def counter_names() -> list[str]:
    return sorted(_counters)


def add_time(name: str, seconds: float) -> None:
    with _lock:
        entry = _timings.setdefault(name, [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += seconds
        entry[2] = max(entry[2], seconds)


def timing_total(name: str) -> float:
    """Total seconds spent in `name` ("trace", "compile", "execute") since the last reset."""
    return _timings.get(name, [0, 0.0, 0.0])[1]


def timing_count(name: str) -> int:
    return _timings.get(name, [0, 0.0, 0.0])[0]


def reset() -> None:
    with _lock:
        _counters.clear()
        _timings.clear()


def metrics_report() -> str:
    with _lock:
        counters = dict(_counters)
        timings = {k: list(v) for k, v in _timings.items()}
    lines = ["Counters:"]
    lines += [f"  {name}: {counters[name]}" for name in sorted(counters)] or ["  (none)"]
    lines.append("Timings (count, total, mean, max):")
    for name in ("trace", "compile", "execute"):
        count, total, longest = timings.get(name, [0, 0.0, 0.0])
        mean = total / count if count else 0.0
        lines.append(f"  {name}: {count}, {total * 1e3:.3f} ms, {mean * 1e6:.1f} us, "
                     f"{longest * 1e3:.3f} ms")
    return "\n".join(lines)
