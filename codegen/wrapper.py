"""The generated Python wrapper of a compiled graph: binds sizes from the inputs, allocates
buffers (re-using freed ones of the same size), calls extern aten kernels and the generated
kernels, and returns the outputs. Written to the cache dir next to the kernels, so a person can
read exactly what runs.

It knows neither the device nor how a kernel is launched: buffers live on `device` (a name in
its namespace), and each kernel is called as `k_<name>(...)` with tensors, sizes and scalars in
the order of its KernelSignature; the backend's launcher binds those names."""
from __future__ import annotations

from typing import Any

import sympy
import torch

from lazytriton.ir import LAZY_DEVICE
from lazytriton.loopir import (Buffer, ComputedBuffer, ExternBuffer, ExternKernel, InputBuffer,
                              ScalarArg, StridedView)
from lazytriton.lowering import Lowering
from lazytriton.scheduler import Kernel, Schedule, extern_reads, kernel_reads
from .common import PythonPrinter
from .signature import BOUNDS, BUFFER, ERR, EXTENT, SCALAR, SIZE, GeneratedKernel, Param

_ERRORS = {1: (IndexError, "index out of range in self"),
           2: (ZeroDivisionError, "ZeroDivisionError: integer division or modulo by zero")}


class Extern:
    """Calls one aten op with the wrapper's tensors put into its recorded arguments."""

    def __init__(self, kernel: ExternKernel, device: torch.device):
        self.op = kernel.op
        self.device = device
        self.slots: list[Any] = []  # TensorBox / ScalarArg in argument order
        self.template = [(name, self._template(v)) for name, v in kernel.args]
        # made once: constant arguments, those that are one value each, and the rest
        self.constants: dict[str, Any] = {}
        self.direct: list[tuple[str, int]] = []
        self.nested: list[tuple[str, Any]] = []
        for name, t in self.template:
            if type(t) is _Slot and name != "generator":
                self.direct.append((name, t.index))
            elif _varies(t):
                self.nested.append((name, t))
            else:
                self.constants[name] = t

    def _template(self, value):
        if isinstance(value, (list, tuple)):
            return [self._template(v) for v in value]
        if isinstance(value, (Buffer, StridedView, ScalarArg)):
            self.slots.append(value)
            return _Slot(len(self.slots) - 1)
        return value

    def __call__(self, *values) -> tuple:
        """The op's results as one flat tuple (ops return a tensor, a tuple or lists). It runs
        for every extern of every step: only what varies is filled in."""
        kwargs = self.constants.copy()
        for name, index in self.direct:
            kwargs[name] = values[index]
        for name, t in self.nested:
            kwargs[name] = self._fill(t, values, name)
        result = self.op(**kwargs)
        return (result,) if type(result) is torch.Tensor else tuple(_flat_results(result))

    def _fill(self, t, values, name):
        if isinstance(t, _Slot):
            value = values[t.index]
            return torch.Generator(self.device).manual_seed(int(value)) if name == "generator" \
                else value
        if isinstance(t, list):
            return [self._fill(x, values, name) for x in t]
        return self.device if t is LAZY_DEVICE else t


def _varies(t) -> bool:
    """Whether an argument's template takes a value per call (a slot, or the device)."""
    if isinstance(t, list):
        return any(_varies(x) for x in t)
    return type(t) is _Slot or t is LAZY_DEVICE


def _flat_results(result) -> list:
    if isinstance(result, (list, tuple)):
        return [x for r in result for x in _flat_results(r)]
    return [result]


class _Slot:
    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


def fix_layout(t: torch.Tensor, sizes, strides) -> torch.Tensor:
    """An extern's output in the layout the kernels index it by, owning its buffer from offset
    0 (an op may return a view into its input: unsafe_split's second piece)."""
    if (tuple(t.stride()) == tuple(strides) and t.storage_offset() == 0 and not t._is_view()) \
            or t.numel() == 0:
        return t  # a view (of an input, of planned memory) is copied: outputs own their memory
    return torch.empty_strided(sizes, strides, dtype=t.dtype, device=t.device).copy_(t)


def extent(t: torch.Tensor) -> int:
    """Elements a kernel may address from t's data pointer: its view's span."""
    if t.numel() == 0:
        return 0
    return 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride()))


def owned(t: torch.Tensor) -> torch.Tensor:
    """A donated input's buffer, or a copy when another tensor shares its storage (a view the
    graph's IR cannot see, e.g. an eager fallback's result aliasing its input)."""
    if sole_user(t):
        return t
    return t.clone()


def sole_user(t: torch.Tensor) -> bool:
    # the count includes the Python storage object untyped_storage() makes
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata) <= 2


class BoundsError(IndexError):
    """A bounds-checked kernel (LAZYTRITON_CHECK=bounds) addressed outside a buffer."""


