"""templates/cpp/vecmath.h: the vectorizable float32 math that generated C++ kernels call.

One shared library exposes `apply_<f>` loops over each function, compiled with the backend's own
flags (no -ffast-math) and, on a machine with AVX-512, also for AVX2 only. Results are checked
against a float64 torch reference rounded nowhere: special values bit for bit (as eager gives
them), everything else to within 2 ULP of float32, on random bit patterns over the whole float
range plus dense sweeps where each function is hard.
"""
from __future__ import annotations

import ctypes
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from lazytriton.runtime.cpp_build import compiler_command
from lazytriton.templates import CPP_INCLUDE_DIR

from cpp_targets import AVX2, NATIVE, Target, is_gcc, no_simd_reason, runnable_targets, simd_isa

HEADER = CPP_INCLUDE_DIR / "vecmath.h"
FUNCS = ["exp", "expm1", "log", "log1p", "log2", "tanh", "sigmoid", "erf", "sin", "cos"]
# functions for a restricted domain, checked against their general twin there
NONPOS_DOMAIN_MAX = 64.0  # exp_nonpos_f32: x <= 64 (softmax's x - max(x) <= 0)
LOOPS = FUNCS + ["exp_nonpos"]
MAX_ULP = 2.0
INF, NAN = math.inf, math.nan
TINY = [1e-45, 1e-40, 1.1754942e-38, 1.1754944e-38, 1e-30, 1e-10]  # denormals and small normals

REFERENCE = {  # float64 eager, then compared in float32 ULPs
    "exp": torch.exp, "expm1": torch.expm1, "log": torch.log, "log1p": torch.log1p,
    "log2": torch.log2, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "erf": torch.erf,
    "sin": torch.sin, "cos": torch.cos,
}


def _source() -> str:
    loops = "\n".join(
        f'extern "C" void apply_{f}(const float* in, float* out, int64_t n) {{\n'
        f"#pragma omp simd\n"
        f"  for (int64_t i = 0; i < n; i++) out[i] = lt::{f}_f32(in[i]);  // loop:{f}\n"
        f"}}" for f in LOOPS)
    return f'#include "{HEADER}"\n{loops}\n'


