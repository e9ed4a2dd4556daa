"""Automatic dynamic shapes (runtime/shapes.py): a structure is compiled for its first sizes,
once more with the changed dims symbolic, and that program serves every later size; values
equal eager's throughout."""
from __future__ import annotations

import re
import warnings

import copy

import pytest
import torch
import torch.nn.functional as F

import lazytriton
from lazytriton import metrics
from lazytriton.testing.models import MLP, TutorialNet

pytestmark = [pytest.mark.differential, pytest.mark.skip_backends(
    aten="the reference executor runs each graph as traced: no kernels, no shape families")]


def _counts() -> tuple[int, int]:
    return (metrics.counter_value("UncachedCompile") or 0,
            metrics.counter_value("KernelCompile") or 0)


class Stats(torch.nn.Module):
    """Size-derived divisors everywhere: mean (whole tensor and per dim), var and std with a
    correction, avg_pool2d."""

    def forward(self, x):
        pooled = F.avg_pool2d(x, 2)
        h = x * x
        return (h.mean(), x.mean(dim=(0, 2)), x.var(dim=0, correction=1),
                x.std(dim=(1, 3), keepdim=True), pooled.mean(dim=0), pooled.var())


def test_mean_var_avg_pool_reuse_kernels_from_the_second_batch_size(test_backend):
    model = Stats()
    kernel_counts = []
    for batch in (8, 16, 24, 40, 7):
        x = torch.randn(batch, 3, 6, 6)
        got = [t.cpu() for t in model(x.to("lazy"))]
        for g, e in zip(got, model(x)):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
        kernel_counts.append(_counts()[1])
    assert kernel_counts[1] > kernel_counts[0]  # the second size: symbolic kernels
    assert kernel_counts[2:] == [kernel_counts[1]] * 3, kernel_counts
    assert "compiled with the changed dims as size symbols" in metrics.metrics_report()


def test_var_of_a_symbolic_count_below_its_correction_is_nan(test_backend):
    """The symbolic kernel's divisor is max(0, batch - correction), as eager's: a batch of one
    (after two others made the batch a size symbol) gives NaN, not a finite value."""
    for batch in (5, 9, 1):
        x = torch.randn(batch, 4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # eager's "degrees of freedom is <= 0"
            expected = x.var(dim=0)
        torch.testing.assert_close(x.to("lazy").var(dim=0).cpu(), expected, equal_nan=True)
    assert expected.isnan().all()


def test_a_size_derived_constant_is_not_baked_into_the_kernel(test_backend):
    """`(h * h).mean()` divides by a size expression: its source names no batch's numel."""
    graphs = lazytriton.cache_dir() / "graphs"
    earlier = set(graphs.glob("*"))  # other tests' graphs share the cache dir
    for batch in (16, 7):
        h = torch.randn(batch, 64)
        lazy = h.to("lazy")
        torch.testing.assert_close(((lazy * lazy).mean()).cpu(), (h * h).mean())
    ours = [f.parent for f in graphs.glob("*/ir.txt") if f.parent not in earlier
            and "mean" in f.read_text() and ("float32[16, 64]" in f.read_text()
                                             or "float32[7, 64]" in f.read_text())]
    sources = "".join(p.read_text() for folder in ours for p in folder.iterdir()
                      if p.suffix in (".cpp", ".py") and p.name != "wrapper.py")
    assert len(ours) == 2, ours
    # 7 * 64: the second (symbolic) program's numel (as a number: not tmp448, a variable)
    assert not re.search(r"(?<![\w.])448(?![\w.])", sources)


def _train(model, batches, lazy: bool):
    opt = torch.optim.Adadelta(model.parameters())
    losses, counts = [], []
    for x, y in batches:
        if lazy:
            x, y = x.to("lazy"), y.to("lazy")
        opt.zero_grad()
        loss = F.nll_loss(model(x), y) if isinstance(model, TutorialNet) else \
            F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if lazy:
            lazytriton.mark_step()
        losses.append(loss.item())
        counts.append(_counts())
    return losses, counts


def _batches(sizes, shape, classes):
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(b, *shape, generator=gen), torch.randint(0, classes, (b,), generator=gen))
            for b in sizes]


