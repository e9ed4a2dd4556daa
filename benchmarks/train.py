"""Median time of a full training step (forward, backward, optimizer step), system by system.

    python benchmarks/train.py                      # every system, both default models
    python benchmarks/train.py --markdown           # plus a table for benchmarks/RESULTS.md
    python benchmarks/train.py --systems eager,lazytriton:aten --models mlp --steps 50
    python benchmarks/train.py --sync               # lazy systems wait after every step

Systems:
  eager             PyTorch eager on the CPU
  torch_lazy        torch._lazy with its TorchScript backend (mark_step + wait_device_ops)
  torch_compile     torch.compile (inductor) of the whole train-step function
  lazytriton        lazytriton with each backend lazytriton.available_backends(interpreted=False)
                    lists (Triton only with a GPU: its interpreter is for tests);
                    name one with lazytriton:BACKEND, and an autotune mode with
                    lazytriton:BACKEND@MODE (off, default, max; else LAZYTRITON_AUTOTUNE's)

Each (system, model) pair runs in its own subprocess (torch._lazy and lazytriton both own the
"lazy" device, and a compiler's caches must not leak into the next measurement), which prints
one JSON line. Caches start empty (fresh LAZYTRITON_CACHE_DIR and TORCHINDUCTOR_CACHE_DIR), so
the first step is a cold compile. Every step moves its batch from the CPU to the device, as a
training loop does. The lazy systems cut each step with mark_step and, by default, go on
tracing the next step while it runs (as a training loop does): the figure is then the mean of
the timed steps, from the first one's start until every one has run. With --sync they wait
for each step's execution (wait_device_ops) before the next begins, so tracing and execution
add up without overlap, and the figure is the median step.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parents[1]
_RESULT_PREFIX = "BENCH_RESULT "
DEFAULT_MODELS = ("tutorial", "mlp")
DEFAULT_SYSTEMS = ("eager", "torch_lazy", "torch_compile", "lazytriton")


# --------------------------------------------------------------------------------------------
# Worker: one system, one model, in this process.
# --------------------------------------------------------------------------------------------

@dataclass
class Workload:
    """A model with its optimizer, loss and one fixed CPU batch."""

    model: Any
    optimizer: Any
    loss_fn: Callable[[Any, Any], Any]
    x: Any
    y: Any


def _load_models() -> ModuleType:
    """lazytriton/testing/models.py, loaded by path: importing the lazytriton package registers
    its kernels for the "lazy" device, which would take that device away from torch._lazy."""
    path = _REPO_ROOT / "lazytriton" / "testing" / "models.py"
    spec = importlib.util.spec_from_file_location("_lazytriton_bench_models", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dynamo looks modules up by name when it traces
    spec.loader.exec_module(module)
    return module


def make_workload(name: str, batch: int, device: str) -> Workload:
    """The model is moved to `device` before its optimizer is built, as in the tutorial, so the
    optimizer holds the device's parameters whatever Module.to does with the CPU ones."""
    import torch
    import torch.nn.functional as F

    models = _load_models()
    torch.manual_seed(0)
    if name == "tutorial":  # the tutorial's model and optimizer, dropout included
        model = models.TutorialNet().to(device)
        optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
        x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
        return Workload(model, optimizer, F.nll_loss, x, y)
    if name == "mlp":
        model = models.MLP((784, 512, 512, 10)).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
        return Workload(model, optimizer, F.cross_entropy, x, y)
    if name == "transformer":
        model = models.TransformerBlock().to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        tokens = torch.randint(0, 64, (batch, 17))
        return Workload(model, optimizer, models.lm_loss, tokens[:, :-1], tokens[:, 1:])
    raise ValueError(f"unknown model {name!r}")


def make_step(w: Workload, device: str) -> Callable[[], Any]:
    """The training step of the tutorial, minus the mark_step (the system adds its own sync)."""

    def step() -> Any:
        x, y = w.x.to(device), w.y.to(device)
        w.optimizer.zero_grad(set_to_none=True)
        loss = w.loss_fn(w.model(x), y)
        loss.backward()
        w.optimizer.step()
        return loss

    return step


@dataclass
class System:
    """How one system prepares a workload and finishes a step, plus its optional metrics."""

    device: str
    sync: Callable[[], None]  # cut the step (lazy systems: mark_step; eager: nothing)
    wait: Callable[[], None] = lambda: None  # until every cut step has run
    compile_step: Callable[[Callable[[], Any]], Callable[[], Any]] = lambda step: step
    reset_metrics: Callable[[], None] = lambda: None
    read_metrics: Callable[[int], dict[str, Any]] = lambda steps: {}


def _eager() -> System:
    return System(device="cpu", sync=lambda: None)


