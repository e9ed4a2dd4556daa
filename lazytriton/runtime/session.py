"""The live lazy device: its backend, graph cache, async runner and step closures.

`sync` is the one place a graph is cut, compiled (or found in the cache) and started: mark_step
syncs every pending storage, a read syncs just the storage it needs.
"""
from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from .. import metrics
from ..device_data import DeviceData
from ..graph import Graph, build_graph, leaves_read, skeleton, structure, to_text
from ..ir import DataNode, TensorMeta
from ..storage import LazyStorage, pending_storages, replaced_data, set_computed
from .async_runner import AsyncRunner, overlap_pays
from .backend import Backend, CompiledGraph, create_backend
from .cache_index import compiling, graph_folder
from .compile_log import CompileLog
from .disk_cache import default_cache_dir
from .shapes import Family, assign_symbols, build_guard, changed_dims, describe_change, \
    program_sizes


class Session:
    def __init__(self, backend: Backend, cache_dir: Path):
        self.backend = backend
        self.device = backend.device
        self.cache_dir = cache_dir
        self.runner = AsyncRunner(overlap_pays(torch.device(backend.device)))
        # key -> programs; each holds for the scalar values its `guards` name (if any)
        self._compiled: dict[tuple, list[CompiledGraph]] = {}
        self._families: dict[tuple, Family] = {}  # structure key -> its graphs (shapes.py)
        self._closures: list[tuple[Callable, tuple, bool]] = []
        self._input_uses: dict[tuple, list[int]] = {}  # graph key -> input_uses(graph)
        self._log = CompileLog(cache_dir, backend.artifact_name)  # records, index, logs

    # --- cutting and running graphs --------------------------------------------------------
    def sync(self, storages: list[LazyStorage], every_pending: bool = False) -> None:
        """`every_pending`: `storages` are all the pending ones (mark_step): nothing computed
        later can read this graph's inputs, so none is looked for."""
        pending = list({id(s): s for s in storages if s.is_pending}.values())  # views share one
        if not pending:
            return
        graph = build_graph([s.value for s in pending])
        donate = self._donations(graph, pending, set() if every_pending else _read_later(pending))
        try:
            program = self._program(graph, donate)
        except BaseException as e:
            _fail(pending, e)  # later steps must not retry this graph forever
            raise
        handles = {id(v): DeviceData() for v in graph.outputs}
        set_computed(pending, handles)
        self.runner.submit(_job(program, _input_handles(graph),
                                [handles[id(v)] for v in graph.outputs]))

    def _donations(self, graph: Graph, pending: list[LazyStorage], read_later: set[int]
                   ) -> tuple:
        """(input, output) pairs where a storage's new value may be written over the buffer it
        held before: that buffer is a graph input nothing outside this graph can still read,
        and no computation left pending after it reads (`read_later`: ids of such leaves).
        The compiled program proves each pair safe for its schedule or does not donate."""
        uses = self._input_uses.get(graph.key)
        if uses is None:
            uses = self._input_uses[graph.key] = input_uses(graph)
        inputs = {}
        for k, leaf in enumerate(graph.inputs):
            if type(leaf) is DataNode and not leaf.on_cpu:
                inputs[id(leaf.data)] = k
        outputs = {id(v): k for k, v in enumerate(graph.outputs)}
        pairs = {}
        for s in pending:
            j = inputs.get(id(replaced_data(s)))
            if j is None or j in pairs:
                continue
            leaf = graph.inputs[j]
            if id(leaf) in read_later:
                continue
            if leaf.out_metas[0] == s.value.meta and only_read_by_graph(leaf.outputs[0], uses[j]):
                pairs[j] = outputs[id(s.value)]
        return tuple(sorted(pairs.items()))

    def _program(self, graph: Graph, donate: tuple) -> CompiledGraph:
        candidates = self._compiled.setdefault((graph.key, donate), [])
        for program in candidates:
            if _guards_hold(program, graph):
                metrics.counter_inc("CachedCompile")
                return program
        program = self._generic_program(graph, donate)
        candidates.append(program)
        return program

    def _generic_program(self, graph: Graph, donate: tuple) -> CompiledGraph:
        """A program of this graph's structure whose shape guard holds, else a new one: static
        for the first graph of a structure, with the changed dims symbolic after that."""
        now = structure(graph)
        family = self._families.get((now.key, donate))  # donation: another program
        if family is None:
            self._families[(now.key, donate)] = Family(skeleton(graph), now)
            return self._compile(graph, donate)
        for guard, program in family.generic:
            if guard.holds(now.ints) and _guards_hold(program, graph):
                metrics.counter_inc("CachedCompile")
                return program
        changed = changed_dims(family.first_structure, now)
        what = f"graph of {len(graph.nodes)} nodes, {describe_change(changed) or 'same sizes'}"
        if any(min(pair) < 2 for pair in changed.values()):  # 0 and 1 change broadcasting
            metrics.note_recompile(f"{what}: compiled for these sizes (a size of 0 or 1 is "
                                   f"never a symbol)")
            return self._compile(graph, donate)
        if family.static_reason or not getattr(self.backend, "dynamic_shapes", False):
            reason = family.static_reason or \
                f"the {self.backend.name} backend compiles sizes as given"
            metrics.note_recompile(f"{what}: compiled for these sizes ({reason})")
            return self._compile(graph, donate)
        return self._compile_generic(graph, donate, family, now, changed, what)

    def _compile_generic(self, graph, donate, family, now, changed, what) -> CompiledGraph:
        symbols = assign_symbols(changed)
        guard = build_guard(family.first_structure, now, symbols) if changed else None
        if guard is None:
            family.static_reason = ("an integer changed that is no affine function of the sizes"
                                    if changed else "only non-size integers changed")
            metrics.note_recompile(f"{what}: compiled for these sizes ({family.static_reason})")
            return self._compile(graph, donate)
        program = self._compile(graph, donate, symbols)
        made = getattr(program, "fingerprint", None)  # None: compiling failed, or no backend's
        extra = {"donate": donate} if donate else {}
        if made is not None and self.backend.fingerprint(family.first, symbols, **extra) == made:
            lowered = getattr(program, "lowered_sizes", None)
            if lowered is not None:  # the program's own sizes: checked exactly
                guard = build_guard(family.first_structure, now, symbols,
                                    program_sizes(graph, now, lowered)) or guard
            family.generic.append((guard, program))
            metrics.note_recompile(f"{what}: compiled with the changed dims as size symbols; "
                                   f"later sizes of them reuse it")
        else:
            family.static_reason = "its program depends on the sizes themselves (a size-derived " \
                                   "constant, or a layout that changes with the sizes)"
            metrics.note_recompile(f"{what}: compiled; {family.static_reason}, so later sizes "
                                   f"compile again")
        return program

    def _compile(self, graph: Graph, donate: tuple = (), symbols: dict | None = None
                 ) -> CompiledGraph:
        start = time.perf_counter()
        # timed(): a progress display can see it running; compiling(): `cache clear` waits
        with metrics.timed("compile"), compiling(self.cache_dir):
            folder = self._write_artifacts(graph, symbols, donate)
            extra = {"donate": donate} if donate else {}
            program = self.backend.compile(graph, folder, symbols, **extra) if symbols else \
                self.backend.compile(graph, folder, **extra)
        self._log.compiled(graph, folder, program, time.perf_counter() - start,
                           self._compiled.get((graph.key, donate), []))
        metrics.counter_inc("UncachedCompile")
        return program

    def _write_artifacts(self, graph: Graph, symbols: dict | None = None,
                         donate: tuple = ()) -> Path:
        """The graph's folder in the cache, graphs/<backend>-<ops>-<key>: its IR (with the size
        symbols it was compiled with, if any, and the inputs its outputs are written into) and
        record."""
        dynamic = f"# size symbols (input, dim) -> s: {sorted(symbols.items())}\n" \
            if symbols else ""
        text = dynamic + to_text(graph)
        if donate:  # a different program: outputs written over these inputs' buffers
            text += "donate " + ", ".join(f"input {j} -> output {k}" for j, k in donate) + "\n"
        return graph_folder(self.cache_dir, self.backend.artifact_name, graph, text)

    # --- steps -----------------------------------------------------------------------------
    def mark_step(self) -> None:
        metrics.counter_inc("MarkStep")
        self.sync(pending_storages(), every_pending=True)
        self.run_step_closures()

    def run_step_closures(self) -> None:
        closures, self._closures = self._closures, []
        if any(not run_async for _, _, run_async in closures):
            self.wait()
        for fn, args, run_async in closures:
            if run_async:
                self.runner.submit(lambda fn=fn, args=args: fn(*args))
            else:
                fn(*args)

    def add_step_closure(self, fn: Callable, args: tuple, run_async: bool) -> None:
        self._closures.append((fn, tuple(args), run_async))

    def wait(self) -> None:
        self.runner.wait()


