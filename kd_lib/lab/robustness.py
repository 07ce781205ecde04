"""Robustness to input noise: accuracy as Gaussian noise of growing size is added to the inputs.

The noise is drawn from a seeded generator *once per noise level*, independently of the model,
so every model sees exactly the same corrupted inputs and their curves can be compared pairwise
(the difference between two models is not blurred by different noise draws). The same noise,
applied afresh at every training step, is the augmentation of "function matching" (Beyer et al.
2022, "Knowledge distillation: A good teacher is patient and consistent"): :func:`gaussian_noise`
returns it in the form :func:`kd_lib.train` expects for ``augment``.
"""
from __future__ import annotations

import math
from typing import Callable, List, Sequence

import torch
from torch import nn

from ..metrics import accuracy, predict_logits

Tensor = torch.Tensor

__all__ = ["accuracy_under_noise", "gaussian_noise"]


def _check_sigma(sigma: float) -> float:
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"noise standard deviation must be a finite number >= 0, got {sigma}")
    return sigma


def accuracy_under_noise(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    sigmas: Sequence[float],
    *,
    seed: int = 0,
    batch_size: int = 1024,
) -> List[float]:
    """Accuracy on ``inputs + sigma * eps`` with ``eps ~ N(0, I)``, for each ``sigma``.

    ``sigma`` is in the units of the inputs (MNIST-1D is standardised to std 1, so sigma = 0.5
    is noise of half the signal's standard deviation). Noise level ``k`` uses the generator
    seeded with ``seed + k``: the same draw for every model evaluated with the same arguments.
    """
    if len(sigmas) == 0:
        raise ValueError("sigmas is empty: give at least one noise level")
    if len(inputs) != len(labels):
        raise ValueError(f"{len(inputs)} inputs but {len(labels)} labels")
    checked = [_check_sigma(sigma) for sigma in sigmas]
    results = []
    for level, sigma in enumerate(checked):
        generator = torch.Generator().manual_seed(seed + level)
        noise = torch.randn(inputs.shape, generator=generator, dtype=torch.float32).to(inputs.device, inputs.dtype)
        logits = predict_logits(model, inputs + sigma * noise, batch_size)
        results.append(accuracy(logits, labels.to(logits.device)))
    return results


def gaussian_noise(sigma: float) -> Callable[[Tensor, torch.Generator], Tensor]:
    """An ``augment`` for :func:`kd_lib.train`: ``batch + sigma * N(0, I)``, drawn from its generator."""
    sigma = _check_sigma(sigma)

    def augment(batch: Tensor, generator: torch.Generator) -> Tensor:
        noise = torch.randn(batch.shape, generator=generator, dtype=torch.float32)
        return batch + sigma * noise.to(batch.device, batch.dtype)

    return augment