def _torch_compile() -> System:
    import torch
    from torch._dynamo.utils import counters

    def read(steps: int) -> dict[str, Any]:
        return {"recompiles": counters["stats"]["unique_graphs"]}  # graphs compiled since reset

    # Compiling the whole step lets dynamo take forward+loss, backward (via AOTAutograd) and the
    # optimizer update; the graph break at .backward() is dynamo's, not ours.
    return System(device="cpu", sync=lambda: None, compile_step=torch.compile,
                  reset_metrics=counters.clear, read_metrics=read)


def _torch_lazy() -> System:
    import torch._lazy
    import torch._lazy.metrics
    import torch._lazy.ts_backend

    torch._lazy.ts_backend.init()

    def read(steps: int) -> dict[str, Any]:
        return {"recompiles": torch._lazy.metrics.counter_value("UncachedCompile") or 0}

    return System("lazy", torch._lazy.mark_step, torch._lazy.wait_device_ops,
                  reset_metrics=torch._lazy.metrics.reset, read_metrics=read)


def _lazytriton(spec: str) -> System:
    """spec: BACKEND, or BACKEND@MODE for an autotune mode other than the user's default."""
    import lazytriton
    import lazytriton.metrics as metrics

    backend, _, mode = spec.partition("@")
    lazytriton.init(backend=backend, autotune=mode or None)

    def read(steps: int) -> dict[str, Any]:
        result: dict[str, Any] = {"recompiles": metrics.counter_value("UncachedCompile") or 0}
        try:  # seconds spent tracing since the last reset
            result["trace_ms"] = 1000 * metrics.timing_total("trace") / steps
        except (AttributeError, KeyError) as e:
            result["trace_note"] = f"trace time n/a ({type(e).__name__}: {e})"
        return result

    return System("lazy", lazytriton.mark_step, lazytriton.wait_device_ops,
                  reset_metrics=metrics.reset, read_metrics=read)


def make_system(name: str) -> System:
    if name == "eager":
        return _eager()
    if name == "torch_compile":
        return _torch_compile()
    if name == "torch_lazy":
        return _torch_lazy()
    if name.startswith("lazytriton:"):
        return _lazytriton(name.split(":", 1)[1])
    raise ValueError(f"unknown system {name!r}")