def _read_later(synced: list[LazyStorage]) -> set[int]:
    """Leaves that pending storages outside this sync read: a read mid-step syncs one tensor,
    and its graph may run nodes that the step's later graph runs again (a gradient both the
    parameter read now and the momentum buffer left pending depend on). Such a node reads its
    leaves again then, so their buffers must not be written over now. mark_step syncs every
    pending storage and does not call this (`sync(every_pending=True)`)."""
    synced_ids = {id(s) for s in synced}
    later = [s.value for s in pending_storages() if id(s) not in synced_ids]
    return leaves_read(later) if later else set()


def input_uses(graph: Graph) -> list[int]:
    """Per graph input, how many times the graph's nodes take its value as an input."""
    position = {id(leaf): k for k, leaf in enumerate(graph.inputs)}
    uses = [0] * len(graph.inputs)
    for node in graph.nodes:
        for v in node.inputs:
            k = position.get(id(v.node))
            if k is not None:
                uses[k] += 1
    return uses


def only_read_by_graph(value, uses: int) -> bool:
    """No reference to `value` exists but its node's and the graph's `uses` by its nodes: no
    tensor, pending computation or view cache outside the graph can read it after the step.
    (Unreachable IR not yet collected counts too: it only makes donation less frequent.)"""
    return _references(value) - uses <= _unreferenced()


