"""MNIST-shaped data with no download at run time.

`load_digits_28` upsamples scikit-learn's bundled 8x8 digits to MNIST's 28x28 so that the
tutorial's model, whose fc1 expects 28x28 inputs, trains unchanged on a CPU-only machine in
seconds. `load_mnist_idx` reads the real MNIST from IDX files a user already has.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MNIST_MEAN", "MNIST_STD", "load_digits_28", "load_mnist_idx", "batches"]

# The normalization of the tutorial's transforms.Normalize((0.1307,), (0.3081,)).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

_TRAIN_FRACTION = 0.8
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGES_MAGIC = 0x0803  # unsigned bytes, 3 dimensions
_LABELS_MAGIC = 0x0801  # unsigned bytes, 1 dimension


def _check_split(split: str) -> None:
    if split not in _IDX_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def _normalize(images01: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> MNIST-normalized float32, as the tutorial's transforms produce."""
    return ((images01 - MNIST_MEAN) / MNIST_STD).to(torch.float32).contiguous()


def load_digits_28(split: str = "train", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits as MNIST-like tensors.

    Returns images float32 [N, 1, 28, 28] (bilinearly resized, MNIST-normalized) and labels
    int64 [N]. The 80/20 train/test split is a fixed permutation drawn from `seed`, so the two
    splits of one seed never overlap and every run sees the same data.
    """
    _check_split(split)
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no network

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)
    labels = torch.from_numpy(digits.target.astype(np.int64))

    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_train = int(len(labels) * _TRAIN_FRACTION)
    chosen = order[:n_train] if split == "train" else order[n_train:]
    return _normalize(images[chosen]), labels[chosen].contiguous()


def _find_idx_file(data_dir: Path, name: str) -> Path:
    """The file `name` or `name.gz`, in `data_dir` or torchvision's `MNIST/raw` under it."""
    for folder in (data_dir, data_dir / "MNIST" / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"MNIST file {name!r} (or {name}.gz) not found in {str(data_dir)!r} "
        f"nor in {str(data_dir / 'MNIST' / 'raw')!r}; put the four MNIST IDX files there "
        f"(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        f"t10k-labels-idx1-ubyte, optionally gzipped)"
    )


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse an IDX file: a big-endian magic number, one int32 per dimension, then the bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = magic & 0xFF
    offset = 4 + 4 * ndim
    if len(data) < offset or int(np.frombuffer(data, dtype=">i4", count=1)[0]) != magic:
        raise ValueError(f"{path}: not an IDX file of the expected kind (magic {magic:#06x})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    if len(data) - offset != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated or padded, expected {shape} bytes after the header")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(shape)


def load_mnist_idx(data_dir: str | Path,
                   split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST from its standard IDX files (optionally .gz) in `data_dir`.

    Returns images float32 [N, 1, 28, 28] normalized as in the tutorial, and labels int64 [N].
    """
    _check_split(split)
    images_name, labels_name = _IDX_FILES[split]
    data_dir = Path(data_dir)
    images = _read_idx(_find_idx_file(data_dir, images_name), _IMAGES_MAGIC)
    labels = _read_idx(_find_idx_file(data_dir, labels_name), _LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(f"{data_dir}: {len(images)} {split} images but {len(labels)} labels")
    images01 = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return _normalize(images01), torch.from_numpy(labels.astype(np.int64))


def batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (x, y) mini-batches, the last one smaller if N is not a multiple of batch_size
    (as a DataLoader with drop_last=False does). Shuffling draws from `generator`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(labels)
    order = torch.randperm(n, generator=generator) if shuffle else None
    for start in range(0, n, batch_size):
        if order is None:
            yield images[start:start + batch_size], labels[start:start + batch_size]
        else:
            index = order[start:start + batch_size]
            yield images[index], labels[index]
