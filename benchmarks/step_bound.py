"""How fast a synchronous lazytriton step could be with tracing at the dispatch floor.

    python benchmarks/step_bound.py                       # mlp, transformer, tutorial
    python benchmarks/step_bound.py --models mlp --steps 200

Per model, in one process, steps of three kinds alternate one by one, so that a machine whose
speed drifts slows all alike:
- eager: one training step on the CPU (the step benchmarks/train.py times);
- floor: the same step traced by benchmarks/trace_overhead.py's `FloorTensor`, whose
  __torch_dispatch__ does nothing (the dispatcher, autograd, the Python call and the output
  wrappers: what any tracer built on __torch_dispatch__ pays);
- lazytriton: the step traced, then `mark_step(wait=True)`: cutting the graph, running its
  kernels and aten calls, and waiting for them.
All are wall-clock times (execution is multi-threaded). The bound is floor + lazytriton's
mark_step and execution: the synchronous step of a tracer with no cost above the floor and
lazytriton's execution. Ratios are to eager's median step.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train  # noqa: E402  (the models, optimizers and step)
import trace_overhead  # noqa: E402  (the floor)


def measure(model: str, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per step of each part: eager, floor, trace, execute (mark_step + wait)."""
    import lazytriton
    floor = trace_overhead.FloorRun(model, args)  # with an eager workload, `real`
    eager_step = train.make_step(floor.real, "cpu")
    lazy_w = train.make_workload(model, args.batch_size, "lazy")
    lazy_step = train.make_step(lazy_w, "lazy")
    for _ in range(args.warmup):
        eager_step()
        lazy_step()
        lazytriton.mark_step(wait=True)
    times: dict[str, list[float]] = {"eager": [], "floor": [], "trace": [], "execute": []}
    clock = time.perf_counter
    for _ in range(args.steps):
        start = clock()
        eager_step()
        times["eager"].append(clock() - start)
        trace_overhead._script.start_step(recording=False)
        times["floor"].append(_floor_step(floor.w))
        start = clock()
        lazy_step()
        traced = clock()
        lazytriton.mark_step(wait=True)
        times["trace"].append(traced - start)
        times["execute"].append(clock() - traced)
    return {part: statistics.median(values) for part, values in times.items()}


def _floor_step(w: train.Workload) -> float:
    """Seconds of one floor step; zero_grad untimed, as trace_overhead.py times it."""
    w.optimizer.zero_grad(set_to_none=True)
    start = time.perf_counter()
    trace_overhead._step(w)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=train._names, default=["mlp", "transformer", "tutorial"],
                        help="comma-separated: mlp, tutorial, transformer (default: all three)")
    parser.add_argument("--steps", type=int, default=100,
                        help="timed steps of each kind, alternating (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed eager and lazytriton steps first (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    parser.add_argument("--backend", default="cpp",
                        help="lazytriton's backend (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch.set_num_threads (default: %(default)s)")
    args = parser.parse_args(argv)

    trace_overhead.start_lazytriton(args)
    print(f"{'model':<12} {'eager ms':>8} {'floor':>7} {'trace':>7} {'execute':>8} "
          f"{'lazytriton':>16} {'bound':>16}")
    for model in args.models:
        t = {part: 1e3 * seconds for part, seconds in measure(model, args).items()}
        lazy, bound = t["trace"] + t["execute"], t["floor"] + t["execute"]
        print(f"{model:<12} {t['eager']:>8.2f} {t['floor']:>7.2f} {t['trace']:>7.2f} "
              f"{t['execute']:>8.2f} {lazy:>8.2f} ({lazy / t['eager']:.2f}x) "
              f"{bound:>8.2f} ({bound / t['eager']:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
