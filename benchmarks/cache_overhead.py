"""What the cache's records and root index cost per new graph: N distinct tiny graphs (a new
shape each) on the aten backend, whose compile is the cheapest, with the per-graph record and
index step (runtime/compile_log.CompileLog.compiled) on and stubbed out, alternately.

    python benchmarks/cache_overhead.py [N]
"""
from __future__ import annotations

import sys
import tempfile
import time

import torch

import lazytriton
from lazytriton.runtime import cache_index, session


def ms_per_graph(n: int, records: bool) -> float:
    lazytriton.init("aten", cache_dir=tempfile.mkdtemp(prefix="lazytriton-bench-"))
    if not records:
        session.current()._log.compiled = lambda *args, **kwargs: None
    start = time.perf_counter()
    for i in range(n):
        (torch.ones(i + 1).to("lazy") * 2).cpu()
    cache_index.flush_all()  # the batched root index write, counted
    return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    ms_per_graph(n, records=True)  # warm-up: imports, first-call costs
    for records in (False, True, False, True):
        print(f"{'with' if records else 'without'} records and index: "
              f"{ms_per_graph(n, records):.2f} ms per new graph")


if __name__ == "__main__":
    main()
