"""PyTorch's OpInfo database as a differential suite, on the backend under test.

For every op in `torch.testing._internal.common_methods_invocations.op_db` that runs on the CPU
in float32 (and, for a few ops, float64, bfloat16 and int64 too), the first N_SAMPLES sample
inputs run eagerly on the CPU and on the lazy device; all outputs and every input the op
mutates must match (values, shapes, dtypes). One graph per test: all samples of an op are
traced, then read with one `to_cpu`, so the C++ backend compiles once per op.

Anything that does not pass is in EXPECTED_FAILURES with a reason, per backend, as a strict
xfail: a fixed op turns the test red until its entry is removed, and any new mismatch fails.
SKIPS are ops that cannot run here at all; VALUES_UNSPECIFIED are ops whose values eager does not
define (random draws, uninitialized memory): their shapes and dtypes are still compared.
A C++ graph that silently ran on the reference executor fails the test (FallbackGraph).
"""
from __future__ import annotations

import contextlib
import math

import pytest
import torch
from torch.testing._internal.common_methods_invocations import op_db

import lazytriton
from lazytriton import metrics


pytestmark = [pytest.mark.differential,  # runs once per backend (conftest.py)
              pytest.mark.filterwarnings("ignore::UserWarning")]  # eager's deprecation notes

N_SAMPLES = 2  # per op and dtype: the whole suite in a few minutes on 2 cores (cpp compiles)
EXTRA_DTYPES = (torch.float64, torch.bfloat16, torch.int64)
# ops also run in EXTRA_DTYPES (where the op supports the dtype on the CPU)
EXTRA_DTYPE_OPS = ("add", "sub", "mul", "div.no_rounding_mode", "remainder", "abs", "exp",
                   "sum", "mean", "amax", "argmax", "cumsum", "where", "clamp", "cat",
                   "index_select", "gather", "matmul", "softmax", "sort")
# per dtype: (rtol, atol); others (ints, bool) compare exactly
TOLERANCES = {torch.float32: (1.3e-6, 1e-5), torch.float64: (1e-7, 1e-7),
              torch.bfloat16: (1.6e-2, 1e-5), torch.float16: (1e-3, 1e-5),
              torch.complex64: (1.3e-6, 1e-5), torch.complex128: (1e-7, 1e-7)}

ALL = "*"  # every backend
SPARSE = "sparse layouts: the lazy device holds dense (strided) tensors only"

SKIPS = {
    "jiterator_unary": "jiterator compiles CUDA source at run time: CUDA only",
    "jiterator_binary": "jiterator compiles CUDA source at run time: CUDA only",
    "jiterator_4inputs_with_extra_args": "jiterator compiles CUDA source at run time: CUDA only",
    "jiterator_binary_return_by_ref": "jiterator compiles CUDA source at run time: CUDA only",
    "jiterator_2inputs_2outputs": "jiterator compiles CUDA source at run time: CUDA only",
}

_RANDOM = "random values: lazytriton's counter-based generator draws other numbers than eager's"
_UNINITIALIZED = "uninitialized memory: eager leaves the values undefined"
VALUES_UNSPECIFIED = {
    **{name: _RANDOM for name in (
        "bernoulli", "cauchy", "exponential", "geometric", "log_normal", "multinomial",
        "normal", "normal.in_place", "normal.number_mean", "uniform", "rand_like",
        "randn_like", "randint_like", "randint", "randn", "nn.functional.dropout",
        "nn.functional.dropout2d", "nn.functional.dropout3d", "nn.functional.alpha_dropout",
        "nn.functional.feature_alpha_dropout.with_train", "nn.functional.rrelu",
        "nn.functional.fractional_max_pool2d", "nn.functional.fractional_max_pool3d",
        "nn.functional.multi_head_attention_forward",  # its second sample trains with dropout
        "nn.functional.scaled_dot_product_attention",  # dropout_p > 0 in its samples
    )},
    **{name: _UNINITIALIZED for name in (
        "empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided",
        "empty_permuted")},
}

