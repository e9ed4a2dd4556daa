"""The cache dir as people read it: graph folders named by backend, what the graph does and its
key; a record per graph; an index and a README at the root; clearing it while others use it.

    <cache>/README.md              what is where, the most recently used graphs
    <cache>/index.json             {"graphs": {folder name: record}}: every graph
    <cache>/graphs/<backend>-<ops>-<key>/
        ir.txt  index.json (the graph's record)  and, from the code generators, kernels.cpp or
        triton_*.py, wrapper.py, kernels.json; `library`: a link to the built C++ library
    <cache>/kernels/cpp/<key[:2]>/<key>/   built C++ libraries (cpp_build.py)
    <cache>/kernels/triton/                Triton's own cache (on a GPU)

The key (a hash of the backend, lazytriton's version and the IR text) is what finding a graph
trusts; the words before it are for people. The records in the graph folders are the truth:
the root index.json is a summary merged into under a file lock and written atomically (readers
never see half a file); each merge also adds the folders it lacks, so a missing or torn index,
or an update lost where there are no locks, heals at the next. Root updates are batched (at
most one write per second per process, and one at exit), so a test suite compiling thousands
of graphs does not rewrite it thousands of times.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._version import __version__
from .disk_cache import atomic_write, content_key

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; writes stay atomic, an update may be lost
    fcntl = None

GRAPHS = "graphs"
RECORD = "index.json"  # the graph's record, in its folder
LIBRARY_LINK = "library"  # in a graph folder: a link to the built library's folder
ROOT_INDEX = "index.json"
ROOT_README = "README.md"
_COMPILE_LOCK = ".lock"  # shared while a graph compiles, exclusive while the cache is cleared
_INDEX_LOCK = ".index.lock"
_FLUSH_EVERY_S = 1.0
_README_ROWS = 40
_DESCRIPTION_CHARS = 40

# ops that say nothing of what a graph does (views, copies, factories)...
_PLUMBING = {"as_strided", "view", "reshape", "expand", "permute", "t", "transpose", "clone",
             "copy", "to_copy", "detach", "alias", "unsqueeze", "squeeze", "slice", "select",
             "unsafe_view", "empty", "empty_strided", "zeros_like", "ones_like", "full",
             "full_like", "zeros", "ones", "zero", "fill", "lift_fresh", "scalar_tensor",
             "CloneAndCall"}
# ...and arithmetic, which names a graph only when nothing else does
_ARITHMETIC = {"add", "sub", "mul", "div", "neg", "rsub", "where"}


# --- names ------------------------------------------------------------------------------------

def describe(graph) -> str:
    """A few words for a graph: its first two ops and its last telling one (plumbing skipped;
    arithmetic only if little else), e.g. "softmax_mul" or "convolution_relu_addcmul"."""
    ops = list(dict.fromkeys(_short(n.op_name) for n in graph.nodes if not n.is_leaf))
    named = [o for o in ops if o not in _PLUMBING] or ops
    if len(named) > 3:
        telling = [o for o in named[2:] if o not in _ARITHMETIC]
        named = named[:2] + (telling or named)[-1:]
    text = "_".join(named) or "inputs"
    return text[:_DESCRIPTION_CHARS].rstrip("_")


def _short(op_name: str) -> str:
    """aten's overload and leading underscores dropped: "_log_softmax.default" -> "log_softmax"."""
    return re.sub(r"[^A-Za-z0-9_]", "", op_name.split(".")[0]).strip("_") or "op"


def folder_name(backend: str, graph, key: str) -> str:
    return f"{backend}-{describe(graph)}-{key}"


def key_of(folder: str | Path) -> str:
    """The content key a graph folder's name ends with (a bare key: a folder from before names)."""
    return Path(folder).name.rsplit("-", 1)[-1]


