"""The kernel autotuning benchmark: kernels that matter for training, at realistic sizes, each
compiled with every candidate config the autotuner offers (mode "max"), tuned, and timed three
ways -- the heuristic config (what LAZYTRITON_AUTOTUNE=off runs), the tuned choice, and eager
PyTorch -- with the bandwidth (or FLOP rate) each reaches beside the machine's own peak,
measured in the same run (a large copy; a large matmul).

    python benchmarks/autotune.py              # the suite: C++ on the CPU, Triton on CUDA
    python benchmarks/autotune.py --quick      # smaller sizes, fewer repeats (a minute or so)
    python benchmarks/autotune.py --only softmax,sum_dim0 --quick
    python benchmarks/autotune.py --interpret --quick   # Triton's interpreter: a CI smoke test

What is timed: one graph's execution (metrics "execute": the generated
wrapper and its kernels, allocation included; tracing excluded), the median over --repeat steps
after warm-up steps; eager: the same computation's median. The ratios (tuned/eager,
tuned/heuristic) are medians of each round's own ratio: the three are timed seconds apart in a
round, so load that comes and goes on a shared machine weighs on all three alike. Tuning runs
at each graph's first execution (the first warm-up step), in a fresh cache dir unless --cache
names one. "configs" counts the candidates timed over the workload's kernels; "best" names each
tuned kernel's choice (a kernel with one candidate is not listed). GB/s counts the bytes an
ideal fused program moves (inputs read once, outputs written once); "of peak" divides by a large
tensor copy's rate.

Writes <out>/autotune-<backend>-<machine>.json and .md and prints their paths; --out defaults
to benchmarks/reports/.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

import lazytriton
from lazytriton import autotune, metrics

_HERE = Path(__file__).resolve().parent


# --- workloads --------------------------------------------------------------------------------

@dataclass
class Setup:
    """One workload on one device: a step to run, and what an ideal program moves/computes."""
    step: Callable[[], Any]
    bytes: int = 0
    flops: int = 0


def _nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _pointwise_chain(x):
    y = torch.sin(x) * 1.5 + 0.25
    y = torch.tanh(torch.exp(y)) - 0.5
    y = torch.sigmoid(torch.relu(y))
    return y * y + 1.0


def pointwise_chain(to, quick):
    x = to(torch.randn(1 << (18 if quick else 24)))
    return Setup(lambda: _pointwise_chain(x), 2 * _nbytes(x))


def softmax(to, quick):
    x = to(torch.randn(*((512, 384) if quick else (4096, 1024))))
    return Setup(lambda: torch.softmax(x, -1), 2 * _nbytes(x))


def _ln_inputs(to, quick):
    rows, cols = (512, 384) if quick else (4096, 1024)
    return to(torch.randn(rows, cols)), to(torch.randn(cols)), to(torch.randn(cols))


def layer_norm(to, quick):
    x, w, b = _ln_inputs(to, quick)
    return Setup(lambda: torch.nn.functional.layer_norm(x, x.shape[-1:], w, b), 2 * _nbytes(x))


def layer_norm_backward(to, quick):
    x, w, b = _ln_inputs(to, quick)
    grad = to(torch.randn(x.shape))
    n = x.shape[-1]
    mean = to(torch.randn(x.shape[0], 1) * 0.1)
    rstd = to(torch.rand(x.shape[0], 1) + 0.5)
    return Setup(lambda: torch.ops.aten.native_layer_norm_backward(
        grad, x, [n], mean, rstd, w, b, [True, True, True]), 3 * _nbytes(x))


def _sum(dim):
    def make(to, quick):
        x = to(torch.randn(*((32, 48, 64) if quick else (128, 256, 512))))
        return Setup(lambda: x.sum(dim), _nbytes(x))
    return make


def cross_entropy(to, quick):
    rows, classes = (512, 200) if quick else (4096, 1000)
    x = to(torch.randn(rows, classes))
    target = to(torch.randint(0, classes, (rows,)))

    def step():
        logits = x.detach().requires_grad_()
        loss = torch.nn.functional.cross_entropy(logits, target)
        (grad,) = torch.autograd.grad(loss, logits)
        return loss, grad
    return Setup(step, 2 * _nbytes(x))


def optimizer_update(to, quick):
    """Adam over a network's worth of parameters, many of them small (biases)."""
    shapes = [(256, 256), (256,)] * (4 if quick else 12) + [(1000, 256), (1000,)]
    params = [to(torch.randn(s)).requires_grad_() for s in shapes]
    for p in params:
        p.grad = to(torch.randn(p.shape))
    opt = torch.optim.Adam(params, lr=1e-3)

    def step():
        opt.step()
        return params
    return Setup(step, 7 * _nbytes(*params))


