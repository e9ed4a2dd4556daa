"""Training-step time ratios measured by turns, in one process: eager, torch.compile and
lazytriton each take one step in turn, round after round.

    python benchmarks/interleaved.py                         # tutorial, mlp, transformer
    python benchmarks/interleaved.py --models mlp --rounds 60 --markdown

On a shared machine whose speed comes and goes on a scale of seconds, figures taken a minute
apart (benchmarks/train.py runs each system in its own process, one after the other) can differ
by 2x for one system. Here the systems' steps alternate, each going first in turn, so a slow
spell weighs on all of them alike: each ratio is the median over rounds of that round's eager
step time over the system's. The lazy system waits for each step's execution (mark_step and
wait_device_ops, train.py's --sync): tracing and execution add up, without overlap.

torch.compile and lazytriton share the process (each its own model copy, same initial weights
and batch). torch._lazy is not measured here: it and lazytriton both own the "lazy" device.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train  # noqa: E402  (this folder's train.py: the workloads and systems)

SYSTEMS = ("eager", "torch_compile", "lazytriton")


def measure(model: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """{system: {"ms": median step, "ratio": median of the rounds' eager / system}}."""
    steps = {}
    for name in args.systems:
        system = train.make_system(f"lazytriton:{args.backend}" if name == "lazytriton"
                                   else name)
        workload = train.make_workload(model, args.batch_size, system.device)
        step = system.compile_step(train.make_step(workload, system.device))
        steps[name] = _synchronous(step, system)
    for run in steps.values():  # compile, tune and settle before anything is timed
        for _ in range(args.warmup):
            run()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.rounds):
        order = list(steps)[r % len(steps):] + list(steps)[:r % len(steps)]
        for name in order:
            start = time.perf_counter()
            steps[name]()
            samples[name].append(time.perf_counter() - start)
    eager = samples.get("eager")
    return {name: {"ms": 1000 * statistics.median(times),
                   "ratio": statistics.median(e / t for e, t in zip(eager, times))
                   if eager else float("nan")}
            for name, times in samples.items()}


def _synchronous(step, system):
    def run():
        step()
        system.sync()
        system.wait()
    return run


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=train._names, default=["tutorial", "mlp", "transformer"],
                        help="comma-separated: tutorial, mlp, transformer (default: all three)")
    parser.add_argument("--systems", type=train._names, default=list(SYSTEMS),
                        help=f"comma-separated of {', '.join(SYSTEMS)} (default: all; eager "
                             "is needed for the ratios)")
    parser.add_argument("--backend", default="cpp", help="lazytriton's backend (default: cpp)")
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds (default: 40)")
    parser.add_argument("--warmup", type=int, default=5,
                        help="untimed steps of each system first (default: 5)")
    parser.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch.set_num_threads (default: 2)")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {list(SYSTEMS)}")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)  # the generated OpenMP code uses as many
    with tempfile.TemporaryDirectory(prefix="lazytriton-interleaved-") as tmp:
        os.environ["LAZYTRITON_CACHE_DIR"] = str(Path(tmp) / "lazytriton")  # a cold start
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp) / "inductor")
        rows = []
        for model in args.models:
            print(f"{model} ...", file=sys.stderr, flush=True)
            for name, r in measure(model, args).items():
                rows.append((model, name, f"{r['ms']:.2f}", f"{r['ratio']:.2f}x"))
    head = ("model", "system", "median step ms", "eager / system (median of rounds)")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    for line in [head] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)))
    if args.markdown:
        print(f"\n{train._cpu_name()}, {args.threads} threads, torch {torch.__version__}, batch "
              f"{args.batch_size}, {args.rounds} rounds after {args.warmup} warm-up steps each, "
              f"lazytriton:{args.backend} synchronous\n")
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