@pytest.mark.parametrize("name", ["mlp", "tutorial"])
def test_changing_batch_costs_one_compile(test_backend, tmp_path, name):
    """64, 64, 29, 64, 17, 33 (smaller for the Net): at most one UncachedCompile more than a
    fixed batch, no kernel compiled after the 29, values as eager's."""
    make = (lambda: MLP((20, 32, 5))) if name == "mlp" else (lambda: TutorialNet(dropout=0.0))
    shape, classes = ((20,), 5) if name == "mlp" else ((1, 28, 28), 10)
    sizes = [64, 64, 29, 64, 17, 33] if name == "mlp" else [8, 8, 5, 8, 3, 6]
    torch.manual_seed(0)
    model = make()

    lazytriton.init(test_backend, cache_dir=tmp_path / "fixed")  # a fresh session
    _, fixed_counts = _train(copy.deepcopy(model).to("lazy"),
                             _batches([sizes[0]] * len(sizes), shape, classes), lazy=True)
    lazytriton.init(test_backend, cache_dir=tmp_path / "varying")
    metrics.reset()
    eager = copy.deepcopy(model)
    varying = _batches(sizes, shape, classes)
    losses, counts = _train(model.to("lazy"), varying, lazy=True)
    expected, _ = _train(eager, varying, lazy=False)
    torch.testing.assert_close(losses, expected, rtol=1e-5, atol=1e-5)
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p.cpu(), q, rtol=1e-4, atol=1e-5)

    kernels_from_29 = [k for _, k in counts[2:]]
    assert kernels_from_29 == [kernels_from_29[0]] * len(kernels_from_29), counts
    assert counts[-1][0] <= fixed_counts[-1][0] + 1, (counts, fixed_counts)
    assert "compiled with the changed dims as size symbols" in metrics.metrics_report()


def test_a_size_baked_into_the_program_keeps_the_structure_static(test_backend):
    """A slice starting at half the batch: its start is a constant of the program, so the
    second size's program differs from the first's and every size compiles its own (the shape
    guard alone would accept 24 for a program reading from row 8)."""
    for batch in (8, 16, 24, 16):
        x = torch.randn(batch, 5)
        start = batch // 2
        got = (x.to("lazy") * 2)[start:start + 2] + 1  # the add reads the slice in the graph
        torch.testing.assert_close(got.cpu(), (x * 2)[start:start + 2] + 1)
    assert _counts()[0] == 3  # 8, 16, 24; the second 16 is the same graph as the first
    report = metrics.metrics_report()
    assert "its program depends on the sizes themselves" in report, report


def test_a_batch_of_one_neither_uses_nor_spoils_the_symbolic_program(test_backend):
    model = Stats()
    for batch in (8, 16, 1, 24):
        x = torch.randn(batch, 3, 6, 6)
        got = [t.cpu() for t in model(x.to("lazy"))]
        for g, e in zip(got, model(x)):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6, equal_nan=True)
        if batch == 1:
            kernels = _counts()[1]
    assert _counts()[1] == kernels  # 24 reuses the program compiled for 16
    assert "a size of 0 or 1 is never a symbol" in metrics.metrics_report()


def test_a_dense_kernel_over_symbolic_sizes_indexes_simply(test_backend):
    """Both dims change: the C++ kernel indexes `x[i]` over one merged loop of ks0*ks1
    elements (codegen/cpp_loops.py), not a polynomial."""
    for rows, cols in ((8, 5), (16, 7), (24, 9)):
        x = torch.randn(rows, cols)
        torch.testing.assert_close(torch.relu(x.to("lazy") * 2).cpu(), torch.relu(x * 2))
    assert _counts()[0] == 2
    if test_backend.startswith("cpp"):
        (symbolic,) = [f.parent for f in lazytriton.cache_dir().glob("graphs/*/ir.txt")
                       if f.read_text().startswith("# size symbols") and "relu" in f.read_text()
                       and "data : float32[16, 7]" in f.read_text()]
        source = (symbolic / "kernels.cpp").read_text()
        assert "p0[y0]" in source and "y0 < (ks0 * ks1)" in source, source


