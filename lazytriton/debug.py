"""Looking at what is pending: the IR that computing some tensors would run."""
from __future__ import annotations

import torch

from .graph import build_graph, to_dot, to_text
from .tensor import LazyTensor, value_of


def dump_ir(tensors: list[torch.Tensor], format: str = "text") -> str:
    """The pending IR of `tensors` as text (one node per line) or Graphviz dot."""
    values = []
    for t in tensors:
        if not isinstance(t, LazyTensor):
            raise TypeError(f"dump_ir takes lazy tensors, got a tensor on {t.device}")
        values.append(value_of(t))
    graph = build_graph(values)
    if format == "text":
        return to_text(graph)
    if format == "dot":
        return to_dot(graph)
    raise ValueError(f"dump_ir format must be 'text' or 'dot', not {format!r}")
