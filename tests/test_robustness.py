"""kd_lib.lab.robustness: accuracy under Gaussian input noise, and the noise augmentation."""
import math

import pytest
import torch
from torch import nn

from kd_lib.lab.robustness import accuracy_under_noise, gaussian_noise


class FirstCoordinates(nn.Module):
    """A fixed 'model' whose logits are the first C input coordinates."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.num_classes = num_classes
        self.anchor = nn.Parameter(torch.zeros(()))  # predict_logits needs a parameter for the device

    def forward(self, inputs):
        return inputs[:, : self.num_classes] + self.anchor


def one_hot_inputs(n=300, num_classes=3, scale=4.0):
    labels = torch.arange(n) % num_classes
    return torch.nn.functional.one_hot(labels, num_classes).float() * scale, labels


def test_zero_noise_gives_the_clean_accuracy():
    inputs, labels = one_hot_inputs()
    assert accuracy_under_noise(FirstCoordinates(), inputs, labels, [0.0]) == [1.0]


def test_accuracy_falls_towards_chance_as_noise_grows():
    inputs, labels = one_hot_inputs(n=3000)
    curve = accuracy_under_noise(FirstCoordinates(), inputs, labels, [0.0, 1.0, 4.0, 400.0])
    assert curve[0] == 1.0 and curve[0] > curve[1] > curve[2] > curve[3]
    assert abs(curve[3] - 1 / 3) < 0.04


def test_noise_is_the_same_draw_for_every_call_and_reproducible():
    inputs, labels = one_hot_inputs()
    first = accuracy_under_noise(FirstCoordinates(), inputs, labels, [0.5, 2.0], seed=3)
    again = accuracy_under_noise(FirstCoordinates(), inputs, labels, [0.5, 2.0], seed=3)
    other = accuracy_under_noise(FirstCoordinates(), inputs, labels, [0.5, 2.0], seed=4)
    assert first == again and first != other


def test_bad_noise_levels_and_lengths_raise():
    inputs, labels = one_hot_inputs()
    model = FirstCoordinates()
    for bad in ([-0.1], [math.nan], [math.inf]):
        with pytest.raises(ValueError, match="standard deviation"):
            accuracy_under_noise(model, inputs, labels, bad)
    with pytest.raises(ValueError, match="empty"):
        accuracy_under_noise(model, inputs, labels, [])
    with pytest.raises(ValueError, match="labels"):
        accuracy_under_noise(model, inputs, labels[:-1], [0.0])


def test_gaussian_noise_augment_has_the_requested_scale_and_uses_the_generator():
    batch = torch.zeros(20000, 4)
    noisy = gaussian_noise(0.5)(batch, torch.Generator().manual_seed(0))
    assert float(noisy.std()) == pytest.approx(0.5, rel=0.02)
    again = gaussian_noise(0.5)(batch, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)
    assert torch.equal(gaussian_noise(0.0)(batch, torch.Generator()), batch)
    with pytest.raises(ValueError, match="standard deviation"):
        gaussian_noise(-1.0)
