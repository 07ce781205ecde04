"""Offline datasets as in-memory tensors, and a fast shuffled batch iterator.

Nothing here downloads anything:

* MNIST-1D (Greydanus 2020, arXiv:2011.14439) is *generated* by the ``mnist1d`` package's
  ``make_dataset`` from a seed (never its download URL): 40-sample 1-D signals, 10 classes.
  A different ``seed`` gives fresh samples from the same distribution, e.g. an unlabelled
  transfer set that cannot leak the test set.
* scikit-learn's digits (8x8 images, 1,797 samples) ship inside scikit-learn.

At this scale, slicing tensors that already sit on the device runs about twice as fast as a
``DataLoader`` over a ``TensorDataset``, so that is all :func:`batches` does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np
import torch

Tensor = torch.Tensor

__all__ = ["Split", "make_mnist1d", "make_digits", "batches"]


@dataclass
class Split:
    """A train/test split of in-memory tensors (inputs float32, labels int64)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    def to(self, device) -> "Split":
        return Split(*(t.to(device) for t in (self.x_train, self.y_train, self.x_test, self.y_test)))

    @property
    def num_classes(self) -> int:
        return int(torch.cat([self.y_train, self.y_test]).max()) + 1

    def __repr__(self) -> str:
        return (
            f"Split(train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
            f"classes={self.num_classes})"
        )


def make_mnist1d(num_samples: int = 5000, seed: int = 42, train_split: float = 0.8) -> Split:
    """Generate MNIST-1D with the ``mnist1d`` package (offline, deterministic in ``seed``).

    ``num_samples`` is rounded down to a multiple of 10 (equal class counts). The package
    standardises each generated set to mean 0 / std 1, and it reseeds NumPy's global RNG.
    The defaults (5,000 samples, seed 42, 80/20) reproduce the published dataset.
    """
    if num_samples < 10:
        raise ValueError(f"num_samples must be at least 10 (one per class), got {num_samples}")
    if not 0.0 < train_split <= 1.0:
        raise ValueError(f"train_split must lie in (0, 1], got {train_split}")
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("MNIST-1D needs the `mnist1d` package: pip install mnist1d") from error
    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    args.train_split = float(train_split)
    data = make_dataset(args)
    return Split(
        torch.as_tensor(np.asarray(data["x"]), dtype=torch.float32),
        torch.as_tensor(np.asarray(data["y"]), dtype=torch.int64),
        torch.as_tensor(np.asarray(data["x_test"]), dtype=torch.float32),
        torch.as_tensor(np.asarray(data["y_test"]), dtype=torch.int64),
    )


def make_digits(test_fraction: float = 0.3, seed: int = 0) -> Split:
    """scikit-learn's 8x8 digits as 64-dim vectors scaled to [0, 1], split stratified by class."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data / 16.0, digits.target, test_size=test_fraction, random_state=seed,
        stratify=digits.target,
    )
    as_x = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.as_tensor(a, dtype=torch.int64)  # noqa: E731
    return Split(as_x(x_train), as_y(y_train), as_x(x_test), as_y(y_test))


def batches(
    num_items: int,
    batch_size: int,
    *,
    shuffle: bool = True,
    generator: Optional[torch.Generator] = None,
    drop_last: bool = False,
    device=None,
) -> Iterator[Tensor]:
    """Yield index tensors that cover ``range(num_items)`` in batches.

    Index a tensor with them (``x[idx]``). Shuffling uses ``generator`` (a seeded
    ``torch.Generator``) so that the order is reproducible and can be checkpointed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_items < 1:
        raise ValueError(f"need at least one item to batch, got {num_items}")
    if shuffle:
        order = torch.randperm(num_items, generator=generator)
    else:
        order = torch.arange(num_items)
    if device is not None:
        order = order.to(device)
    stop = num_items - num_items % batch_size if drop_last else num_items
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]
