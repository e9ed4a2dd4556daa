"""Ops whose output shape depends on the data run eagerly on real data, counted, and the trace
goes on around them."""
from __future__ import annotations

import pytest
import torch

import lazytriton
from lazytriton import metrics

CASES = {
    "nonzero": (lambda x: torch.nonzero(x > 0), "aten::nonzero"),
    "masked_select": (lambda x: torch.masked_select(x, x > 0.2), "aten::masked_select"),
    "bool_mask_index": (lambda x: x[x < 0] * 2, "aten::index"),
    "unique": (lambda x: torch.unique((x * 3).round()), "aten::_unique2"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_data_dependent_op_matches_eager_and_is_counted(name):
    fn, counter = CASES[name]
    x = torch.randn(6, 5)
    got = fn(x.to("lazy"))
    assert got.device.type == "lazy"
    torch.testing.assert_close(got.cpu(), fn(x))
    assert metrics.counter_value(counter) == 1


def test_trace_continues_after_fallback():
    x = torch.randn(10)
    lx = x.to("lazy")
    picked = lx[lx > 0]
    result = (picked.exp() + lx.sum()).mean()
    assert "exp.default" in lazytriton.debug.dump_ir([result])
    torch.testing.assert_close(result.cpu(), (x[x > 0].exp() + x.sum()).mean())


def test_bool_mask_assignment_stays_lazy():
    x = torch.randn(4, 4)
    lx = x.to("lazy")
    lx[lx < 0] = 0.0  # index_put_ with a mask: output shape is known, no fallback
    x[x < 0] = 0.0
    torch.testing.assert_close(lx.cpu(), x)
    assert not any(n.startswith("aten::") for n in metrics.counter_names())


def test_python_value_ops_run_on_real_data():
    a = torch.randn(3)
    la = a.to("lazy")
    assert torch.equal(la, a.clone().to("lazy")) is True
    assert metrics.counter_value("aten::equal") == 1
