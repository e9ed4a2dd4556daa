"""Launch configurations of generated Triton kernels, as data: a frozen Config per kernel chosen
by a simple heuristic from the graph's concrete sizes (an autotuner can try others: a kernel's
source never depends on them, only on the plan below)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

# a reduction row of at most this many elements is held in registers whole ("persistent")
PERSISTENT_BOUND = 1024
INT32_LIMIT = 2**31
# what a symbolic size counts as when a config is chosen (the program serves any value of it)
SIZE_HINT = 64


@dataclass(frozen=True)
class Config:
    XBLOCK: int = 1
    RBLOCK: int | None = None  # None: the kernel has no reduction/inner range
    num_warps: int = 4
    num_stages: int = 1

    def constexprs(self) -> dict[str, int]:
        return {k: v for k, v in (("XBLOCK", self.XBLOCK), ("RBLOCK", self.RBLOCK))
                if v is not None}

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Launch:
    """One launch of a kernel module's function: a scatter has two (copy, then writes)."""
    function: str
    grid: tuple[int | str, ...]  # str: a Python expression of the kernel's size parameters
    config: Config


def next_power_of_2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def persistent(rnumels: list[int]) -> bool:
    return max(rnumels, default=0) <= PERSISTENT_BOUND


def pointwise_config(xnumel: int, interpret: bool) -> Config:
    # the interpreter runs programs one after another: few, large blocks are fastest there
    cap = 1 << 16 if interpret else 1024
    xblock = min(next_power_of_2(xnumel), cap)
    return Config(XBLOCK=xblock, num_warps=8 if xblock >= 1024 else 4)


def row_config(xnumel: int, rnumel: int, persistent_rows: bool, interpret: bool) -> Config:
    """x rows, each reducing (or looping over) rnumel elements."""
    rblock = next_power_of_2(rnumel) if persistent_rows else min(next_power_of_2(rnumel), 512)
    budget = (1 << 16 if interpret else 4096) // rblock  # elements of one block
    xblock = max(1, min(next_power_of_2(xnumel), budget, 64 if not interpret else budget))
    warps = 8 if xblock * rblock >= 4096 else 4 if xblock * rblock >= 512 else 2
    return Config(XBLOCK=xblock, RBLOCK=rblock, num_warps=warps)


@dataclass(frozen=True)
class MatmulConfig:
    """A launch of the matmul template (templates/triton/matmul.py.jinja)."""
    BLOCK_M: int = 64
    BLOCK_N: int = 64
    BLOCK_K: int = 32
    GROUP_M: int = 8
    num_warps: int = 4
    num_stages: int = 3

    def constexprs(self) -> dict[str, int]:
        return {"BLOCK_M": self.BLOCK_M, "BLOCK_N": self.BLOCK_N, "BLOCK_K": self.BLOCK_K,
                "GROUP_M": self.GROUP_M}

    def as_dict(self) -> dict:
        return asdict(self)


# tl.dot needs every block dim >= 16 on a GPU
_MIN_DOT = 16
# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages): the usual tiles for Hopper/Ampere, the
# candidates autotune mode "max" times (clamped to the problem, duplicates dropped)
MATMUL_CANDIDATES = [(128, 128, 32, 4, 4), (128, 64, 32, 4, 4), (64, 128, 32, 4, 4),
                     (128, 256, 64, 8, 3), (64, 64, 32, 4, 4), (64, 32, 32, 2, 5),
                     (32, 64, 32, 2, 5), (128, 128, 64, 8, 3)]


def _clamp(block: int, size: int, cap: int) -> int:
    return max(_MIN_DOT, min(block, cap, next_power_of_2(size)))


def matmul_config(m: int, n: int, k: int, interpret: bool) -> MatmulConfig:
    """The heuristic tile: 64x64x32 on a GPU (smaller for small problems); under the
    interpreter, which runs programs one by one, a few large tiles."""
    if interpret:
        return MatmulConfig(_clamp(128, m, 128), _clamp(128, n, 128), _clamp(128, k, 128),
                            num_warps=4, num_stages=1)
    return MatmulConfig(_clamp(64, m, 64), _clamp(64, n, 64), _clamp(32, k, 32))


def matmul_candidates(m: int, n: int, k: int, interpret: bool) -> list[MatmulConfig]:
    """Configs to time for one shape: the heuristic first; under the interpreter (tests) two
    only, so tuning stays short."""
    first = matmul_config(m, n, k, interpret)
    if interpret:
        second = MatmulConfig(16, 16, 16, num_warps=4, num_stages=1)
        return list(dict.fromkeys([first, second]))
    found = [first] + [MatmulConfig(_clamp(bm, m, 256), _clamp(bn, n, 256), _clamp(bk, k, 128),
                                    num_warps=w, num_stages=s)
                       for bm, bn, bk, w, s in MATMUL_CANDIDATES]
    return list(dict.fromkeys(found))


# --- autotuning candidates (lazytriton/autotune.py times them; the heuristic comes first) ----

def _warps(elements: int) -> int:
    return 8 if elements >= 4096 else 4 if elements >= 512 else 2


def pointwise_candidates(xnumel: int, interpret: bool) -> list[Config]:
    first = pointwise_config(xnumel, interpret)
    if interpret:  # bounded: the interpreter is for tests
        return list(dict.fromkeys([first, Config(XBLOCK=max(1, first.XBLOCK // 4))]))
    top = next_power_of_2(xnumel)
    found = [first] + [Config(XBLOCK=min(x, top), num_warps=w)
                       for x, w in ((256, 4), (512, 4), (1024, 4), (2048, 8), (128, 4))]
    return list(dict.fromkeys(found))


def row_candidates(xnumel: int, rnumel: int, persistent_rows: bool,
                   interpret: bool) -> list[Config]:
    """Rows held whole (RBLOCK covers a row; XBLOCK rows per program) or looped over RBLOCK
    chunks; the heuristic first."""
    first = row_config(xnumel, rnumel, persistent_rows, interpret)
    top_x = next_power_of_2(xnumel)
    if persistent_rows:
        rblock = next_power_of_2(rnumel)
        shapes = [(x, rblock) for x in (1, 2, 4, 8, 16, 32) if x * rblock <= 16384]
    else:
        shapes = [(x, r) for x in (1, 4) for r in (128, 512, 1024, 2048)]
    if interpret:
        shapes = shapes[:1]  # bounded: one more besides the heuristic
    found = [first] + [Config(XBLOCK=min(x, top_x), RBLOCK=r, num_warps=_warps(min(x, top_x) * r))
                       for x, r in shapes]
    if not interpret:
        found += [Config(XBLOCK=c.XBLOCK, RBLOCK=c.RBLOCK, num_warps=w, num_stages=c.num_stages)
                  for c in found[:1] for w in (2, 4, 8) if w != c.num_warps]
        if not persistent_rows:  # a loop over chunks: loads of the next may be pipelined
            found.append(Config(XBLOCK=first.XBLOCK, RBLOCK=first.RBLOCK,
                                num_warps=first.num_warps, num_stages=2))
    return list(dict.fromkeys(found))


def label(config, prefix: str = "") -> str:
    """A candidate's name in logs and kernels.json: its block sizes, warps and stages."""
    values = config.as_dict()
    blocks = ",".join(f"{k}={v}" for k, v in values.items() if k.isupper() and v is not None)
    return f"{prefix}{blocks},w{values['num_warps']},s{values['num_stages']}"
