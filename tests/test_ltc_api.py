"""torch._lazy's API, signature for signature: code written for PyTorch's Lazy Tensor Core runs
with only its import and init lines changed (`import lazytriton as ltc; ltc.init()`)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import lazytriton as ltc
from lazytriton.testing.models import TutorialNet


def test_the_tutorial_loop_with_torch_lazy_calls():
    """The LTC tutorial's training loop, its torch._lazy calls spelled as there."""
    torch.manual_seed(0)
    model = TutorialNet(dropout=0.0)
    eager = copy.deepcopy(model)
    device = "lazy"
    model = model.to(device)
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    eager_opt = torch.optim.Adadelta(eager.parameters(), lr=1.0)
    gen = torch.Generator().manual_seed(7)
    losses, eager_losses = [], []
    for _ in range(3):
        data, target = torch.randn(4, 1, 28, 28, generator=gen), torch.randint(0, 10, (4,),
                                                                                generator=gen)
        for net, opt, out in ((eager, eager_opt, eager_losses), (model, optimizer, losses)):
            dev = "cpu" if net is eager else device
            opt.zero_grad(set_to_none=True)
            loss = F.nll_loss(net(data.to(dev)), target.to(dev))
            loss.backward()
            opt.step()
            if net is model:
                ltc.mark_step()
            out.append(loss.detach())
    ltc.wait_device_ops()
    assert [float(l) for l in ltc.to_cpu(losses)] == pytest.approx(
        [float(l) for l in eager_losses], rel=1e-4)
    assert ltc.metrics.counter_value("MarkStep") == 3
    assert "MarkStep" in ltc.metrics.counter_names()
    assert "MarkStep" in ltc.metrics.metrics_report()


def test_step_calls_take_torch_lazy_arguments():
    x = torch.randn(3, 4)
    y = x.to("lazy") * 2
    ltc.mark_step("lazy", wait=True)
    ltc.mark_step(device="lazy:0")
    ltc.wait_device_ops(devices=["lazy"])
    z = y + 1
    ltc.sync_multi([z], ["lazy"])
    torch.testing.assert_close(z.cpu(), x * 2 + 1)
    with pytest.raises(ValueError, match="'lazy' device only"):
        ltc.mark_step("cuda")


def test_to_cpu_keeps_the_structure_of_its_argument():
    x = torch.randn(2, 3)
    lazy = x.to("lazy")
    out = ltc.to_cpu({"a": [lazy * 2, lazy + 1], "b": (lazy.sum(),)}, devices=["lazy"])
    assert set(out) == {"a", "b"} and isinstance(out["b"], tuple)
    torch.testing.assert_close(out["a"][0], x * 2)
    torch.testing.assert_close(out["a"][1], x + 1)
    torch.testing.assert_close(out["b"][0], x.sum())
    assert all(t.device.type == "cpu" for t in out["a"])


def test_tensor_ids_name_storages():
    a = torch.randn(4, 4).to("lazy")
    view = a[1:]
    other = a.clone()
    assert ltc.get_tensor_id(a) == ltc.get_tensor_id(view)
    assert ltc.get_tensor_id(a) != ltc.get_tensor_id(other)
    with pytest.raises(TypeError, match="expected lazy tensors"):
        ltc.get_tensor_id(torch.ones(1))


def test_step_closures_run_now_or_after_the_step():
    seen = []
    ltc.add_step_closure(seen.append, args=("closure",))
    ltc.run_step_closures()
    assert seen == ["closure"]
    ltc.add_step_closure(seen.append, args=("after mark_step",))
    assert seen == ["closure"]
    ltc.mark_step()
    assert seen == ["closure", "after mark_step"]


def test_save_writes_cpu_tensors(tmp_path):
    x = torch.randn(3)
    ltc.save({"x": x.to("lazy") * 3}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt")
    assert loaded["x"].device.type == "cpu"
    torch.testing.assert_close(loaded["x"], x * 3)


def test_debug_dump_ir_formats():
    x = torch.randn(5, 6).to("lazy")
    y = torch.relu(x * 2).sum(dim=1)
    text = ltc.debug.dump_ir([y], "text")
    assert "relu" in text and "sum" in text
    backend = ltc.debug.dump_ir([y], ir_format="backend")
    if ltc.backend_name() == "cpp":
        assert 'extern "C" void kernel' in backend
    else:
        assert "relu" in backend
    dot = ltc.debug.render_ir_graph([y])
    assert dot.startswith("digraph") and dot == ltc.debug.dump_ir([y], "dot")
    with pytest.raises(ValueError, match="'text', 'backend', 'dot' or 'loops'"):
        ltc.debug.dump_ir([y], "png")
