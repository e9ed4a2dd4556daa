"""The C++ build cache: compile, load, verify, recover from corruption, share between processes.
Every test uses a private cache dir; a g++ run takes about a second, so compiles are shared
where a test only reads."""
from __future__ import annotations

import ctypes
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from lazytriton import metrics
from lazytriton.runtime.cpp_build import (CppCompileError, CppLibrary, build_library,
                                          cache_key)

SOURCE = r"""
#include <cstdint>
extern "C" void scale(const float* x, float* y, long n, float a) {
    #pragma omp parallel for
    for (long i = 0; i < n; ++i) y[i] = x[i] * a;
}
// NaN wins, as in torch.maximum: a > b is false for NaN, so test a for NaN explicitly.
extern "C" void nan_max(const float* x, const float* y, float* out, long n) {
    #pragma omp parallel for
    for (long i = 0; i < n; ++i) {
        float a = x[i], b = y[i];
        out[i] = (a > b || a != a) ? a : b;
    }
}
"""

SCALE_ARGS = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_float]
MAX_ARGS = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long]


def ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def run_scale(lib: CppLibrary, x: torch.Tensor, a: float) -> torch.Tensor:
    y = torch.empty_like(x)
    lib.function("scale", SCALE_ARGS)(ptr(x), ptr(y), x.numel(), a)
    return y


def entry_dir(cache: Path, key: str) -> Path:
    return cache / "kernels" / "cpp" / key[:2] / key


def entry_dirs(cache: Path) -> list[Path]:
    root = cache / "kernels" / "cpp"
    return [p for p in root.glob("??/*") if p.is_dir()]


def assert_entry_valid(entry: Path) -> None:
    meta = json.loads((entry / "entry.json").read_text())
    assert meta["so_sha256"] == hashlib.sha256((entry / "kernels.so").read_bytes()).hexdigest()
    assert (entry / "kernels.cpp").read_text() == SOURCE
    assert meta["source_sha256"] == hashlib.sha256(SOURCE.encode()).hexdigest()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, CppLibrary]:
    cache = tmp_path_factory.mktemp("cpp-cache")
    return cache, build_library(SOURCE, cache)


def test_scale_matches_eager(built):
    cache, lib = built
    x = torch.randn(100_003)
    torch.testing.assert_close(run_scale(lib, x, 1.75), x * 1.75, rtol=0, atol=0)
    assert not lib.cached
    assert lib.path == entry_dir(cache, lib.key) / "kernels.so"
    assert lib.function("scale", SCALE_ARGS) is lib.function("scale", SCALE_ARGS)


def test_entry_layout(built):
    cache, lib = built
    entry = entry_dir(cache, lib.key)
    assert sorted(p.name for p in entry.iterdir()) == ["entry.json", "kernels.cpp", "kernels.so"]
    meta = json.loads((entry / "entry.json").read_text())
    assert set(meta) == {"key", "compiler", "flags", "so_sha256", "source_sha256", "created"}
    assert meta["key"] == lib.key == cache_key(SOURCE)
    assert "-ffast-math" not in meta["flags"] and "-fopenmp" in meta["flags"]
    assert_entry_valid(entry)
    assert not any((cache / "kernels" / "cpp" / ".tmp").iterdir())  # no temp dirs left


def test_same_source_in_process_is_memoized(built):
    cache, lib = built
    assert build_library(SOURCE, cache) is lib
    assert metrics.counter_value("KernelCompile") is None
    assert metrics.counter_value("KernelCacheLoad") is None


def test_nan_inf_propagate(built):
    _, lib = built
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0, 2.0, 0.0, 3.0])
    y = torch.tensor([1.0, 2.0, 5.0, float("nan"), float("-inf"), -0.5, float("inf")])
    torch.testing.assert_close(run_scale(lib, x, 2.0), x * 2.0, equal_nan=True, rtol=0, atol=0)
    out = torch.empty_like(x)
    lib.function("nan_max", MAX_ARGS)(ptr(x), ptr(y), ptr(out), x.numel())
    torch.testing.assert_close(out, torch.maximum(x, y), equal_nan=True, rtol=0, atol=0)


CHILD = r"""
import json, sys, torch, ctypes
from pathlib import Path
from lazytriton import metrics
from lazytriton.runtime.cpp_build import build_library
cache, source_file, start_at = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
import time
import warnings
time.sleep(max(0.0, start_at - time.time()))  # line up concurrent builders
lib = build_library(source_file.read_text(), cache)
x = torch.arange(1000, dtype=torch.float32)
y = torch.empty_like(x)
lib.function("scale", [ctypes.c_void_p] * 2 + [ctypes.c_long, ctypes.c_float])(
    ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(y.data_ptr()), 1000, 3.0)
assert torch.equal(y, x * 3.0)
print(json.dumps({"compile": metrics.counter_value("KernelCompile"),
                  "load": metrics.counter_value("KernelCacheLoad"), "cached": lib.cached}))
"""


