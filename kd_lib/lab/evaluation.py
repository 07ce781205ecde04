"""Judging a student beyond accuracy: fidelity to its teacher, and calibration.

*Fidelity* (Stanton et al. 2021, "Does Knowledge Distillation Really Work?", arXiv:2106.05945)
asks how closely a student imitates its teacher, right or wrong. It needs no labels, so it can
be measured on as many fresh inputs as one can afford:

* top-1 agreement, ``mean[argmax z = argmax v]`` (in :func:`kd_lib.metrics.agreement`);
* predictive KL, ``mean_n KL(p_n || q_n)`` with ``p = softmax(v)``, ``q = softmax(z)`` (T = 1);
* with labels: how often the student repeats the teacher's *mistakes* (same wrong class).

*Calibration* (Guo et al. 2017, "On Calibration of Modern Neural Networks", arXiv:1706.04599)
asks whether a confidence of 0.9 is right 90% of the time. :func:`kd_lib.metrics.reliability_bins`
gives the numbers behind a reliability diagram (its weighted gap is the ECE of
:func:`kd_lib.metrics.expected_calibration_error`), and :func:`fit_temperature` finds the one
temperature that minimises the negative log-likelihood on held-out data ("temperature scaling").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..losses import kd_loss
from ..metrics import _check_logits_labels, agreement

Tensor = torch.Tensor

__all__ = ["clearly_greater", "Fidelity", "fidelity", "predictive_kl", "fit_temperature"]


def clearly_greater(higher: Sequence[float], lower: Sequence[float]) -> bool:
    """Whether one set of per-seed results is above another by more than the seed-to-seed spread.

    True when every seed of ``higher`` beats every seed of ``lower`` (the ranges do not overlap)
    *and* the difference of the means exceeds the larger of the two sample standard deviations
    (``n - 1`` in the denominator). The book's asserts use it so that a claim survives only
    when it is larger than the noise between seeds. Needs at least two seeds on each side.
    """
    high, low = torch.as_tensor(higher, dtype=torch.float64), torch.as_tensor(lower, dtype=torch.float64)
    if high.dim() != 1 or low.dim() != 1 or len(high) < 2 or len(low) < 2:
        raise ValueError(f"need two 1-D sequences of at least 2 seeds each, got {len(higher)} and {len(lower)}")
    if not bool(torch.isfinite(high).all() and torch.isfinite(low).all()):
        raise ValueError("results contain NaN or inf")
    spread = max(float(high.std()), float(low.std()))
    return bool(high.min() > low.max()) and float(high.mean() - low.mean()) > spread


def predictive_kl(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Mean ``KL(softmax(v) || softmax(z))`` over examples, in nats (0 = the same predictions).

    Stanton et al.'s second fidelity measure. It equals ``kd_loss(z, v, temperature=1)``.
    """
    for name, logits in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if isinstance(logits, torch.Tensor) and logits.is_floating_point() and not bool(torch.isfinite(logits).all()):
            raise ValueError(f"{name} contain NaN or inf")
    return float(kd_loss(student_logits, teacher_logits, temperature=1.0))


@dataclass
class Fidelity:
    """How closely a student follows its teacher on one set of inputs."""

    agreement: float  # top-1 agreement, 0..1
    kl: float  # predictive KL(teacher || student), nats
    teacher_errors: Optional[int] = None  # how many inputs the teacher gets wrong (with labels)
    copied_errors: Optional[float] = None  # share of those where the student picks the same wrong class


def fidelity(student_logits: Tensor, teacher_logits: Tensor, labels: Optional[Tensor] = None) -> Fidelity:
    """Agreement and predictive KL; with ``labels``, also the share of the teacher's mistakes
    that the student copies exactly (``copied_errors``; ``None`` if the teacher makes none)."""
    if student_logits.dim() != 2:
        raise ValueError(f"expected logits [N, C], got {tuple(student_logits.shape)}")
    kl = predictive_kl(student_logits, teacher_logits)  # checks shapes and finiteness first
    result = Fidelity(agreement(student_logits, teacher_logits), kl)
    if labels is not None:
        _check_logits_labels(teacher_logits, labels)
        teacher_pred = teacher_logits.argmax(-1)
        wrong = teacher_pred != labels
        result.teacher_errors = int(wrong.sum())
        if result.teacher_errors > 0:
            result.copied_errors = float((student_logits.argmax(-1)[wrong] == teacher_pred[wrong]).float().mean())
    return result


def fit_temperature(logits: Tensor, labels: Tensor, *, t_min: float = 0.05, t_max: float = 20.0) -> float:
    """Temperature scaling (Guo et al. 2017): the T that minimises the mean NLL of ``softmax(z / T)``.

        NLL(b) = mean_n [ log sum_c exp(b z_nc) - b z_n,y_n ],   b = 1 / T

    is convex in ``b``, with derivative ``mean_n (E_softmax(b z_n)[z_n] - z_n,y_n)``, so a
    bisection on the sign of the derivative finds the optimum exactly. Fit it on held-out data,
    never on the test set. Dividing by T never changes the arg-max, so accuracy is unchanged.
    The result is clamped to ``[t_min, t_max]`` (T tends to 0 when every example is already
    right with a margin).
    """
    _check_logits_labels(logits, labels)
    if not 0 < t_min < t_max or not math.isfinite(t_max):
        raise ValueError(f"need 0 < t_min < t_max < inf, got t_min={t_min}, t_max={t_max}")
    logits = logits.double()
    true_logit = logits.gather(1, labels.long().unsqueeze(1)).squeeze(1)

    def slope(inverse_temperature: float) -> float:
        expected = (torch.softmax(inverse_temperature * logits, dim=-1) * logits).sum(-1)
        return float((expected - true_logit).mean())

    low, high = math.log(1 / t_max), math.log(1 / t_min)  # search log(1/T)
    if slope(math.exp(low)) >= 0:
        return t_max
    if slope(math.exp(high)) <= 0:
        return t_min
    for _ in range(60):
        middle = 0.5 * (low + high)
        if slope(math.exp(middle)) < 0:
            low = middle
        else:
            high = middle
    return 1.0 / math.exp(0.5 * (low + high))
