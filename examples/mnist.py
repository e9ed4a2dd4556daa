"""Train the Lazy Tensor tutorial's MNIST model on lazytriton's "lazy" device.

A port of the training script in PyTorch's torch/csrc/lazy/tutorial.md: the same model,
optimizer (Adadelta, lr 1.0), schedule (StepLR, gamma 0.7 per epoch), batch size (64) and loop,
with `lazytriton.mark_step()` after each optimizer step. Without --data it trains on
scikit-learn's bundled digits upsampled to 28x28, so it runs with no download.

    python examples/mnist.py                      # digits, default backend
    python examples/mnist.py --backend aten       # the reference executor
    python examples/mnist.py --data ~/data/mnist  # real MNIST from its IDX files

It says what it runs on (backend, device, cache dir, dataset), shows a progress bar per epoch
with the loss and each graph compile as it happens (plain lines when stdout is not a terminal),
and ends with a summary table. `train(args)` is importable, so tests can run it with a small
epoch count and --limit.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.optim.lr_scheduler import StepLR

# lazytriton comes from the install (README's set-up), never from a path hack: the checkout's
# top-level codegen/ is only importable as lazytriton.codegen.
_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:  # training_report.py, also when a test loads this file by path
    sys.path.append(str(_HERE))

import lazytriton  # noqa: E402
import lazytriton.metrics  # noqa: E402
from lazytriton.testing.digits import batches, load_digits_28, load_mnist_idx  # noqa: E402
from lazytriton.testing.models import TutorialNet  # noqa: E402
from training_report import (  # noqa: E402
    Log, LineProgress, metrics_rows, open_progress, table, watch_compiles)

DEVICE = "lazy"
DEFAULT_EPOCHS = 3  # >95% test accuracy on the digits set in ~5 s of eager CPU time

Dataset = tuple[torch.Tensor, torch.Tensor]

EPILOG = """\
what it prints:
  At start the backend, the device the lazy tensors' data lives on, the cache dir (generated
  code and built kernels, reused by the next run) and the dataset. Then a progress bar per
  epoch (plain lines when stdout is not a terminal) with the loss and each graph compile as
  it happens; the loss shown is the previous step's, so reading it never waits for the step
  just started. At the end a summary table; --metrics adds lazytriton's full metrics report.

