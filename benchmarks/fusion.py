"""Fusion benchmark: a 10-op pointwise chain and a row softmax over 16M float32 values.

Prints time per call and effective bandwidth (the bytes a perfect fused kernel must move: read
the input once, write the output once) for eager PyTorch, lazytriton's C++ backend and a plain
memory copy (the hardware's practical ceiling). lazytriton's time includes tracing the ops and
mark_step: what a user pays per step.

    python benchmarks/fusion.py [--numel N] [--repeat R] [--threads T]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import lazytriton  # installed (pip install -e .): lazytriton.codegen maps to codegen/


def chain(x: torch.Tensor) -> torch.Tensor:
    """Ten pointwise ops; eager makes ten passes over memory, a fused kernel one."""
    y = torch.sin(x)
    y = y * 1.5
    y = y + 0.25
    y = torch.exp(y)
    y = torch.tanh(y)
    y = y - 0.5
    y = torch.relu(y)
    y = torch.sigmoid(y)
    y = y * y
    return y + 1.0


def arithmetic_chain(x: torch.Tensor) -> torch.Tensor:
    """Ten cheap pointwise ops: memory-bound, where fusing ten passes into one pays most."""
    y = x * 1.5
    y = y + 0.25
    y = torch.relu(y)
    y = y * y
    y = y - 0.5
    y = torch.abs(y)
    y = torch.clamp(y, max=4.0)
    y = y * 0.75
    y = torch.maximum(y, x)
    return y + 1.0


def softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


def timed(fn, repeat: int) -> float:
    """Median seconds per call, after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def lazy_call(fn, x):
    def run():
        out = fn(x)  # held until the step ran: a dropped result is never computed
        lazytriton.mark_step()
        lazytriton.wait_device_ops()
        return out
    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numel", type=int, default=16 * 1024 * 1024,
                        help="float32 elements per tensor (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=10, help="timed calls (default: 10)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch and OpenMP threads (default: %(default)s)")
    parser.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lazytriton.init("cpp")
    rows = 4096
    x = torch.randn(rows, args.numel // rows)
    lazy_x = x.to("lazy")
    moved = 2 * x.numel() * x.element_size()  # read once + write once
    results = []
    benchmarks = (("10-op arithmetic chain", arithmetic_chain),
                  ("10-op chain with sin/exp/tanh", chain),
                  ("softmax (rows of %d)" % x.shape[1], softmax))
    for name, fn in benchmarks:
        torch.testing.assert_close(fn(lazy_x).cpu(), fn(x), rtol=1e-4, atol=1e-5)
        eager = timed(lambda: fn(x), args.repeat)
        lazy = timed(lazy_call(fn, lazy_x), args.repeat)
        results.append((name, eager, lazy))
    copy = timed(lambda: torch.empty_like(x).copy_(x), args.repeat)
    header = f"{'benchmark':30} {'eager ms':>9} {'GB/s':>6} {'lazytriton-cpp ms':>18} {'GB/s':>6} {'speedup':>8}"
    print(header)
    for name, eager, lazy in results:
        print(f"{name:30} {eager * 1e3:9.2f} {moved / eager / 1e9:6.1f} {lazy * 1e3:18.2f} "
              f"{moved / lazy / 1e9:6.1f} {eager / lazy:7.2f}x")
    print(f"{'memory copy (ceiling)':30} {copy * 1e3:9.2f} {moved / copy / 1e9:6.1f}")
    if args.markdown:
        print("\n| benchmark | eager ms | eager GB/s | lazytriton-cpp ms | lazytriton-cpp GB/s | speedup |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, eager, lazy in results:
            print(f"| {name} | {eager * 1e3:.2f} | {moved / eager / 1e9:.1f} | {lazy * 1e3:.2f} | "
                  f"{moved / lazy / 1e9:.1f} | {eager / lazy:.2f}x |")
        print(f"| memory copy (ceiling) | {copy * 1e3:.2f} | {moved / copy / 1e9:.1f} | | | |")


if __name__ == "__main__":
    main()