def _compile(target: Target, folder: Path) -> tuple[Path, str | None]:
    """The library built for `target`, and g++'s vectorizer report (None for another compiler)."""
    src, so = folder / "vecmath.cpp", folder / "vecmath.so"
    src.write_text(_source())
    report_flags = ["-fopt-info-vec-optimized"] if is_gcc() else []
    proc = subprocess.run([*compiler_command(), *target.flags, *report_flags, str(src), "-o",
                           str(so)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return so, (proc.stderr if report_flags else None)


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Callable[[Target], tuple[Path, str | None]]:
    """build(target) compiles the loops for `target` once per module."""
    cxx = compiler_command()
    if shutil.which(cxx[0]) is None:
        pytest.skip(f"no C++ compiler ({cxx[0]})")
    built: dict[Target, tuple[Path, str | None]] = {}

    def get(target: Target) -> tuple[Path, str | None]:
        if target not in built:
            built[target] = _compile(target, tmp_path_factory.mktemp(f"vecmath-{target.name}"))
        return built[target]
    return get


@pytest.fixture(scope="module", params=runnable_targets(), ids=lambda t: t.name)
def lib(request, build) -> ctypes.CDLL:
    """The loops built for each target this machine runs: every value test runs on each."""
    return ctypes.CDLL(str(build(request.param)[0]))


def apply(lib, name: str, x: torch.Tensor) -> torch.Tensor:
    x = x.to(torch.float32).contiguous()
    out = torch.empty_like(x)
    fn = lib[f"apply_{name}"]
    fn.restype = None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn(x.data_ptr(), out.data_ptr(), x.numel())
    return out


def ulp_error(ours: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """|ours - ref| in units of the float32 ulp at ref (2^-149 below 2^-126, zero included).

    Where ref rounds to inf in float32, or is NaN, only an exact match counts (error 0, else
    inf). An inf result for a finite ref is measured as 2^128, the next float after FLT_MAX."""
    rounded = ref.to(torch.float32)
    exact_only = torch.isnan(ref) | torch.isinf(rounded)
    same = (ours == rounded) | (torch.isnan(ours) & torch.isnan(ref))
    o = ours.double()
    o = torch.where(torch.isinf(o), torch.copysign(torch.full_like(o, 2.0**128), o), o)
    _, e = torch.frexp(ref)  # |ref| in [2^(e-1), 2^e)
    e = torch.where(ref == 0, torch.full_like(e, -1000), e)
    ulp = torch.ldexp(torch.ones_like(ref), torch.clamp(e - 24, min=-149))
    err = ((o - ref).abs() / ulp).nan_to_num(nan=INF)
    return torch.where(exact_only, torch.where(same, 0.0, INF), err)


def check_ulp(lib, name: str, x: torch.Tensor) -> None:
    x = x.to(torch.float32)
    ref = REFERENCE[name](x.double())
    err = ulp_error(apply(lib, name, x), ref)
    worst = int(err.argmax())
    assert err[worst] <= MAX_ULP, (
        f"{name}({x[worst].item()!r} = {float(x[worst]).hex()}): got "
        f"{apply(lib, name, x[worst:worst + 1]).item()!r}, want {ref[worst].item()!r} "
        f"({err[worst].item():.3f} ulp; {int((err > MAX_ULP).sum())} inputs over {MAX_ULP})")


# ---------------------------------------------------------------------------------------------
# Inputs

def random_bits(n: int, seed: int) -> torch.Tensor:
    """Uniform random float32 bit patterns: every sign, exponent, NaN and denormal."""
    bits = np.random.default_rng(seed).integers(0, 2**32, size=n, dtype=np.uint64)
    return torch.from_numpy(bits.astype(np.uint32).view(np.float32).copy())


def float_sweep(lo: float, hi: float, n: int) -> torch.Tensor:
    """n floats evenly spaced in bit pattern between positive lo and hi: dense at every scale."""
    a = np.array([lo, hi], dtype=np.float32).view(np.int32).astype(np.int64)
    bits = np.linspace(a[0], a[1], n).round().astype(np.int32)
    return torch.from_numpy(bits.view(np.float32).copy())


def both_signs(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, -x])


def near_multiples_of_pi_2(count: int) -> torch.Tensor:
    """Floats nearest k pi/2 and their neighbours: where argument reduction cancels most."""
    k = torch.arange(1, count + 1, dtype=torch.float64)
    x = (k * (math.pi / 2)).to(torch.float32)
    up, down = torch.nextafter(x, torch.full_like(x, INF)), torch.nextafter(x, torch.zeros_like(x))
    return both_signs(torch.cat([x, up, down]))


SWEEPS = {
    "exp": lambda: torch.cat([torch.linspace(-104.5, 89.5, 600_001), both_signs(float_sweep(1e-45, 1.0, 200_001))]),
    "expm1": lambda: torch.cat([torch.linspace(-20, 89.5, 600_001), both_signs(float_sweep(1e-45, 1.0, 200_001))]),
    "log": lambda: torch.cat([float_sweep(1e-45, 3.4e38, 400_001), torch.linspace(0.5, 2.0, 400_001)]),
    "log2": lambda: torch.cat([float_sweep(1e-45, 3.4e38, 400_001), torch.linspace(0.5, 2.0, 400_001)]),
    "log1p": lambda: torch.cat([torch.linspace(-1, 1, 600_001), both_signs(float_sweep(1e-45, 1.0, 200_001)),
                                float_sweep(1.0, 3.4e38, 100_001)]),
    "tanh": lambda: torch.cat([torch.linspace(-10, 10, 600_001), both_signs(float_sweep(1e-45, 10.0, 200_001))]),
    "sigmoid": lambda: torch.cat([torch.linspace(-110, 30, 600_001), both_signs(float_sweep(1e-45, 120.0, 200_001))]),
    "erf": lambda: torch.cat([torch.linspace(-4.5, 4.5, 600_001), both_signs(float_sweep(1e-45, 5.0, 200_001))]),
    "sin": lambda: torch.cat([torch.linspace(-100, 100, 400_001), both_signs(float_sweep(1e-45, 3.4e38, 200_001)),
                              near_multiples_of_pi_2(100_000)]),
    "cos": lambda: torch.cat([torch.linspace(-100, 100, 400_001), both_signs(float_sweep(1e-45, 3.4e38, 200_001)),
                              near_multiples_of_pi_2(100_000)]),
}

# Inputs whose eager float32 result is exact (NaN, inf, signed zero, saturation, identity for
# tiny arguments) or sits on an overflow/underflow threshold. Expected values come from eager
# itself and, for the thresholds, from the float64 reference rounded once.
SPECIALS = {
    "exp": [NAN, INF, -INF, 0.0, -0.0, 88.72283935546875, 89.0, 1e30, -104.0, -1e30,
            -103.97208404541016, 1e-45, -1e-45],
    "expm1": [NAN, INF, -INF, 0.0, -0.0, 88.72283935546875, 1e30, -20.0, -30.0, -1e30, 1e-30,
              -1e-30, 1e-45, -1e-45],
    "log": [NAN, INF, -INF, 0.0, -0.0, -1.0, -1e-45, -3.4028235e38, 1.0],
    "log2": [NAN, INF, -INF, 0.0, -0.0, -1.0, -1e-45, 1.0, 2.0, 0.5, 1024.0, 1e-45, 2.0**-126],
    "log1p": [NAN, INF, -INF, 0.0, -0.0, -1.0, -1.5, -2.0, -3.4028235e38, 1e-30, -1e-30],
    "tanh": [NAN, INF, -INF, 0.0, -0.0, 1e-30, -1e-30, 10.0, -10.0, 20.0, -1e30, 1e-45, -1e-45],
    "sigmoid": [NAN, INF, -INF, 0.0, -0.0, 100.0, -110.0, -1e30, 1e30, -3.4028235e38],
    "erf": [NAN, INF, -INF, 0.0, -0.0, 4.0, -4.0, 10.0, -1e30],
    "sin": [NAN, INF, -INF, 0.0, -0.0, 1e-30, -1e-30, 1e-45, -1e-45],
    "cos": [NAN, INF, -INF, 0.0, -0.0, 1e-30, -1e-30, 1e-45],
}


# ---------------------------------------------------------------------------------------------
# Tests

@pytest.mark.parametrize("name", FUNCS)
def test_special_values_match_eager_bitwise(lib, name):
    x = torch.tensor(SPECIALS[name], dtype=torch.float32)
    eager = getattr(torch, name)(x.repeat(64))[: len(x)]  # long enough for eager's SIMD path
    ours = apply(lib, name, x)
    assert torch.equal(torch.isnan(ours), torch.isnan(eager)), (x, ours, eager)
    finite = ~torch.isnan(eager)
    # bitwise: catches -0 vs +0 as well as wrong infinities
    assert torch.equal(ours[finite].view(torch.int32), eager[finite].view(torch.int32)), (
        x[finite], ours[finite], eager[finite])


@pytest.mark.parametrize("name", ["exp", "expm1", "sigmoid"])
def test_overflow_and_underflow_thresholds(lib, name):
    """The last finite result and the first inf, the last denormal and the first zero."""
    x = torch.tensor([88.72283172607422, 88.72283935546875, -103.97207641601562,
                      -103.97208404541016, -87.33654022216797, -87.33655548095703])
    ref = REFERENCE[name](x.double()).to(torch.float32)
    ours = apply(lib, name, x)
    err = ulp_error(ours, REFERENCE[name](x.double()))
    assert (err <= MAX_ULP).all(), (x, ours, ref)
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    if name == "exp":
        assert ours[1] == INF and ours[3] == 0.0 and ours[2] == 2.0**-149


def test_sigmoid_far_left_tail_is_denormal_not_nan_or_zero(lib):
    x = torch.tensor([-88.0, -95.0, -100.0, -103.0, -1000.0, -3.4e38])
    ours = apply(lib, "sigmoid", x)
    assert not torch.isnan(ours).any()
    assert (ours[:4] > 0).all() and (ours[:4] < 2.0**-126).all()
    assert (ours[4:] == 0).all()


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_huge_arguments_are_reduced_exactly(lib, name):
    x = torch.tensor([1e30, -1e30, 3.4028235e38, -3.4028235e38, 2.0**100, 1e10, 16367173 * 2.0**72,
                      float.fromhex("0x1.2d97c8p+3"), 8.0e22, 6.0e18])
    check_ulp(lib, name, x)
    check_ulp(lib, name, float_sweep(1e20, 3.4e38, 100_001))


@pytest.mark.parametrize("name", FUNCS)
def test_random_bit_patterns_within_2_ulp(lib, name):
    check_ulp(lib, name, random_bits(2_000_000, seed=FUNCS.index(name)))


@pytest.mark.parametrize("name", FUNCS)
def test_dense_sweep_within_2_ulp(lib, name):
    check_ulp(lib, name, SWEEPS[name]())


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.view(torch.int32), b.view(torch.int32))


def test_exp_nonpos_gives_exps_bits_on_its_domain(lib):
    """softmax's exp: every x <= 64 (random bit patterns of either sign, the dense sweep of
    [-104.5, 64] and the special values) gives exp_f32's bits, NaN payloads included."""
    bits = random_bits(4_000_000, seed=99)
    x = torch.cat([bits[~(bits > NONPOS_DOMAIN_MAX)],
                   torch.linspace(-104.5, NONPOS_DOMAIN_MAX, 600_001),
                   -float_sweep(1e-45, 1.0, 200_001),
                   torch.tensor([NAN, -INF, 0.0, -0.0, -104.0, -103.97208404541016,
                                 -103.97207641601562, -87.33654022216797, -87.33655548095703,
                                 NONPOS_DOMAIN_MAX])])
    assert _bitwise_equal(apply(lib, "exp_nonpos", x), apply(lib, "exp", x))


def test_ulp_error_measure():
    """The checker itself: denormal ulps, zero, overflow, NaN."""
    ref = torch.tensor([1.0, 2.0**-149, 0.0, 2.0**-130, 3.5e38, NAN, 1.0], dtype=torch.float64)
    ours = torch.tensor([1.0 + 2.0**-22, 2.0**-148, 2.0**-149, 2.0**-130 + 2.0**-148, INF, 0.0, NAN])
    assert ulp_error(ours, ref).tolist() == [2.0, 1.0, 1.0, 2.0, 0.0, INF, INF]


@pytest.mark.parametrize("target", [NATIVE, AVX2], ids=lambda t: t.name)
def test_every_loop_vectorizes(build, target):
    """The point of the header: g++ vectorizes each function's loop (no scalar libm calls) on
    every SIMD ISA it is written for. The AVX2 build is only compiled, so any x86 checks it."""
    if not is_gcc():
        pytest.skip("vectorizer report needs g++")
    isa = simd_isa(target)
    if isa is None:
        pytest.skip(no_simd_reason(target))
    report = build(target)[1]
    lines = _source().splitlines()
    vectorized = {int(m.group(1)) for m in re.finditer(r"vecmath\.cpp:(\d+):\d+: optimized: loop vectorized",
                                                      report)}
    for f in LOOPS:
        loop_line = next(i for i, text in enumerate(lines, 1) if text.endswith(f"// loop:{f}"))
        assert loop_line in vectorized, f"{f} did not vectorize for {isa}:\n{report}"