def test_a_graph_and_its_skeleton_lower_to_the_same_program(test_backend):
    """The shape family compares a new graph's program with its first graph's skeleton (leaves
    without data) lowered with the same symbols: a decomposition reading a leaf directly
    (nll_loss of the target) must lower the same over a skeleton, or no program would ever be
    shape-generic."""
    from lazytriton.graph import build_graph, skeleton
    from lazytriton.runtime.kernel_backend import lower_and_schedule
    from lazytriton.runtime.session import current
    from lazytriton.storage import pending_storages
    x, y = torch.randn(16, 6), torch.randint(0, 6, (16,))
    loss = F.cross_entropy(x.to("lazy").requires_grad_(), y.to("lazy"))
    graph = build_graph([s.value for s in pending_storages()])
    backend = current().backend
    symbols = {(k, 0): 0 for k, leaf in enumerate(graph.inputs)
               if leaf.outputs[0].meta is not None and leaf.outputs[0].meta.shape}
    lowering, _ = lower_and_schedule(skeleton(graph), backend.codegen, symbols)
    assert not lowering.externs  # nll_loss decomposed into kernels, not an aten call
    made = backend.fingerprint(graph, symbols)
    assert made is not None and backend.fingerprint(skeleton(graph), symbols) == made
    torch.testing.assert_close(loss.cpu(), F.cross_entropy(x, y))


class SmallCNN(torch.nn.Module):
    """Padding, pooling and a global average: sizes and strides that are sums and products of
    the image's height and width (a channel stride is H*W)."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 6, 3)
        self.head = torch.nn.Linear(6, 5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.adaptive_avg_pool2d(F.relu(self.conv2(x)), 1)
        return self.head(x.flatten(1))


@pytest.mark.parametrize("sizes", [
    [(12, 12), (12, 12), (16, 16), (20, 20), (24, 24), (14, 14)],  # one symbol: its square
    [(12, 16), (12, 16), (16, 20), (20, 28), (10, 12)],  # two symbols: their product
], ids=["square", "oblong"])
def test_changing_image_sizes_compile_once_more(test_backend, tmp_path, sizes):
    """A CNN trained on images whose height and width change (after two steps of one size:
    the first step's graph, which creates the optimizer's state, is another structure): the
    second size makes them symbols, and every later size runs that program (no compile), with
    eager's values."""
    lazytriton.init(test_backend, cache_dir=tmp_path)
    metrics.reset()
    torch.manual_seed(0)
    model = SmallCNN()
    eager = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(2)
    batches = [(torch.randn(3, 3, h, w, generator=gen), torch.randint(0, 5, (3,), generator=gen))
               for h, w in sizes]
    losses, counts = _train(model.to("lazy"), batches, lazy=True)
    expected, _ = _train(eager, batches, lazy=False)
    torch.testing.assert_close(losses, expected, rtol=1e-5, atol=1e-5)
    for p, q in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(p.cpu(), q, rtol=1e-4, atol=1e-5)
    assert counts[3:] == [counts[2]] * (len(counts) - 3), counts
    assert counts[2][0] == counts[1][0] + 1, counts  # the one compile with symbols
    assert "later sizes of them reuse it" in metrics.metrics_report()


def test_a_sum_loss_over_changing_batches_compiles_once_more(test_backend):
    """sum's backward expands the scalar gradient to the batch (a stride-0 view of the batch's
    size): that size is the batch symbol, not a constant of each program."""
    torch.manual_seed(0)
    eager = torch.nn.Linear(6, 3)
    model = copy.deepcopy(eager).to("lazy")
    counts = []
    for batch in (8, 16, 5, 7, 12, 9):
        x = torch.randn(batch, 6)
        for m, xx in ((eager, x), (model, x.to("lazy"))):
            m.zero_grad()
            (m(xx) ** 2).sum().backward()
        lazytriton.mark_step()
        torch.testing.assert_close(model.weight.grad.cpu(), eager.weight.grad)
        counts.append(_counts()[0])
    assert counts[2:] == [counts[1]] * 4, counts