def graph_folder(cache_dir: Path, backend: str, graph, ir_text: str) -> Path:
    """The graph's folder, created with its IR and first record if new."""
    key = content_key(backend, ir_text)
    folder = Path(cache_dir) / GRAPHS / folder_name(backend, graph, key)
    if not (folder / "ir.txt").exists() or not (folder / RECORD).exists():
        atomic_write(folder / "ir.txt", ir_text)
        ops = [_short(n.op_name) for n in graph.nodes if not n.is_leaf]
        write_record(folder, {
            "key": key, "name": folder.name, "backend": backend,
            "description": describe(graph),
            "nodes": len(graph.nodes), "ops": len(ops), "inputs": len(graph.inputs),
            "outputs": [str(v.meta) for v in graph.outputs],
            "top_ops": Counter(o for o in ops if o not in _PLUMBING).most_common(8),
            "created": _now()})
    return folder


# --- records -----------------------------------------------------------------------------------

def read_record(folder: Path) -> dict[str, Any]:
    """The graph's record; what a folder from an older version lacks is filled in from its
    name, and an unreadable record gives just that."""
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            record = {}
    except (OSError, ValueError):
        record = {}
    record.setdefault("key", key_of(folder))
    record.setdefault("name", folder.name)
    return record


def write_record(folder: Path, record: dict) -> None:
    atomic_write(folder / RECORD, json.dumps(record, indent=1) + "\n")


def record_compile(folder: Path, program, seconds: float, backend: str) -> dict:
    """After a compile in this process: its time, kernel count and library, in the graph's
    record (the last process to compile the graph writes it)."""
    record = read_record(folder)
    kernels = getattr(program, "kernels", None)
    record.update({
        "kernels": len(kernels) if kernels is not None else 0,
        "fallback": kernels is None and backend != "aten",  # ran on the reference executor
        "compile_s": round(seconds, 4),
        "last_used": _now()})
    library = getattr(getattr(program, "keepalive", None), "path", None)
    if library is not None:
        record["library"] = link_library(folder, Path(library))
    write_record(folder, record)
    return record


def link_library(folder: Path, library: Path) -> str:
    """Link `folder/library` to the library's folder (relative, so the cache can move) and
    return the library's path from the cache root, which the record names for systems or copies
    where a link does not survive."""
    root = folder.parent.parent
    target = os.path.relpath(library.parent, folder)
    link = folder / LIBRARY_LINK
    if not (link.is_symlink() and os.readlink(link) == target):
        tmp = folder / f".{LIBRARY_LINK}.{uuid.uuid4().hex}"
        try:
            os.symlink(target, tmp)
            os.replace(tmp, link)
        except OSError:  # no links here (e.g. Windows without the right): the record has it
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    try:
        return library.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(library)


