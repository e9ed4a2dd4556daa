"""Compiling a graph's Triton kernels ahead, in worker processes (runtime/compile_pool.py).

Without a GPU the pool is exercised for real by the ahead-of-time sm_90 compile
(test_triton_backend.py's test_every_kernel_compiles_for_sm90 goes through it, and the test
here compiles a folder with two workers); what a CUDA launch would warm is checked from the
jobs the launcher hands the pool."""
from __future__ import annotations

import os

import pytest
import torch

import lazytriton
from lazytriton.debug import _values
from lazytriton.graph import build_graph
from lazytriton.runtime import compile_pool, disk_cache, triton_backend
from lazytriton.runtime.kernel_backend import lower_and_schedule
from lazytriton.scheduler import Kernel

pytestmark = pytest.mark.skipif(not triton_backend.triton_installed(), reason="needs triton")


def _fails(x):
    raise ValueError(f"bad job {x}")


def test_jobs_run_in_worker_processes_in_order_and_failures_come_back_as_values(monkeypatch):
    monkeypatch.setenv("LAZYTRITON_COMPILE_WORKERS", "2")
    pids = compile_pool.run_jobs(os.getpid, [()] * 4)
    assert os.getpid() not in pids and all(isinstance(p, int) for p in pids)
    assert compile_pool.run_jobs(abs, [(-3,), (5,), (-7,)]) == [3, 5, 7]
    monkeypatch.setenv("TRITON_CACHE_DIR", "/somewhere/new")  # after the pool started
    assert compile_pool.run_jobs(os.getenv, [("TRITON_CACHE_DIR",)] * 2) == ["/somewhere/new"] * 2
    failed = compile_pool.run_jobs(_fails, [(1,), (2,)])
    assert [str(e) for e in failed] == ["bad job 1", "bad job 2"]


def test_one_worker_or_one_job_compiles_here(monkeypatch):
    monkeypatch.setenv("LAZYTRITON_COMPILE_WORKERS", "1")
    assert compile_pool.run_jobs(os.getpid, [()] * 3) == [os.getpid()] * 3
    monkeypatch.setenv("LAZYTRITON_COMPILE_WORKERS", "4")
    assert compile_pool.run_jobs(os.getpid, [()]) == [os.getpid()]
    monkeypatch.setenv("LAZYTRITON_COMPILE_WORKERS", "many")
    with pytest.raises(ValueError, match="LAZYTRITON_COMPILE_WORKERS"):
        compile_pool.worker_count()


@pytest.mark.slow
def test_a_folder_compiles_for_sm90_with_two_workers(tmp_path, monkeypatch):
    from lazytriton.testing.aot import compile_folder
    monkeypatch.setenv("LAZYTRITON_COMPILE_WORKERS", "2")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton-cache"))  # really compile
    lazytriton.init("triton", cache_dir=tmp_path / "cache")
    x = torch.randn(6, 40).to("lazy")
    outs = [torch.softmax(x, 1), x.sum(0), (x * 3).exp()]
    lazytriton.mark_step()
    lazytriton.wait_device_ops()
    folder, = (tmp_path / "cache" / "graphs").glob("triton-*")
    compiled = compile_folder(folder)
    assert len(compiled) >= 2 and all(r["cubin_bytes"] > 0 for r in compiled)
    assert (tmp_path / "triton-cache").is_dir()
    del outs


def test_a_cuda_load_warms_each_new_kernel_once_with_the_graphs_sizes(tmp_path, monkeypatch):
    """The launcher of a CUDA graph (not interpreting) hands every launch of its new kernels
    to the pool: buffers as dtypes, sizes as this graph's values; a kernel already loaded in
    this process is not compiled again."""
    lazytriton.init("triton", cache_dir=tmp_path / "cache")
    x = torch.randn(5, 24, dtype=torch.float64).to("lazy")
    values = _values([torch.softmax(x, 1), (x.to(torch.float32) * 2).sum(0)])
    graph = build_graph(values)
    codegen = triton_backend.TritonCodegen(interpret=False)
    lowering, sched = lower_and_schedule(graph, codegen, {(0, 0): 0})  # the rows: a symbol
    code = codegen.generate([s for s in sched.steps if isinstance(s, Kernel)], lowering.sizevars)
    folder = tmp_path / "graphs" / "one"  # as in the cache: Triton's binaries go to ../../kernels
    folder.mkdir(parents=True)
    for name, text in code.files.items():
        (folder / name).write_text(text)
    handed = []

    def compiled_by_a_gpu(jobs, into):  # what warm_kernel returns for each job, on CUDA
        handed.extend(jobs)
        compile_pool.write_binaries(into, [(job[1], {"cubin": b"ELF", "ptx": "//"}) for job in jobs])
        return 0
    monkeypatch.setattr(triton_backend, "warm_kernels", compiled_by_a_gpu)
    monkeypatch.setenv("TRITON_CACHE_DIR", "")  # the launcher sets it; restored after the test
    launchers, _ = triton_backend.TritonLauncher(interpret=False).load(code, folder)
    assert set(launchers) == {k.name for k in code.kernels}
    assert len(handed) == sum(len(k.launch) for k in code.kernels) >= 2
    for path, function, args, options in handed:
        emitted, = [k for k in code.kernels if path.endswith(k.source_file)]
        params = emitted.signature.params()
        assert function in {lc.function for lc in emitted.launch}
        assert "num_warps" in options
        for param, arg in zip(params, args, strict=True):
            if param.kind == "buffer":
                assert arg == param.dtype
            elif param.kind == "size":
                assert arg == 5  # the graph's row count, a symbol in the source
    assert any(p.kind == "size" for k in code.kernels for p in k.signature.params())
    for path, function, *_ in handed:  # each launch's binaries beside its kernel's source
        assert (folder / f"{function}.cubin").read_bytes() == b"ELF"
        mode = (folder / f"{function}.ptx").stat().st_mode & 0o777
        assert mode == 0o666 & ~disk_cache._UMASK  # as any file (mkstemp's are owner-only)
    handed.clear()
    triton_backend.TritonLauncher(interpret=False).load(code, folder)
    assert handed == []  # the modules are loaded: their binaries are in Triton's caches
