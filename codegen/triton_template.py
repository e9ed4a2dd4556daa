"""The matmul template filled in: templates/triton/matmul.py.jinja with its holes (operand
pointers and strides, sizes, the epilogue) printed by the same machinery as every other
Triton kernel, so the epilogue's loads, masks and dtypes follow the same rules.

The epilogue sees the tile as a 2-D block: rows are the `x` range (M), columns the `r` range
(N). The product is a value in registers (`acc`, rounded to the output dtype as eager's mm
rounds it), so a consumer's load of the product's buffer at its own element is that value.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import sympy
import torch

from lazytriton.loopir import ScalarArg, StridedView
from lazytriton.scheduler import Kernel, Member
from lazytriton.sizevars import flat_index
from lazytriton.template_fusion import TemplateKernel, epilogue_index
from .triton import TritonKernel, used_definitions
from .triton_config import Launch, cdiv, matmul_config
from .triton_ops import TritonVar

_BLOCK = {"x": "BLOCK_M", "r": "BLOCK_N"}


@functools.lru_cache(maxsize=None)
def _template(name: str):
    import jinja2
    text = resources.files("lazytriton.templates").joinpath("triton", name).read_text()
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    return env.from_string(text)


class TritonMatmulKernel(TritonKernel):
    """One TemplateKernel as a Triton function: the template around a generated epilogue."""

    kernel: TemplateKernel

    def _fits_int32(self) -> bool:
        t = self.kernel.template
        m, n, k = (self._evaluate_constant(s) for s in t.sizes)
        if None in (m, n, k) or max(m * n, m * k, k * n) >= 2**30:
            return False
        return super()._fits_int32() and all(
            self._evaluate_constant(_extent(buf)) is not None
            and self._evaluate_constant(_extent(buf)) < 2**30
            for buf in [t.output] + t.operands())

    def shape(self, dims) -> str:
        return "[" + ", ".join(_BLOCK[d] if d in dims else "1" for d in self.layout) + "]"

    def generate(self) -> tuple[str, list[Launch], str]:
        t = self.kernel.template
        m, n, k = t.sizes
        self.layout = ["x", "r"]
        x = self._new_range("x", "x", t.rows or [m])
        r = self.current_r = self._new_range("r", "r", [n])
        index, row, _ = epilogue_index(t.rows or [m])
        holes = {"a": self._operand(t.a, "a_tile"), "b": self._operand(t.b, "b_tile")}
        self._epilogue(t, index, [row, r.vars[0]])
        config = matmul_config(self._hint(m), self._hint(n), self._hint(k), self.interpret)
        sizes = {name: self.index(size)[0] for name, size in zip("MNK", t.sizes)}
        ranges = ["xnumel = M", "rnumel = N"] + self._range_lines(x, "rm[:, None]") + \
            self._range_lines(r, "rn[None, :]")
        ranges = used_definitions(ranges, self.body.block.lines)
        source = self._render(holes, sizes, ranges, t.output.dtype)
        return source, [self.launch_for(config)], "tem"

    def launch_for(self, config) -> Launch:
        m, n, _ = self.kernel.template.sizes
        return Launch(self.name, self._matmul_grid(m, n, config), config)

    def _operand(self, box, tile: str) -> dict:
        """An operand's pointer, offset and strides, printed in the kernel's parameters."""
        base = box.base if isinstance(box, StridedView) else box
        offset = box.offset if isinstance(box, StridedView) else base.offset
        printed = {"pointer": self.signature.buffer(base),
                   "offset": "" if offset == 0 else f"{self._print(offset)} + ",
                   "stride0": self._print(box.strides[0]),
                   "stride1": self._print(box.strides[1])}
        # the interpreter holds bfloat16 as raw bits, which its dot would multiply as integers
        printed["operand"] = f"dot_operand({tile})" if box.dtype == torch.bfloat16 else tile
        return printed

    def _print(self, expr) -> str:
        return self.printer.doprint(self.signature.rename_sizes(sympy.sympify(expr)))

    def _epilogue(self, t, index: list, element: list) -> None:
        """The product (plus bias) rounded to the output dtype, stored if read elsewhere, then
        the fused consumers, each computed and stored on the tile."""
        ops = self.ops
        value = self._scaled(TritonVar("acc", torch.float32, frozenset({"x", "r"}), block=True),
                             t.alpha)
        if t.bias is not None:
            bias = t.bias.loader()(ops, _broadcast_index(t.bias, element))
            value = ops.add(value, self._scaled(ops.to_dtype(bias, torch.float32), t.beta))
        out = t.output
        value = ops.to_dtype(value, out.dtype)
        self.locals[out.name] = value
        if t.store_output:
            self.store(out, flat_index(element, out.strides, out.offset), value)
        for m in self.kernel.members:
            buf = m.buffer
            self.store(buf, flat_index(index, buf.strides, buf.offset), m.node.inner(ops, index))

    def _scaled(self, value: TritonVar, factor) -> TritonVar:
        """value * factor: a constant (nothing for 1) or a graph-input scalar parameter."""
        if isinstance(factor, ScalarArg):
            return self.ops.mul(value, self.ops.scalar(factor, torch.float32))
        if factor == 1:
            return value
        return self.ops.mul(value, self.ops.constant(factor, torch.float32))

    def _render(self, holes: dict, sizes: dict, ranges: list[str], dtype) -> str:
        scalars = [p.name for p in self.signature.params() if p.kind == "scalar"]
        precision = ', input_precision="ieee"' if dtype == torch.float32 else ""
        return _template("matmul.py.jinja").render(
            name=self.name, params=", ".join(p.name for p in self.signature.params()),
            decorator_args=f"(do_not_specialize={scalars})" if scalars else "",
            casts=self._param_casts(), widen=".to(tl.int64)" if self.index_dtype ==
            torch.int64 else "", dot_options=precision, epilogue=self.body.block.lines,
            ranges=ranges,
            **sizes, **holes)

    def _matmul_grid(self, m, n, config) -> tuple:
        """Programs: one per output tile, a number for fixed sizes, else an expression of the
        kernel's size parameters (evaluated at each launch)."""
        mn = [sympy.sympify(s) for s in (m, n)]
        if not any(s.free_symbols for s in mn):
            ev = self.sizevars.evaluate
            return (cdiv(ev(mn[0]), config.BLOCK_M) * cdiv(ev(mn[1]), config.BLOCK_N),)
        tiles = [f"(-(-({self.signature.rename_sizes(s)}) // {block}))"
                 for s, block in zip(mn, (config.BLOCK_M, config.BLOCK_N))]
        return (" * ".join(tiles),)