def matmul_bias_relu(to, quick):
    m, k, n = (256, 512, 512) if quick else (1024, 1024, 1024)
    x, w, b = to(torch.randn(m, k)), to(torch.randn(k, n)), to(torch.randn(n))
    return Setup(lambda: torch.relu(torch.addmm(b, x, w)), flops=2 * m * n * k)


WORKLOADS: dict[str, Callable[[Callable, bool], Setup]] = {
    "pointwise_chain": pointwise_chain,
    "softmax": softmax,
    "layer_norm": layer_norm,
    "layer_norm_backward": layer_norm_backward,
    "sum_dim0": _sum(0), "sum_dim1": _sum(1), "sum_dim2": _sum(2),
    "cross_entropy": cross_entropy,
    "optimizer_update": optimizer_update,
    "matmul_bias_relu": matmul_bias_relu,
}


# --- timing -----------------------------------------------------------------------------------

def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_eager(setup: Setup, repeat: int, device: str, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        setup.step()
    samples = []
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        setup.step()
        _sync(device)
        samples.append(time.perf_counter() - start)
    return samples


def time_lazy(setup: Setup, repeat: int, warmup: int = 2) -> list[float]:
    """Execute times of the step's graph (tracing excluded), after `warmup` steps."""
    samples = []
    for i in range(warmup + repeat):
        outputs = setup.step()  # held: a value nobody holds is not computed
        before = metrics.timing_total("execute")
        lazytriton.mark_step(wait=True)
        if i >= warmup:
            samples.append(metrics.timing_total("execute") - before)
        del outputs
    return samples


def to_lazy(t: torch.Tensor) -> torch.Tensor:
    return t.to("lazy")


def lazy_setup(make, quick) -> Setup:
    torch.manual_seed(0)
    setup = make(to_lazy, quick)
    lazytriton.mark_step(wait=True)  # the inputs are data before anything is timed
    return setup


def copy_peak(device: str, quick: bool) -> float:
    """Bytes per second of a large copy (read + write)."""
    x = torch.randn(1 << (22 if quick else 26), device=device)
    y = torch.empty_like(x)
    samples = []
    for _ in range(3 if quick else 10):
        _sync(device)
        start = time.perf_counter()
        y.copy_(x)
        _sync(device)
        samples.append(time.perf_counter() - start)
    return 2 * _nbytes(x) / min(samples)


def matmul_peak(device: str, quick: bool) -> float:
    n = 1024 if quick else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)
    samples = []
    for _ in range(3 if quick else 5):
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        samples.append(time.perf_counter() - start)
    return 2 * n ** 3 / min(samples)


# --- one workload -----------------------------------------------------------------------------

@dataclass
class Row:
    workload: str
    kernels: int = 0
    tuned_kernels: int = 0
    configs: int = 0
    best: list[str] = field(default_factory=list)
    tried: dict[str, list[str]] = field(default_factory=dict)
    default_ms: float = 0.0
    best_ms: float = 0.0
    eager_ms: float = 0.0
    tuned_vs_eager: float = 0.0  # median over rounds of the round's eager / tuned
    tuned_vs_heuristic: float = 0.0  # median over rounds of the round's heuristic / tuned
    bytes: int = 0
    flops: int = 0
    error: str = ""


def graph_kernels(cache: Path) -> list[tuple[str, dict]]:
    """(graph, kernels.json entry) of every graph in this workload's cache dir; a graph is
    named by the ops in its folder's name."""
    out = []
    for path in sorted((cache / "graphs").glob("*/kernels.json")):
        graph = path.parent.name.split("-")[1]
        out += [(graph, entry) for entry in json.loads(path.read_text())]
    return out


