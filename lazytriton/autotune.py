"""Autotuning: one framework both code generators use (issue 9).

A kernel may offer several *candidates* -- the same computation compiled with other launch
parameters or loop shapes. A backend's launcher wraps such a kernel in a `TunedKernel`; the
generated wrapper calls it like any kernel (the KernelSignature's arguments, in order).

    mode()             "off" | "default" | "max", from lazytriton.init(autotune=...) (set_mode)
                       else $LAZYTRITON_AUTOTUNE, else "default".
                       off:     the heuristic config (candidate 0), nothing timed; code
                                generators emit no variants.
                       default: only kernels whose heuristic is known to be weak get
                                candidates; tuning time per graph is bounded (BUDGET_S).
                       max:     every kernel with more than one sensible candidate, templates
                                against externs; a larger budget.
    Candidate(label, config, fn)   config: a JSON-able dict (what kernels.json shows);
                       candidate 0 is always the heuristic (what "off" runs).
    TunedKernel(name, candidates, source=..., device=..., toolchain=..., size_args=...,
                written=..., cache_dir=..., budget=..., on_choice=...)
                       At its first call for a size bucket: the stored record for its key is
                       used if valid (counter AutotuneCacheHit); else each candidate is timed on
                       the call's real arguments, with copies of those it writes (so timing
                       never corrupts the step), a candidate that raises counts as infinitely
                       slow (logged under LAZYTRITON_LOGS=autotune, never an error), the
                       fastest wins and is persisted; then the winner runs on the real
                       arguments. Later calls of that bucket go straight to it. A winner other
                       than the heuristic is first re-timed beside it in alternating pairs
                       (paired_ratio): unless it takes at most WIN_MARGIN of the heuristic's
                       time there, the heuristic is kept (and recorded): a candidate timed in a
                       quiet moment must not beat one timed under load.
    Budget(seconds)    shared by the TunedKernels of one graph: checked before each candidate
                       is timed; once spent, the kernel being tuned takes the best of those
                       timed and the graph's other kernels their heuristic, neither persisted
                       (a later process tunes them). A candidate is timed for at most about
                       CANDIDATE_S (at least MIN_REPS calls), so a graph's tuning overshoots
                       its budget by at most one candidate's timing.
                       budget_for_graph() gives one for the current mode.
    written_args(emitted)  the argument positions a generated kernel writes.
    kernels_json_recorder(folder, name)  an on_choice callback that writes the choice into the
                       graph's kernels.json ("config", and "autotune": how it was chosen).
    forced(label)      (tests, benchmarks) a TunedKernel choosing while this is active runs the
                       candidate with this label, or candidate 0 if it has none (HEURISTIC:
                       always candidate 0), without timing: each variant can be checked.

Timing: CPU (the C++ backend, the Triton interpreter): one warm-up call, then the median of
repeated calls (at least MIN_REPS, until CANDIDATE_S has passed or MAX_REPS). CUDA:
`triton.testing.do_bench`, median.

Records: JSON in `<cache_dir>/autotune/<key[:2]>/<key>.json`, key = sha256 of the kernel's
source with its own name canonicalised, the device name (CPU model and thread count / GPU
name), the toolchain version (g++ / triton), the size bucket (the next power of two of each
size argument) and the candidates' labels and configs. A record is read back only if it
parses, names this key and one of the candidates with the same config: anything else is
ignored and tuned again. So a second process, or a new batch size in the same bucket, runs the
stored winner without timing anything (counter AutotuneBenchmark stays 0).

Metrics: counters AutotuneBenchmark (candidates timed) and AutotuneCacheHit (choices read from
a record); timing AutotuneTime (tuning, inside the first execution of a graph).
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from . import logs, metrics

MODES = ("off", "default", "max")
# seconds of tuning per graph: default mode keeps a first step's cost bounded
BUDGET_S = {"off": 0.0, "default": 2.0, "max": 60.0}
# CPU timing: at least MIN_REPS calls, then until CANDIDATE_S has passed, at most MAX_REPS
MIN_REPS, MAX_REPS, CANDIDATE_S = 3, 50, 0.05
# a winner other than the heuristic must run at most this fraction of the heuristic's time in
# the paired re-timing, else the heuristic is kept: a closer race is a coin toss on a loaded
# machine, and the heuristic is the config every other measurement was made with
WIN_MARGIN = 0.97
RECORD_VERSION = 2  # 2: winners confirmed by the paired re-timing (1 is tuned again)

HEURISTIC = "<heuristic>"  # forced(HEURISTIC): every kernel runs its heuristic config

_mode_override: str | None = None
_forced: str | None = None
_json_lock = threading.Lock()  # kernels.json rewrites of one process, one at a time


def set_mode(value: str | None) -> None:
    """Set the mode for this process (init(autotune=...)); None: back to the environment."""
    global _mode_override
    if value is not None and value not in MODES:
        raise ValueError(f"autotune mode must be one of {MODES}, not {value!r}")
    _mode_override = value


def mode() -> str:
    if _mode_override is not None:
        return _mode_override
    value = os.environ.get("LAZYTRITON_AUTOTUNE", "default").strip().lower() or "default"
    if value not in MODES:
        raise ValueError(f"LAZYTRITON_AUTOTUNE must be one of {MODES}, not {value!r}")
    return value


@contextmanager
def forced(label: str | None) -> Iterator[None]:
    """While active, TunedKernels choose the candidate labelled `label` without timing."""
    global _forced
    saved, _forced = _forced, label
    try:
        yield
    finally:
        _forced = saved


@dataclass(frozen=True)
class Candidate:
    label: str
    config: dict
    fn: Callable


class Budget:
    """Tuning seconds left for one graph (shared by its TunedKernels)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.spent = 0.0

    @property
    def exhausted(self) -> bool:
        return self.spent >= self.seconds