def spawn(cache: Path, tmp_path: Path, start_at: float = 0.0) -> subprocess.Popen:
    source_file = tmp_path / "source.cpp"
    source_file.write_text(SOURCE)
    return subprocess.Popen([sys.executable, "-c", CHILD, str(cache), str(source_file),
                             str(start_at)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def child_result(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_new_process_loads_from_disk(built, tmp_path):
    cache, _ = built
    result = child_result(spawn(cache, tmp_path))
    assert result == {"compile": None, "load": 1, "cached": True}


def copy_of_built(built, tmp_path) -> tuple[Path, Path]:
    # A copy, not the original: this process has the original loaded, and dlopen would hand
    # back that mapping for the same path instead of reading the rebuilt file.
    cache, lib = built
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    return copy, entry_dir(copy, lib.key)


def _truncate_so(entry: Path) -> None:
    so = entry / "kernels.so"
    so.write_bytes(so.read_bytes()[:1000])


def _truncate_json(entry: Path) -> None:
    meta = entry / "entry.json"
    meta.write_text(meta.read_text()[:20])


def _wrong_key(entry: Path) -> None:
    meta = json.loads((entry / "entry.json").read_text())
    meta["key"] = "0" * 64
    (entry / "entry.json").write_text(json.dumps(meta))


def _edited_source(entry: Path) -> None:
    (entry / "kernels.cpp").write_text(SOURCE + "// edited\n")


@pytest.mark.parametrize("corrupt", [_truncate_so, _truncate_json, _wrong_key, _edited_source])
def test_corrupt_entry_is_rebuilt(built, tmp_path, corrupt):
    cache, entry = copy_of_built(built, tmp_path)
    corrupt(entry)
    with pytest.warns(RuntimeWarning, match=re.escape(str(entry))):
        lib = build_library(SOURCE, cache)
    assert metrics.counter_value("KernelCompile") == 1
    assert metrics.counter_value("KernelCacheLoad") is None
    assert not lib.cached and lib.path == entry / "kernels.so"
    assert_entry_valid(entry)
    x = torch.randn(4096)
    assert torch.equal(run_scale(lib, x, -0.5), x * -0.5)


def test_verified_but_unloadable_so_is_rebuilt(built, tmp_path):
    cache, entry = copy_of_built(built, tmp_path)
    junk = b"not an ELF file" * 100
    (entry / "kernels.so").write_bytes(junk)
    meta = json.loads((entry / "entry.json").read_text())
    meta["so_sha256"] = hashlib.sha256(junk).hexdigest()
    (entry / "entry.json").write_text(json.dumps(meta))
    with pytest.warns(RuntimeWarning, match="loader refused"):
        lib = build_library(SOURCE, cache)
    assert metrics.counter_value("KernelCompile") == 1
    assert_entry_valid(entry)
    x = torch.randn(64)
    assert torch.equal(run_scale(lib, x, 2.5), x * 2.5)


def test_syntax_error_keeps_source(tmp_path):
    bad = 'extern "C" void broken(float* x) { x[0] = ; }\n'
    with pytest.raises(CppCompileError) as info:
        build_library(bad, tmp_path)
    kept = tmp_path / "kernels" / "cpp" / "failed" / f"{cache_key(bad)}.cpp"
    assert str(kept) in str(info.value)
    assert "error" in str(info.value)
    assert info.value.source_path == kept and kept.read_text() == bad
    assert entry_dirs(tmp_path) == []
    assert not any((tmp_path / "kernels" / "cpp" / ".tmp").iterdir())


def test_missing_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("LAZYTRITON_CXX", "/nonexistent/g++")
    with pytest.raises(CppCompileError, match="LAZYTRITON_CXX"):
        build_library(SOURCE, tmp_path)


def test_bad_name(tmp_path):
    with pytest.raises(ValueError):
        build_library(SOURCE, tmp_path, name="../x")


def test_concurrent_processes_share_one_entry(tmp_path):
    cache = tmp_path / "shared"
    start_at = time.time() + 4.0  # after both have imported torch
    procs = [spawn(cache, tmp_path, start_at) for _ in range(2)]
    results = [child_result(p) for p in procs]
    assert all(r["compile"] == 1 or r["load"] == 1 for r in results)
    [entry] = entry_dirs(cache)
    assert entry.name == cache_key(SOURCE)
    assert_entry_valid(entry)
    assert not any((cache / "kernels" / "cpp" / ".tmp").iterdir())
    assert not (cache / "kernels" / "cpp" / "failed").exists()


@pytest.mark.parametrize("theirs_valid", [True, False])
def test_losing_the_publish_race(built, tmp_path, monkeypatch, theirs_valid):
    # As if another process published the entry while this one compiled: keep a valid entry,
    # replace an invalid one.
    from lazytriton.runtime import cpp_build
    cache, entry = copy_of_built(built, tmp_path)
    theirs = (entry / "entry.json").read_text()
    if not theirs_valid:
        _truncate_so(entry)
    monkeypatch.setattr(cpp_build, "_load_cached", lambda *args: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lib = build_library(SOURCE, cache)
    assert metrics.counter_value("KernelCompile") == 1 and not lib.cached
    assert len(caught) == (0 if theirs_valid else 1)
    assert ((entry / "entry.json").read_text() == theirs) == theirs_valid
    assert entry_dirs(cache) == [entry]
    assert_entry_valid(entry)
    assert not any((cache / "kernels" / "cpp" / ".tmp").iterdir())
    x = torch.randn(64)
    assert torch.equal(run_scale(lib, x, 4.0), x * 4.0)