def run_workload(name: str, backend: str, device: str, args, cache: Path, bar) -> Row:
    """Tune the workload's graphs, then time eager, tuned and heuristic in turn, `rounds`
    times (on a shared machine, load comes and goes: each figure sees all of it)."""
    make = WORKLOADS[name]
    row = Row(name)
    torch.manual_seed(0)
    eager = make(lambda t: t.to(device), args.quick)
    row.bytes, row.flops = eager.bytes, eager.flops
    cache = cache / name  # this workload's graphs only
    bar.set_postfix_str(f"{name}: compile and tune")
    lazytriton.init(backend, cache_dir=cache, autotune=args.mode)
    time_lazy(lazy_setup(make, args.quick), 0, warmup=2)  # tunes at the first execution
    _describe_tuning(row, graph_kernels(cache))
    samples: dict[str, list[float]] = {"eager": [], "tuned": [], "heuristic": []}
    per_round: list[dict[str, float]] = []
    for round_ in range(args.rounds):
        bar.set_postfix_str(f"{name}: round {round_ + 1}/{args.rounds}")
        medians = {}
        for system in _round_order(round_):  # whoever goes first after a switch, in turn
            if system == "eager":
                taken = time_eager(eager, args.repeat, device, args.warmup)
            else:
                lazytriton.init(backend, cache_dir=cache, autotune=args.mode)  # new programs
                with autotune.forced(autotune.HEURISTIC if system == "heuristic" else None):
                    taken = time_lazy(lazy_setup(make, args.quick), args.repeat, args.warmup)
            samples[system] += taken
            medians[system] = statistics.median(taken)
        per_round.append(medians)
    row.eager_ms, row.best_ms, row.default_ms = (
        statistics.median(samples[k]) * 1e3 for k in ("eager", "tuned", "heuristic"))
    # the ratios compare figures of one round (seconds apart), then take the median over the
    # rounds: load on a shared machine comes and goes on a scale of seconds
    row.tuned_vs_eager = statistics.median(r["eager"] / r["tuned"] for r in per_round)
    row.tuned_vs_heuristic = statistics.median(r["heuristic"] / r["tuned"] for r in per_round)
    return row


def _round_order(round_: int) -> list[str]:
    systems = ["eager", "tuned", "heuristic"]
    k = round_ % len(systems)
    return systems[k:] + systems[:k]


def _describe_tuning(row: Row, kernels: list[tuple[str, dict]]) -> None:
    row.kernels = len(kernels)
    for graph, k in kernels:
        labels = k.get("candidates") or []
        if len(labels) > 1:
            row.tuned_kernels += 1
            row.configs += len(labels)
            row.tried[f"{graph}/{k['kernel']}"] = labels
            for bucket in k.get("autotune", {}).get("buckets", {}).values():
                row.best.append(f"{graph}/{k['kernel']}: {bucket['chosen']}"
                                + template_versus_extern(bucket))


def template_versus_extern(bucket: dict) -> str:
    """For a Triton matmul template: its best tile's time against its rival's, the extern
    (aten's mm: cuBLAS on a GPU) followed by the epilogue kernel, as the tuner timed them."""
    ms = {label: v for label, v in bucket.get("ms", {}).items() if v is not None}
    if "extern" not in ms or len(ms) < 2:
        return ""
    template = min(v for label, v in ms.items() if label != "extern")
    return f" (template {template:.3f} ms, extern + epilogue {ms['extern']:.3f} ms)"


# --- reports ----------------------------------------------------------------------------------

def machine_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return autotune.device_name("cpu")


def rate(row: Row, peaks: dict) -> tuple[str, str]:
    """The tuned program's GB/s (or GFLOP/s) and its share of the machine's peak."""
    if not row.best_ms:
        return "", ""
    seconds = row.best_ms / 1e3
    if row.flops:
        achieved = row.flops / seconds
        return f"{achieved / 1e9:.1f} GFLOP/s", f"{100 * achieved / peaks['matmul_flops']:.0f}%"
    achieved = row.bytes / seconds
    return f"{achieved / 1e9:.1f} GB/s", f"{100 * achieved / peaks['copy_bytes']:.0f}%"


COLUMNS = ("workload", "kernels", "configs", "best", "heuristic ms", "tuned ms", "eager ms",
           "tuned/eager", "tuned/heuristic", "rate", "of peak")


def table_rows(rows: list[Row], peaks: dict) -> list[list[str]]:
    out = []
    for r in rows:
        if r.error or not r.best_ms:
            out.append([r.workload, "", "", f"error: {r.error or 'nothing ran'}"] + [""] * (len(COLUMNS) - 4))
            continue
        achieved, share = rate(r, peaks)
        out.append([r.workload, f"{r.kernels} ({r.tuned_kernels} tuned)", str(r.configs),
                    "; ".join(r.best) or "-", f"{r.default_ms:.3f}", f"{r.best_ms:.3f}",
                    f"{r.eager_ms:.3f}", f"{r.tuned_vs_eager:.2f}x",
                    f"{r.tuned_vs_heuristic:.2f}x", achieved, share])
    return out


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(COLUMNS), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown(report: dict, rows: list[list[str]]) -> str:
    head = [f"# Kernel autotuning benchmark: {report['backend']} on {report['machine']}", "",
            f"`{report['command']}` — {report['date']}, torch {report['torch']}, "
            f"mode {report['mode']}; each figure the median of {report['rounds']} rounds x "
            f"{report['repeat']} steps (eager, tuned and heuristic take turns, each going first in "
            f"turn); each ratio is the median over the rounds of that round's ratio.", "",
            f"Peaks measured in this run: copy {report['peaks']['copy_bytes'] / 1e9:.1f} GB/s "
            f"(read + write), matmul {report['peaks']['matmul_flops'] / 1e9:.1f} GFLOP/s.", "",
            "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(head + ["| " + " | ".join(c.replace("|", "/") for c in r) + " |"
                             for r in rows]) + "\n"