def budget_for_graph() -> Budget:
    env = os.environ.get("LAZYTRITON_AUTOTUNE_BUDGET")
    return Budget(float(env) if env else BUDGET_S[mode()])


# --- keys and records ---------------------------------------------------------------------

@functools.cache
def device_name(device_type: str = "cpu") -> str:
    """What a timing depends on besides the code: the CPU model and the threads OpenMP may use,
    or the GPU's name."""
    if device_type == "cuda":
        return torch.cuda.get_device_name()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    threads = os.environ.get("OMP_NUM_THREADS") or str(len(os.sched_getaffinity(0))
                                                       if hasattr(os, "sched_getaffinity")
                                                       else os.cpu_count())
    return f"{model} x{threads} threads"


def size_bucket(sizes: Sequence[int]) -> tuple[int, ...]:
    return tuple(1 if v <= 1 else 1 << (int(v) - 1).bit_length() for v in sizes)


def record_key(source: str, name: str, device: str, toolchain: str, bucket: Sequence[int],
               candidates: Sequence[Candidate]) -> str:
    canonical = source.replace(name, "<kernel>")
    text = json.dumps([RECORD_VERSION, canonical, device, toolchain, list(bucket),
                       [(c.label, c.config) for c in candidates]], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def record_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / "autotune" / key[:2] / f"{key}.json"


def read_record(path: Path, key: str, candidates: Sequence[Candidate]) -> Candidate | None:
    """The stored winner, if the record is whole and still names one of these candidates."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("key") != key or record.get("version") != RECORD_VERSION:
            return None
        for c in candidates:
            if c.label == record["best"] and c.config == record["config"]:
                return c
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def write_record(path: Path, record: dict) -> None:
    from .runtime.disk_cache import atomic_write  # the runtime imports this module
    try:
        atomic_write(path, json.dumps(record, indent=1, default=str))
    except OSError as e:  # a read-only cache still runs, it just tunes again next time
        logs.emit("autotune", f"could not write {path}: {e}")


# --- timing -------------------------------------------------------------------------------

def time_cpu(fn: Callable, args: Sequence[Any]) -> float:
    """Median seconds of repeated calls, after a warm-up call."""
    fn(*args)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MAX_REPS and (len(times) < MIN_REPS or
                                     time.perf_counter() - start < CANDIDATE_S):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_cuda(fn: Callable, args: Sequence[Any]) -> float:
    from triton.testing import do_bench
    return do_bench(lambda: fn(*args), warmup=5, rep=25, return_mode="median") / 1e3


def paired_ratio(fn: Callable, rival: Callable, args: Sequence[Any], device_type: str) -> float:
    """Median over rounds of fn's time / rival's time, the two timed one after the other in
    each round (in turns, which goes first): load that comes and goes on a shared machine hits
    both sides of a round alike, as it does not hit two candidates timed a while apart."""
    if device_type == "cuda":
        pairs = [(time_cuda(fn, args), time_cuda(rival, args)) for _ in range(3)]
    else:
        pairs = _cpu_pairs(fn, rival, args)
    return statistics.median(a / b if b > 0 else math.inf for a, b in pairs)


def _cpu_pairs(fn: Callable, rival: Callable, args: Sequence[Any]) -> list[tuple[float, float]]:
    fn(*args)
    rival(*args)
    pairs: list[tuple[float, float]] = []
    start = time.perf_counter()
    while len(pairs) < MAX_REPS and (len(pairs) < MIN_REPS or
                                     time.perf_counter() - start < 2 * CANDIDATE_S):
        first, second = (fn, rival) if len(pairs) % 2 == 0 else (rival, fn)
        t0 = time.perf_counter()
        first(*args)
        t1 = time.perf_counter()
        second(*args)
        t2 = time.perf_counter()
        pairs.append((t1 - t0, t2 - t1) if first is fn else (t2 - t1, t1 - t0))
    return pairs


def timer_for(device_type: str) -> Callable[[Callable, Sequence[Any]], float]:
    return time_cuda if device_type == "cuda" else time_cpu


def copy_for_timing(value: Any) -> Any:
    """A private copy of a written argument with the same layout from its data pointer on
    (kernels address buffers through the pointer and their own strides)."""
    if not isinstance(value, torch.Tensor) or value.numel() == 0:
        return value
    span = 1 + sum((n - 1) * s for n, s in zip(value.shape, value.stride()))
    flat = value.as_strided((span,), (1,)).clone()
    return flat.as_strided(value.shape, value.stride())


# --- the tuned kernel ---------------------------------------------------------------------

class TunedKernel:
    """A kernel with candidates; see the module docstring."""

    def __init__(self, name: str, candidates: Sequence[Candidate], *, source: str,
                 device: str, toolchain: str, cache_dir: Path, budget: Budget,
                 size_args: Sequence[int] = (), written: Sequence[int] = (),
                 on_choice: Callable[[dict], None] | None = None):
        if not candidates:
            raise ValueError(f"kernel {name}: no candidates")
        self.name = name
        self.candidates = list(candidates)
        self.source = source
        self.device = device  # "cpu" | "cuda": how candidates are timed
        self.toolchain = toolchain
        self.cache_dir = Path(cache_dir)
        self.budget = budget
        self.size_args = tuple(size_args)
        self.written = tuple(written)
        self.on_choice = on_choice
        self.choices: dict[tuple, Candidate] = {}  # size bucket -> chosen candidate
        self._by_sizes: dict[tuple, Callable] = {}  # exact size arguments -> its fn

    def __call__(self, *args):
        sizes = tuple(args[i] for i in self.size_args)
        fn = self._by_sizes.get(sizes)
        if fn is None:
            fn = self._choose(args, sizes)
        return fn(*args)

    def chosen(self, sizes: tuple) -> str | None:
        """The label of the candidate chosen for these size arguments' bucket, if any yet."""
        chosen = self.choices.get(size_bucket(sizes))
        return None if chosen is None else chosen.label

    def _choose(self, args, sizes) -> Callable:
        bucket = size_bucket(sizes)
        chosen = self.choices.get(bucket)
        if chosen is None:
            chosen = self.choices[bucket] = self._decide(args, bucket)
        if len(self._by_sizes) > 4096:  # many sizes of one bucket: forget the oldest
            self._by_sizes.clear()
        self._by_sizes[sizes] = chosen.fn
        return chosen.fn

    def _decide(self, args, bucket) -> Candidate:
        heuristic = self.candidates[0]
        if _forced is not None:
            chosen = next((c for c in self.candidates if c.label == _forced), heuristic)
            return self._report(chosen, bucket, "forced")
        if mode() == "off" or len(self.candidates) == 1:
            return self._report(heuristic, bucket, "heuristic")
        key = record_key(self.source, self.name, device_name(self.device), self.toolchain,
                         bucket, self.candidates)
        path = record_path(self.cache_dir, key)
        stored = read_record(path, key, self.candidates)
        if stored is not None:
            metrics.counter_inc("AutotuneCacheHit")
            return self._report(stored, bucket, "record", record=path)
        if self.budget.exhausted:
            return self._report(heuristic, bucket, "budget spent: heuristic")
        start = time.perf_counter()
        with metrics.timed("AutotuneTime"):
            timing_args = self._timing_args(args)
            times = self._benchmark(timing_args, start)
            best = min(times, key=lambda c: times[c]) if times else heuristic.label
            best = next(c for c in self.candidates if c.label == best)
            ratio = None
            if best is not heuristic and math.isfinite(times[best.label]) and \
                    math.isfinite(times.get(heuristic.label, math.inf)):
                ratio = self._confirm(best, heuristic, timing_args)
        self.budget.spent += time.perf_counter() - start
        if math.isinf(times.get(best.label, math.inf)):
            return self._report(heuristic, bucket, "every candidate failed: heuristic")
        extra = {}
        if ratio is not None:  # kernels.json shows the re-timing and what it decided
            extra = {"paired_ratio": round(ratio, 3) if math.isfinite(ratio) else None,
                     "first_timing_best": best.label}
            if ratio > WIN_MARGIN:
                best = heuristic
        if len(times) < len(self.candidates):  # the budget ran out: not a result to keep
            return self._report(best, bucket, "budget spent: best of those timed", times=times,
                                extra=extra)
        self._persist(best, bucket, key, path, times, extra)
        return self._report(best, bucket, "tuned", times=times, record=path, extra=extra)

    def _persist(self, best: Candidate, bucket, key: str, path: Path, times: dict,
                 extra: dict) -> None:
        write_record(path, {"version": RECORD_VERSION, "key": key, "kernel": self.name,
                            "device": device_name(self.device), "toolchain": self.toolchain,
                            "bucket": list(bucket), "best": best.label, "config": best.config,
                            "seconds": {k: (None if math.isinf(v) else v)
                                        for k, v in times.items()},
                            **extra,
                            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def _confirm(self, best: Candidate, heuristic: Candidate, args) -> float:
        """best's time over the heuristic's, re-timed in pairs (inf if best fails now)."""
        try:
            return paired_ratio(best.fn, heuristic.fn, args, self.device)
        except Exception as e:  # noqa: BLE001 -- a failing candidate is just slow
            logs.emit("autotune", f"{self.name}: candidate {best.label} failed: "
                                  f"{type(e).__name__}: {e}")
            return math.inf

    def _timing_args(self, args) -> list:
        """The call's arguments with copies of those the kernel writes."""
        args = list(args)
        for i in self.written:
            args[i] = copy_for_timing(args[i])
        return args

    def _benchmark(self, args, start: float) -> dict[str, float]:
        """Seconds per candidate label (inf: it failed); candidates left when the graph's
        budget runs out are not timed (not in the result)."""
        timer = timer_for(self.device)
        times: dict[str, float] = {}
        for c in self.candidates:
            if times and self.budget.spent + time.perf_counter() - start >= self.budget.seconds:
                break
            metrics.counter_inc("AutotuneBenchmark")
            try:
                times[c.label] = timer(c.fn, args)
            except Exception as e:  # noqa: BLE001 -- a failing candidate is just slow
                logs.emit("autotune", f"{self.name}: candidate {c.label} failed: "
                                      f"{type(e).__name__}: {e}")
                times[c.label] = math.inf
        return times

    def _report(self, chosen: Candidate, bucket, how: str, times=None, record=None,
                extra: dict | None = None) -> Candidate:
        info = {"chosen": chosen.label, "config": chosen.config, "how": how, "mode": mode(),
                "bucket": list(bucket), "candidates": [c.label for c in self.candidates],
                **(extra or {})}
        if times is not None:
            info["ms"] = {k: (None if math.isinf(v) else round(v * 1e3, 4))
                          for k, v in times.items()}
        if record is not None:
            info["record"] = str(record)
        logs.emit("autotune", f"{self.name} {list(bucket)}: {chosen.label} ({how})"
                  + (f" {info['ms']}" if times is not None else ""))
        if self.on_choice is not None:
            try:
                self.on_choice(info)
            except OSError:  # the readable copy is a courtesy; the step must go on
                pass
        return chosen


# --- helpers for launchers ----------------------------------------------------------------

def written_args(emitted) -> list[int]:
    """Positions of the arguments a generated kernel writes: its members' buffers (those not
    kept in registers; an input whose buffer a member's output was donated), and the error and
    bounds flags."""
    from .codegen.signature import BOUNDS, BUFFER, ERR
    stored = {id(m.buffer) for m in emitted.kernel.members if not m.local}
    stored |= {id(getattr(m.buffer, "donor", None)) for m in emitted.kernel.members
               if not m.local and getattr(m.buffer, "donor", None) is not None}  # in place
    return [i for i, p in enumerate(emitted.signature.params())
            if (p.kind == BUFFER and id(p.value) in stored) or p.kind in (ERR, BOUNDS)]


def size_args(emitted) -> list[int]:
    from .codegen.signature import SIZE
    return [i for i, p in enumerate(emitted.signature.params()) if p.kind == SIZE]


def kernels_json_recorder(folder: Path, kernel: str) -> Callable[[dict], None]:
    """A callback writing a TunedKernel's choice into the graph's kernels.json: the kernel's
    "config" becomes the chosen one, "autotune" says how it was chosen, per size bucket."""
    path = Path(folder) / "kernels.json"

    def update(entry: dict, info: dict) -> None:
        entry["config"] = info["config"]
        tuned = entry.setdefault("autotune", {})
        tuned["mode"] = info["mode"]
        tuned.setdefault("buckets", {})["x".join(map(str, info["bucket"])) or "static"] = {
            k: v for k, v in info.items() if k not in ("mode", "bucket")}

    def record(info: dict) -> None:
        with _json_lock:
            file = _kernels_files.pop(path, None) or KernelsJson(path)
            _kernels_files[path] = file  # the most recently used last
            if len(_kernels_files) > _KERNELS_FILES_KEPT:
                del _kernels_files[next(iter(_kernels_files))]
            file.update(kernel, lambda entry: update(entry, info))
    return record


class KernelsJson:
    """A graph's kernels.json, kept parsed and encoded entry by entry between choices: a graph
    of K tuned kernels records K choices, and encoding the whole file for each took K**2 time
    (5 s for 100 kernels). It is read again when another process wrote it since."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: list = []
        self.texts: list[str] = []  # each entry as json.dumps(entries, indent=1) prints it
        self.stamp = None  # (mtime_ns, size) after this object's last write

    def update(self, kernel: str, change: Callable[[dict], None]) -> None:
        if not self._current() and not self._read():
            return
        for k, entry in enumerate(self.entries):
            if isinstance(entry, dict) and entry.get("kernel") == kernel:
                change(entry)
                self.texts[k] = _entry_text(entry)
        from .runtime.disk_cache import atomic_write
        atomic_write(self.path, "[\n" + ",\n".join(self.texts) + "\n]" if self.texts else "[]")
        self.stamp = self._stat()

    def _current(self) -> bool:
        return self.stamp is not None and self.stamp == self._stat()

    def _read(self) -> bool:
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        self.entries = entries if isinstance(entries, list) else []
        self.texts = [_entry_text(e) for e in self.entries]
        return True

    def _stat(self):
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size


def _entry_text(entry) -> str:
    """One element of a list as json.dumps(list, indent=1) prints it."""
    return "\n".join(" " + line for line in json.dumps(entry, indent=1).split("\n"))


_kernels_files: dict[Path, KernelsJson] = {}  # by path, under _json_lock
# graphs whose kernels.json stays parsed: a graph's kernels are tuned together, so a few recent
# ones serve; a dropped one is read again from its file if it is tuned later
_KERNELS_FILES_KEPT = 16
