"""Compiling many Triton kernels at once, in worker processes.

Triton compiles a kernel at its first launch, one after another. Threads do not help: its
compiler holds the GIL for most of the work (measured: 3 kernels for sm_90 took 3.1 s serially,
3.8 s on 2 threads and 4.7 s on 4). So a graph with several new kernels hands them to a pool of
spawned worker processes, created on first use and kept for the life of the process. Each
worker compiles into Triton's on-disk cache, which lazytriton points inside its own cache dir;
the first launch in this process then finds the binary there instead of compiling.

Compiling ahead is only ever a head start: a job that fails leaves its kernel to compile at
first launch, where a real error surfaces through the usual fallback. LAZYTRITON_COMPILE_WORKERS
sets the pool's size (0 or 1: compile at first launch, serially).
"""
from __future__ import annotations

import multiprocessing
import os
import threading
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .disk_cache import atomic_write
from ..codegen.signature import BUFFER, ERR, SCALAR, SIZE, GeneratedKernel

MIN_JOBS = 2  # a single kernel compiles as fast in place as through the pool's round trip
_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


def worker_count() -> int:
    configured = os.environ.get("LAZYTRITON_COMPILE_WORKERS")
    if configured is not None:
        try:
            return max(0, int(configured))
        except ValueError:
            raise ValueError(f"LAZYTRITON_COMPILE_WORKERS must be a number of processes, "
                             f"got {configured!r}") from None
    return min(8, os.cpu_count() or 1)


def run_jobs(fn: Callable, jobs: Sequence[tuple]) -> list[Any]:
    """fn(*job) for every job: in the pool when there are several and workers are allowed,
    else here. Each result is fn's value or the exception it raised (never raised here).
    A worker runs each job with this process's TRITON_* settings of the moment (the pool
    outlives the settings it was started with: TRITON_CACHE_DIR follows the cache dir)."""
    workers = worker_count()
    if workers <= 1 or len(jobs) < MIN_JOBS:
        return [_capture(fn, job) for job in jobs]
    settings = {k: v for k, v in os.environ.items() if k.startswith("TRITON_")}
    try:
        pool = _shared_pool(workers)
        futures = [pool.submit(_capture, fn, job, settings) for job in jobs]
        return [f.result() for f in futures]
    except BrokenProcessPool:  # a worker died (out of memory, a crash in the compiler)
        _discard_pool()
        return [_capture(fn, job) for job in jobs]


def _capture(fn: Callable, job: tuple, settings: dict[str, str] | None = None):
    if settings is not None:  # in a worker
        for key in [k for k in os.environ if k.startswith("TRITON_") and k not in settings]:
            del os.environ[key]
        os.environ.update(settings)
    try:
        return fn(*job)
    except Exception as e:  # noqa: BLE001 -- reported to the caller as a value
        return e


def _shared_pool(workers: int) -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # spawn, not fork: a forked child of a process that initialised CUDA cannot use it
            _pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        return _pool


def _discard_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None


# --- warming Triton's JIT cache for a CUDA launch --------------------------------------------

def warmup_jobs(path: Path, emitted: GeneratedKernel) -> list[tuple]:
    """One job per launch of a kernel module: the arguments its first launch will most likely
    have, so the compiled specialisation is the one that launch looks up. Buffers are given
    by dtype (Triton's mock tensors, assumed 16-byte aligned as the CUDA allocator's are),
    sizes by this graph's values."""
    args = [sample_argument(p.kind, p.dtype, emitted.sample_sizes.get(p.name))
            for p in emitted.signature.params()]
    return [(str(path), launch.function, args,
             dict(launch.config.constexprs(), num_warps=launch.config.num_warps,
                  num_stages=launch.config.num_stages))
            for launch in emitted.launch]


def sample_argument(kind: str, dtype: torch.dtype, size: int | None):
    if kind in (BUFFER, ERR):
        return dtype  # JITFunction.warmup turns a dtype into a mock tensor
    if kind == SIZE:
        return size
    if kind == SCALAR:  # a run-time value: any that Triton types as the launch's will do
        return True if dtype == torch.bool else 0.5 if dtype in (torch.float32, torch.float16,
                                                                torch.bfloat16) else 3
    raise ValueError(f"no sample argument for a {kind} parameter")


BINARY_FORMATS = ("cubin", "ptx", "hsaco", "amdgcn")  # what a GPU kernel compiles to


def warm_kernel(path: str, function: str, args: list, options: dict) -> tuple[str, dict]:
    """In a worker (or here): compile one launch of a kernel module into Triton's cache (the
    parent's TRITON_CACHE_DIR, where its first launch will look); its binaries, to be written
    beside the source."""
    from .triton_backend import _execute
    module = _execute(Path(path), f"lazytriton_warm.{Path(path).stem}", interpret=False)
    compiled = getattr(module, function).warmup(*args, grid=(1,), **options)
    asm = getattr(compiled, "asm", None) or {}
    return function, {fmt: asm[fmt] for fmt in BINARY_FORMATS if fmt in asm}


def warm_kernels(jobs: list[tuple], folder: Path) -> int:
    """Compile these launches ahead (in the pool when there are several) and write each one's
    binaries beside its source in `folder` (`<function>.cubin`, `.ptx`); the number that failed
    (they compile at first launch instead, with any error reported there)."""
    results = run_jobs(warm_kernel, jobs)
    failed = [r for r in results if isinstance(r, Exception)]
    write_binaries(folder, [r for r in results if not isinstance(r, Exception)])
    if failed:
        warnings.warn(f"lazytriton: {len(failed)} of {len(jobs)} Triton kernels did not compile "
                      f"ahead ({type(failed[0]).__name__}: {failed[0]}); they compile at first "
                      f"launch instead", RuntimeWarning, stacklevel=2)
    return len(failed)


def write_binaries(folder: Path, compiled: list[tuple[str, dict]]) -> None:
    for function, binaries in compiled:
        for fmt, content in binaries.items():
            atomic_write(folder / f"{function}.{fmt}", content)
