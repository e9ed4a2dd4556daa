"""Train the Lazy Tensor tutorial's MNIST model on lazytriton's "lazy" device.

A port of the training script in PyTorch's torch/csrc/lazy/tutorial.md: the same model,
optimizer (Adadelta, lr 1.0), schedule (StepLR, gamma 0.7 per epoch), batch size (64) and loop,
with `lazytriton.mark_step()` after each optimizer step. Without --data it trains on
scikit-learn's bundled digits upsampled to 28x28, so it runs with no download.

    python examples/mnist.py                      # digits, default backend
    python examples/mnist.py --backend aten       # the reference executor
    python examples/mnist.py --data ~/data/mnist  # real MNIST from its IDX files

`train(args)` is importable, so tests can run it with a small epoch count.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.optim.lr_scheduler import StepLR

# Run from a checkout without installing: prefer the package next to this script.
_REPO_ROOT = Path(__file__).resolve().parents[1]
if (_REPO_ROOT / "lazytriton").is_dir() and str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

import lazytriton  # noqa: E402
import lazytriton.metrics  # noqa: E402
from lazytriton.testing.digits import batches, load_digits_28, load_mnist_idx  # noqa: E402
from lazytriton.testing.models import TutorialNet  # noqa: E402

DEVICE = "lazy"
DEFAULT_EPOCHS = 3  # >95% test accuracy on the digits set in ~5 s of eager CPU time

Dataset = tuple[torch.Tensor, torch.Tensor]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train the Lazy Tensor tutorial's MNIST model with lazytriton.")
    parser.add_argument(
        "--backend", default=None,
        help="lazytriton backend passed to lazytriton.init(), e.g. 'aten', 'cpp', 'triton' "
             "(default: lazytriton's own default)")
    parser.add_argument(
        "--data", metavar="DIR", default=None,
        help="directory with the MNIST IDX files (train-images-idx3-ubyte, ..., optionally "
             ".gz); without it, scikit-learn's 8x8 digits resized to 28x28 are used")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help="number of training epochs (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="batch size for training and testing (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=1.0,
                        help="Adadelta learning rate, decayed by 0.7 after each epoch "
                             "(default: %(default)s)")
    parser.add_argument("--log-every", type=int, default=10, metavar="N",
                        help="print the loss every N steps of an epoch; reading it waits for "
                             "the step to finish; 0 disables (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed for the weights, dropout and shuffling (default: %(default)s)")
    return parser.parse_args(argv)


def load_data(data_dir: str | None) -> tuple[Dataset, Dataset]:
    """(train, test) as CPU tensors: MNIST if a directory is given, else the digits set with
    its fixed split (the same test set whatever --seed is, so runs stay comparable)."""
    if data_dir is not None:
        return load_mnist_idx(data_dir, "train"), load_mnist_idx(data_dir, "test")
    return load_digits_28("train"), load_digits_28("test")


def train_epoch(model: nn.Module, optimizer: optim.Optimizer, data: Dataset, epoch: int,
                args: argparse.Namespace, generator: torch.Generator,
                log: Callable[[str], None]) -> tuple[torch.Tensor, int]:
    """One epoch of the tutorial's loop; returns the last (still lazy) loss and the step count."""
    model.train()
    loss = torch.zeros(())
    steps = 0
    for step, (x, y) in enumerate(batches(*data, args.batch_size, shuffle=True,
                                          generator=generator)):
        x, y = x.to(DEVICE), y.to(DEVICE)
        optimizer.zero_grad(set_to_none=True)
        output = model(x)
        loss = F.nll_loss(output, y)
        loss.backward()
        optimizer.step()
        lazytriton.mark_step()
        steps += 1
        if args.log_every and step % args.log_every == 0:
            log(f"epoch {epoch} step {step} loss {loss.item():.6f}")  # .item() syncs
    return loss, steps


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, batch_size: int) -> float:
    """Test accuracy; the correct count stays on the device and is read once at the end."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=DEVICE)
    for x, y in batches(*data, batch_size):
        pred = model(x.to(DEVICE)).argmax(dim=1)
        correct = correct + (pred == y.to(DEVICE)).sum()
        lazytriton.mark_step()
    return correct.item() / len(data[1])


def train(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, float]:
    """Train and test; returns the final training loss, test accuracy and training steps/s
    (wall time of all epochs, first-step compilation included)."""
    lazytriton.init(backend=args.backend)
    torch.manual_seed(args.seed)
    train_data, test_data = load_data(args.data)
    generator = torch.Generator().manual_seed(args.seed)

    model = TutorialNet().to(DEVICE)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.7)

    loss, steps = torch.zeros(()), 0
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        loss, epoch_steps = train_epoch(model, optimizer, train_data, epoch, args, generator, log)
        steps += epoch_steps
        scheduler.step()
    lazytriton.wait_device_ops()
    seconds = time.perf_counter() - start

    return {
        "loss": loss.item(),
        "accuracy": evaluate(model, test_data, args.batch_size),
        "steps": steps,
        "train_seconds": seconds,
        "steps_per_s": steps / seconds if seconds > 0 else float("nan"),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = train(args)
    print(f"final training loss {result['loss']:.6f}")
    print(f"test accuracy {100 * result['accuracy']:.2f}%")
    print(f"training: {result['steps']} steps in {result['train_seconds']:.1f} s, "
          f"{result['steps_per_s']:.2f} steps/s")
    print(lazytriton.metrics.metrics_report())


if __name__ == "__main__":
    main()
