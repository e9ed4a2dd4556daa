"""The Triton rows of the kernel autotuning benchmark (benchmarks/autotune.py calls `triton_rows`).

Each row is one workload run on the "lazy" device with backend "triton" in autotune mode "max":
the autotuner times every candidate of every kernel at the first step (CUDA:
triton.testing.do_bench, median; under the interpreter: median of repeated calls) and writes
the times into the graph's kernels.json, which this module reads back. A row reports, summed
over the workload's tuned kernels: the candidates tried, the chosen ones, the time of the
default (what mode "off" runs: the heuristic config, and for a matmul the extern mm plus a
separate epilogue kernel) and of the best, eager PyTorch's time for the same ops, and the
achieved rate (TFLOP/s or GB/s) of the best.

matmul+bias+ReLU: the template (tl.dot tiles with the bias and ReLU in the epilogue) against
the extern (aten's mm: cuBLAS) followed by the epilogue as its own kernel; both columns are
shown, and the faster is what mode "max" runs from then on.

    python benchmarks/autotune_triton.py [--quick]      # on CUDA
    python benchmarks/autotune_triton.py --interpret    # Triton's interpreter on the CPU: a
                                                        # smoke test of the same path (tiny sizes;
                                                        # its times say nothing about a GPU)
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

import lazytriton  # installed (pip install -e .): lazytriton.codegen maps to codegen/

# the rows: name -> (function, input shapes at full / --quick size, what its rate counts)
MATMUL = "matmul+bias+ReLU"


def linear_relu(x, w, b):
    return F.relu(F.linear(x, w, b))


def softmax(x):
    return torch.softmax(x, dim=-1)


def pointwise_chain(x):
    y = torch.sigmoid(x * 1.5 + 0.25)
    return torch.tanh(y * y - 0.5) + 1.0


def column_sum(x):
    return x.sum(0)


def row_sum(x):
    return x.sum(1)


def _shapes(m: int, k: int, n: int) -> list[tuple]:
    return [(m, k), (n, k), (n,)]


WORKLOADS = {  # name: (fn, shapes on CUDA, --quick shapes, --interpret shapes, rate)
    MATMUL: (linear_relu, _shapes(8192, 4096, 4096), _shapes(2048, 1024, 1024),
             _shapes(48, 40, 24), "flops"),
    "softmax": (softmax, [(16384, 1024)], [(4096, 1024)], [(6, 40)], "bytes"),
    "pointwise chain": (pointwise_chain, [(1 << 26,)], [(1 << 22,)], [(300,)], "bytes"),
    "sum dim 0": (column_sum, [(8192, 4096)], [(2048, 1024)], [(9, 5)], "bytes"),
    "sum dim 1": (row_sum, [(8192, 4096)], [(2048, 1024)], [(9, 5)], "bytes"),
}


def triton_rows(quick: bool = False, interpret: bool = False,
                names: list[str] | None = None,
                progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per workload (see the module docstring); needs CUDA unless `interpret`."""
    if not interpret and not torch.cuda.is_available():
        raise RuntimeError("the Triton rows need CUDA (or --interpret for the CPU smoke run)")
    device = "cpu" if interpret else "cuda"
    rows = []
    for name in names or list(WORKLOADS):
        if progress is not None:
            progress(name)
        fn, full, small, tiny, rate = WORKLOADS[name]
        shapes = tiny if interpret else small if quick else full
        rows.append(_row(name, fn, shapes, rate, device))
    return rows