def _references(value) -> int:
    return sys.getrefcount(value)


@functools.cache
def _unreferenced() -> int:
    """The count `_references` sees, called as above, for a leaf value nothing uses: measured,
    not assumed, so that how the IR holds a node's outputs may change."""
    def probe(value, uses: int) -> int:
        return _references(value) - uses
    return probe(DataNode(DeviceData(torch.empty(0)), TensorMeta.of(torch.empty(0))).outputs[0],
                 0)


def _guards_hold(program: CompiledGraph, graph: Graph) -> bool:
    """A program may have baked some scalar inputs in (a decomposition computed with them)."""
    return all(_same_scalar(graph.inputs[k].value, v) for k, v in program.guards.items())


def _same_scalar(a, b) -> bool:
    return type(a) is type(b) and (a == b or (a != a and b != b))  # NaN guards hold for NaN


def _fail(storages: list[LazyStorage], error: BaseException) -> None:
    """These tensors' values become the error: raised where they are read."""
    for s in storages:
        handle = DeviceData()
        handle.fail(error)
        s.set_value(DataNode(handle, s.value.meta).outputs[0])


def _input_handles(graph: Graph) -> list[Any]:
    return [leaf.data if isinstance(leaf, DataNode) else leaf.value for leaf in graph.inputs]


def _job(program: CompiledGraph, inputs: list[Any], outputs: list[DeviceData]):
    def run() -> None:
        try:
            real = [x.get() if isinstance(x, DeviceData) else x for x in inputs]
            start = time.perf_counter()
            results = distinct_results(program(real), real, getattr(program, "donated", ()))
            metrics.add_time("execute", time.perf_counter() - start)
        except BaseException as e:  # surfaces where an output is read
            for handle in outputs:
                handle.fail(e)
            return
        for handle, result in zip(outputs, results):
            handle.set(result)
    return run


def distinct_results(results: list, inputs: list, donated) -> list:
    """Each output its own tensor object, so that storage use counts see every alias (a later
    graph writes into a buffer only where its tensor is the storage's sole user). A donated
    output is its input's object: that input's handle is dead."""
    seen = {id(x) for x in inputs}
    for k, r in enumerate(results):
        if id(r) in seen and k not in donated:
            r = results[k] = r.view_as(r)
        seen.add(id(r))
    return results


_current: Session | None = None


def start(backend: str | None, cache_dir: str | Path | None,
          device: str | torch.device | None = None) -> Session:
    global _current
    chosen = create_backend(backend, device)  # a bad name or device leaves the old one running
    if _current is not None:
        _current.wait()
    _current = Session(chosen, Path(cache_dir) if cache_dir else default_cache_dir())
    return _current


def current() -> Session:
    if _current is None:
        raise RuntimeError(
            "lazytriton is not initialized: call lazytriton.init() before using the 'lazy' device")
    return _current

