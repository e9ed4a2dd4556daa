"""Indices read from memory, negative or out of range, as eager treats them: x[idx], index_put,
take and index_fill count a negative index from the end; embedding, index_select, gather,
scatter, scatter_add, index_add and index_copy refuse it, as they refuse one past the end. A
refused index raises LazyExecutionError where the result is read; it is never silently
wrapped or dropped (each case below once was, on the generated-code backends)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lazytriton

pytestmark = pytest.mark.differential  # once per backend (conftest.py)

OPS = {
    "embedding": lambda x, i: F.embedding(i, x),
    "index_select": lambda x, i: torch.index_select(x, 0, i),
    "gather": lambda x, i: torch.gather(x, 0, i.view(-1, 1).expand(-1, 3)),
    "scatter": lambda x, i: x.scatter(0, i.view(-1, 1).expand(-1, 3), 1.5),
    "scatter_one_hot": lambda x, i: torch.zeros(x.shape[1], x.shape[0]).to(x.device).scatter(
        1, i[:1].view(1, 1).expand(x.shape[1], 1), 1.0),  # nll_loss's backward pattern
    "scatter_add": lambda x, i: x.scatter_add(0, i.view(-1, 1).expand(-1, 3), x[:1].expand(2, 3)),
    "index_add": lambda x, i: x.index_add(0, i, x[:2] * 2),
    "index_copy": lambda x, i: x.index_copy(0, i, x[:2] * 2),
    "index_fill": lambda x, i: x.index_fill(0, i, -2.0),
    "take": lambda x, i: x.take(i),
    "index": lambda x, i: x[i],
    "index_put": lambda x, i: x.index_put((i,), x[0] * 3),
}
INDICES = {"in_range": [2, 0], "negative": [-1, 0], "too_negative": [-5, 0], "past_end": [4, 0]}


# ops whose eager kernels take int32 indices (the others refuse them). Not gather: torch 2.13's
# CPU gather reads an expanded (stride-0) int32 index wrongly (row 1 of this test's gives row
# 0's values), so eager is no oracle there; lazy's result is the documented one.
_TAKE_INT32 = ("embedding", "index_select", "scatter", "scatter_one_hot", "scatter_add",
               "index_add", "index", "index_put")


@pytest.mark.parametrize("indices", list(INDICES))
@pytest.mark.parametrize("op, dtype", [(op, torch.int64) for op in OPS] +
                         [(op, torch.int32) for op in _TAKE_INT32],
                         ids=[f"{op}-int64" for op in OPS] + [f"{op}-int32" for op in _TAKE_INT32])
def test_index_taken_as_eager_takes_it(op, indices, dtype):
    """int32 indices too, where eager takes them: index_add's sentinel for a refused index once
    wrapped to 0 in one (found by a stress run: a -1 silently added into row 0)."""
    x, i = torch.randn(4, 3), torch.tensor(INDICES[indices], dtype=dtype)
    try:
        want = OPS[op](x, i)
    except (IndexError, RuntimeError):
        want = None
    got = OPS[op](x.to("lazy"), i.to("lazy"))
    if want is None:
        with pytest.raises(lazytriton.LazyExecutionError, match="out of range|out of bounds"):
            got.cpu()
    else:
        torch.testing.assert_close(got.cpu(), want)


def test_gather_of_an_expanded_int32_index():
    """Against eager's gather of the same index made contiguous (eager's CPU gather misreads
    the expanded int32 index itself, see _TAKE_INT32)."""
    x, i = torch.randn(4, 3), torch.tensor([2, 0], dtype=torch.int32).view(-1, 1).expand(-1, 3)
    got = torch.gather(x.to("lazy"), 0, i.to("lazy")).cpu()
    torch.testing.assert_close(got, torch.gather(x, 0, i.contiguous()))
