"""One random stream on every backend: Philox 4x32-10 as Triton's tl.rand draws it, so switching
backend never changes a training run's dropout masks."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import lazytriton
from lazytriton import philox


def _draws(backend: str, cache_dir) -> dict[str, torch.Tensor]:
    lazytriton.init(backend, cache_dir=cache_dir)
    torch.manual_seed(0)
    x = torch.randn(37, 53).to("lazy")
    dropped = F.dropout(x, 0.3)
    return {"dropout": dropped.cpu(), "mask": (dropped != 0).cpu(),
            "uniform": torch.empty(1000, device="lazy").uniform_().cpu(),
            "bernoulli": torch.empty(300, device="lazy").bernoulli_(0.4).cpu(),
            "normal": torch.empty(500, device="lazy").normal_(1.0, 2.0).cpu()}


@pytest.mark.skipif("cpp" not in lazytriton.available_backends(), reason="needs g++")
def test_dropout_masks_are_the_same_bits_on_every_backend(tmp_path):
    reference, generated = _draws("aten", tmp_path), _draws("cpp", tmp_path)
    for name in ("mask", "uniform", "bernoulli"):
        assert torch.equal(reference[name], generated[name]), name
    torch.testing.assert_close(reference["dropout"], generated["dropout"])
    # Box-Muller's log and cos: the C++ vector math is within 2 ULP of libm
    torch.testing.assert_close(reference["normal"], generated["normal"], rtol=1e-5, atol=1e-5)
    keep = reference["mask"].float().mean().item()
    assert 0.6 < keep < 0.8  # p = 0.3


def test_a_seed_replays_and_another_seed_differs():
    a = philox.uniform01(42, (4, 1000))
    assert torch.equal(a, philox.uniform01(42, (4, 1000)))
    assert not torch.equal(a, philox.uniform01(43, (4, 1000)))
    assert a.min() >= 0 and a.max() < 1
    assert abs(a.mean().item() - 0.5) < 0.02
    n = philox.normal01(42, (20000,))
    assert abs(n.mean().item()) < 0.03 and abs(n.std().item() - 1) < 0.03


_TRITON_DRAWS = textwrap.dedent("""
    import os, sys, torch
    os.environ["TRITON_INTERPRET"] = "1"
    import triton, triton.language as tl

    @triton.jit
    def draw(out, seed, n, BLOCK: tl.constexpr):
        offset = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        tl.store(out + offset, tl.rand(seed, offset.to(tl.int64)), mask=offset < n)

    seed, n = int(sys.argv[1]), int(sys.argv[2])
    out = torch.empty(n)
    draw[(triton.cdiv(n, 128),)](out, seed, n, BLOCK=128)
    torch.save(out, sys.argv[3])
""")


@pytest.mark.parametrize("seed", [0, 987654321, 2**40 + 7])
def test_the_stream_is_tritons_tl_rand_bit_for_bit(seed, tmp_path):
    """Checked against Triton itself, under its interpreter (a fresh process: the interpreter
    is chosen when triton is imported)."""
    pytest.importorskip("triton")
    out = tmp_path / "draws.pt"
    subprocess.run([sys.executable, "-c", _TRITON_DRAWS, str(seed), "3000", str(out)],
                   check=True, capture_output=True, env={**os.environ, "TRITON_INTERPRET": "1"},
                   timeout=300)
    assert torch.equal(torch.load(out), philox.uniform01(seed, (3000,)))