def _timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(system_name: str, model_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """First-step time, then `warmup` untimed steps, then `steps` timed ones."""
    import torch

    torch.set_num_threads(args.threads)
    system = make_system(system_name)
    workload = make_workload(model_name, args.batch_size, system.device)
    step = system.compile_step(make_step(workload, system.device))

    def run_one() -> None:
        step()
        system.sync()
        if args.sync:
            system.wait()  # the clock stops once the step has really run

    first = _timed(lambda: (run_one(), system.wait()))
    for _ in range(args.warmup):
        run_one()
    system.wait()
    system.reset_metrics()
    if args.sync:
        times = [_timed(run_one) for _ in range(args.steps)]
        step_s = statistics.median(times)
    else:  # overlapped: the mean over steps, until the last one has run
        total = _timed(lambda: ([run_one() for _ in range(args.steps)], system.wait()))
        times, step_s = [total / args.steps], total / args.steps
    return {
        "median_ms": 1000 * step_s,
        "min_ms": 1000 * min(times),
        "first_step_s": first,
        **system.read_metrics(args.steps),
    }


def worker(args: argparse.Namespace) -> None:
    result: dict[str, Any] = {"system": args.worker, "model": args.model}
    try:
        result.update(measure(args.worker, args.model, args))
    except Exception as e:  # reported in the table, not raised: one failure must not hide the rest
        result["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
    print(_RESULT_PREFIX + json.dumps(result), flush=True)


def list_backends() -> None:
    """Print lazytriton's available backends as JSON (run in a subprocess by the parent)."""
    try:
        import lazytriton

        print(_RESULT_PREFIX + json.dumps({"backends": lazytriton.available_backends(interpreted=False)}))
    except Exception as e:
        print(_RESULT_PREFIX + json.dumps({"error": f"{type(e).__name__}: {e}".splitlines()[0]}))


# --------------------------------------------------------------------------------------------
# Parent: one subprocess per (system, model), then a table.
# --------------------------------------------------------------------------------------------

def _child_env(threads: int, cache_root: Path, tag: str) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)  # generated OpenMP code uses what torch uses
    env["LAZYTRITON_CACHE_DIR"] = str(cache_root / tag / "lazytriton")
    env["TORCHINDUCTOR_CACHE_DIR"] = str(cache_root / tag / "inductor")
    return env


def _run_child(argv: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run this script with `argv`; its last result line, or an error saying why there is none."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_RESULT_PREFIX)]
    if lines:
        return json.loads(lines[-1][len(_RESULT_PREFIX):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit code {proc.returncode}: {tail[:300]}"}


def expand_systems(names: list[str], env: dict[str, str], timeout: float) -> list[str]:
    """Replace "lazytriton" by one "lazytriton:BACKEND" per available backend."""
    systems: list[str] = []
    for name in names:
        if name != "lazytriton":
            systems.append(name)
            continue
        found = _run_child(["--list-backends"], env, timeout)
        if "error" in found:
            print(f"lazytriton: n/a ({found['error']})", file=sys.stderr)
            systems.append("lazytriton:n/a")
        else:
            systems.extend(f"lazytriton:{b}" for b in found["backends"])
    return systems


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="lazytriton-bench-") as tmp:
        cache_root = Path(tmp)
        systems = expand_systems(args.systems, _child_env(args.threads, cache_root, "list"),
                                 args.timeout)
        results = []
        for model in args.models:
            for system in systems:
                print(f"running {system} on {model} ...", file=sys.stderr, flush=True)
                argv = ["--worker", system, "--model", model, "--steps", str(args.steps),
                        "--warmup", str(args.warmup), "--threads", str(args.threads),
                        "--batch-size", str(args.batch_size)] + (["--sync"] if args.sync else [])
                env = _child_env(args.threads, cache_root, f"{system}-{model}".replace(":", "_"))
                result = {"system": system, "model": model}
                if system == "lazytriton:n/a":
                    result["error"] = "lazytriton could not list its backends"
                else:
                    result.update(_run_child(argv, env, args.timeout))
                results.append(result)
        return results


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

HEADER = ("model", "system", "step ms", "vs eager", "first step s", "trace ms/step",
          "recompiles", "note")


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table_rows(results: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    eager = {r["model"]: r.get("median_ms") for r in results if r["system"] == "eager"}
    rows = []
    for r in results:
        base, median = eager.get(r["model"]), r.get("median_ms")
        speedup = base / median if base and median else None
        note = r.get("error") or r.get("trace_note", "")
        rows.append((r["model"], r["system"], _fmt(median, ".2f"),
                     _fmt(speedup, ".2f") + ("x" if speedup else ""),
                     _fmt(r.get("first_step_s"), ".2f"), _fmt(r.get("trace_ms"), ".2f"),
                     _fmt(r.get("recompiles"), "d"), note))
    return rows


def format_text(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in [HEADER, *rows])


def format_markdown(rows: list[tuple[str, ...]], args: argparse.Namespace) -> str:
    import torch

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    setup = (f"{_cpu_name()}, {args.threads} threads, torch {torch.__version__}, "
             f"batch {args.batch_size}, {'median' if args.sync else 'mean'} of {args.steps} "
             f"steps{' (--sync)' if args.sync else ''} after 1 + {args.warmup} warm-up steps, "
             f"{time.strftime('%Y-%m-%d')}")
    return "\n".join([setup, "", line(HEADER), line(tuple("---" for _ in HEADER)),
                      *(line(r) for r in rows)])


def _cpu_name() -> str:
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                return text.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------------------------

def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Median training-step time of small models under eager PyTorch, "
                    "torch._lazy (TorchScript backend), torch.compile and lazytriton.")
    parser.add_argument("--steps", type=int, default=20,
                        help="timed steps per measurement (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps after the (separately timed) first step "
                             "(default: %(default)s)")
    parser.add_argument("--models", type=_names, default=list(DEFAULT_MODELS),
                        help="comma-separated: tutorial, mlp, transformer "
                             "(default: %(default)s)")
    parser.add_argument("--systems", type=_names, default=list(DEFAULT_SYSTEMS),
                        help="comma-separated: eager, torch_lazy, torch_compile, lazytriton "
                             "(every backend that runs compiled here) or lazytriton:BACKEND "
                             "(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch.set_num_threads and OMP_NUM_THREADS of each worker "
                             "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="batch size (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds before a worker is given up on (default: %(default)s)")
    parser.add_argument("--sync", action="store_true",
                        help="lazy systems wait for each step's execution before tracing the "
                             "next (wait_device_ops() after every step); the figure is the "
                             "median step instead of the mean of overlapped steps")
    parser.add_argument("--markdown", action="store_true",
                        help="also print a Markdown table for benchmarks/RESULTS.md")
    parser.add_argument("--worker", metavar="SYSTEM", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--list-backends", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.list_backends:
        list_backends()
    elif args.worker:
        worker(args)
    else:
        rows = table_rows(run_all(args))
        print(format_text(rows))
        if args.markdown:
            print()
            print(format_markdown(rows, args))


if __name__ == "__main__":
    main()