def kernel_entries(folder: Path) -> list[dict]:
    """The graph's kernels.json (empty for the reference executor or an unreadable file), each
    entry with "line": where its function starts in its source file (0 if not found)."""
    try:
        entries = json.loads((folder / "kernels.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(entries, list):
        return []
    sources: dict[str, list[str]] = {}
    for entry in entries:
        source = entry.get("source", "")
        if source not in sources:
            try:
                sources[source] = (folder / source).read_text(encoding="utf-8").splitlines()
            except OSError:
                sources[source] = []
        # "<name>(", or "<name>_<part>(" for a Triton kernel of several functions (scatter)
        pattern = re.compile(rf"\b(void|def)\s+{re.escape(entry.get('kernel', ''))}(_\w+)?\s*\(")
        entry["line"] = next((n for n, text in enumerate(sources[source], 1)
                              if pattern.search(text)), 0)
    return entries


def graph_folders(cache_dir: Path) -> list[Path]:
    root = Path(cache_dir) / GRAPHS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan(cache_dir: Path) -> list[dict]:
    """Every graph's record, read from the folders (the truth, whatever the root index says)."""
    return [read_record(folder) for folder in graph_folders(cache_dir)]


def find_graph(cache_dir: Path, query: str) -> Path:
    """The folder a key, a key's first characters or a folder name (or its start) names."""
    folders = graph_folders(cache_dir)
    for match in (lambda f: f.name == query or key_of(f) == query,
                  lambda f: key_of(f).startswith(query) or f.name.startswith(query)):
        found = [f for f in folders if match(f)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = "\n  ".join(f.name for f in found[:10])
            raise LookupError(f"{query!r} names {len(found)} graphs; say more of the key:\n  "
                              f"{names}")
    raise LookupError(f"no graph {query!r} in {Path(cache_dir) / GRAPHS}")


# --- the root index ----------------------------------------------------------------------------

_SUMMARY = ("key", "backend", "description", "ops", "kernels", "compile_s", "created",
            "last_used", "library", "fallback")


def summary(record: dict) -> dict:
    return {k: record[k] for k in _SUMMARY if k in record}


class IndexWriter:
    """Merges one process's graph records into the root index.json and README.md, batched."""

    def __init__(self, cache_dir: Path):
        self.cache_dir = Path(cache_dir)
        self._pending: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._last_flush = 0.0
        self._timer: threading.Timer | None = None

    def add(self, record: dict) -> None:
        with self._lock:
            self._pending[record["name"]] = summary(record)
            due = time.monotonic() - self._last_flush >= _FLUSH_EVERY_S
            if not due and self._timer is None:  # written soon, not forgotten until exit
                self._timer = threading.Timer(_FLUSH_EVERY_S, self.flush)
                self._timer.daemon = True
                self._timer.start()
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._last_flush = time.monotonic()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if pending:
            with contextlib.suppress(OSError):  # a read-only or vanished cache: the folders stay
                merge_into_index(self.cache_dir, pending)


def merge_into_index(cache_dir: Path, records: dict[str, dict]) -> dict:
    """Under the index lock: read the root index, add these records, add the folders it lacks
    (it was missing, torn, or lost an update where there are no locks) from their own records,
    drop graphs whose folder is gone, write both root files."""
    cache_dir = Path(cache_dir)
    with _file_lock(cache_dir / _INDEX_LOCK, exclusive=True):
        graphs = read_index(cache_dir) or {}
        graphs.update(records)
        folders = {f.name: f for f in graph_folders(cache_dir)}
        graphs = {name: graphs.get(name) or summary(read_record(folder))
                  for name, folder in folders.items()}
        write_index(cache_dir, graphs)
    return graphs


def read_index(cache_dir: Path) -> dict[str, dict] | None:
    """The root index's graphs, or None if it is missing or unreadable."""
    try:
        data = json.loads((Path(cache_dir) / ROOT_INDEX).read_text(encoding="utf-8"))
        graphs = data["graphs"]
        return graphs if isinstance(graphs, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_index(cache_dir: Path, graphs: dict[str, dict]) -> None:
    data = {"lazytriton": __version__, "updated": _now(), "graphs": graphs}
    atomic_write(Path(cache_dir) / ROOT_INDEX, json.dumps(data, indent=1) + "\n")
    atomic_write(Path(cache_dir) / ROOT_README, readme(cache_dir, graphs))


def readme(cache_dir: Path, graphs: dict[str, dict]) -> str:
    rows = sorted(graphs.items(), key=lambda kv: kv[1].get("last_used") or "", reverse=True)
    by_backend = Counter(r.get("backend", "?") for r in graphs.values())
    counts = ", ".join(f"{b} {n}" for b, n in sorted(by_backend.items()))
    lines = [
        "# lazytriton cache", "",
        f"Written by lazytriton {__version__}, updated {_now()}: {len(graphs)} graphs"
        + (f" ({counts})." if counts else "."),
        "`lazytriton cache list` (or `python -m lazytriton cache list`) lists them all, "
        "`lazytriton cache show KEY` one graph's kernels and files.", "",
        "## Layout", "",
        "```",
        "index.json                      every graph: backend, ops, kernels, compile time, "
        "last use",
        "graphs/<backend>-<ops>-<key>/   one folder per compiled graph (the key is a hash of",
        "                                the backend, lazytriton's version and the IR)",
        "    ir.txt        the graph, one node per line",
        "    index.json    its record (the same fields, and its outputs' shapes)",
        "    kernels.cpp   C++: every fused kernel (#include \"prelude.h\": lazytriton/templates/"
        "cpp/)",
        "    triton_*.py   Triton: one module per kernel",
        "    kernels.json  per kernel: the aten ops it computes, its parameters and loop sizes",
        "    wrapper.py    the Python that allocates buffers and calls the kernels in order",
        "    library       C++: link to the built library (also named in index.json)",
        "kernels/cpp/<key[:2]>/<key>/    built C++ libraries: kernels.cpp, kernels.so, entry.json",
        "kernels/triton/                 Triton's own cache of compiled kernels (on a GPU)",
        "```", "",
        f"## Most recently used graphs ({min(len(rows), _README_ROWS)} of {len(rows)})", "",
        "| graph | ops | kernels | compile (s) | last use |",
        "|---|---:|---:|---:|---|"]
    for name, r in rows[:_README_ROWS]:
        lines.append(f"| `{name}` | {r.get('ops', '')} | {_kernels_cell(r)} | "
                     f"{_seconds(r.get('compile_s'))} | {r.get('last_used', '')} |")
    return "\n".join(lines) + "\n"


def _kernels_cell(record: dict) -> str:
    if record.get("fallback"):
        return "fallback"
    return "" if record.get("kernels") is None else str(record["kernels"])


def _seconds(value) -> str:
    return "" if value is None else f"{value:.2f}"


_writers: dict[Path, IndexWriter] = {}
_writers_lock = threading.Lock()


def index_writer(cache_dir: Path) -> IndexWriter:
    with _writers_lock:
        key = Path(cache_dir).absolute()
        writer = _writers.get(key)
        if writer is None:
            writer = _writers[key] = IndexWriter(key)
        return writer


@atexit.register
def flush_all() -> None:
    for writer in list(_writers.values()):
        writer.flush()


# --- sharing and clearing ----------------------------------------------------------------------

@contextlib.contextmanager
def _file_lock(path: Path, exclusive: bool) -> Iterator[None]:
    """An advisory lock on `path`; where the filesystem has none (some network mounts), the
    block runs unlocked: writes stay atomic, only an index update may be lost."""
    f = None
    if fcntl is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            f = open(path, "a+b")
            fcntl.flock(f.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        except OSError:
            if f is not None:
                f.close()
            f = None
    try:
        yield
    finally:
        if f is not None:
            f.close()  # closing the last descriptor releases the lock


def compiling(cache_dir: Path):
    """Held (shared) while a graph is written and built: `clear` waits for it."""
    return _file_lock(Path(cache_dir) / _COMPILE_LOCK, exclusive=False)


def clear(cache_dir: Path) -> dict:
    """Empty the cache safely with other processes using it: wait until no compile is in flight
    (they hold the compile lock), move graphs/, kernels/, autotune/ (the tuning records) and the
    root files aside in one rename each, then delete them. Processes keep the kernels they have loaded; the next graph they
    meet is compiled afresh. Returns what was removed."""
    cache_dir = Path(cache_dir)
    removed = {"graphs": len(graph_folders(cache_dir)), "libraries": len(_cpp_libraries(cache_dir)),
               "bytes": 0}
    if not cache_dir.is_dir():
        return removed  # nothing to clear: do not create the dir for its lock
    trash = cache_dir / f".trash-{uuid.uuid4().hex}"
    with _file_lock(cache_dir / _COMPILE_LOCK, exclusive=True):
        for name in (GRAPHS, "kernels", "autotune", ROOT_INDEX, ROOT_README):
            if (cache_dir / name).exists():
                trash.mkdir(exist_ok=True)
                os.rename(cache_dir / name, trash / name)
    if trash.exists():
        removed["bytes"] = disk_usage(trash)
        shutil.rmtree(trash, ignore_errors=True)
    return removed


def _cpp_libraries(cache_dir: Path) -> list[Path]:
    return sorted((Path(cache_dir) / "kernels" / "cpp").glob("??/*/entry.json"))


def disk_usage(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