def write_reports(report: dict, rows: list[list[str]], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", report["machine"]).strip("-").lower()
    stem = f"autotune-{report['backend']}{'-quick' if report['quick'] else ''}-{slug}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    md_path.write_text(markdown(report, rows))
    return json_path, md_path


# --- main -------------------------------------------------------------------------------------

def choose_backend(args) -> tuple[str, str]:
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"
        return "triton", "cpu"
    if torch.cuda.is_available() and "triton" in lazytriton.available_backends():
        return "triton", "cuda"
    return "cpp", "cpu"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--only", help=f"comma-separated workloads of: {', '.join(WORKLOADS)}")
    parser.add_argument("--mode", default="max", choices=autotune.MODES[1:],
                        help="which candidates to try (default: max, every one)")
    parser.add_argument("--repeat", type=int, help="timed steps per round (default 10; 5 quick)")
    parser.add_argument("--warmup", type=int, default=10,
                        help="untimed steps before each round's timed ones (default 10: the "
                        "first steps of a new program run slower)")
    parser.add_argument("--rounds", type=int, help="rounds of eager, tuned, heuristic, which goes "
                        "first in turn (default 5; 1 quick): each time is the median over all "
                        "its rounds' steps, each ratio the median of the rounds' own ratios")
    parser.add_argument("--interpret", action="store_true",
                        help="Triton under its interpreter on the CPU (slow: a smoke test)")
    parser.add_argument("--cache", type=Path, help="cache dir (default: a fresh temp dir)")
    parser.add_argument("--out", type=Path, default=_HERE / "reports", help="report folder")
    args = parser.parse_args(argv)
    args.repeat = args.repeat or (5 if args.quick else 10)
    args.rounds = args.rounds or (1 if args.quick else 5)
    names = args.only.split(",") if args.only else list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workloads {unknown}; choose from {list(WORKLOADS)}")
    args.names = names
    return args


def main(argv=None) -> int:
    from tqdm import tqdm
    args = parse_args(argv)
    backend, device = choose_backend(args)
    cache = args.cache or Path(tempfile.mkdtemp(prefix="lazytriton-autotune-"))
    os.environ.setdefault("LAZYTRITON_AUTOTUNE_BUDGET", "600")  # tune every kernel fully
    print(f"kernel autotuning benchmark: backend {backend} on {device} "
          f"({machine_name(device)}), mode {args.mode}, cache {cache}", flush=True)
    peaks = {"copy_bytes": copy_peak(device, args.quick),
             "matmul_flops": matmul_peak(device, args.quick)}
    rows: list[Row] = []
    bar = tqdm(args.names, desc="workloads", unit="workload", file=sys.stdout,
               disable=not sys.stdout.isatty())  # not a terminal: a line per workload
    for name in bar:
        try:
            rows.append(run_workload(name, backend, device, args, cache, bar))
        except Exception as e:  # noqa: BLE001 -- one broken workload must not lose the others
            rows.append(Row(name, error=f"{type(e).__name__}: {e}"[:200]))
        if bar.disable:
            print(f"  {name}: " + (rows[-1].error or f"tuned {rows[-1].best_ms:.3f} ms, "
                                   f"heuristic {rows[-1].default_ms:.3f} ms, "
                                   f"eager {rows[-1].eager_ms:.3f} ms"), flush=True)
    bar.close()
    table = table_rows(rows, peaks)
    print(text_table(table))
    report = {"backend": backend, "device": device, "machine": machine_name(device),
              "mode": args.mode, "quick": args.quick, "repeat": args.repeat,
              "rounds": args.rounds,
              "command": "python benchmarks/autotune.py " + " ".join(sys.argv[1:] if argv is None
                                                                    else argv),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "torch": torch.__version__, "python": platform.python_version(),
              "peaks": peaks, "rows": [asdict(r) for r in rows]}
    json_path, md_path = write_reports(report, table, args.out)
    print(f"reports: {json_path}\n         {md_path}")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
