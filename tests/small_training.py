"""A few SGD steps of a small classifier on the lazy device, checked against the same steps in
eager: tests/test_cache_cli.py runs it in subprocesses (two at once sharing one cache dir) to
get a real run's cache. Prints one JSON line: the largest parameter difference from eager and
lazytriton's counters.

    python tests/small_training.py --backend cpp --cache-dir DIR [--hidden 16] [--steps 3]
"""
from __future__ import annotations

import argparse
import copy
import json

import torch
import torch.nn.functional as F
from torch import nn

import lazytriton


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lazy: bool) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # step 1 differs: a state
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()  # log_softmax, and the bias's column sum
        opt.step()
        if lazy:
            lazytriton.mark_step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    lazytriton.init(args.backend, cache_dir=args.cache_dir)
    torch.manual_seed(0)
    x, y = torch.randn(32, 12), torch.randint(0, 5, (32,))
    model = nn.Sequential(nn.Linear(12, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 5))
    eager, lazy = copy.deepcopy(model), copy.deepcopy(model).to("lazy")
    train(eager, x, y, args.steps, lazy=False)
    train(lazy, x.to("lazy"), y.to("lazy"), args.steps, lazy=True)
    diff = max((a.cpu() - b).abs().max().item()
               for a, b in zip(lazy.parameters(), eager.parameters()))
    counters = {n: lazytriton.metrics.counter_value(n) for n in lazytriton.metrics.counter_names()}
    print(json.dumps({"max_diff": diff, "counters": counters}))


if __name__ == "__main__":
    main()
