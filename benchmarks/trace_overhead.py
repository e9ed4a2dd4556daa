"""Microseconds per traced aten op, beside the floor: a tensor subclass whose __torch_dispatch__
does nothing but hand back outputs it was given beforehand.

    python benchmarks/trace_overhead.py                        # mlp, tutorial, transformer
    python benchmarks/trace_overhead.py --models mlp --steps 50

Per model, both measurements run in this process on the same op stream: one training step
(forward, loss, backward, optimizer step; zero_grad untimed) on a batch already on the device.
Both run the optimizer implementation lazy parameters get by default (foreach: see
lazytriton/optim_defaults.py).
- floor: `FloorTensor`, a wrapper subclass on the lazy device whose __torch_dispatch__ returns,
  for the k-th op of the step, wrappers made from the output metadata that op had when the step
  was first run on meta tensors (or the argument an in-place op returns). What remains is what
  any Python tracer pays: the dispatcher, autograd, the Python call and the output wrappers.
  Between timed steps the same step runs eagerly on real data (untimed), as lazytriton's
  executor runs it between its traced steps, so both start a step with the caches the real
  computation left (that alone makes a step's Python about twice as slow as with warm caches).
- lazytriton: the same step traced (the clock stops before mark_step; the graph runs between
  timed steps, on the "aten" backend by default, which does not change the trace).
Floor and lazytriton steps alternate, one each, so that a machine whose speed drifts (a shared
VM) slows both alike. Per-op figures divide by the number of top-level __torch_dispatch__ calls
of each. Times are the tracing thread's CPU time (time.thread_time), so that other processes
sharing the cores do not count; the graphs' execution happens between timed steps, untimed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils._pytree import tree_flatten, tree_map

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train  # noqa: E402  (benchmarks/train.py: the models, optimizers and step)

LAZY = torch.device("lazy", 0)


# --- the floor ------------------------------------------------------------------------------

class FloorTensor(torch.Tensor):
    """A wrapper subclass on the lazy device that computes nothing (see the module docstring)."""

    @staticmethod
    def __new__(cls, meta: torch.Tensor, requires_grad: bool = False):
        t = torch.Tensor._make_wrapper_subclass(
            cls, meta.shape, strides=meta.stride(), storage_offset=meta.storage_offset(),
            dtype=meta.dtype, device=LAZY, requires_grad=requires_grad)
        t._meta = meta
        return t

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _script.call(func, args, kwargs or {})


class _Script:
    """Records each op's outputs once (on meta tensors), then replays them by position."""

    def __init__(self) -> None:
        self.recording = True
        self.plans: list[tuple[Any, Callable]] = []
        self.position = 0
        self.calls = 0

    def start_step(self, recording: bool) -> None:
        self.recording, self.position, self.calls = recording, 0, 0
        if recording:
            self.plans = []

    def call(self, func, args: tuple, kwargs: dict):
        self.calls += 1
        if self.recording:
            result, plan = _record(func, args, kwargs)
            self.plans.append((func, plan))
            return result
        recorded, plan = self.plans[self.position]
        self.position += 1
        if recorded is not func:
            raise RuntimeError(f"floor replay: op {self.position} is {func}, recorded {recorded}")
        return plan(args)


_script = _Script()


def _record(func, args: tuple, kwargs: dict) -> tuple[Any, Callable]:
    flat_in, _ = tree_flatten((args, kwargs))
    by_meta = {id(t._meta): t for t in flat_in if isinstance(t, FloorTensor)}
    unwrap = lambda x: x._meta if isinstance(x, FloorTensor) else x  # noqa: E731
    result = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
    flat_args = list(args)

    def wrap(x):
        if isinstance(x, torch.Tensor) and id(x) in by_meta:  # an in-place op returns its input
            return by_meta[id(x)]
        return FloorTensor(x) if isinstance(x, torch.Tensor) else x

    def plan_of(x) -> Callable:
        if isinstance(x, torch.Tensor) and id(x) in by_meta:
            index = next(i for i, a in enumerate(flat_args) if a is by_meta[id(x)])
            return lambda a: a[index]
        if isinstance(x, torch.Tensor):
            return lambda a: FloorTensor(x)
        if isinstance(x, (list, tuple)):
            parts = [plan_of(e) for e in x]
            kind = type(x)
            return lambda a: kind(p(a) for p in parts)
        return lambda a: x

    return tree_map(wrap, result), plan_of(result)


def _lazy_default_foreach(model: str, batch: int) -> bool:
    """Whether torch.optim runs foreach for this model's lazy parameters (lazytriton makes
    that the default: lazytriton/optim_defaults.py)."""
    from torch.optim.optimizer import _default_to_fused_or_foreach
    params = list(train.make_workload(model, batch, "lazy").model.parameters())
    return _default_to_fused_or_foreach(params, differentiable=False)[1]


def _to_floor(t: torch.Tensor) -> torch.Tensor:
    return FloorTensor(t.to("meta"))


def floor_workload(model: str, batch: int) -> train.Workload:
    """The model on FloorTensors, its optimizer running the implementation (foreach or a loop
    per parameter) that lazy parameters get by default, so both trace the same ops."""
    w = train.make_workload(model, batch, "cpu")
    _script.start_step(recording=True)
    w.model._apply(_to_floor)
    defaults = {**w.optimizer.defaults, "foreach": _lazy_default_foreach(model, batch)}
    w.optimizer = type(w.optimizer)(w.model.parameters(), **defaults)
    w.x, w.y = _to_floor(w.x), _to_floor(w.y)
    return w