lazytriton's counters (lazytriton.metrics.counter_value(name)):
""" + "\n".join(textwrap.fill(text, width=79, initial_indent=f"  {name:<16} ",
                             subsequent_indent=" " * 19)
               for name, text in lazytriton.metrics.COUNTER_HELP.items())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train the Lazy Tensor tutorial's MNIST model with lazytriton.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
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
                        help="show the loss of step 1 and of every N-th step; reading it waits "
                             "for that step to finish; 0 disables (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed for the weights, dropout and shuffling (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="use only the first N training and N test images (quick runs)")
    parser.add_argument("--metrics", action="store_true",
                        help="also print lazytriton.metrics.metrics_report() at the end")
    return parser.parse_args(argv)


def load_data(data_dir: str | None, limit: int | None = None) -> tuple[Dataset, Dataset, str]:
    """(train, test, its name) as CPU tensors: MNIST if a directory is given, else the digits
    set with its fixed split (the same test set whatever --seed is, so runs stay comparable)."""
    if data_dir is not None:
        train, test = load_mnist_idx(data_dir, "train"), load_mnist_idx(data_dir, "test")
        name = f"MNIST from {data_dir}"
    else:
        train, test = load_digits_28("train"), load_digits_28("test")
        name = "scikit-learn digits resized to 28x28"
    if limit is not None:
        train, test = (train[0][:limit], train[1][:limit]), (test[0][:limit], test[1][:limit])
    return train, test, name


def steps_per_epoch(data: Dataset, batch_size: int) -> int:
    return -(-len(data[1]) // batch_size)


def shows_loss(step: int, every: int) -> bool:
    """Step 1 (a sanity check: about ln 10 = 2.3) and every `every`-th; none when every is 0."""
    return every > 0 and (step == 1 or (step > 0 and step % every == 0))


def train_epoch(model: nn.Module, optimizer: optim.Optimizer, data: Dataset,
                args: argparse.Namespace, generator: torch.Generator,
                progress: LineProgress) -> tuple[torch.Tensor, int]:
    """One epoch of the tutorial's loop; returns the last (still lazy) loss and the step count.
    The loss shown after step k is step k-1's: it ran while step k was traced, so reading it
    stalls the pipeline far less than reading step k's would."""
    model.train()
    loss = previous = torch.zeros(())
    steps = 0
    for x, y in batches(*data, args.batch_size, shuffle=True, generator=generator):
        x, y = x.to(DEVICE), y.to(DEVICE)
        optimizer.zero_grad(set_to_none=True)
        output = model(x)
        loss = F.nll_loss(output, y)
        loss.backward()
        optimizer.step()
        lazytriton.mark_step()
        steps += 1
        shown = steps - 1  # the step whose loss is ready to read
        wanted = shows_loss(shown, args.log_every)
        progress.step((shown, previous.item()) if wanted else None)  # .item() syncs
        previous = loss
    return loss, steps


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, batch_size: int, progress: LineProgress) -> float:
    """Test accuracy; the correct count stays on the device and is read once at the end."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=DEVICE)
    for x, y in batches(*data, batch_size):
        pred = model(x.to(DEVICE)).argmax(dim=1)
        correct = correct + (pred == y.to(DEVICE)).sum()
        lazytriton.mark_step()
        progress.step()
    return correct.item() / len(data[1])


def setup_rows(args: argparse.Namespace, train_data: Dataset, test_data: Dataset,
               dataset: str) -> list[tuple[str, str]]:
    """What this run uses, said before the first (possibly slow) step."""
    steps = steps_per_epoch(train_data, args.batch_size)
    return [
        ("backend", f"{lazytriton.backend_name()} "
                    f"(available: {', '.join(lazytriton.available_backends())})"),
        ("device", f"{DEVICE}, data on {lazytriton.backend_device()}"),
        ("cache dir", f"{Path(lazytriton.cache_dir()).resolve()} (what it holds: "
                      "lazytriton cache list)"),
        ("dataset", f"{dataset}: {len(train_data[1])} train / {len(test_data[1])} test images"),
        ("training", f"{args.epochs} epoch{'s' if args.epochs != 1 else ''} x {steps} steps, "
                     f"batch {args.batch_size}, Adadelta lr {args.lr}, seed {args.seed}"),
    ]


def train(args: argparse.Namespace, log: Log = print,
          bar: bool | None = None) -> dict[str, float]:
    """Train and test; returns the final training loss, test accuracy and training steps/s
    (wall time of all epochs, first-step compilation included). `bar`: a progress bar on
    stdout (default: when printing to a terminal), else plain lines through `log`."""
    if bar is None:
        bar = log is print and sys.stdout.isatty()
    lazytriton.init(backend=args.backend)
    lazytriton.metrics.reset()  # the summary describes this run only
    torch.manual_seed(args.seed)
    train_data, test_data, dataset = load_data(args.data, args.limit)
    log(table(f"lazytriton {lazytriton.__version__}: MNIST example",
              setup_rows(args, train_data, test_data, dataset)))
    generator = torch.Generator().manual_seed(args.seed)

    model = TutorialNet().to(DEVICE)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.7)

    loss, steps = torch.zeros(()), 0
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        progress = open_progress(f"epoch {epoch}/{args.epochs}",
                                 steps_per_epoch(train_data, args.batch_size), log, bar)
        with watch_compiles(progress):
            loss, epoch_steps = train_epoch(model, optimizer, train_data, args, generator,
                                            progress)
            lazytriton.wait_device_ops()  # the epoch's time includes its last step's run
        progress.close()
        steps += epoch_steps
        scheduler.step()
    seconds = time.perf_counter() - start

    progress = open_progress("test", steps_per_epoch(test_data, args.batch_size), log, bar)
    with watch_compiles(progress):
        accuracy = evaluate(model, test_data, args.batch_size, progress)
    progress.close()
    return {
        "loss": loss.item(),
        "accuracy": accuracy,
        "steps": steps,
        "train_seconds": seconds,
        "steps_per_s": steps / seconds if seconds > 0 else float("nan"),
    }


def summary(result: dict[str, float]) -> str:
    """The run in one table, one unit per row."""
    rows = [
        ("final training loss", f"{result['loss']:.6f}"),
        ("test accuracy (%)", f"{100 * result['accuracy']:.2f}"),
        ("training steps", str(result["steps"])),
        ("training steps/s", f"{result['steps_per_s']:.2f}"),
        ("training wall time (s)", f"{result['train_seconds']:.2f}"),
    ]
    return table("summary", rows + metrics_rows())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = train(args)
    print(summary(result))
    if args.metrics:
        print(lazytriton.metrics.metrics_report())


if __name__ == "__main__":
    main()
