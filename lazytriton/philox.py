"""One random stream for every backend: Triton's Philox 4x32-10 (`tl.rand`, `tl.randn`), also
written in the C++ prelude (`lt::uniform`, `lt::normal`) and here, in torch integer arithmetic,
for the reference executor. The value at (seed, offset) is a pure function of both, so dropout
draws the same mask on every backend, in any thread order; `offset` is the element's index in
its contiguous tensor.

These functions are the reference executor's kernels for the random ops the code generators
lower (uniform, normal, bernoulli, dropout); they take the seed where aten takes a generator.
"""
from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_ROUNDS = 10
# uint32 -> [0, 1): the int32 reading of the bits, folded to >= 0, times 2^-31 (as Triton)
_UNIFORM_SCALE = torch.tensor(4.6566127342e-10, dtype=torch.float32)


def _mul_parts(constant: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32 bits of constant * x for uint32 values held in int64 (no overflow:
    x is split into 16-bit halves)."""
    lo_part = constant * (x & 0xFFFF)
    hi_part = constant * (x >> 16)
    high = (hi_part + (lo_part >> 16)) >> 16
    low = (lo_part + ((hi_part & 0xFFFF) << 16)) & _MASK32
    return high, low


def philox(seed: int, offsets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Four uint32 streams (as int64) at these offsets, as Triton's randint4x."""
    seed &= (1 << 64) - 1
    k0, k1 = seed & _MASK32, (seed >> 32) & _MASK32
    offsets = offsets.to(torch.int64)
    c0, c1 = offsets & _MASK32, (offsets >> 32) & _MASK32
    c2 = c3 = torch.zeros_like(c0)
    for _ in range(_ROUNDS):
        hi_b, lo_b = _mul_parts(_ROUND_B, c2)
        hi_a, lo_a = _mul_parts(_ROUND_A, c0)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0, k1 = (k0 + _KEY_A) & _MASK32, (k1 + _KEY_B) & _MASK32
    return c0, c1, c2, c3


def to_uniform(bits: torch.Tensor) -> torch.Tensor:
    signed = torch.where(bits >= 1 << 31, bits - (1 << 32), bits)
    folded = torch.where(signed < 0, ~signed, signed)
    return folded.to(torch.float32) * _UNIFORM_SCALE


def uniform01(seed: int, shape, device=None) -> torch.Tensor:
    """float32 in [0, 1) for each element of a contiguous tensor of `shape`."""
    offsets = torch.arange(_numel(shape), dtype=torch.int64, device=device).reshape(shape)
    return to_uniform(philox(seed, offsets)[0])


def normal01(seed: int, shape, device=None) -> torch.Tensor:
    """Standard normal float32 (Box-Muller over the first two streams, as tl.randn)."""
    offsets = torch.arange(_numel(shape), dtype=torch.int64, device=device).reshape(shape)
    c0, c1, _, _ = philox(seed, offsets)
    u1 = torch.clamp(to_uniform(c0), min=1e-7)
    theta = 6.283185307179586 * to_uniform(c1)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(theta)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


# --- the reference executor's kernels for the lowered random ops --------------------------

def uniform(self: torch.Tensor, generator: int, **kw) -> torch.Tensor:
    lo, hi = (torch.tensor(kw.get(k, d), dtype=torch.float32) for k, d in (("from", 0.0),
                                                                             ("to", 1.0)))
    u = uniform01(generator, self.shape, self.device)
    return (u * (hi - lo) + lo).to(self.dtype)  # in float32, as the generated kernels


def normal_functional(self: torch.Tensor, mean: float = 0.0, std: float = 1.0,
                      generator: int = 0) -> torch.Tensor:
    return (normal01(generator, self.shape, self.device) * std + mean).to(self.dtype)


def bernoulli_p(self: torch.Tensor, p: float = 0.5, generator: int = 0) -> torch.Tensor:
    return (uniform01(generator, self.shape, self.device) < p).to(self.dtype)


def native_dropout(input: torch.Tensor, p: float, train: bool | None,
                   generator: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep where the draw is >= p, scaled by 1 / (1 - p) (as the C++ lowering computes)."""
    if train is False:
        return input.clone(), torch.ones_like(input, dtype=torch.bool)
    keep = uniform01(generator, input.shape, input.device) >= torch.tensor(p, dtype=torch.float32)
    scale = 1.0 / (1.0 - p) if p < 1 else 0.0
    return torch.where(keep, input * scale, torch.zeros((), dtype=input.dtype)), keep


def native_dropout_seeded(input, p, train, generator):
    """aten.native_dropout with an explicit seed (the aten op takes no generator): the graph op
    the tracer records for it, lowered by every backend to this same Philox draw."""
    return native_dropout(input, p, train, generator)


# aten random ops without a generator argument -> their twins taking the seed explicitly
SEEDED_TWINS = {torch.ops.aten.native_dropout.default: native_dropout_seeded}