def _broadcast_index(box, index: list) -> list:
    """The bias's index for output element (x, r): its dims align with the output's last dims;
    a size-1 dim broadcasts."""
    own = index[len(index) - box.ndim:]
    return [sympy.Integer(0) if s == 1 else v for s, v in zip(box.sizes, own)]


def _extent(buf):
    return 1 + abs(buf.offset) + sum(abs((s - 1) * st) for s, st in zip(buf.sizes, buf.strides))


# --- the template's rival in autotune mode "max": aten's mm, then the epilogue as a kernel ------

@dataclass(frozen=True)
class ExternRival:
    """How to run a template kernel's computation the old way, with the template's arguments:
    `op` (aten mm/addmm, out= the product) on views of the operand parameters, then the
    epilogue kernel's launches (`epilogue_args`: per epilogue parameter, the template argument
    it is, or -1 for the product). Views are (param, sizes, strides, offset) with Python
    expressions of the template's parameter names."""
    op: str
    operands: tuple  # a, b[, bias]: (param index, sizes, strides, offset)
    scales: tuple  # alpha, beta: a number or ("arg", index)
    output: tuple  # ("arg", index) or ("new", sizes, strides, dtype name)
    epilogue_launches: tuple
    epilogue_signature: object  # its KernelSignature (bind needs its params)
    epilogue_args: tuple


def extern_rival(kernel: TemplateKernel, writer: TritonMatmulKernel, name: str, sizevars,
                 interpret: bool) -> tuple[str | None, ExternRival] | None:
    """(the epilogue kernel's source or None, the rival) for a written template kernel; None if
    its arguments cannot express the rival."""
    t = kernel.template
    params = writer.signature.params()
    before = len(params)
    position = {_param_key(p): i for i, p in enumerate(params)}
    source, launches, signature = None, (), None
    if kernel.members:
        rows = t.rows or [t.output.sizes[0]]
        plain = Kernel(f"{name}_epilogue", [s for s in rows if s != 1],
                       [Member(m.buffer, len(rows)) for m in kernel.members])
        epi = TritonKernel(plain, plain.name, sizevars, interpret)
        source, launches, _ = epi.generate()
        signature = epi.signature
    out_key = ("buffer", t.output.name)
    try:
        args = tuple(-1 if _param_key(p) == out_key and out_key not in position
                     else position[_param_key(p)] for p in (signature.params() if signature
                                                            else []))
        operands = tuple(_view(writer, position, box) for box in t.operands())
        scales = tuple(("arg", position[("scalar", s.name)]) if isinstance(s, ScalarArg)
                       else s for s in (t.alpha, t.beta))
        out = t.output
        output = ("arg", position[out_key]) if out_key in position else \
            ("new", _exprs(writer, out.sizes), _exprs(writer, out.strides),
             str(out.dtype).split(".")[-1])
    except KeyError:  # the epilogue needs something the template does not take
        return None
    if len(writer.signature.params()) != before:
        return None  # printing named a new size: the template's parameters would change
    return source, ExternRival(t.op_name, operands, scales, output, tuple(launches), signature,
                               args)


def _param_key(p) -> tuple:
    if p.kind == "buffer":
        return ("buffer", p.value.name)
    if p.kind == "size":
        return ("size", str(p.value))
    if p.kind == "scalar":
        return ("scalar", p.value.name)
    return (p.kind,)


def _view(writer, position: dict, box) -> tuple:
    base = box.base if isinstance(box, StridedView) else box
    offset = box.offset if isinstance(box, StridedView) else base.offset
    return (position[("buffer", base.name)], _exprs(writer, box.sizes),
            _exprs(writer, box.strides), _exprs(writer, [offset])[0])


def _exprs(writer, exprs) -> tuple:
    return tuple(str(writer.signature.rename_sizes(sympy.sympify(e))) for e in exprs)
