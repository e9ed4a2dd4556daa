"""Compile time as graphs grow, and whether they compile at all.

Each graph is compiled cold (a fresh cache dir per row):
- "chain N": N steps of `x = x * c - 0.01`, each op reading the previous one once (2N ops,
  2N graph scalars);
- "reused N": N steps of `x = sin(x) * 0.5 + x * 0.5`, each step reading the previous value
  twice (4N ops; inlined all the way, the loaders would evaluate the first step 2**N times);
- "layers N": a training step of N Linear(4, 4) layers with Adam, the second step's graph
  (the first with optimizer state: 6N tensors updated in place, 6N donation requests).

Per row: the cold mark_step (trace excluded: lowering, code generation, the C++ build and the
run), whether it fell back to the reference executor (FallbackGraph), and whether its values
match eager's.

    python benchmarks/compile_scaling.py [--chain 150,500,1500] [--reused 10,20,40]
                                         [--layers 25,50,100] [--backend cpp]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

import lazytriton
from lazytriton import metrics


def long_chain(x: torch.Tensor, steps: int) -> torch.Tensor:
    for k in range(steps):
        x = x * (1.0 + 1e-3 * (k % 7)) - 0.01
    return x


def reused_chain(x: torch.Tensor, steps: int) -> torch.Tensor:
    for _ in range(steps):
        x = torch.sin(x) * 0.5 + x * 0.5
    return x


def layers_step(x: torch.Tensor, layers: int) -> torch.Tensor:
    """Two Adam steps of `layers` Linear(4, 4) layers (the same seed on either device): the
    last layer's weight."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(layers)]).to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        if x.device.type == "lazy":
            lazytriton.mark_step()  # the timed compile is the second step's
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    _alive[:] = [model, opt]  # so the timed graph updates every parameter and state tensor
    return model[-1].weight.detach()


_alive: list = []  # what a training loop would still hold when it calls mark_step


def measure(name: str, fn, steps: int, backend: str, shape=(64, 33)) -> str:
    with tempfile.TemporaryDirectory() as cache:
        lazytriton.init(backend, cache_dir=cache)
        metrics.reset()
        x = torch.randn(shape)
        lazy = fn(x.to("lazy"), steps)
        start = time.perf_counter()
        lazytriton.mark_step()
        got = lazy.cpu()
        seconds = time.perf_counter() - start
        same = torch.allclose(got, fn(x, steps), rtol=1e-4, atol=1e-4)
        fallback = metrics.counter_value("FallbackGraph") or 0
        _alive.clear()
    return f"| {name} {steps} | {seconds:.2f} | {fallback} | {'yes' if same else 'NO'} |"


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chain", default="150,500,1500",
                        help="steps of the chain read once per step (default: %(default)s)")
    parser.add_argument("--reused", default="10,20,40",
                        help="steps of the chain read twice per step (default: %(default)s)")
    parser.add_argument("--layers", default="25,50,100",
                        help="Linear layers of the Adam step (default: %(default)s)")
    parser.add_argument("--backend", default="cpp", help="(default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| graph | cold mark_step s | FallbackGraph | matches eager |")
    print("|---|---|---|---|")
    for steps in _ints(args.chain):
        print(measure("chain", long_chain, steps, args.backend), flush=True)
    for steps in _ints(args.reused):
        print(measure("reused", reused_chain, steps, args.backend), flush=True)
    for layers in _ints(args.layers):
        print(measure("layers", layers_step, layers, args.backend, (16, 4)), flush=True)


if __name__ == "__main__":
    main()
