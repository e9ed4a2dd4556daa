"""Cutting a graph: from the values of the tensors to compute, the nodes in topological order,
the graph's inputs (leaves) and a structural key exact enough to reuse a compiled graph.

The key combines each node's interned signature (op, constants, output metadata — computed when
the node was traced) with the wiring by local index. Leaves enter by position, so the same
program over new data or new scalar values (a learning rate) has the same key.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .ir import DataNode, InputRef, Node, ScalarNode, SeedRef, Value, intern_signature


@dataclass
class Graph:
    nodes: list[Node]  # topological order, leaves included
    inputs: list[Node]  # the leaves, in order: DataNode or ScalarNode
    outputs: list[Value]  # distinct values to compute
    key: tuple
    index: dict[Node, int] = field(repr=False)  # node -> position in nodes (nodes hash by id)

    def position(self, value: Value) -> tuple[int, int]:
        return self.index[value.node], value.index


def _walk(roots: list[Node]) -> tuple[list[Node], dict[Node, int], list[int]]:
    """Post-order DFS from the roots, inputs in order: a node after all it reads. Returns the
    nodes, their positions, and the wiring as one flat list of ints: per node `~sig` (negative:
    where its entry starts), then (position, output index) per input. One pass, iterative,
    with the node being visited held in locals (not on the stack): it runs every mark_step."""
    order: list[Node] = []
    index: dict[Node, int] = {}
    wiring: list[int] = []
    put = wiring.append
    seen: set[Node] = set()
    mark = seen.add
    for root in roots:
        if root in seen:
            continue
        mark(root)
        stack: list[tuple[Node, tuple, int]] = []
        node, inputs, i = root, root.inputs, 0
        while True:
            while i < len(inputs):
                child = inputs[i].node
                i += 1
                if child not in seen:
                    mark(child)
                    if not child.inputs:  # a leaf (half the nodes of a step): placed at once
                        index[child] = len(order)
                        order.append(child)
                        put(~child.sig)
                        continue
                    stack.append((node, inputs, i))
                    node, inputs, i = child, child.inputs, 0
            index[node] = len(order)
            order.append(node)
            put(~node.sig)
            for v in inputs:
                put(index[v.node])
                put(v.index)
            if not stack:
                break
            node, inputs, i = stack.pop()
    return order, index, wiring


def leaves_read(values: list[Value]) -> set[int]:
    """Ids of the leaf nodes the computations of `values` read (iterative: graphs are deep)."""
    leaves: set[int] = set()
    seen: set[int] = set()
    stack = [v.node for v in values]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.is_leaf:
            leaves.add(id(node))
        else:
            stack.extend(v.node for v in node.inputs)
    return leaves


def build_graph(values: list[Value]) -> Graph:
    outputs = list({id(v): v for v in values}.values())
    nodes, index, wiring = _walk([v.node for v in outputs])
    inputs = [n for n in nodes if n.is_leaf]
    out_key = tuple([(index[v.node], v.index) for v in outputs])
    return Graph(nodes, inputs, outputs, (tuple(wiring), out_key), index)


# --- rendering ----------------------------------------------------------------------------

def _name(graph: Graph, value: Value) -> str:
    i, k = graph.position(value)
    return f"%{i}" if len(value.node.outputs) == 1 else f"%{i}.{k}"


def _render_arg(graph: Graph, node: Node, enc) -> str:
    if isinstance(enc, (InputRef, SeedRef)):
        text = _name(graph, node.inputs[enc.index])
        return f"seed({text})" if isinstance(enc, SeedRef) else text
    if isinstance(enc, tuple):
        return "[" + ", ".join(_render_arg(graph, node, e) for e in enc) + "]"
    return repr(enc).replace("torch.", "")


def _render_node(graph: Graph, i: int, node: Node) -> str:
    outs = ", ".join(str(v.meta) for v in node.outputs)
    if isinstance(node, DataNode):
        return f"%{i} = {'cpu_scalar' if node.on_cpu else 'data'} : {outs}"
    if isinstance(node, ScalarNode):
        return f"%{i} = scalar : {type(node.value).__name__}"
    args = ", ".join(f"{name}={_render_arg(graph, node, enc)}" for name, enc in node.args)
    return f"%{i} = {node.op_name}({args}) : {outs}"


def to_text(graph: Graph) -> str:
    """The IR as text: one line per node, then the outputs. Deterministic for a given key."""
    lines = [_render_node(graph, i, n) for i, n in enumerate(graph.nodes)]
    lines.append("return " + ", ".join(_name(graph, v) for v in graph.outputs))
    return "\n".join(lines) + "\n"


def to_dot(graph: Graph) -> str:
    """The IR as a Graphviz digraph."""
    lines = ["digraph lazy_ir {", "  node [shape=box, fontname=monospace];"]
    for i, node in enumerate(graph.nodes):
        label = _render_node(graph, i, node).replace('"', r"\"")
        lines.append(f'  n{i} [label="{label}"];')
        for v in node.inputs:
            lines.append(f"  n{graph.index[v.node]} -> n{i};")
    for k, v in enumerate(graph.outputs):
        lines.append(f'  out{k} [label="output {k}", shape=ellipse];')
        lines.append(f"  n{graph.index[v.node]} -> out{k};")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --- structure: the key with sizes erased (automatic dynamic shapes) -----------------------

@dataclass
class Structure:
    """A graph's key with every integer erased (sizes, strides, int arguments), the erased
    integers in order, and where each input's dims sit among them. Graphs of one structure
    differ only in those integers: the session's shape families (runtime/shapes.py)."""
    key: tuple
    ints: tuple[int, ...]
    input_dims: list[list[int]]  # per graph input: positions of its dims in `ints`
    # positions of the computed nodes' output sizes, strides and offsets: what the meta
    # functions derive from the inputs' and the arguments' integers
    derived: frozenset[int] = frozenset()
    node_starts: tuple[int, ...] = ()  # per node, where its integers start (outputs' first)


