"""Compile generated C++/OpenMP source into a shared library, cached on disk, loaded by ctypes.

One call compiles one translation unit (the code generator puts a graph's kernels in one), so
a graph costs one compiler run. Entries are content-addressed and laid out for people to read:

    <cache_dir>/kernels/cpp/<key[:2]>/<key>/{<name>.cpp, <name>.so, entry.json}
    <cache_dir>/kernels/cpp/failed/<key>.cpp   source that did not compile (+ <key>.log)

An entry is built in a private temp dir on the same filesystem and renamed into place whole, so
other processes see all of it or nothing; an entry is verified before every load and rebuilt if
anything is off.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from .. import metrics
from .._version import __version__
from ..templates import CPP_INCLUDE_DIR
from .disk_cache import atomic_write

__all__ = ["CXX_FLAGS", "CppCompileError", "CppLibrary", "build_library", "cache_key",
           "compiler_command", "include_flags"]

# No -ffast-math: generated kernels must keep IEEE NaN/Inf semantics to match eager PyTorch.
# -fno-math-errno changes no result (only whether libm sets errno, which nothing reads) and
# lets g++ vectorize sqrt: with errno, std::sqrt is a call for negative inputs, so every loop
# holding one (Adam, Adadelta, RMSprop's updates) ran scalar.
# -ffp-contract=off: a product and a sum stay two roundings, as eager's separate ops give them
# (g++ contracts `a * b - c` into one fma where the target has it: a fused kernel's result
# then differs from eager's in the last bits, or is not 0 where eager's is); vecmath.h writes
# out the fmas it wants.
CXX_FLAGS: tuple[str, ...] = ("-O3", "-march=native", "-fno-math-errno", "-ffp-contract=off",
                              "-fopenmp", "-shared", "-fPIC", "-std=c++17")
_STDERR_LINES = 40


def include_flags() -> list[str]:
    """Where generated sources find the headers they include (prelude.h, vecmath.h)."""
    return [f"-I{CPP_INCLUDE_DIR}"]


@functools.cache
def _headers_digest() -> str:
    # The headers' text, not their path: a cache shared by two installs of one version hits.
    h = hashlib.sha256()
    for header in sorted(CPP_INCLUDE_DIR.glob("*.h")):
        h.update(header.name.encode() + b"\0" + header.read_bytes() + b"\0")
    return h.hexdigest()
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class CppCompileError(RuntimeError):
    """The compiler rejected the source; `source_path` is the copy kept for a person to read."""

    def __init__(self, message: str, source_path: Path | None = None, stderr: str = ""):
        super().__init__(message)
        self.source_path = source_path
        self.stderr = stderr


class CppLibrary:
    """A loaded kernel library. Calls go through ctypes.CDLL, which releases the GIL."""

    def __init__(self, cdll: ctypes.CDLL, path: Path, key: str, cached: bool):
        self.cdll = cdll
        self.path = path
        self.key = key
        self.cached = cached  # True: loaded from disk without compiling in this process
        self._functions: dict[tuple[str, tuple], ctypes._CFuncPtr] = {}
        self._lock = threading.Lock()

    def function(self, name: str, argtypes: Sequence[type]) -> ctypes._CFuncPtr:
        """The exported `extern "C"` function `name`, returning void, taking `argtypes`."""
        sig = (name, tuple(argtypes))
        with self._lock:
            fn = self._functions.get(sig)
            if fn is None:
                fn = self.cdll[name]  # [] gives a fresh object; getattr would share argtypes
                fn.restype = None
                fn.argtypes = list(argtypes)
                self._functions[sig] = fn
        return fn

    def __repr__(self) -> str:
        return f"CppLibrary({str(self.path)!r}, cached={self.cached})"


# ---------------------------------------------------------------------------------------------
# Cache key

def compiler_command() -> list[str]:
    """The compiler as argv: $LAZYTRITON_CXX (may hold words, e.g. "ccache g++") or g++."""
    return shlex.split(os.environ.get("LAZYTRITON_CXX") or "g++")


@functools.cache
def _compiler_version(cxx: tuple[str, ...]) -> str:
    # Memoized: one `--version` run per compiler per process (failures are not cached).
    try:
        out = subprocess.run([*cxx, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise CppCompileError(f"C++ compiler {shlex.join(cxx)!r} cannot run ({e}); "
                              "set LAZYTRITON_CXX to a working g++") from e
    lines = out.stdout.strip().splitlines()
    return lines[0] if lines else shlex.join(cxx)


@functools.cache
def _cpu_fingerprint() -> str:
    """Hash of what -march=native depends on, so a cache shared across hosts stays correct."""
    wanted = ("flags", "model name", "Features", "CPU implementer", "CPU part")
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                field, _, value = line.partition(":")
                field = field.strip()
                if field in wanted and field not in found:
                    found[field] = value.strip()
    except OSError:
        pass
    text = platform.machine() + "\n" + "\n".join(f"{k}={found[k]}" for k in sorted(found))
    if not found:
        text += "\n" + platform.processor()
    return hashlib.sha256(text.encode()).hexdigest()


def cache_key(source: str, name: str = "kernels", cxx: Sequence[str] | None = None) -> str:
    """sha256 over everything that changes the binary: source, the headers it includes, name,
    lazytriton version, compiler command and version, flags and host CPU."""
    cxx = tuple(cxx) if cxx is not None else tuple(compiler_command())
    # the command's own words too: "g++ -fsanitize=address" reports plain g++'s version
    parts = (source, _headers_digest(), name, __version__, shlex.join(cxx), _compiler_version(cxx),
             " ".join(CXX_FLAGS), _cpu_fingerprint())
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Disk layout and verification

def _cpp_root(cache_dir: Path) -> Path:
    return Path(cache_dir) / "kernels" / "cpp"


def _entry_dir(cache_dir: Path, key: str) -> Path:
    return _cpp_root(cache_dir) / key[:2] / key


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _entry_problem(entry_dir: Path, key: str, source: bytes, name: str) -> str | None:
    """Why the entry cannot be trusted, or None when it checks out."""
    try:
        entry = json.loads((entry_dir / "entry.json").read_text(encoding="utf-8"))
        if not isinstance(entry, dict):
            return "entry.json is not an object"
        if entry.get("key") != key:
            return "entry.json names another key"
        if (entry_dir / f"{name}.cpp").read_bytes() != source:
            return f"{name}.cpp differs from the source"
        if _sha256_bytes((entry_dir / f"{name}.so").read_bytes()) != entry.get("so_sha256"):
            return f"{name}.so does not match so_sha256"
    except (OSError, ValueError) as e:  # missing or truncated file, bad JSON or UTF-8
        return f"unreadable ({e})"
    return None


def _temp_dir(cache_dir: Path, prefix: str) -> Path:
    # Inside the cache dir so the final rename stays on one filesystem (atomic).
    tmp_root = _cpp_root(cache_dir) / ".tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_root))


def _discard(entry_dir: Path, cache_dir: Path) -> None:
    """Move the entry out of sight first (atomic), then delete it at leisure."""
    trash = _cpp_root(cache_dir) / ".tmp" / f"trash-{uuid.uuid4().hex}"
    trash.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(entry_dir, trash)
    except FileNotFoundError:
        return  # another process discarded it already
    shutil.rmtree(trash, ignore_errors=True)


def _warn_discard(entry_dir: Path, cache_dir: Path, reason: str) -> None:
    warnings.warn(f"lazytriton: kernel cache entry {entry_dir} is not valid ({reason}); "
                  "deleting it and recompiling", RuntimeWarning, stacklevel=5)
    _discard(entry_dir, cache_dir)


# ---------------------------------------------------------------------------------------------
# Compile and publish

def _run_compiler(cxx: list[str], work: Path, name: str) -> subprocess.CompletedProcess:
    # Relative paths in cwd=work keep the compiler's messages short ("kernels.cpp:3:5: ...").
    cmd = [*cxx, *CXX_FLAGS, *include_flags(), f"{name}.cpp", "-o", f"{name}.so"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    except OSError as e:
        raise CppCompileError(f"cannot run the C++ compiler {shlex.join(cxx)!r}: {e}") from e
    finally:
        metrics.add_time("cxx", time.perf_counter() - start)
    metrics.counter_inc("KernelCompile")
    return proc


def _compile_failed(cache_dir: Path, key: str, source: bytes,
                    proc: subprocess.CompletedProcess) -> CppCompileError:
    failed = _cpp_root(cache_dir) / "failed" / f"{key}.cpp"
    atomic_write(failed, source)
    atomic_write(failed.with_suffix(".log"), proc.stdout + proc.stderr)
    head = "\n".join(proc.stderr.splitlines()[:_STDERR_LINES])
    return CppCompileError(f"C++ compilation failed (exit {proc.returncode}); the source is kept "
                           f"at {failed}\n{head}", source_path=failed, stderr=proc.stderr)


def _write_entry(work: Path, key: str, cxx: list[str], source: bytes, name: str) -> None:
    entry = {
        "key": key,
        "compiler": _compiler_version(tuple(cxx)),
        "flags": list(CXX_FLAGS),
        "so_sha256": _sha256_bytes((work / f"{name}.so").read_bytes()),
        "source_sha256": _sha256_bytes(source),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    # Written last: an entry without entry.json never verifies.
    (work / "entry.json").write_text(json.dumps(entry, indent=1) + "\n", encoding="utf-8")


def _publish(work: Path, entry_dir: Path, cache_dir: Path, key: str, source: bytes,
             name: str) -> None:
    """Rename the finished temp dir into place; if another process got there first with a
    valid entry, keep theirs."""
    entry_dir.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        try:
            os.rename(work, entry_dir)
            return
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        problem = _entry_problem(entry_dir, key, source, name)
        if problem is None:
            return  # theirs is as good as ours
        _warn_discard(entry_dir, cache_dir, problem)
    raise CppCompileError(f"could not publish the kernel cache entry {entry_dir}")


def _compile(source: bytes, cache_dir: Path, name: str, key: str, cxx: list[str]) -> None:
    """Compile into a temp dir and publish it as the entry for `key`."""
    entry_dir = _entry_dir(cache_dir, key)
    work = _temp_dir(cache_dir, prefix=f"{key[:16]}-")
    try:
        (work / f"{name}.cpp").write_bytes(source)
        proc = _run_compiler(cxx, work, name)
        if proc.returncode != 0 or not (work / f"{name}.so").is_file():
            raise _compile_failed(cache_dir, key, source, proc)
        _write_entry(work, key, cxx, source, name)
        _publish(work, entry_dir, cache_dir, key, source, name)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone already when our rename won


# ---------------------------------------------------------------------------------------------
# Load

def _load_cached(source: bytes, cache_dir: Path, name: str, key: str) -> CppLibrary | None:
    """The verified entry, loaded; None (after discarding a bad entry) means compile."""
    entry_dir = _entry_dir(cache_dir, key)
    if not entry_dir.exists():
        return None
    problem = _entry_problem(entry_dir, key, source, name)
    if problem is not None:
        _warn_discard(entry_dir, cache_dir, problem)
        return None
    path = entry_dir / f"{name}.so"
    try:
        cdll = ctypes.CDLL(str(path))
    except OSError as e:
        _warn_discard(entry_dir, cache_dir, f"the loader refused it: {e}")
        return None
    metrics.counter_inc("KernelCacheLoad")
    return CppLibrary(cdll, path, key, cached=True)


def _load_built(cache_dir: Path, name: str, key: str) -> CppLibrary:
    path = _entry_dir(cache_dir, key) / f"{name}.so"
    try:
        cdll = ctypes.CDLL(str(path))
    except OSError as e:
        raise CppCompileError(f"compiled {path} but cannot load it: {e}") from e
    return CppLibrary(cdll, path, key, cached=False)


# In-process memo: the same entry is dlopen'ed once per process. Keyed by the entry dir (which
# holds the key) because dlopen returns an already-loaded library for the same path anyway.
_memo: dict[str, CppLibrary] = {}
_memo_lock = threading.Lock()
_entry_locks: dict[str, threading.Lock] = {}


def _entry_lock(memo_key: str) -> threading.Lock:
    # One lock per entry: threads building different sources still compile in parallel.
    with _memo_lock:
        return _entry_locks.setdefault(memo_key, threading.Lock())


def build_library(source: str, cache_dir: Path, name: str = "kernels") -> CppLibrary:
    """Compile `source` (one translation unit) or fetch it from the disk cache, and load it."""
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"library name must be a plain file name, got {name!r}")
    cache_dir = Path(cache_dir).resolve()
    cxx = compiler_command()
    key = cache_key(source, name, cxx)
    memo_key = str(_entry_dir(cache_dir, key))
    with _entry_lock(memo_key):
        lib = _memo.get(memo_key)
        if lib is None:
            lib = _load_or_build(source.encode("utf-8"), cache_dir, name, key, cxx)
            _memo[memo_key] = lib
    return lib


def _load_or_build(source: bytes, cache_dir: Path, name: str, key: str,
                   cxx: list[str]) -> CppLibrary:
    lib = _load_cached(source, cache_dir, name, key)
    if lib is not None:
        return lib
    _compile(source, cache_dir, name, key, cxx)
    return _load_built(cache_dir, name, key)
