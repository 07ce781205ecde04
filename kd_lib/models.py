"""Small teachers and students with dataclass configs, plus feature taps via forward hooks.

* :class:`MLP` — fully connected net for flat inputs (MNIST-1D signals, 8x8 digits).
* :class:`CNN1D` — a 1-D convolutional net for MNIST-1D, a strong teacher at ~100k params.

Every model maps ``[B, in_features]`` to logits ``[B, num_classes]``.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, Sequence

import torch
from torch import nn

__all__ = ["MLPConfig", "MLP", "CNN1DConfig", "CNN1D", "capture_features"]


@dataclass
class MLPConfig:
    in_features: int = 40  # MNIST-1D signal length (64 for 8x8 digits)
    hidden: Sequence[int] = (256, 256)  # width of each hidden layer; () gives logistic regression
    num_classes: int = 10
    dropout: float = 0.0  # dropout after every hidden activation


class MLP(nn.Module):
    """Linear -> ReLU (-> Dropout) blocks, then a linear classifier named ``head``."""

    def __init__(self, config: MLPConfig = MLPConfig()):
        super().__init__()
        if config.in_features < 1 or config.num_classes < 2:
            raise ValueError(f"need in_features >= 1 and num_classes >= 2, got {config}")
        if any(width < 1 for width in config.hidden):
            raise ValueError(f"hidden widths must be >= 1, got {tuple(config.hidden)}")
        self.config = config
        layers, width = [], config.in_features
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, config.num_classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() != 2 or inputs.shape[1] != self.config.in_features:
            raise ValueError(
                f"MLP expects inputs [B, {self.config.in_features}], got {tuple(inputs.shape)}"
            )
        return self.head(self.body(inputs))


@dataclass
class CNN1DConfig:
    in_features: int = 40  # signal length
    channels: Sequence[int] = (32, 64, 64)  # conv widths; each block halves the length
    kernel_size: int = 5
    hidden: int = 128  # width of the dense layer after the convolutions
    num_classes: int = 10
    dropout: float = 0.0


class CNN1D(nn.Module):
    """Conv1d -> BatchNorm -> ReLU -> MaxPool(2) blocks, a dense layer, then ``head``."""

    def __init__(self, config: CNN1DConfig = CNN1DConfig()):
        super().__init__()
        if config.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same padding), got {config.kernel_size}")
        self.config = config
        blocks, in_channels, length = [], 1, config.in_features
        for channels in config.channels:
            if length < 2:
                raise ValueError(f"too many conv blocks for a signal of {config.in_features}")
            blocks += [
                nn.Conv1d(in_channels, channels, config.kernel_size, padding=config.kernel_size // 2),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
                nn.MaxPool1d(2),
            ]
            in_channels, length = channels, length // 2
        self.features = nn.Sequential(*blocks)
        self.dense = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * length, config.hidden), nn.ReLU(),
            nn.Dropout(config.dropout),
        )
        self.head = nn.Linear(config.hidden, config.num_classes)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dim() != 2 or inputs.shape[1] != self.config.in_features:
            raise ValueError(
                f"CNN1D expects inputs [B, {self.config.in_features}], got {tuple(inputs.shape)}"
            )
        return self.head(self.dense(self.features(inputs.unsqueeze(1))))


@contextmanager
def capture_features(model: nn.Module, layer_names: Sequence[str]) -> Iterator[Dict[str, torch.Tensor]]:
    """Record the outputs of named submodules during forward passes inside the block.

    >>> with capture_features(model, ["body.1"]) as feats:
    ...     model(x)
    >>> feats["body.1"].shape

    The stored tensors keep their graph, so a feature loss can backpropagate through them.
    """
    modules = dict(model.named_modules())
    missing = [name for name in layer_names if name not in modules]
    if missing:
        raise ValueError(f"no submodule named {missing}; available: {list(modules)[1:]}")
    features: Dict[str, torch.Tensor] = {}
    handles = [
        modules[name].register_forward_hook(
            lambda _module, _inputs, output, name=name: features.__setitem__(name, output)
        )
        for name in layer_names
    ]
    try:
        yield features
    finally:
        for handle in handles:
            handle.remove()