_ERASED = "#"  # stands for an erased integer
# sig -> (erased sig, ints, ndim, how many of the ints are the outputs' metadata)
_erased_sigs: dict[int, tuple[int, tuple[int, ...], int, int]] = {}


def _erase(value, ints: list[int]):
    if type(value) is int:  # not bool: flags are structure
        ints.append(value)
        return _ERASED
    if isinstance(value, tuple):
        return tuple(_erase(v, ints) for v in value)
    return value


def _erased_signature(node: Node) -> tuple[int, tuple[int, ...], int, int]:
    found = _erased_sigs.get(node.sig)
    if found is None:
        ints: list[int] = []
        metas = tuple(None if v.meta is None else
                      (_erase((v.meta.shape, v.meta.stride, v.meta.storage_offset), ints),
                       v.meta.dtype) for v in node.outputs)
        ndim = len(node.outputs[0].meta.shape) if node.outputs[0].meta is not None else 0
        meta_ints = len(ints)
        args = _erase(node.args, ints)
        found = (intern_signature((node.op, args, metas, _ERASED)), tuple(ints), ndim, meta_ints)
        _erased_sigs[node.sig] = found
    return found


def structure(graph: Graph) -> Structure:
    parts, ints, input_dims, derived, starts = [], [], [], [], []
    for node in graph.nodes:
        sig, node_ints, ndim, meta_ints = _erased_signature(node)
        starts.append(len(ints))
        if node.is_leaf:  # its first ints are its shape (metas come before arguments)
            input_dims.append(list(range(len(ints), len(ints) + ndim)))
        else:
            derived.extend(range(len(ints), len(ints) + meta_ints))
        parts.append((sig, tuple([graph.position(v) for v in node.inputs])))
        ints.extend(node_ints)
    return Structure((tuple(parts), graph.key[1]), tuple(ints), input_dims, frozenset(derived),
                     tuple(starts))


def output_positions(graph: Graph, starts: tuple[int, ...]) -> dict[tuple[int, int], int]:
    """(node index, output index) -> where that output's sizes start among the structure's
    integers (its strides follow them)."""
    found = {}
    for i, node in enumerate(graph.nodes):
        at = starts[i]
        for o, value in enumerate(node.outputs):
            if value.meta is not None:
                found[(i, o)] = at
                at += 2 * len(value.meta.shape) + 1  # sizes, strides, storage offset
    return found


def skeleton(graph: Graph) -> Graph:
    """A copy of the graph's structure and metadata holding no data: what a later compile of
    another graph of the same structure compares against, without keeping tensors alive."""
    copies: dict[int, Node] = {}
    for node in graph.nodes:
        if isinstance(node, DataNode):
            copy = DataNode(None, node.outputs[0].meta, node.on_cpu)
        elif isinstance(node, ScalarNode):
            copy = ScalarNode(node.value)
        else:
            inputs = tuple(copies[id(v.node)].outputs[v.index] for v in node.inputs)
            copy = Node(node.op, inputs, node.args, tuple(v.meta for v in node.outputs))
        copies[id(node)] = copy
    return build_graph([copies[id(v.node)].outputs[v.index] for v in graph.outputs])
