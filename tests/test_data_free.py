"""kd_lib.methods.data_free: DeepInversion and DAFL make inputs from a teacher alone."""
import copy

import pytest
import torch
from torch import nn

import kd_lib

from kd_lib.methods.data_free import (
    DAFLConfig, Generator, InversionConfig, bn_statistics_loss, deep_inversion, sample_generator,
    smoothness, train_dafl_generator,
)
from kd_lib.models import CNN1D, CNN1DConfig, MLP, MLPConfig


def real_data(n=600, seed=0):
    """Three classes of noisy signals: a bump at the start, the middle or the end."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    bump = torch.exp(-0.5 * ((torch.arange(16) - (2 + 6 * y[:, None])) / 1.5) ** 2)
    return 2 * torch.randn(n, 16, generator=g) * 0.3 + 3 * bump + 1, y


_TEACHERS = {}


def small_teacher(seed=0):
    """A small CNN trained on real_data (its BatchNorm statistics are those of that data)."""
    if seed not in _TEACHERS:
        torch.manual_seed(seed)
        model = CNN1D(CNN1DConfig(in_features=16, channels=(4, 8), hidden=8, num_classes=3))
        kd_lib.train(model, real_data(), config=kd_lib.TrainConfig(num_epochs=30, batch_size=64, lr=1e-2,
                                                                   progress=False, device="cpu"))
        _TEACHERS[seed] = model.eval()
    return copy.deepcopy(_TEACHERS[seed])


def test_bn_statistics_loss_matches_a_hand_computation():
    teacher = small_teacher()
    x = torch.randn(32, 16)
    logits, loss = bn_statistics_loss(teacher, x)
    assert torch.equal(logits, teacher(x))
    expected, h = 0.0, x.unsqueeze(1)
    for layer in teacher.features:
        if isinstance(layer, nn.BatchNorm1d):
            mean, var = h.mean((0, 2)), h.var((0, 2), unbiased=False)
            expected += (mean - layer.running_mean).norm() + (var - layer.running_var).norm()
        h = layer(h)
    assert torch.allclose(loss, expected, atol=1e-5)


def test_bn_statistics_loss_is_small_on_the_data_the_statistics_came_from():
    teacher = small_teacher()
    real = real_data(3000, seed=1)[0]
    noise = torch.randn(3000, 16)
    assert bn_statistics_loss(teacher, real)[1] < 0.2 * bn_statistics_loss(teacher, noise)[1]


def test_bn_statistics_loss_needs_batchnorm():
    with pytest.raises(ValueError, match="no BatchNorm"):
        bn_statistics_loss(MLP(MLPConfig(in_features=16)), torch.randn(4, 16))


def test_smoothness():
    x = torch.tensor([[0.0, 1.0, 3.0]])
    assert smoothness(x) == pytest.approx((1 + 4) / 2)
    with pytest.raises(ValueError, match="signals"):
        smoothness(torch.zeros(3))


def test_deep_inversion_reaches_its_targets_and_the_statistics():
    teacher = small_teacher()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    config = InversionConfig(num_steps=150, batch_size=60, lr=0.05, seed=3, progress=False)
    x, y, records = deep_inversion(teacher, 120, 16, 3, config)
    assert x.shape == (120, 16) and y.shape == (120,)
    assert torch.bincount(y).tolist() == [40, 40, 40]  # balanced classes
    assert (teacher(x).argmax(-1) == y).float().mean() > 0.9
    start = bn_statistics_loss(teacher, torch.randn(60, 16))[1].detach()
    assert len(records) == 2 and all(r["bn_statistics"] < 0.5 * float(start) for r in records)
    for key, value in teacher.state_dict().items():  # the teacher is untouched
        assert torch.equal(value, before[key]), key
    assert all(p.requires_grad for p in teacher.parameters())
    again, _, _ = deep_inversion(teacher, 120, 16, 3, config)
    assert torch.equal(x, again)  # seeded


def test_deep_inversion_bn_term_matters():
    teacher = small_teacher()
    kw = dict(num_steps=150, batch_size=100, seed=1, progress=False)
    with_bn, _, _ = deep_inversion(teacher, 100, 16, 3, InversionConfig(bn_weight=1.0, **kw))
    without, _, _ = deep_inversion(teacher, 100, 16, 3, InversionConfig(bn_weight=0.0, **kw))
    assert bn_statistics_loss(teacher, with_bn)[1] < bn_statistics_loss(teacher, without)[1]


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_steps=0), "num_steps"), (dict(batch_size=0), "batch_size"),
    (dict(tv_weight=-1.0), "tv_weight"), (dict(lr=float("nan")), "lr"),
])
def test_deep_inversion_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        deep_inversion(small_teacher(), 10, 16, 3, InversionConfig(progress=False, **kwargs))


def test_deep_inversion_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_samples"):
        deep_inversion(small_teacher(), 0, 16, 3, InversionConfig(progress=False))


def test_dafl_generator_learns_confident_balanced_samples():
    teacher = small_teacher()
    generator = Generator(latent_dim=8, hidden=16, out_features=16)
    records = train_dafl_generator(teacher, generator, DAFLConfig(num_steps=200, batch_size=64, lr=1e-2,
                                                                  seed=0, progress=False))
    assert records[-1]["one_hot"] < records[0]["one_hot"]
    assert records[-1]["entropy"] > 0.9 * torch.log(torch.tensor(3.0))  # classes balanced
    x = sample_generator(generator, 100, batch_size=32, seed=1)
    assert x.shape == (100, 16) and torch.isfinite(x).all()
    assert torch.equal(x, sample_generator(generator, 100, batch_size=32, seed=1))
    assert torch.bincount(teacher(x).argmax(-1), minlength=3).min() > 10


def test_sampling_does_not_move_the_generators_statistics():
    generator = Generator(latent_dim=4, hidden=8, out_features=6)
    before = {k: v.clone() for k, v in generator.state_dict().items() if "running" in k}
    sample_generator(generator, 50, batch_size=10)
    for key, value in before.items():
        assert torch.equal(generator.state_dict()[key], value), key


def test_generator_checks_its_input():
    with pytest.raises(ValueError, match="z"):
        Generator(latent_dim=4)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="batch_size"):
        train_dafl_generator(small_teacher(), Generator(4, 8, 16), DAFLConfig(batch_size=1, progress=False))