def _row(name: str, fn, shapes: list[tuple], rate: str, device: str) -> dict:
    torch.manual_seed(0)
    inputs = [torch.randn(s, device=device) for s in shapes]
    want = fn(*inputs)
    with tempfile.TemporaryDirectory(prefix="lazytriton-autotune-") as cache:
        lazytriton.init("triton", cache_dir=cache, device=device, autotune="max")
        got = fn(*[t.to("lazy") for t in inputs]).cpu()
        tuned = _tuned_kernels(Path(cache))
        lazytriton.init("triton", cache_dir=cache, device=device, autotune=None)
    torch.testing.assert_close(got, want.cpu(), rtol=1e-3, atol=1e-3)
    eager_s = _time(lambda: fn(*inputs), device)
    default_s = sum(k["default_s"] for k in tuned)
    best_s = sum(k["best_s"] for k in tuned)
    work = _flops(shapes) if rate == "flops" else _bytes(inputs, want)
    row = {"workload": name, "backend": "triton", "device": _device_name(device),
           "shapes": [list(s) for s in shapes], "kernels": len(tuned),
           "configs_tried": sum(len(k["ms"]) for k in tuned),
           "best": {k["kernel"]: k["chosen"] for k in tuned},
           "default_ms": default_s * 1e3, "best_ms": best_s * 1e3, "eager_ms": eager_s * 1e3,
           "unit": "TFLOP/s" if rate == "flops" else "GB/s",
           "rate": work / best_s / (1e12 if rate == "flops" else 1e9) if best_s else None}
    if name == MATMUL:
        (mm,) = [k for k in tuned if k["kernel"].startswith("triton_tem_")]
        template = {label: ms for label, ms in mm["ms"].items() if label != "extern"}
        row["template_ms"] = min(template.values())
        row["extern_ms"] = mm["ms"].get("extern")
    return row


def _tuned_kernels(cache: Path) -> list[dict]:
    """Per tuned kernel of the graphs in `cache`: its candidates' times, the default's and the
    best's (read from kernels.json, where the autotuner wrote them)."""
    found = []
    for path in sorted(cache.glob("graphs/*/kernels.json")):
        for entry in json.loads(path.read_text()):
            for choice in entry.get("autotune", {}).get("buckets", {}).values():
                ms = {k: v for k, v in choice.get("ms", {}).items() if v is not None}
                if not ms:
                    continue
                default = entry["candidates"][0]["label"]
                if "extern" in ms:  # a matmul's default is what mode "off" runs: the extern
                    default = "extern"
                found.append({"kernel": entry["kernel"], "chosen": choice["chosen"], "ms": ms,
                              "default_s": ms.get(default, min(ms.values())) / 1e3,
                              "best_s": ms[choice["chosen"]] / 1e3})
    return found


def _time(fn: Callable[[], object], device: str) -> float:
    """Seconds per call: do_bench's median on CUDA, else the median of repeated calls."""
    if device == "cuda":
        from triton.testing import do_bench
        return do_bench(fn, return_mode="median") / 1e3
    fn()
    samples = []
    for _ in range(20):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _flops(shapes: list[tuple]) -> float:
    (m, k), (n, _), _ = shapes
    return 2.0 * m * n * k


def _bytes(inputs: list[torch.Tensor], output: torch.Tensor) -> float:
    """What a perfect fused kernel must move: read the inputs once, write the output once."""
    return float(sum(t.numel() * t.element_size() for t in inputs)
                 + output.numel() * output.element_size())


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "CPU (Triton interpreter)"


def format_rows(rows: list[dict]) -> str:
    head = f"{'workload':18} {'kernels':>7} {'tried':>5} {'default ms':>11} {'best ms':>9} " \
           f"{'eager ms':>9} {'rate':>14}  template/extern ms"
    lines = [head]
    for r in rows:
        rate = f"{r['rate']:.3g} {r['unit']}" if r["rate"] is not None else "-"
        extra = f"{r['template_ms']:.3f} / {r['extern_ms']:.3f}" if "template_ms" in r and \
            r.get("extern_ms") is not None else ""
        lines.append(f"{r['workload']:18} {r['kernels']:7d} {r['configs_tried']:5d} "
                     f"{r['default_ms']:11.3f} {r['best_ms']:9.3f} {r['eager_ms']:9.3f} "
                     f"{rate:>14}  {extra}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--interpret", action="store_true",
                        help="Triton's interpreter on the CPU (a smoke test, tiny sizes)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = triton_rows(quick=args.quick, interpret=args.interpret,
                       progress=lambda name: print(f"... {name}", flush=True))
    print(format_rows(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
        print(f"rows written to {args.json}")


if __name__ == "__main__":
    main()
