"""Data-free distillation: a transfer set made from the teacher alone.

* :func:`deep_inversion` — DeepInversion (Yin et al. 2020): optimise random inputs so that the
  teacher classifies them as chosen classes *and* so that the batch statistics they produce at
  every BatchNorm layer match the running statistics stored in the teacher,

  .. math::

     \\min_x \\; \\mathrm{CE}(f(x), y)
       + \\lambda_{bn} \\sum_l \\big(\\lVert \\mu_l(x) - \\hat\\mu_l \\rVert_2
                                  + \\lVert \\sigma^2_l(x) - \\hat\\sigma^2_l \\rVert_2\\big)
       + \\lambda_{tv} \\, \\mathrm{TV}(x) + \\lambda_{2} \\lVert x \\rVert_2^2,

  with :math:`\\mathrm{TV}(x)` the mean squared difference of neighbouring positions (the
  smoothness prior) and a random circular shift of the inputs at each step (the "jitter").
* :func:`train_dafl_generator` — DAFL (Chen et al. 2019): a generator ``G(z)`` trained with the
  teacher only, so that the teacher is confident on its samples (one-hot loss), its features
  are strongly activated (activation loss), and the classes are balanced over a batch
  (information-entropy loss): :math:`L_{oh} - \\alpha \\lVert f_T(G(z)) \\rVert_1
  - \\beta H(\\bar p)`. :func:`sample_generator` draws a transfer set from it.

Both return inputs; a student is then distilled on them with :func:`kd_lib.train` like on any
unlabelled transfer set. Neither fits the one training loop (that loop trains a model's weights
with the teacher under ``no_grad``; here the gradient must flow *through* the teacher), so each
is a short loop of its own. DAFL's authors update the student while the generator trains; here
the generator is trained first and then sampled, which keeps its objective (it does not depend
on the student) but gives the student samples from the final generator only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..models import capture_features
from ..runtime import show_progress

Tensor = torch.Tensor

__all__ = [
    "InversionConfig", "bn_statistics_loss", "smoothness", "deep_inversion",
    "DAFLConfig", "Generator", "train_dafl_generator", "sample_generator",
]


def _batch_norms(model: nn.Module) -> List[nn.modules.batchnorm._BatchNorm]:
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError("the teacher has no BatchNorm layer: DeepInversion needs its stored statistics")
    if any(m.running_mean is None or m.running_var is None for m in norms):
        raise ValueError("a BatchNorm layer of the teacher tracks no running statistics")
    return norms


def bn_statistics_loss(model: nn.Module, inputs: Tensor) -> Tuple[Tensor, Tensor]:
    """The teacher's logits on ``inputs`` and DeepInversion's BatchNorm term.

    For every BatchNorm layer ``l``: ``||mean_l(x) - running_mean_l||_2 +
    ||var_l(x) - running_var_l||_2``, the batch statistics taken over the batch and every
    position of the layer's *input*, summed over layers. ``model`` should be in eval mode, so
    that the forward pass itself uses (and does not update) the stored statistics.
    """
    terms: List[Tensor] = []

    def hook(module, args, _output):
        x = args[0].float()
        dims = [0] + list(range(2, x.dim()))
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        terms.append(torch.linalg.vector_norm(mean - module.running_mean)
                     + torch.linalg.vector_norm(var - module.running_var))

    handles = [m.register_forward_hook(hook) for m in _batch_norms(model)]
    try:
        logits = model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return logits, torch.stack(terms).sum()


def smoothness(inputs: Tensor) -> Tensor:
    """Mean squared difference between neighbouring positions of ``[B, L]`` signals."""
    if inputs.dim() != 2 or inputs.shape[1] < 2:
        raise ValueError(f"smoothness expects signals [B, L] with L >= 2, got {tuple(inputs.shape)}")
    return (inputs[:, 1:] - inputs[:, :-1]).pow(2).mean()


@dataclass
class InversionConfig:
    num_steps: int = 300  # Adam steps per batch of inputs
    batch_size: int = 500  # inputs optimised together (their BatchNorm statistics are matched)
    lr: float = 0.05
    bn_weight: float = 1.0  # lambda_bn: the BatchNorm-statistics term
    class_weight: float = 1.0  # the cross-entropy (confident-class) term
    tv_weight: float = 0.1  # lambda_tv: the smoothness prior
    l2_weight: float = 1e-3  # lambda_2: keeps the inputs small
    jitter: int = 2  # random circular shift of up to this many positions per step (0: off)
    seed: int = 0
    progress: bool = True


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not value >= 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def _check_weights(**values) -> None:
    for name, value in values.items():
        if not value >= 0:  # also rejects NaN
            raise ValueError(f"{name} must be >= 0, got {value}")


def deep_inversion(
    teacher: nn.Module,
    num_samples: int,
    in_features: int,
    num_classes: int,
    config: InversionConfig = InversionConfig(),
) -> Tuple[Tensor, Tensor, List[Dict[str, float]]]:
    """Synthesise ``num_samples`` inputs ``[N, in_features]`` from ``teacher`` alone.

    Classes are balanced (``y = i mod num_classes``, shuffled) and each batch of
    ``config.batch_size`` inputs starts from standard normal noise. Returns the inputs, their
    target classes and one record per batch with the final value of each term. The teacher is
    put in eval mode and its weights are not changed.
    """
    _check_positive(num_samples=num_samples, in_features=in_features, num_classes=num_classes,
                    num_steps=config.num_steps, batch_size=config.batch_size)
    _check_weights(lr=config.lr, bn_weight=config.bn_weight, class_weight=config.class_weight,
                   tv_weight=config.tv_weight, l2_weight=config.l2_weight, jitter=config.jitter)
    _batch_norms(teacher)
    teacher.eval()
    device = next(teacher.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)
    targets = (torch.arange(num_samples) % num_classes)[torch.randperm(num_samples, generator=generator)]
    frozen = [p.requires_grad for p in teacher.parameters()]
    for p in teacher.parameters():
        p.requires_grad_(False)
    inputs, records = [], []
    starts = range(0, num_samples, config.batch_size)
    bar = tqdm(total=len(starts) * config.num_steps, desc="inversion",
               disable=not show_progress(config.progress), leave=False)
    try:
        for start in starts:
            y = targets[start:start + config.batch_size].to(device)
            x = torch.randn(len(y), in_features, generator=generator).to(device).requires_grad_(True)
            optimizer = torch.optim.Adam([x], lr=config.lr)
            for _ in range(config.num_steps):
                shift = int(torch.randint(-config.jitter, config.jitter + 1, (1,), generator=generator))
                logits, bn = bn_statistics_loss(teacher, torch.roll(x, shift, dims=1))
                ce, tv, l2 = F.cross_entropy(logits.float(), y), smoothness(x), x.pow(2).mean()
                loss = (config.class_weight * ce + config.bn_weight * bn
                        + config.tv_weight * tv + config.l2_weight * l2)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update()
            records.append({"cross_entropy": float(ce.detach()), "bn_statistics": float(bn.detach()),
                            "smoothness": float(tv.detach()), "l2": float(l2.detach())})
            inputs.append(x.detach())
    finally:
        bar.close()
        for p, flag in zip(teacher.parameters(), frozen):
            p.requires_grad_(flag)
    result = torch.cat(inputs)
    if not torch.isfinite(result).all():
        raise FloatingPointError("DeepInversion produced non-finite inputs; lower config.lr")
    return result, targets, records


class Generator(nn.Module):
    """DAFL's generator for flat signals: ``z -> Linear -> BN -> LeakyReLU (x2) -> Linear -> BN``.

    The last BatchNorm has no affine parameters, so each output position has zero mean and unit
    variance over a batch, the scale of MNIST-1D's signals.
    """

    def __init__(self, latent_dim: int = 64, hidden: int = 128, out_features: int = 40):
        super().__init__()
        _check_positive(latent_dim=latent_dim, hidden=hidden, out_features=out_features)
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, out_features), nn.BatchNorm1d(out_features, affine=False),
        )

    def forward(self, z: Tensor) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"Generator expects z [B, {self.latent_dim}], got {tuple(z.shape)}")
        return self.net(z)


@dataclass
class DAFLConfig:
    num_steps: int = 1500
    batch_size: int = 256
    lr: float = 1e-3
    activation_weight: float = 0.1  # alpha in DAFL (their MNIST value)
    entropy_weight: float = 5.0  # beta in DAFL (their MNIST value)
    # Not in DAFL: DeepInversion's BatchNorm-statistics term on the generator's batches
    # (0: DAFL as published).
    bn_weight: float = 0.0
    feature_layer: str = "dense"  # the teacher's submodule whose output is the "feature"
    seed: int = 0
    progress: bool = True


def train_dafl_generator(
    teacher: nn.Module, generator: nn.Module, config: DAFLConfig = DAFLConfig()
) -> List[Dict[str, float]]:
    """Train ``generator`` in place with DAFL's three losses; return per-step records.

    ``L = CE(f(G(z)), argmax f(G(z))) - alpha * mean |features| + beta * sum_c pbar_c log pbar_c``
    where ``pbar`` is the teacher's mean prediction over the batch (so the last term is minus
    its entropy). The teacher stays in eval mode with its weights unchanged.
    """
    _check_positive(num_steps=config.num_steps, batch_size=config.batch_size)
    _check_weights(lr=config.lr, activation_weight=config.activation_weight,
                   entropy_weight=config.entropy_weight, bn_weight=config.bn_weight)
    if config.batch_size < 2:
        raise ValueError("batch_size must be >= 2 (the generator has BatchNorm layers)")
    teacher.eval()
    device = next(teacher.parameters()).device
    generator.to(device).train()
    torch.manual_seed(config.seed)
    noise = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(generator.parameters(), lr=config.lr)
    frozen = [p.requires_grad for p in teacher.parameters()]
    for p in teacher.parameters():
        p.requires_grad_(False)
    records = []
    try:
        for _ in tqdm(range(config.num_steps), desc="DAFL generator",
                      disable=not show_progress(config.progress), leave=False):
            z = torch.randn(config.batch_size, generator.latent_dim, generator=noise).to(device)
            with capture_features(teacher, [config.feature_layer]) as features:
                logits, bn = bn_statistics_loss(teacher, generator(z))
            logits = logits.float()
            one_hot = F.cross_entropy(logits, logits.argmax(-1))
            activation = features[config.feature_layer].float().abs().mean()
            mean_probs = logits.softmax(-1).mean(0)
            neg_entropy = (mean_probs * mean_probs.clamp_min(1e-12).log()).sum()
            loss = (one_hot - config.activation_weight * activation
                    + config.entropy_weight * neg_entropy + config.bn_weight * bn)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            records.append({"one_hot": float(one_hot.detach()), "activation": float(activation.detach()),
                            "entropy": float(-neg_entropy.detach()), "bn_statistics": float(bn.detach())})
    finally:
        for p, flag in zip(teacher.parameters(), frozen):
            p.requires_grad_(flag)
    if not all(torch.isfinite(p).all() for p in generator.parameters()):
        raise FloatingPointError("the DAFL generator diverged (non-finite weights); lower config.lr")
    return records


@torch.no_grad()
def sample_generator(generator: nn.Module, num_samples: int, batch_size: int = 256,
                     seed: int = 0) -> Tensor:
    """``num_samples`` inputs from a trained generator, drawn in batches of ``batch_size`` with
    the generator's BatchNorm in training mode (batch statistics, as during its training)."""
    _check_positive(num_samples=num_samples, batch_size=batch_size)
    if batch_size < 2:
        raise ValueError("batch_size must be >= 2 (the generator uses batch statistics)")
    noise = torch.Generator().manual_seed(seed)
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.train()
    momenta = {}
    for module in generator.modules():  # sampling must not move the running statistics
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            momenta[module], module.momentum = module.momentum, 0.0
    try:
        out = [generator(torch.randn(batch_size, generator.latent_dim, generator=noise).to(device))
               for _ in range(-(-num_samples // batch_size))]
    finally:
        for module, momentum in momenta.items():
            module.momentum = momentum
        generator.train(was_training)
    return torch.cat(out)[:num_samples]
