"""codegen/row_max.py on the C++ backend: `exp(v - max(v))` over a row whose max the kernel holds
in a register prints `lt::exp_nonpos_f32` (an exp for arguments <= 0), and nothing else does.
Each case is also checked against eager on random data, including rows where the cheaper exp
would go wrong if it were used where its argument can be large and positive."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lazytriton


@pytest.fixture
def compile_source(tmp_path):
    """compile_source(fn, *inputs): fn run on the lazy device, checked against eager; returns
    the generated C++ of the graph."""
    count = [0]

    def run(fn, *inputs, rtol=1.3e-6, atol=1e-5):
        count[0] += 1
        cache_dir = tmp_path / f"cache{count[0]}"
        lazytriton.init("cpp", cache_dir=cache_dir)
        got = fn(*[t.to("lazy") for t in inputs])
        torch.testing.assert_close(got.cpu(), fn(*inputs), rtol=rtol, atol=atol, equal_nan=True)
        sources = sorted((cache_dir / "graphs").glob("*/kernels.cpp"))
        return "\n".join(p.read_text() for p in sources)
    return run


def _rows_with_specials(rows: int, cols: int) -> torch.Tensor:
    """Random rows at very different scales, plus rows holding -inf, +inf and NaN."""
    x = torch.randn(rows, cols) * torch.logspace(-2, 4, rows).unsqueeze(1)
    x[1, :] = float("-inf")  # every element masked: 0/0 in eager too
    x[2, 3] = float("nan")
    x[3, 5] = float("inf")
    x[4, : cols // 2] = float("-inf")
    return x


SOFTMAX_LIKE = {
    "softmax": lambda x: torch.softmax(x, -1),
    "log_softmax": lambda x: F.log_softmax(x, -1),
    "softmax_of_scaled": lambda x: torch.softmax(x / 3.0 + 1.0, -1),
    "softmax_3d": lambda x: torch.softmax(x.view(2, -1, x.shape[-1]), -1),
}


@pytest.mark.parametrize("name", list(SOFTMAX_LIKE))
@pytest.mark.parametrize("cols", [7, 100, 1024])
def test_softmax_family_uses_exp_nonpos(compile_source, name, cols):
    source = compile_source(SOFTMAX_LIKE[name], _rows_with_specials(16, cols))
    assert "exp_nonpos_f32" in source
    assert "lt::exp_f32" not in source


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_softmax_in_other_float_types(compile_source, dtype):
    x = (torch.randn(12, 50) * 30).to(dtype)
    source = compile_source(lambda t: torch.softmax(t, -1), x, rtol=1e-2, atol=1e-3)
    assert ("exp_nonpos_f32" in source) == (dtype != torch.float64)  # doubles keep std::exp


def test_non_contiguous_input(compile_source):
    x = _rows_with_specials(40, 24).t()  # rows with stride 24
    compile_source(lambda t: torch.softmax(t, -1), x)


def test_cross_entropy_forward_and_backward(compile_source):
    logits, target = torch.randn(32, 10) * 20, torch.randint(0, 10, (32,))

    def step(x, y):
        x = x.clone().requires_grad_()
        loss = F.cross_entropy(x, y)
        loss.backward()
        return torch.cat([loss.reshape(1), x.grad.reshape(-1)])
    assert "exp_nonpos_f32" in compile_source(step, logits, target)


def test_masked_attention_softmax(compile_source):
    scores = torch.randn(2, 4, 16, 16) * 5
    mask = torch.ones(16, 16, dtype=torch.bool).triu(1)
    source = compile_source(
        lambda s, m: torch.softmax((s / 2.8).masked_fill(m, float("-inf")), -1), scores, mask)
    assert "exp_nonpos_f32" in source


NOT_NONPOSITIVE = {  # each exp's argument reaches +50 or more on these inputs
    "max_of_another_tensor": lambda x: torch.exp(x - (x - 60).amax(-1, keepdim=True)),
    "reversed": lambda x: torch.exp(x.amax(-1, keepdim=True) - x),
    "scaled_value": lambda x: torch.exp(2 * x - x.amax(-1, keepdim=True)),
    "max_of_part_of_the_row": lambda x: torch.exp(x - x[:, :3].amax(-1, keepdim=True)),
    "min_instead_of_max": lambda x: torch.exp(x - x.amin(-1, keepdim=True)),
    "max_of_the_column": lambda x: torch.exp(x - x.amax(0, keepdim=True)),
}


@pytest.mark.parametrize("name", list(NOT_NONPOSITIVE))
def test_exp_of_a_possibly_positive_argument_keeps_exp(compile_source, name):
    x = torch.rand(6, 20) * 80 - 20  # [-20, 60): a wrong exp would overflow its scaling
    x[:, 0] = 60.0  # row max 60, so x - max(x - 60) reaches 60
    source = compile_source(NOT_NONPOSITIVE[name], x, rtol=2e-6, atol=1e-5)
    assert "exp_nonpos_f32" not in source


def test_symbolic_sizes_keep_exp_nonpos(tmp_path):
    """After a second size, the graph is compiled with symbolic dims (automatic dynamic
    shapes): the row max's extent and the reader's are then the same symbol."""
    lazytriton.init("cpp", cache_dir=tmp_path)
    for rows, cols in [(8, 100), (16, 120), (24, 72)]:
        x = _rows_with_specials(rows, cols)
        got = torch.softmax(x.to("lazy"), -1).cpu()
        torch.testing.assert_close(got, torch.softmax(x, -1), rtol=1.3e-6, atol=1e-5,
                                   equal_nan=True)
    sources = [p.read_text() for p in (tmp_path / "graphs").glob("*/kernels.cpp")]
    generic = [s for s in sources if "ks0" in s]  # a size passed in: the symbolic program
    assert generic and all("exp_nonpos_f32" in s for s in sources)