# name -> {backend or ALL: reason}
EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "to_sparse": {ALL: SPARSE},
    "sparse.sampled_addmm": {ALL: SPARSE},
    "sparse.mm.reduce": {ALL: SPARSE},
}

# arguments that eager wants on the CPU whatever the device (op -> positional index)
CPU_ARGS = {"tensor_split": 0}


# --- collecting the cases -------------------------------------------------------------------

def _name(op) -> str:
    return op.name + (f".{op.variant_test_name}" if op.variant_test_name else "")


def _cases() -> list:
    cases = []
    for op in op_db:
        supported = op.supported_dtypes("cpu")
        if torch.float32 not in supported:
            continue
        dtypes = [torch.float32]
        if _name(op) in EXTRA_DTYPE_OPS:
            dtypes += [dt for dt in EXTRA_DTYPES if dt in supported]
        cases += [_param(op, dt) for dt in dtypes]
    return cases


def _param(op, dtype):
    name = _name(op)
    marks = []
    if name in SKIPS:
        marks.append(pytest.mark.skip(reason=SKIPS[name]))
    return pytest.param(op, dtype, id=f"{name}-{str(dtype).removeprefix('torch.')}", marks=marks)


# --- running a sample -------------------------------------------------------------------------

def _map(x, fn):
    """fn applied to every tensor in a sample's nested arguments."""
    if isinstance(x, torch.Tensor):
        return fn(x)
    if type(x) in (list, tuple):
        return type(x)(_map(v, fn) for v in x)
    if isinstance(x, dict):
        return {k: _map(v, fn) for k, v in x.items()}
    return x


def _on_lazy(x):
    """A sample's argument for the lazy run: tensors moved, "cpu" devices made "lazy"."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone().to("lazy")
    if type(x) in (list, tuple):
        return type(x)(_on_lazy(v) for v in x)
    if isinstance(x, dict):
        return {k: _on_lazy(v) for k, v in x.items()}
    if isinstance(x, (str, torch.device)) and str(x) == "cpu":
        return "lazy"
    return x


def _arguments(name: str, sample, lazy: bool) -> tuple:
    if not lazy:
        return _map((sample.input, sample.args, sample.kwargs), lambda t: t.detach().clone())
    args = [_on_lazy(a) if i != CPU_ARGS.get(name) else a for i, a in enumerate(sample.args)]
    return _on_lazy(sample.input), tuple(args), _on_lazy(sample.kwargs)


def _flat(x) -> list:
    if isinstance(x, (list, tuple)):
        return [y for v in x for y in _flat(v)]
    if isinstance(x, dict):
        return [y for v in x.values() for y in _flat(v)]
    return [x]


@contextlib.contextmanager
def _lazy_mark_step():
    """PyTorch's wrapper_set_seed (random ops' OpInfos) calls torch._lazy.mark_step() for
    outputs on a "lazy" device, meaning Lazy Tensor Core; lazytriton's mark_step is that API."""
    missing = object()
    previous = vars(torch).get("_lazy", missing)
    torch._lazy = lazytriton
    try:
        yield
    finally:
        if previous is missing:
            del torch._lazy
        else:
            torch._lazy = previous


def _run(op, name: str, samples: list, lazy: bool) -> list:
    """Per sample: (outputs, arguments after the call) as flat lists."""
    results = []
    with torch.no_grad(), _lazy_mark_step():
        for sample in samples:
            inp, args, kwargs = _arguments(name, sample, lazy)
            torch.manual_seed(1)
            out = op(inp, *args, **kwargs)
            moved = [a for i, a in enumerate(args) if i != CPU_ARGS.get(name)]
            mutable = [t for t in _flat((inp, moved, kwargs)) if isinstance(t, torch.Tensor)]
            results.append((_flat(out), mutable))
    return results


