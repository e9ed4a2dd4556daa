"""The lazy device as the tutorial uses it: factories, moves, reads, printing, save/load."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch


FACTORIES = {
    "zeros": lambda d: torch.zeros(2, 3, device=d),
    "ones": lambda d: torch.ones(4, dtype=torch.int64, device=d),
    "full": lambda d: torch.full((3, 2), 2.5, device=d),
    "arange": lambda d: torch.arange(1, 11, 3, device=d),
    "arange_float": lambda d: torch.arange(0, 1, 0.125, device=d),
    "linspace": lambda d: torch.linspace(-1, 1, 7, device=d),
    "eye": lambda d: torch.eye(3, 5, device=d),
    "tensor": lambda d: torch.tensor([[1.5, -2.0], [3.0, 4.25]], device=d),
    "tensor_int": lambda d: torch.tensor([3, -1, 7], device=d),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_factories_match_eager(name):
    make = FACTORIES[name]
    lazy = make("lazy")
    assert lazy.device.type == "lazy"
    torch.testing.assert_close(lazy.cpu(), make("cpu"))


def test_empty_has_shape_and_dtype():
    t = torch.empty(5, 2, dtype=torch.float64, device="lazy")
    assert t.shape == (5, 2) and t.dtype == torch.float64 and t.device.type == "lazy"


@pytest.mark.parametrize("name", ["rand", "randn", "randint"])
def test_random_factories_follow_manual_seed(name):
    make = {"rand": lambda: torch.rand(64, device="lazy"),
            "randn": lambda: torch.randn(8, 8, device="lazy"),
            "randint": lambda: torch.randint(0, 100, (32,), device="lazy")}[name]
    torch.manual_seed(123)
    first = make().cpu()
    torch.manual_seed(123)
    second = make().cpu()
    third = make().cpu()
    torch.testing.assert_close(first, second)
    assert not torch.equal(second, third)
    if name == "rand":
        assert 0 <= first.min() and first.max() < 1 and first.std() > 0.1


def test_to_and_back_preserves_values_and_dtype():
    for dtype in (torch.float32, torch.float64, torch.int32, torch.int64, torch.bool,
                  torch.uint8, torch.bfloat16, torch.float16):
        cpu = (torch.randn(3, 5) * 10).to(dtype)
        lazy = cpu.to("lazy")
        assert lazy.dtype == dtype
        torch.testing.assert_close(lazy.cpu(), cpu)
        torch.testing.assert_close(lazy.to("cpu"), cpu)


def test_non_contiguous_host_tensor_moves_correctly():
    cpu = torch.randn(4, 6).t()[:, ::2]
    lazy = cpu.to("lazy")
    torch.testing.assert_close(lazy.cpu(), cpu)
    torch.testing.assert_close((lazy * 2).cpu(), cpu * 2)


def test_reads_item_tolist_numpy_bool():
    cpu = torch.randn(2, 3)
    lazy = cpu.to("lazy")
    assert lazy.sum().item() == pytest.approx(cpu.sum().item(), rel=1e-6)
    assert lazy.tolist() == cpu.tolist()
    np.testing.assert_array_equal(lazy.cpu().numpy(), cpu.numpy())
    assert bool(lazy.sum() > -1e9)
    assert not bool((lazy.abs() < 0).any())
    assert f"{lazy.max():.4f}" == f"{cpu.max():.4f}"


def test_print_reads_like_eager():
    cpu = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    text = repr(cpu.to("lazy") * 2)
    assert text == "tensor([[2., 4.],\n        [6., 8.]], device='lazy:0')"
    assert "dtype=torch.int64" in repr(torch.tensor([1, 2], dtype=torch.int64).to("lazy").int().long()) \
        or repr(torch.tensor([1, 2]).to("lazy")) == "tensor([1, 2], device='lazy:0')"
    w = torch.randn(2, requires_grad=True)
    assert "grad_fn=<MulBackward0>" in repr(w.to("lazy") * 3)


def test_add_two_maybe_tutorial_both_branches():
    def add_two_maybe(t: torch.Tensor, maybe: torch.Tensor):
        if maybe:
            return t + 2
        return t

    t = torch.randn(4).to("lazy")
    torch.testing.assert_close(add_two_maybe(t, torch.tensor(1).to("lazy")).cpu(), t.cpu() + 2)
    torch.testing.assert_close(add_two_maybe(t, torch.tensor(0).to("lazy")).cpu(), t.cpu())


def test_module_to_lazy_keeps_parameters():
    model = torch.nn.Linear(4, 3)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    model.to("lazy")
    assert all(isinstance(p, torch.nn.Parameter) and p.device.type == "lazy" and p.requires_grad
               for p in model.parameters())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v.cpu(), expected[k])


class _Shared(torch.nn.Module):
    """GPT-2's tie (the head reuses the embedding's weight), a Parameter shared by two
    submodules of different parents, and a buffer registered in two modules."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight
        shared = torch.nn.Linear(4, 4)
        self.a = torch.nn.Sequential(shared, torch.nn.ReLU())
        self.b = torch.nn.Sequential(torch.nn.Tanh(), shared)
        mask = torch.arange(6.0)
        self.emb.register_buffer("mask", mask)
        self.head.register_buffer("mask", mask)


