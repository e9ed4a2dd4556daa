"""The instruction sets the C++ tests compile for, and what must vectorize on each.

Vectorization tests assert what the compiler's target can do, read from its predefined macros
(`g++ -dM -E`), not what the machine the tests were written on did. Besides the backend's own
flags (-march=native), an AVX2-only target is compiled on any x86 (and run for its values where
native is AVX-512), so a machine with AVX-512 still checks the code that one without it gets.
"""
from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass

from lazytriton.runtime.cpp_build import CXX_FLAGS, compiler_command


@dataclass(frozen=True)
class Target:
    name: str
    flags: tuple[str, ...]  # the whole flag list, in place of CXX_FLAGS


NATIVE = Target("native", CXX_FLAGS)
# The compiler's default -march (baseline x86-64) plus AVX2 and FMA: what an AVX2-only CPU gets.
AVX2 = Target("avx2", tuple(f for f in CXX_FLAGS if not f.startswith("-march="))
              + ("-mavx2", "-mfma"))


def _preprocess_flags(flags: tuple[str, ...]) -> list[str]:
    return [f for f in flags if f not in ("-shared", "-fPIC")]


@functools.cache
def macros(target: Target) -> frozenset[str] | None:
    """The compiler's predefined macro names for `target`; None when it rejects the flags."""
    cmd = [*compiler_command(), *_preprocess_flags(target.flags), "-dM", "-E", "-x", "c++", "-"]
    try:
        proc = subprocess.run(cmd, input="", capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    if proc.returncode != 0:
        return None
    return frozenset(line.split()[1] for line in proc.stdout.splitlines()
                     if line.startswith("#define "))


def simd_isa(target: Target) -> str | None:
    """The vector instruction set `target` compiles for, if vecmath.h vectorizes on it.

    Every vecmath.h function must vectorize on each ISA named here. All need a hardware
    fused multiply-add: without one (x86 before AVX2/FMA) std::fma is a libm call, and a call
    keeps a loop scalar."""
    m = macros(target)
    if m is None:
        return None
    if "__x86_64__" in m and "__FMA__" in m:
        if "__AVX512F__" in m:
            return "AVX-512"
        if "__AVX2__" in m:
            return "AVX2"
    if "__aarch64__" in m and "__ARM_NEON" in m:
        return "NEON"  # Advanced SIMD: fma and int64 <-> double in every aarch64 CPU
    return None


def no_simd_reason(target: Target) -> str:
    if macros(target) is None:
        return f"the C++ compiler rejects the {target.name} target's flags {' '.join(target.flags)}"
    return (f"the {target.name} target has no SIMD that cpp_vecmath.h vectorizes on "
            "(x86 needs AVX2 and FMA; aarch64 NEON)")


def runnable_targets() -> list[Target]:
    """Targets whose code runs here: NATIVE, and AVX2 too where native is AVX-512, so a machine
    with AVX-512 also checks the values of the code an AVX2-only machine gets."""
    return [NATIVE, AVX2] if simd_isa(NATIVE) == "AVX-512" else [NATIVE]


def is_gcc() -> bool:
    """g++ (not clang posing as it): the vectorizer reports are g++'s -fopt-info."""
    try:
        out = subprocess.run([*compiler_command(), "--version"], capture_output=True,
                             text=True).stdout
    except OSError:
        return False
    return "Free Software Foundation" in out and "clang" not in out.lower()