# --- comparing ------------------------------------------------------------------------------

def _expected(name: str, samples: list, eager: list) -> list:
    """Eager's results, where the lazy device is meant to differ from eager's CPU kernels."""
    if name in ("native_batch_norm", "_native_batch_norm_legit"):
        return [_batch_norm_eval(s, r) for s, r in zip(samples, eager)]
    return eager


def _batch_norm_eval(sample, result):
    """Eval mode: CPU kernels return empty save_mean/save_invstd; meta and CUDA (the lazy
    device's shapes) return the running mean and 1/sqrt(running_var + eps)."""
    weight, bias, mean, var, training, momentum, eps = sample.args
    if training:
        return result
    outs, args = result
    return [outs[0], mean.clone(), (var + eps).rsqrt()], args


def _assert_same(got, want, where: str, values: bool) -> None:
    if not isinstance(want, torch.Tensor):
        if isinstance(want, float) and math.isnan(want):
            assert isinstance(got, float) and math.isnan(got), f"{where}: {got!r} != nan"
        else:
            assert got == want, f"{where}: {got!r} != {want!r}"
        return
    assert isinstance(got, torch.Tensor), f"{where}: expected a tensor, got {type(got)}"
    assert got.dtype == want.dtype, f"{where}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{where}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    if values:
        rtol, atol = TOLERANCES.get(want.dtype, (0, 0))
        torch.testing.assert_close(got.resolve_conj().resolve_neg(),
                                   want.resolve_conj().resolve_neg(), rtol=rtol, atol=atol,
                                   equal_nan=True, msg=lambda m: f"{where}: {m}")


def _compare(actual: list, expected: list, values: bool) -> None:
    """Lazy results against eager's: one to_cpu for every tensor, so the graph runs once."""
    lazy = [t for outs, args in actual for t in outs + args if isinstance(t, torch.Tensor)]
    for t in lazy:
        assert t.device.type == "lazy", f"a result left the lazy device: {t.device}"
    on_cpu = iter(lazytriton.to_cpu(lazy))
    for k, ((outs, args), (want_outs, want_args)) in enumerate(zip(actual, expected)):
        assert len(outs) == len(want_outs), f"sample {k}: {len(outs)} outputs, eager {len(want_outs)}"
        for kind, got, want in (("output", outs, want_outs), ("argument", args, want_args)):
            for i, (g, w) in enumerate(zip(got, want)):
                g = next(on_cpu) if isinstance(g, torch.Tensor) else g
                _assert_same(g, w, f"sample {k} {kind} {i}", values)


def _expect_failure(request, name: str, backend: str) -> None:
    """Strict: an expected failure that passes turns red, so its entry gets removed."""
    reasons = EXPECTED_FAILURES.get(name, {})
    reason = reasons.get(backend) or reasons.get(ALL)
    if reason:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))


@pytest.mark.parametrize("op, dtype", _cases())
def test_opinfo_sample_matches_eager(op, dtype, test_backend, request):
    name = _name(op)
    _expect_failure(request, name, test_backend)
    samples = [s for _, s in zip(range(N_SAMPLES), op.sample_inputs("cpu", dtype))]
    expected = _expected(name, samples, _run(op, name, samples, lazy=False))
    actual = _run(op, name, samples, lazy=True)
    _compare(actual, expected, values=name not in VALUES_UNSPECIFIED)
    assert not metrics.counter_value("FallbackGraph"), \
        "a graph the C++ backend could not compile ran on the reference executor"


def test_tables_name_ops_that_exist():
    """A renamed or removed OpInfo must not leave a stale entry behind."""
    names = {_name(op) for op in op_db}
    listed = set(EXTRA_DTYPE_OPS) | set(SKIPS) | set(VALUES_UNSPECIFIED) | set(EXPECTED_FAILURES)
    assert listed <= names, sorted(listed - names)
