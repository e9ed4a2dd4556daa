"""Compile generated Triton kernels ahead of time for a GPU this machine need not have:
`triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 90, 32))`
builds PTX and a cubin (ptxas ships with triton) without a driver. Tests use it to check that
every kernel the CPU interpreter ran also compiles for sm_90.

    python -m lazytriton.testing.aot <graph folder>...   # each folder: kernels.json + sources
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

# the Triton type of each parameter kind/dtype in kernels.json
_POINTER = {"float32": "*fp32", "float64": "*fp64", "float16": "*fp16", "bfloat16": "*bf16",
            "int64": "*i64", "int32": "*i32", "int16": "*i16", "int8": "*i8", "uint8": "*u8",
            "bool": "*i1"}


def param_types(params: list[dict], index_dtype: str) -> dict[str, str]:
    """kernels.json params -> Triton signature types, as the launcher passes them: float64
    scalars as their int64 bits, sizes as int32 when the kernel indexes in int32."""
    types = {}
    for p in params:
        if p["kind"] in ("buffer", "err"):
            types[p["name"]] = _POINTER[p["dtype"]]
        elif p["kind"] == "size":
            types[p["name"]] = "i32" if index_dtype == "int32" else "i64"
        else:  # scalar
            types[p["name"]] = "i1" if p["dtype"] == "bool" else "i64"
    return types


def load_compiled(path: Path):
    """The kernel module at `path` with real @triton.jit functions (not interpreted)."""
    from ..runtime.triton_backend import _execute
    return _execute(path, f"lazytriton_aot.{path.stem}", interpret=False)


def compile_kernel(folder: Path, entry: dict, arch: int = 90,
                   candidates: bool = False) -> list[dict]:
    """Compile every function of one kernels.json entry; one result per launch, and with
    `candidates` one per autotuning candidate's (function, config) besides."""
    import triton
    from triton.backends.compiler import GPUTarget
    module = load_compiled(folder / entry["source"])
    types = param_types(entry["params"], entry.get("index_dtype", "int64"))
    results = []
    launches = [(lc["function"], lc["config"]) for lc in entry["launches"]]
    if candidates:
        launches += [(function, c["config"]) for c in entry.get("candidate_launches", [])
                     for function in c["functions"]]
    seen = []
    for function, config in launches:
        if (function, config) in seen:
            continue
        seen.append((function, config))
        fn = getattr(module, function)
        constexprs = {k: v for k, v in config.items()  # XBLOCK, RBLOCK; a template's BLOCK_M...
                      if k not in ("num_warps", "num_stages") and v is not None
                      and k in fn.arg_names and isinstance(v, int)}
        signature = {name: types[name] for name in fn.arg_names if name not in constexprs}
        signature.update({name: "constexpr" for name in constexprs})
        start = time.perf_counter()
        compiled = triton.compile(triton.compiler.ASTSource(fn, signature, constexprs),
                                  target=GPUTarget("cuda", arch, 32),
                                  options={"num_warps": config["num_warps"],
                                           "num_stages": config["num_stages"]})
        results.append({"function": function, "config": config,
                        "seconds": time.perf_counter() - start,
                        "cubin_bytes": len(compiled.asm["cubin"])})
    return results


def compile_folder(folder: Path, arch: int = 90, candidates: bool = False) -> list[dict]:
    """Every kernel of the folder (with `candidates`, every autotuning candidate's functions
    too), compiled in the worker pool that compiles a CUDA graph's kernels
    (runtime/compile_pool.py): the first error found is raised."""
    from ..runtime.compile_pool import run_jobs
    entries = json.loads((folder / "kernels.json").read_text())
    results = run_jobs(compile_kernel, [(folder, entry, arch, candidates) for entry in entries])
    for r in results:
        if isinstance(r, Exception):
            raise r
    return [launch for r in results for launch in r]


def main(argv: list[str]) -> int:
    failed = 0
    for folder in map(Path, argv):
        try:
            for r in compile_folder(folder):
                print(f"ok   {r['function']}  {r['seconds']:.1f}s  cubin {r['cubin_bytes']} B")
        except Exception as e:  # noqa: BLE001 -- report every folder
            failed += 1
            print(f"FAIL {folder}: {type(e).__name__}: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