def check_bounds(bounds: torch.Tensor, kernel: str, params: list[tuple[str, str]],
                 source: str) -> None:
    param, index, size = (int(v) for v in bounds[:3])
    if param == 0:
        return
    name, buffer = params[param - 1]
    bounds[0] = bounds[1] = bounds[2] = 0
    raise BoundsError(f"lazytriton bounds check: kernel {kernel} ({source}) accessed buffer "
                      f"{buffer} (parameter {name}) at index {index}, outside its extent "
                      f"[0, {size})")


def raise_kernel_error(code: int, sites: list = (), folder: str = ".") -> None:
    """Raise what the error flag says, naming the kernels that can have set it."""
    kind, message = _ERRORS.get(code, (RuntimeError, f"kernel error {code}"))
    named = "; ".join(f"kernel {name} ({ops}) in {folder}/{file}" for name, ops, file in sites)
    if named:
        message += f" (set by {named})" if len(sites) == 1 else f" (set by one of: {named})"
    raise kind(message)


class WrapperWriter:
    def __init__(self, lowering: Lowering, sched: Schedule, kernels: list[GeneratedKernel],
                 device: torch.device, folder: str = ".", donated: frozenset = frozenset()):
        self.lowering = lowering
        self.donated = donated  # input indices whose buffers outputs are written into
        self.folder = folder  # where the kernels' sources are, for error messages
        self.sched = sched
        self.kernels = {k.kernel.name: k for k in kernels}
        self.device = device
        self.printer = PythonPrinter()
        self.lines: list[str] = []
        self.names: dict[int, str] = {}  # id(buffer) -> variable holding it
        self.namespace: dict[str, Any] = {"torch": torch, "device": device,
                                          "fix_layout": fix_layout, "extent": extent,
                                          "check_bounds": check_bounds, "owned": owned,
                                          "raise_kernel_error": raise_kernel_error,
                                          "folder": folder}
        self._pool: dict[tuple, list[str]] = {}

    def expr(self, e) -> str:
        return self.printer.doprint(sympy.sympify(e))

    def shape(self, sizes) -> str:
        return "(" + "".join(self.expr(s) + ", " for s in sizes) + ")"

    def generate(self) -> str:
        self._bind_inputs()
        last_use = self._last_uses()
        for i, step in enumerate(self.sched.steps):
            if isinstance(step, ExternKernel):
                self._extern(step, i)
            else:
                self._kernel(step)
            self._release(i, last_use)
        self._finish()
        if any(k.signature.uses_err for k in self.kernels.values()):
            self.lines.append("if err[0] != 0:")
            sites = self._error_sites()
            self.lines.append(f"    raise_kernel_error(int(err[0]), {sites!r}, folder)")
        outs = ", ".join(self._tensor(o) for o in self.sched.outputs)
        self.lines.append(f"return [{outs}]")
        return "\n".join(self._header() + ["    " + line for line in self.lines]) + "\n"

    def _error_sites(self) -> list[tuple[str, str, str]]:
        """The kernels that can set the error flag, the ops each computes and its source file,
        for the message: a user learns which op read a bad index (a class label, an embedding
        id). The folder is the namespace's: a program that serves other sizes is one source."""
        sites = []
        for step in self.sched.steps:
            emitted = None if isinstance(step, ExternKernel) else self.kernels.get(step.name)
            if emitted is not None and emitted.signature.uses_err:
                ops = ", ".join(sorted(set(step.origins))) or "copy"
                sites.append((emitted.name, ops, emitted.source_file))
        return sites

    def _header(self) -> list[str]:
        header = ["def call(inputs):"]
        if any(k.signature.uses_err for k in self.kernels.values()):
            header.append("    err = torch.zeros(1, dtype=torch.int32, device=device)")
        if any(k.signature.checked for k in self.kernels.values()):
            header.append("    bounds = torch.zeros(3, dtype=torch.int64, device=device)")
        return header

    def _finish(self) -> None:
        """After the last step (a subclass flushes what it batched)."""

    # --- inputs and sizes -------------------------------------------------------------------
    def _bind_inputs(self) -> None:
        for k, lowered in enumerate(self.lowering.inputs):
            name = lowered.name
            self.lines.append(f"{name} = owned(inputs[{k}])" if k in self.donated
                              else f"{name} = inputs[{k}]")
            if isinstance(lowered, InputBuffer):
                self.names[id(lowered)] = name
        for const in self.lowering.constants:
            self.namespace[const.name] = const.tensor
            self.names[id(const)] = const.name
        for sym, (k, dim) in self.lowering.sizevars.origins.items():
            self.lines.append(f"{sym} = {self.lowering.inputs[k].name}.size({dim})")

    def _tensor(self, box) -> str:
        if isinstance(box, StridedView):
            return (f"{self.names[id(box.base)]}.as_strided({self.shape(box.sizes)}, "
                    f"{self.shape(box.strides)}, {self.expr(box.offset)})")
        return self.names[id(box)]

    # --- steps ------------------------------------------------------------------------------
    def _allocate(self, buf: ComputedBuffer) -> str:
        name = buf.name
        if getattr(buf, "donor", None) is not None:  # (a template's product has none)
            self.names[id(buf)] = self.names[id(buf.donor)]
            self.lines.append(f"# {name} is written into {self.names[id(buf)]}'s buffer (donated)")
            return self.names[id(buf)]
        pooled = self._pool.get(self._pool_key(buf))
        if pooled:
            old = pooled.pop()
            self.lines.append(f"{name} = {old}.as_strided({self.shape(buf.sizes)}, "
                              f"{self.shape(buf.strides)})  # re-uses {old}'s memory")
        else:
            self.lines.append(f"{name} = torch.empty_strided({self.shape(buf.sizes)}, "
                              f"{self.shape(buf.strides)}, dtype={buf.dtype}, device=device)")
        self.names[id(buf)] = name
        return name

    def _kernel(self, kernel: Kernel) -> None:
        template = getattr(kernel, "template", None)
        if template is not None and template.store_output:  # a matmul template's product
            self._allocate(template.output)
        for m in kernel.members:
            if not m.local:
                self._allocate(m.buffer)
        emitted = self.kernels[kernel.name]
        fn_name = f"k_{emitted.name}"
        self.namespace[fn_name] = None  # bound by the backend's launcher
        args = [self._argument(p) for p in emitted.signature.params()]
        fused = ", ".join(sorted(set(kernel.origins))) or "copy"
        self.lines.append(f"{fn_name}({', '.join(args)})  # {fused}")
        if emitted.signature.checked:
            params = [(param, buf.name) for param, buf in emitted.signature.buffers.values()]
            source = f"{self.folder}/{emitted.source_file}"
            self.lines.append(f"check_bounds(bounds, {emitted.name!r}, {params!r}, {source!r})")

    def _argument(self, param: Param) -> str:
        """What the wrapper passes for one kernel parameter."""
        if param.kind == BUFFER:
            return self.names[id(param.value)]
        if param.kind == SIZE:
            return self.expr(param.value)
        if param.kind == SCALAR:
            return f"inputs[{param.value.input_index}]"
        if param.kind == EXTENT:
            return f"extent({self.names[id(param.value)]})"
        return {ERR: "err", BOUNDS: "bounds"}[param.kind]

    def _extern(self, step: ExternKernel, i: int) -> None:
        fn_name = f"extern{i}"
        call = Extern(step, self.device)
        self.namespace[fn_name] = call
        values = []
        for slot in call.slots:
            values.append(f"inputs[{slot.input_index}]" if isinstance(slot, ScalarArg)
                          else self._tensor(slot))
        outs = [o for o in step.outputs]
        names = [o.name if o is not None else "_" for o in outs]
        target = "(" + ", ".join(names) + ",)"
        op_name = getattr(step.op, "__name__", str(step.op))
        self.lines.append(f"{target} = {fn_name}({', '.join(values)})  # {op_name}")
        for o in outs:
            if o is None:
                continue
            self.lines.append(f"{o.name} = fix_layout({o.name}, {self.shape(o.sizes)}, "
                              f"{self.shape(o.strides)})")
            self.names[id(o)] = o.name

    # --- buffer lifetimes -------------------------------------------------------------------
    def _last_uses(self) -> dict[int, list]:
        last: dict[int, tuple[int, Any]] = {}
        for i, step in enumerate(self.sched.steps):
            for buf in _step_reads(step):
                last[id(buf)] = (i, buf)
        keep = {id(o) for o in self.sched.outputs} | {id(getattr(o, "base", None))
                                                     for o in self.sched.outputs}
        by_step: dict[int, list] = {}
        for key, (i, buf) in last.items():
            if key not in keep and isinstance(buf, (ComputedBuffer, ExternBuffer)):
                by_step.setdefault(i, []).append(buf)
        return by_step

    def _release(self, i: int, last_use: dict[int, list]) -> None:
        for buf in last_use.get(i, []):
            name = self.names.get(id(buf))
            if name is None:
                continue
            if isinstance(buf, ComputedBuffer):
                self._pool.setdefault(self._pool_key(buf), []).append(name)

    def _pool_key(self, buf: ComputedBuffer) -> tuple:
        """Freed buffers of the same dtype and element count can hold a new one."""
        return (buf.dtype, self.expr(_numel(buf.sizes)))


def _numel(sizes):
    out = sympy.Integer(1)
    for s in sizes:
        out = out * s
    return out


def _step_reads(step) -> list:
    return kernel_reads(step) if isinstance(step, Kernel) else extern_reads(step)
