"""Which forms of a generated Triton kernel the autotuner may choose from (lazytriton/autotune.py
times them at the kernel's first call; runtime/triton_backend.py binds them).

- A reduction (kinds per, red): row configs (XBLOCK rows per program, RBLOCK, warps); a
  persistent one (rows held whole) also as a looped function over RBLOCK chunks, its own
  function `<name>_looped` in the same module.
- A pointwise kernel (mode "max" only): XBLOCK and warps.
- A matmul template: its tiles (BLOCK_M/N/K, warps, stages) and, in mode "max" unless
  LAZYTRITON_MM_TEMPLATE=1 forces the template, the extern it replaced (aten's mm: cuBLAS on a
  GPU) followed by its epilogue as a separate kernel `<name>_epilogue`.
- Scatters: none (two launches of fixed shape).

Mode "off": nothing (the heuristic, and no extra functions). "default": reductions and
templates, whose heuristic is the weakest. Under the interpreter every kernel has at most three
candidates, so tuning in tests stays short. The heuristic is always candidate 0: for a template
with its rival, the rival (mode "off" has no template at all).
"""
from __future__ import annotations

from dataclasses import dataclass

from lazytriton import logs
from lazytriton.template_fusion import TemplateKernel, forced
from .triton_config import (Launch, label, matmul_candidates, pointwise_candidates,
                            row_candidates)


@dataclass(frozen=True)
class TritonCandidate:
    label: str
    config: dict  # JSON-able: what kernels.json shows for the choice
    launches: tuple[Launch, ...]
    rival: object = None  # a template's ExternRival: aten's mm, then the epilogue kernel


def variants(kernel, writer, launches: list[Launch], sizevars, interpret: bool,
             mode: str) -> tuple[list[str], list[TritonCandidate]]:
    """(extra functions for the kernel's module, candidates); no candidates: not tuned."""
    if mode == "off":
        return [], []
    if isinstance(kernel, TemplateKernel):
        return _template_variants(kernel, writer, launches, sizevars, interpret, mode)
    plan = writer.plan
    if plan is None or len(launches) != 1:
        return [], []
    if plan.kind in ("per", "red"):
        return _row_variants(kernel, writer, plan, sizevars, interpret, mode)
    if plan.kind != "poi" or mode != "max" or plan.grid_numel is None:
        return [], []
    if plan.rnumel == 0:  # flat
        return [], [_candidate(writer.launch_for(c)) for c in
                    pointwise_candidates(plan.xnumel, interpret)]
    return [], [_candidate(writer.launch_for(c)) for c in  # rows of pointwise members
                row_candidates(plan.xnumel, plan.rnumel, plan.persistent, interpret)]


def _candidate(launch: Launch, prefix: str = "", **extra) -> TritonCandidate:
    config = dict(launch.config.as_dict(), **extra)
    return TritonCandidate(label(launch.config, prefix), config, (launch,))


# mode "default" on a GPU: this many configs of the kernel's own plan, and of the looped form
DEFAULT_LIMIT = (4, 2)


def _row_variants(kernel, writer, plan, sizevars, interpret, mode):
    kind = "persistent" if plan.persistent else "looped"
    own, looped_count = DEFAULT_LIMIT if mode == "default" else (None, 4)
    found = [_candidate(writer.launch_for(c), reduction=kind) for c in
             row_candidates(plan.xnumel, plan.rnumel, plan.persistent, interpret)[:own]]
    if not plan.persistent:
        return [], found
    looped = type(writer)(kernel, f"{writer.name}_looped", sizevars, interpret)
    looped.looped_rows = True
    try:
        source, _, _ = looped.generate()
    except Exception as e:  # noqa: BLE001 -- a variant that cannot be written is not offered
        _strict()
        logs.emit("autotune", f"{writer.name}: no looped variant ({type(e).__name__}: {e})")
        return [], found
    if _params(looped.signature) != _params(writer.signature):
        return [], found  # (parameters named in another order: not interchangeable)
    found += [_candidate(looped.launch_for(c), "looped:", reduction="looped") for c in
              row_candidates(plan.xnumel, plan.rnumel, False, interpret)[
                  :1 if interpret else looped_count]]
    return [source], found


def _template_variants(kernel, writer, launches, sizevars, interpret, mode):
    from .triton_template import extern_rival  # (imports the Triton kernel writer)
    m, n, k = (writer._hint(s) for s in kernel.template.sizes)
    found = [_candidate(writer.launch_for(c), template="matmul")
             for c in matmul_candidates(m, n, k, interpret)]
    if mode != "max" or forced():
        return [], found
    try:
        rival = extern_rival(kernel, writer, writer.name, sizevars, interpret)
    except Exception as e:  # noqa: BLE001 -- the template then competes with itself only
        _strict()
        logs.emit("autotune", f"{writer.name}: no extern rival ({type(e).__name__}: {e})")
        rival = None
    if rival is None:
        return [], found
    source, spec = rival
    extern = TritonCandidate("extern", {"extern": kernel.template.op_name,
                                        "epilogue": bool(kernel.members)}, (), spec)
    # first: the heuristic, what mode "off" runs (and a graph whose tuning budget is spent)
    return ([source] if source else []), [extern] + found


def _params(signature) -> list[tuple]:
    return [(p.kind, p.name, getattr(p.value, "name", str(p.value))) for p in signature.params()]


def _strict() -> None:
    """LAZYTRITON_STRICT=1 (tests): a variant that cannot be written is a bug to see."""
    if logs.strict():
        raise