# --- timing ---------------------------------------------------------------------------------

def _step(w: train.Workload) -> None:
    w.loss_fn(w.model(w.x), w.y).backward()
    w.optimizer.step()


def _timed_step(w: train.Workload) -> float:
    """Thread CPU seconds of one step. zero_grad runs before the clock starts: for lazytriton
    it frees the last step's gradient buffers, real memory returned to the allocator (eager
    pays that too), which is not tracing and which the floor has none of."""
    w.optimizer.zero_grad(set_to_none=True)
    start = time.thread_time()
    _step(w)
    return time.thread_time() - start


class FloorRun:
    """The floor's steps: each timed step is followed by the same step on real data, untimed."""

    def __init__(self, model: str, args: argparse.Namespace):
        self.w = floor_workload(model, args.batch_size)
        for _ in range(3):  # the optimizer's state exists from the second step on
            _script.start_step(recording=True)
            self.w.optimizer.zero_grad(set_to_none=True)
            _step(self.w)
        self.real = train.make_workload(model, args.batch_size, "cpu")

    def timed_step(self) -> float:
        _script.start_step(recording=False)
        seconds = _timed_step(self.w)
        _step_eagerly(self.real)
        return seconds

    def ops(self) -> int:
        return _script.calls  # of its last step


def _step_eagerly(w: train.Workload) -> None:
    """The step on real data, untimed, as lazytriton's executor runs it between traced steps:
    it leaves the CPU caches as cold for the floor's next step as for lazytriton's."""
    w.optimizer.zero_grad(set_to_none=True)
    _step(w)


class LazyRun:
    """lazytriton's steps: each timed trace is followed by its graph's execution, untimed."""

    def __init__(self, model: str, args: argparse.Namespace):
        import lazytriton
        self.mark_step = lazytriton.mark_step
        self.w = train.make_workload(model, args.batch_size, "lazy")
        self.w.x, self.w.y = self.w.x.to("lazy"), self.w.y.to("lazy")
        for _ in range(3):
            self.timed_step()

    def timed_step(self) -> float:
        seconds = _timed_step(self.w)
        self.mark_step(wait=True)
        return seconds

    def ops(self) -> int:
        from lazytriton.tensor import LazyTensor
        self.w.optimizer.zero_grad(set_to_none=True)
        ops = _count_top_level_ops(LazyTensor, lambda: _step(self.w))
        self.mark_step(wait=True)
        return ops


def measure(model: str, args: argparse.Namespace) -> tuple[float, int, float, int]:
    """(floor's median seconds per step, its ops per step, lazytriton's, its ops per step).
    Floor and lazytriton steps alternate, so that both see the same load on the machine; of
    the rounds, the lowest median of each is kept."""
    floor, lazy = FloorRun(model, args), LazyRun(model, args)
    floor_medians, lazy_medians = [], []
    for _ in range(args.rounds):
        floor_times, lazy_times = [], []
        for _ in range(args.steps):
            floor_times.append(floor.timed_step())
            lazy_times.append(lazy.timed_step())
        floor_medians.append(statistics.median(floor_times))
        lazy_medians.append(statistics.median(lazy_times))
    return min(floor_medians), floor.ops(), min(lazy_medians), lazy.ops()


def _count_top_level_ops(cls, run: Callable[[], None]) -> int:
    original = cls.__dict__["__torch_dispatch__"]
    state = {"calls": 0, "depth": 0}

    def counting(klass, func, types, args=(), kwargs=None):
        state["calls"] += state["depth"] == 0
        state["depth"] += 1
        try:
            return original.__func__(klass, func, types, args, kwargs)
        finally:
            state["depth"] -= 1
    cls.__torch_dispatch__ = classmethod(counting)
    try:
        run()
    finally:
        cls.__torch_dispatch__ = original
    return state["calls"]


def start_lazytriton(args: argparse.Namespace) -> None:
    """torch's threads (and OpenMP's, for generated kernels) as --threads says, then init."""
    import lazytriton
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    lazytriton.init(backend=args.backend)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=train._names, default=["mlp", "tutorial", "transformer"],
                        help="comma-separated: mlp, tutorial, transformer (default: all three)")
    parser.add_argument("--steps", type=int, default=20,
                        help="timed steps of each per round, floor and lazytriton alternating "
                             "step by step (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds; the lowest median of each is reported "
                             "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="(default: %(default)s)")
    parser.add_argument("--backend", default="aten",
                        help="lazytriton backend running the graphs between timed steps "
                             "(default: %(default)s; tracing does not depend on it)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch.set_num_threads (default: %(default)s)")
    args = parser.parse_args(argv)

    start_lazytriton(args)
    header = f"{'model':<12} {'ops/step':>8} {'floor us/op':>11} {'lazy us/op':>10} {'ratio':>6}" \
             f" {'lazy trace ms/step':>18}"
    print(header)
    for model in args.models:
        floor_s, floor_ops, lazy_s, lazy_ops = measure(model, args)
        floor_us, lazy_us = 1e6 * floor_s / floor_ops, 1e6 * lazy_s / lazy_ops
        print(f"{model:<12} {lazy_ops:>8} {floor_us:>11.1f} {lazy_us:>10.1f} "
              f"{lazy_us / floor_us:>5.2f}x {1e3 * lazy_s:>18.2f}", flush=True)
        if floor_ops != lazy_ops:
            print(f"  (the floor's step made {floor_ops} top-level calls)")


if __name__ == "__main__":
    main()
