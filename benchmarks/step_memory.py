"""Peak resident memory of one training step (forward, backward, optimizer step), per system.

    python benchmarks/step_memory.py                                  # tutorial, mlp, transformer
    python benchmarks/step_memory.py --systems eager,lazytriton:cpp --models tutorial --steps 5

What is measured: the process's resident-set high-water mark (VmHWM) over one whole step, the
lazy systems' execution included (step, mark_step, wait_device_ops). Before each timed step the
high-water mark is reset to the current resident size (`echo 5 > /proc/self/clear_refs`, Linux),
so the figure is the step's own peak; "above start" subtracts the resident size at its start.
So that resident memory follows the tensors alive rather than what malloc keeps, every
allocation of 64 KiB or more is its own mmap, returned to the system when freed
(`mallopt(M_MMAP_THRESHOLD)`, glibc); smaller ones stay on the heap and count as they would.
The workloads are benchmarks/train.py's (same models, optimizers and batch). Each (system,
model) pair runs in its own process with an empty cache dir; the median over --steps steps
after --warmup untimed ones is printed, in MiB.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_RESULT_PREFIX = "MEMORY_RESULT "
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers
M_TRIM_THRESHOLD = -1


def _train_module():
    spec = importlib.util.spec_from_file_location("_lazytriton_bench_train", _HERE / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_high_water_mark() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _malloc_returns_large_blocks() -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)  # fixed: no dynamic raise of the threshold
    libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)


def measure(system_name: str, model_name: str, args: argparse.Namespace) -> dict:
    _malloc_returns_large_blocks()
    import torch
    torch.set_num_threads(args.threads)
    train = _train_module()
    system = train.make_system(system_name)
    workload = train.make_workload(model_name, args.batch_size, system.device)
    step = system.compile_step(train.make_step(workload, system.device))

    def run_one() -> None:
        step()
        system.sync()
        system.wait()

    for _ in range(1 + args.warmup):
        run_one()
    starts, peaks = [], []
    for _ in range(args.steps):
        gc.collect()
        _reset_high_water_mark()
        starts.append(_status_kib("VmRSS"))
        run_one()
        peaks.append(_status_kib("VmHWM"))
    mib = 1 / 1024
    return {"start_mib": statistics.median(starts) * mib,
            "peak_mib": statistics.median(peaks) * mib,
            "above_start_mib": statistics.median(p - s for p, s in zip(peaks, starts)) * mib}


def run_all(args: argparse.Namespace) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory(prefix="lazytriton-mem-") as tmp:
        for model in args.models:
            for system in args.systems:
                env = dict(os.environ, OMP_NUM_THREADS=str(args.threads),
                           LAZYTRITON_CACHE_DIR=str(Path(tmp) / f"{system}-{model}"))
                cmd = [sys.executable, __file__, "--worker", system, "--model", model,
                       "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--threads", str(args.threads), "--batch-size", str(args.batch_size)]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT_PREFIX)]
                result = json.loads(lines[-1][len(_RESULT_PREFIX):]) if lines else \
                    {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]}
                results.append({"model": model, "system": system, **result})
    return results


def format_markdown(results: list[dict]) -> str:
    rows = ["| model | system | resident at step start MiB | step peak MiB "
            "| peak above start MiB |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['model']} | {r['system']} | {r['error']} | | |")
            continue
        rows.append(f"| {r['model']} | {r['system']} | {r['start_mib']:.1f} | "
                    f"{r['peak_mib']:.1f} | {r['above_start_mib']:.1f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = lambda text: [n for n in text.split(",") if n]  # noqa: E731
    parser.add_argument("--models", type=names, default=["tutorial", "mlp", "transformer"])
    parser.add_argument("--systems", type=names, default=["eager", "lazytriton:cpp"])
    parser.add_argument("--steps", type=int, default=5, help="(default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(_RESULT_PREFIX + json.dumps(measure(args.worker, args.model, args)), flush=True)
        return
    print(format_markdown(run_all(args)))


if __name__ == "__main__":
    main()
