"""A training loop whose batch size changes: compiles, kernel builds and time per step.

    python benchmarks/dynamic_shapes.py                    # tutorial Net and MLP, C++ backend
    python benchmarks/dynamic_shapes.py --models mlp --sizes 64,64,29,64,17,33 --backend cpp

Each model runs twice in its own subprocess with an empty cache: the batch sizes given, then
the first size repeated as often (the fixed-batch baseline). Printed per run: UncachedCompile
and KernelCompile after every step, the total compile time, the median time of the steps that
compiled nothing, and why each recompile happened (metrics_report's list).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

_CHILD = "BENCH_RESULT "


def run_child(model_name: str, sizes: list[int], backend: str) -> dict:
    import torch
    import torch.nn.functional as F

    import lazytriton
    from lazytriton import metrics
    from lazytriton.testing.models import MLP, TutorialNet

    lazytriton.init(backend)
    torch.manual_seed(0)
    model = (TutorialNet(dropout=0.0) if model_name == "tutorial" else MLP()).to("lazy")
    opt = torch.optim.Adadelta(model.parameters())
    counts, times = [], []
    for batch in sizes:
        x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
        compiles_before = metrics.counter_value("UncachedCompile") or 0
        start = time.perf_counter()
        opt.zero_grad()
        F.nll_loss(F.log_softmax(model(x.to("lazy")), 1) if model_name == "mlp" else
                   model(x.to("lazy")), y.to("lazy")).backward()
        opt.step()
        lazytriton.mark_step(wait=True)
        elapsed = time.perf_counter() - start
        compiled = (metrics.counter_value("UncachedCompile") or 0) > compiles_before
        if not compiled:
            times.append(elapsed)
        counts.append([metrics.counter_value("UncachedCompile") or 0,
                       metrics.counter_value("KernelCompile") or 0])
    return {"model": model_name, "sizes": sizes, "counts": counts,
            "compile_s": round(metrics.timing_total("compile"), 2),
            "median_step_ms": round(statistics.median(times) * 1e3, 1) if times else None,
            "recompiles": getattr(metrics, "recompile_reasons", list)()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tutorial,mlp")
    parser.add_argument("--sizes", default="64,64,29,64,17,33,64,29")
    parser.add_argument("--backend", default="cpp")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sizes = [int(s) for s in args.child[1].split(",")]
        print(_CHILD + json.dumps(run_child(args.child[0], sizes, args.backend)))
        return
    sizes = args.sizes.split(",")
    for model in args.models.split(","):
        for label, run_sizes in (("varying", sizes), ("fixed", [sizes[0]] * len(sizes))):
            with tempfile.TemporaryDirectory() as cache:
                out = subprocess.run(
                    [sys.executable, __file__, "--backend", args.backend, "--child", model,
                     ",".join(run_sizes)], capture_output=True, text=True, check=True,
                    env={**__import__("os").environ, "LAZYTRITON_CACHE_DIR": cache})
            result = json.loads(out.stdout.split(_CHILD, 1)[1])
            print(f"{model} {label} {','.join(run_sizes)}: (UncachedCompile, KernelCompile) per "
                  f"step {result['counts']}; compile {result['compile_s']} s; median step "
                  f"without compile {result['median_step_ms']} ms")
            for reason in result["recompiles"]:
                print(f"    recompile: {reason}")


if __name__ == "__main__":
    main()
