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
