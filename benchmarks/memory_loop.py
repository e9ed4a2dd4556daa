"""Resident memory and live IR nodes over a long training loop of a small model.

    python benchmarks/memory_loop.py                       # 2,000 steps on the C++ backend
    python benchmarks/memory_loop.py --steps 500 --backend aten

The loop: an MLP, AdamW with StepLR, a fresh batch uploaded each step, mark_step every step and
loss.item() every 10 steps. Printed every --every steps: resident memory (/proc/self/statm) and
the IR nodes alive, counted among the objects the garbage collector tracks without collecting
first, so nodes kept only by reference cycles (waiting for the cyclic collector) count too.
The last line gives the growth per step from the first checkpoint after warm-up to the end.
"""
from __future__ import annotations

import argparse
import gc
import os

import torch
import torch.nn.functional as F

import lazytriton
from lazytriton import ir


def resident_kb() -> int:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def live_nodes() -> int:
    return sum(1 for o in gc.get_objects() if issubclass(type(o), ir.Node))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="(default: %(default)s)")
    parser.add_argument("--every", type=int, default=250, help="(default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=500,
                        help="steps before the growth is measured (default: %(default)s)")
    parser.add_argument("--backend", default="cpp", help="(default: %(default)s)")
    args = parser.parse_args()

    lazytriton.init(backend=args.backend)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10)).to("lazy")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=100, gamma=0.9)
    start = None
    for step in range(1, args.steps + 1):
        x, y = torch.randn(32, 64), torch.randint(0, 10, (32,))
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x.to("lazy")), y.to("lazy"))
        loss.backward()
        optimizer.step()
        schedule.step()
        lazytriton.mark_step()
        if step % 10 == 0:
            loss.item()
        if step % args.every == 0:
            lazytriton.wait_device_ops()
            rss, nodes = resident_kb(), live_nodes()
            print(f"step {step:>6}  resident {rss:>8} KB  live IR nodes {nodes:>6}", flush=True)
            if step >= args.warmup and start is None:
                start = (step, rss)
    if start is not None and step > start[0]:
        per_step = (rss - start[1]) * 1024 / (step - start[0])
        print(f"resident growth after warm-up: {per_step:.0f} bytes/step")


if __name__ == "__main__":
    main()
