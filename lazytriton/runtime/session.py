"""The live lazy device: its backend, graph cache, async runner and step closures.

`sync` is the one place a graph is cut, compiled (or found in the cache) and started: mark_step
syncs every pending storage, a read syncs just the storage it needs.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import torch

from .. import metrics
from ..device_data import DeviceData
from ..graph import Graph, build_graph, skeleton, structure, to_text
from ..ir import DataNode
from ..storage import LazyStorage, pending_storages
from .async_runner import AsyncRunner, overlap_pays
from .backend import Backend, CompiledGraph, create_backend
from .cache_index import compiling, graph_folder
from .compile_log import CompileLog
from .disk_cache import default_cache_dir
from .shapes import Family, assign_symbols, build_guard, changed_dims, describe_change


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
        self._log = CompileLog(cache_dir, backend.artifact_name)  # records, index, logs

    # --- cutting and running graphs --------------------------------------------------------
    def sync(self, storages: list[LazyStorage]) -> None:
        pending = list({id(s): s for s in storages if s.is_pending}.values())  # views share one
        if not pending:
            return
        graph = build_graph([s.value for s in pending])
        try:
            program = self._program(graph)
        except BaseException as e:
            _fail(pending, e)  # later steps must not retry this graph forever
            raise
        handles = {id(v): DeviceData() for v in graph.outputs}
        for s in pending:
            s.set_value(DataNode(handles[id(s.value)], s.value.meta).outputs[0])
        self.runner.submit(_job(program, _input_handles(graph),
                                [handles[id(v)] for v in graph.outputs]))

    def _program(self, graph: Graph) -> CompiledGraph:
        candidates = self._compiled.setdefault(graph.key, [])
        for program in candidates:
            if _guards_hold(program, graph):
                metrics.counter_inc("CachedCompile")
                return program
        program = self._generic_program(graph)
        candidates.append(program)
        return program

    def _generic_program(self, graph: Graph) -> CompiledGraph:
        """A program of this graph's structure whose shape guard holds, else a new one: static
        for the first graph of a structure, with the changed dims symbolic after that."""
        now = structure(graph)
        family = self._families.get(now.key)
        if family is None:
            self._families[now.key] = Family(skeleton(graph), now)
            return self._compile(graph)
        for guard, program in family.generic:
            if guard.holds(now.ints) and _guards_hold(program, graph):
                metrics.counter_inc("CachedCompile")
                return program
        changed = changed_dims(family.first_structure, now)
        what = f"graph of {len(graph.nodes)} nodes, {describe_change(changed) or 'same sizes'}"
        if any(min(pair) < 2 for pair in changed.values()):  # 0 and 1 change broadcasting
            metrics.note_recompile(f"{what}: compiled for these sizes (a size of 0 or 1 is "
                                   f"never a symbol)")
            return self._compile(graph)
        if family.static_reason or not getattr(self.backend, "dynamic_shapes", False):
            reason = family.static_reason or \
                f"the {self.backend.name} backend compiles sizes as given"
            metrics.note_recompile(f"{what}: compiled for these sizes ({reason})")
            return self._compile(graph)
        return self._compile_generic(graph, family, now, changed, what)

    def _compile_generic(self, graph, family, now, changed, what) -> CompiledGraph:
        symbols = assign_symbols(changed)
        guard = build_guard(family.first_structure, now, symbols) if changed else None
        if guard is None:
            family.static_reason = ("an integer changed that is no affine function of the sizes"
                                    if changed else "only non-size integers changed")
            metrics.note_recompile(f"{what}: compiled for these sizes ({family.static_reason})")
            return self._compile(graph)
        program = self._compile(graph, symbols)
        made = getattr(program, "fingerprint", None)  # None: compiling failed, or no backend's
        if made is not None and self.backend.fingerprint(family.first, symbols) == made:
            family.generic.append((guard, program))
            metrics.note_recompile(f"{what}: compiled with the changed dims as size symbols; "
                                   f"later sizes of them reuse it")
        else:
            family.static_reason = "its program depends on the sizes themselves (a size-derived " \
                                   "constant, or a layout that changes with the sizes)"
            metrics.note_recompile(f"{what}: compiled; {family.static_reason}, so later sizes "
                                   f"compile again")
        return program

    def _compile(self, graph: Graph, symbols: dict | None = None) -> CompiledGraph:
        start = time.perf_counter()
        # timed(): a progress display can see it running; compiling(): `cache clear` waits
        with metrics.timed("compile"), compiling(self.cache_dir):
            folder = self._write_artifacts(graph, symbols)
            program = self.backend.compile(graph, folder, symbols) if symbols else \
                self.backend.compile(graph, folder)
        self._log.compiled(graph, folder, program, time.perf_counter() - start,
                           self._compiled.get(graph.key, []))
        metrics.counter_inc("UncachedCompile")
        return program

    def _write_artifacts(self, graph: Graph, symbols: dict | None = None) -> Path:
        """The graph's folder in the cache, graphs/<backend>-<ops>-<key>: its IR (with the size
        symbols it was compiled with, if any) and record."""
        dynamic = f"# size symbols (input, dim) -> s: {sorted(symbols.items())}\n" \
            if symbols else ""
        return graph_folder(self.cache_dir, self.backend.artifact_name, graph,
                            dynamic + to_text(graph))

    # --- steps -----------------------------------------------------------------------------
    def mark_step(self) -> None:
        metrics.counter_inc("MarkStep")
        self.sync(pending_storages())
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
            results = program(real)
            metrics.add_time("execute", time.perf_counter() - start)
        except BaseException as e:  # surfaces where an output is read
            for handle in outputs:
                handle.fail(e)
            return
        for handle, result in zip(outputs, results):
            handle.set(result)
    return run


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

