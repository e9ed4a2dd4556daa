"""A training loop must not grow: the IR of finished steps is freed as soon as nothing reads it
(by reference counting, with the cyclic collector off), and the trace's caches stop growing once
every step's ops have been seen."""
from __future__ import annotations

import gc

import torch
import torch.nn.functional as F

import lazytriton
from lazytriton import ir, storage, tracing
from lazytriton.runtime import session


def _live_nodes() -> int:
    return sum(1 for o in gc.get_objects() if issubclass(type(o), ir.Node))


def _skeleton_nodes() -> int:
    """Nodes of the data-free copy the session keeps of each graph structure's first graph
    (what a later graph of that structure is compared with: runtime/shapes.py)."""
    return sum(len(f.first.nodes) for f in session.current()._families.values())


def _sizes() -> dict[str, int]:
    return {"live IR nodes": _live_nodes() - _skeleton_nodes(), "signatures": len(ir._signatures),
            "plans": sum(len(t.plans) for t in tracing._tracers.values()),
            "pending storages": len(storage._pending)}


def test_a_training_loop_holds_live_ir_and_caches_flat():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 24), torch.nn.ReLU(),
                                torch.nn.Linear(24, 5)).to("lazy")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.5)
    x, y = torch.randn(16, 12), torch.randint(0, 5, (16,))

    def steps(n: int, start: int) -> None:
        for step in range(start, start + n):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x.to("lazy")), y.to("lazy"))
            loss.backward()
            optimizer.step()
            schedule.step()  # a new learning rate: a new scalar input, never a new plan
            lazytriton.mark_step()
            if step % 10 == 0:
                assert torch.isfinite(torch.tensor(loss.item()))

    gc.collect()
    before = _sizes()["live IR nodes"]  # what earlier tests in this process still hold
    gc.disable()  # a reference cycle anywhere in the IR would now pile up, step after step
    try:
        steps(20, 0)
        lazytriton.wait_device_ops()
        warm = _sizes()
        steps(40, 20)
        lazytriton.wait_device_ops()
        after = _sizes()
    finally:
        gc.enable()
    assert after == warm, f"grew from {warm} to {after}"
    # the parameters', the state's and the batch's leaves
    assert warm["live IR nodes"] - before < 100, (before, warm)