def test_module_to_lazy_keeps_shared_parameters_and_buffers():
    model = _Shared()
    expected = model.emb.weight.detach().clone()
    alive = model.a(model.emb.weight)  # an autograd graph holding the weights (swap would fail)
    model.to("lazy")
    weight = model.emb.weight
    assert model.head.weight is weight
    assert isinstance(weight, torch.nn.Parameter) and weight.device.type == "lazy"
    assert model.a[0] is model.b[1] and model.a[0].weight.device.type == "lazy"
    assert model.emb.mask is model.head.mask and model.emb.mask.device.type == "lazy"
    assert len(list(model.parameters())) == 3  # emb/head weight, shared weight and bias
    torch.testing.assert_close(weight.cpu(), expected)
    model.double()  # a conversion on the lazy device keeps them shared too
    assert model.head.weight is model.emb.weight and model.emb.weight.dtype == torch.float64
    assert model.emb.mask is model.head.mask and model.emb.mask.dtype == torch.float64
    model.cpu()  # and so does the way back
    assert model.head.weight is model.emb.weight and model.emb.weight.device.type == "cpu"
    assert model.emb.mask is model.head.mask and model.a[0] is model.b[1]
    assert alive.grad_fn is not None


def test_module_to_lazy_keeps_shared_gradients():
    model = _Shared()
    model.head(model.emb(torch.tensor([1, 2]))).sum().backward()
    expected = model.emb.weight.grad.clone()
    model.to("lazy")
    grad = model.emb.weight.grad
    assert grad is model.head.weight.grad and grad.device.type == "lazy"
    torch.testing.assert_close(grad.cpu(), expected)


def test_deepcopy_of_lazy_model_keeps_parameters_and_ties():
    import copy
    model = copy.deepcopy(_Shared().to("lazy"))
    assert isinstance(model.emb.weight, torch.nn.Parameter) and model.emb.weight.requires_grad
    assert model.head.weight is model.emb.weight and model.emb.mask is model.head.mask


def test_save_state_dict_of_lazy_model_and_load_into_lazy_model():
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    model.to("lazy")
    with torch.no_grad():
        model[0].weight.mul_(3)  # pending IR must be saved too
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)
    assert all(v.device.type == "cpu" for v in loaded.values())
    other = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    other.to("lazy").load_state_dict(loaded)
    x = torch.randn(3, 5)
    torch.testing.assert_close(other(x.to("lazy")).cpu(), model(x.to("lazy")).cpu())
    torch.testing.assert_close(other[0].weight.cpu(), loaded["0.weight"])


def test_load_cpu_state_dict_into_lazy_model():
    cpu_model = torch.nn.Linear(6, 2)
    lazy_model = torch.nn.Linear(6, 2).to("lazy")
    lazy_model.load_state_dict(cpu_model.state_dict())
    x = torch.randn(4, 6)
    torch.testing.assert_close(lazy_model(x.to("lazy")).cpu(), cpu_model(x))


def test_deepcopy_of_lazy_model_is_independent():
    import copy
    model = torch.nn.Linear(3, 3).to("lazy")
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.weight.add_(1)
    torch.testing.assert_close(clone.weight.cpu(), model.weight.cpu() + 1)
