"""The reference executor (backend "aten"): runs a graph node by node with aten kernels.

It is the test oracle and the fallback path. Compiling means planning: each node becomes a step
reading and writing numbered slots, intermediates are dropped after their last use, and random
ops get a generator seeded from their seed input — except those the code generators lower,
which run lazytriton's Philox kernels on the seed itself, so every backend draws the same.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import philox
from ..graph import Graph
from ..ir import LAZY_DEVICE, InputRef, SeedRef, TensorMeta
from ..philox import native_dropout_seeded
from ..sizevars import flatten
from .backend import Backend, register_backend

aten = torch.ops.aten
_LAYOUT_SENSITIVE = {aten.as_strided.default, aten.as_strided_scatter.default}
# random ops the code generators lower: run with Philox on the seed (an int), not a generator
PHILOX_KERNELS = {aten.uniform.default: philox.uniform,
                  aten.normal_functional.default: philox.normal_functional,
                  aten.bernoulli.p: philox.bernoulli_p,
                  native_dropout_seeded: native_dropout_seeded}


def restride(t: torch.Tensor, meta: TensorMeta) -> torch.Tensor:
    """`t` in exactly the layout `meta` promises (views of it are taken by strides)."""
    if tuple(t.stride()) == meta.stride and t.storage_offset() == 0:
        return t
    out = torch.empty_strided(meta.shape, meta.stride, dtype=t.dtype, device=t.device)
    return out.copy_(t)


class _Step:
    __slots__ = ("op", "args", "outs", "frees", "layout")

    def __init__(self, op, args, outs, frees, layout):
        self.op, self.args, self.outs, self.frees, self.layout = op, args, outs, frees, layout


class ReferenceProgram:
    guards: dict[int, Any] = {}  # runs every op as traced: nothing specialized

    def __init__(self, graph: Graph, device: torch.device):
        self.device = device
        self.n_inputs = len(graph.inputs)
        slot: dict[tuple[int, int], int] = {}
        for k, leaf in enumerate(graph.inputs):
            slot[(graph.index[leaf], 0)] = k
        next_slot = self.n_inputs
        self.steps: list[_Step] = []
        for pos, node in enumerate(graph.nodes):
            if node.is_leaf:
                continue
            ins = [slot[graph.position(v)] for v in node.inputs]
            seed_kind = "seed_value" if node.op in PHILOX_KERNELS else "seed"
            args = tuple((name, self._plan_arg(enc, ins, seed_kind)) for name, enc in node.args)
            outs = list(range(next_slot, next_slot + len(node.outputs)))
            for k, s in enumerate(outs):
                slot[(pos, k)] = s
            next_slot += len(outs)
            layout = node.inputs[0].meta if node.op in _LAYOUT_SENSITIVE else None
            op = PHILOX_KERNELS.get(node.op, node.op)
            self.steps.append(_Step(op, args, outs, [], layout))
        self.n_slots = next_slot
        self.outputs = [slot[graph.position(v)] for v in graph.outputs]
        self.output_metas = [v.meta for v in graph.outputs]
        self._plan_frees(set(self.outputs))

    def _plan_arg(self, enc, ins: list[int], seed_kind: str):
        if isinstance(enc, InputRef):
            return ("slot", ins[enc.index])
        if isinstance(enc, SeedRef):
            return (seed_kind, ins[enc.index])
        if enc is LAZY_DEVICE:
            return ("const", self.device)
        if isinstance(enc, tuple):
            return ("list", tuple(self._plan_arg(e, ins, seed_kind) for e in enc))
        return ("const", enc)

    def _plan_frees(self, keep: set[int]) -> None:
        """Release each intermediate after the step that last reads it."""
        last_read: dict[int, int] = {}
        for i, step in enumerate(self.steps):
            for s in _slots_read(step.args):
                last_read[s] = i
        for s, i in last_read.items():
            if s not in keep and s >= self.n_inputs:
                self.steps[i].frees.append(s)

    def _resolve(self, planned, values: list):
        kind, x = planned
        if kind in ("slot", "seed_value"):
            return values[x]
        if kind == "const":
            return x
        if kind == "list":
            return [self._resolve(p, values) for p in x]
        return torch.Generator(self.device).manual_seed(int(values[x]))

    def __call__(self, inputs: list[Any]) -> list[torch.Tensor]:
        values: list[Any] = list(inputs) + [None] * (self.n_slots - self.n_inputs)
        for step in self.steps:
            kwargs = {name: self._resolve(p, values) for name, p in step.args}
            if step.layout is not None:
                kwargs["self"] = restride(kwargs["self"], step.layout)
            for s, r in zip(step.outs, flatten(step.op(**kwargs))):
                values[s] = r
            for s in step.frees:
                values[s] = None
        return [restride(values[s], m) for s, m in zip(self.outputs, self.output_metas)]


def _slots_read(args) -> list[int]:
    found = []
    for _, planned in args:
        _collect(planned, found)
    return found


def _collect(planned, found: list[int]) -> None:
    kind, x = planned
    if kind in ("slot", "seed", "seed_value"):
        found.append(x)
    elif kind == "list":
        for p in x:
            _collect(p, found)


class AtenBackend(Backend):
    """The reference executor: every op as traced, with aten, on the CPU or a GPU (the oracle
    the compiling backends are tested against, on the device they run on)."""
    name = "aten"
    device_types = ("cuda", "cpu")

    def __init__(self, device: torch.device | None = None):
        self.device = device or self.default_device()

    def compile(self, graph: Graph, artifacts: Path, donate: tuple = ()) -> ReferenceProgram:
        return ReferenceProgram(graph, self.device)


register_backend("aten", AtenBackend)
