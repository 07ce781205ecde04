"""kd_lib.lab.efficiency: multiply-accumulate counts and the energy estimate built on them."""
import pytest
import torch
from torch import nn

from kd_lib.lab.efficiency import DRAM_READ_PICOJOULES_PER_32BIT, MAC_PICOJOULES, count_macs, estimate_energy
from kd_lib.models import CNN1D, CNN1DConfig, MLP, MLPConfig


def test_mlp_macs_are_the_weight_matrix_sizes():
    model = MLP(MLPConfig(in_features=40, hidden=(256, 64), num_classes=10))
    per_example = 40 * 256 + 256 * 64 + 64 * 10
    assert count_macs(model, torch.randn(1, 40)) == per_example
    assert count_macs(model, torch.randn(3, 40)) == 3 * per_example


def test_cnn_macs_follow_the_convolution_formula():
    config = CNN1DConfig(in_features=40, channels=(32, 64, 64), kernel_size=5, hidden=128, num_classes=10)
    expected = (40 * 32 * 1 * 5      # conv 1: output length x out channels x in channels x kernel
                + 20 * 64 * 32 * 5   # conv 2 after one max-pool
                + 10 * 64 * 64 * 5   # conv 3
                + 64 * 5 * 128       # dense on the flattened 64 x 5 features
                + 128 * 10)          # head
    assert count_macs(CNN1D(config), torch.randn(1, 40)) == expected


def test_grouped_conv2d_is_counted_per_group():
    model = nn.Sequential(nn.Conv2d(4, 8, kernel_size=3, padding=1, groups=2))
    assert count_macs(model, torch.randn(1, 4, 6, 6)) == 6 * 6 * 8 * (4 // 2) * 9


def test_count_macs_restores_training_mode_and_leaves_no_hooks():
    model = MLP(MLPConfig(hidden=(8,)))
    model.train()
    count_macs(model, torch.randn(1, 40))
    assert model.training
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_count_macs_refuses_layers_it_cannot_count():
    model = nn.Sequential(nn.Linear(4, 4), nn.GRU(4, 4))
    with pytest.raises(ValueError, match="GRU"):
        count_macs(model, torch.randn(1, 4))
    with pytest.raises(ValueError, match="non-empty"):
        count_macs(nn.Linear(4, 2), torch.zeros(0, 4))


def test_energy_estimate_multiplies_counts_by_horowitz_energies():
    model = MLP(MLPConfig(in_features=40, hidden=(16,), num_classes=10))
    macs, parameters = 40 * 16 + 16 * 10, (40 * 16 + 16) + (16 * 10 + 10)
    estimate = estimate_energy(model, torch.randn(1, 40))
    assert (estimate.macs, estimate.parameters) == (macs, parameters)
    assert estimate.arithmetic_joules == pytest.approx(macs * 4.6e-12)
    assert estimate.dram_joules == pytest.approx(parameters * 640e-12)
    assert estimate.sram_joules == pytest.approx(parameters * 5e-12)
    assert estimate.total_joules == pytest.approx(estimate.arithmetic_joules + estimate.dram_joules)
    half = estimate_energy(model, torch.randn(1, 40), dtype="fp16")
    assert half.arithmetic_joules == pytest.approx(macs * 1.5e-12)
    assert half.dram_joules == pytest.approx(estimate.dram_joules / 2)


def test_energy_table_orders_the_number_formats():
    assert MAC_PICOJOULES["int8"] < MAC_PICOJOULES["fp16"] < MAC_PICOJOULES["fp32"]
    assert DRAM_READ_PICOJOULES_PER_32BIT > 100 * MAC_PICOJOULES["fp32"]


def test_energy_estimate_rejects_bad_input():
    model = MLP(MLPConfig(hidden=(4,)))
    with pytest.raises(ValueError, match="dtype"):
        estimate_energy(model, torch.randn(1, 40), dtype="fp8")
    with pytest.raises(ValueError, match="batch of one"):
        estimate_energy(model, torch.randn(2, 40))
