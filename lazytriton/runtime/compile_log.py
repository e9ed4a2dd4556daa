"""What a session does after compiling a graph, for people: the graph's record and the root
index (cache_index), and the LAZYTRITON_LOGS messages -- output_code (where the new graph's
kernels are) and recompiles (why it was compiled although other graphs were: what differs from
the nearest one compiled before in this process)."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from .. import logs
from . import cache_index

_HISTORY = 200  # graphs remembered for "nearest graph" (their IR is read back from the cache)
_LINE = re.compile(r"%(?P<pos>[\d.]+) = (?P<op>[^(: ]+)(?P<args>\(.*\))? : (?P<meta>.*)$")


class CompileLog:
    def __init__(self, cache_dir: Path, backend: str):
        self.cache_dir = Path(cache_dir)
        self.backend = backend
        self.history: list[Path] = []  # folders of the graphs compiled here, oldest first

    def compiled(self, graph, folder: Path, program, seconds: float, same_key: list) -> None:
        """`same_key`: programs compiled before for this very graph whose guards failed."""
        record = cache_index.record_compile(folder, program, seconds, self.backend)
        cache_index.index_writer(self.cache_dir).add(record)
        if logs.enabled("recompiles") and (same_key or self.history):
            logs.emit("recompiles", explain_recompile(graph, folder, same_key, self.history))
        if logs.enabled("output_code"):
            logs.emit("output_code", output_code(folder, record))
        self.history = self.history[-_HISTORY + 1:] + [folder]


# --- output_code ------------------------------------------------------------------------------

def output_code(folder: Path, record: dict) -> str:
    """The new graph's folder, then per kernel its source file and line and the ops it fuses."""
    kernels = cache_index.kernel_entries(folder)
    head = (f"{folder.name}: {_count(record.get('ops', '?'), 'op')}, "
            f"{_count(len(kernels), 'kernel')}, compiled in "
            f"{record.get('compile_s', 0):.2f} s\n  folder   {folder}")
    if record.get("fallback"):
        return head + "\n  code generation failed: it runs on the reference executor"
    if not kernels:
        return head + ("\n  no kernels: the reference executor runs ir.txt node by node"
                       if record.get("backend") == "aten" else "\n  no kernels: see wrapper.py")
    lines = [head, "  wrapper  wrapper.py"]
    if record.get("library"):
        lines.append(f"  library  {folder.parent.parent / record['library']}")
    places = [f"{k.get('source', '')}:{k['line']}" for k in kernels]
    width = max(len(k.get("kernel", "")) for k in kernels)
    pwidth = max(map(len, places))
    for k, place in zip(kernels, places):
        ops = ", ".join(op.split(".")[0] for op in k.get("fused_ops", [])) or "copy"
        lines.append(f"  {k.get('kernel', ''):<{width}}  {place:<{pwidth}}  {ops}")
    return "\n".join(lines)


# --- recompiles -------------------------------------------------------------------------------

def explain_recompile(graph, folder: Path, same_key: list, history: list[Path]) -> str:
    head = f"compiling {folder.name} ({_count(sum(not n.is_leaf for n in graph.nodes), 'op')})"
    if same_key:
        return head + ": " + _failed_guards(graph, same_key[-1])
    lines = _ir_lines(folder)
    nearest, score = None, -1
    for earlier in reversed(history):  # the most recent wins a tie
        if earlier == folder:
            continue
        other = _ir_lines(earlier)
        # shared lines over both sizes: a big graph containing this one is not nearest
        shared = sum((Counter(lines) & Counter(other)).values())
        similarity = 2 * shared / max(len(lines) + len(other), 1)
        if similarity > score:
            nearest, score = (earlier, other), similarity
    if nearest is None:
        return head + ": no other graph compiled before in this process is in the cache now"
    earlier, other = nearest
    return (f"{head}: the nearest graph compiled before is {earlier.name}; "
            f"{ir_difference(lines, other)}")


def _failed_guards(graph, program) -> str:
    from .session import _same_scalar  # the session's test for a guard, not a copy of it
    guards = getattr(program, "guards", None) or {}
    changed = []
    for k, assumed in guards.items():
        now = graph.inputs[k].value
        if not _same_scalar(now, assumed):
            changed.append(f"scalar input %{graph.index[graph.inputs[k]]} was {assumed!r} "
                           f"and is {now!r}")
    what = "; ".join(changed) or "a guard failed"
    return (f"same ops and shapes as a graph compiled before, but its code assumed a scalar "
            f"value (a decomposition computed with it): {what}")


def ir_difference(new: list[str], old: list[str]) -> str:
    """Where two graphs' IR first differ, in words: the input, op, shape or arguments."""
    differing = sum(a != b for a, b in zip(new, old)) + abs(len(new) - len(old))
    for a, b in zip(new, old):
        if a != b:
            first = _describe_line_change(a, b)
            break
    else:
        first = f"it has {len(new)} lines of IR and that one {len(old)}"
    return f"they differ first at {first} ({differing} of {max(len(new), len(old))} IR lines differ)"


def _describe_line_change(new: str, old: str) -> str:
    a, b = _LINE.match(new), _LINE.match(old)
    if not a or not b:
        return f"`{new}` (was `{old}`)"
    where = f"%{a['pos']}"
    if a["op"] != b["op"]:
        return f"{where}: op {a['op']} here, {b['op']} there"
    kind = "input" if a["op"] in ("data", "cpu_scalar", "scalar") else f"{a['op']}"
    if a["meta"] != b["meta"]:
        return f"{where} ({kind}): shape/dtype {a['meta']} here, {b['meta']} there"
    return f"{where} ({kind}): arguments {a['args']} here, {b['args']} there"


def _count(n, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _ir_lines(folder: Path) -> list[str]:
    """The IR's node lines; comments (the size symbols a shape-generic graph was compiled with)
    are not the graph."""
    try:
        text = (folder / "ir.txt").read_text(encoding="utf-8")
    except OSError:
        return []
    return [line for line in text.splitlines() if not line.startswith("#")]
