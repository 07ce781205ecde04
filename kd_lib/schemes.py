"""Training schemes through the one loop: several teachers, several students, summed losses.

* :class:`Ensemble` — several teachers as one teacher (multi-teacher distillation; Hinton et
  al. 2015 distil an ensemble of speech models into one).
* :class:`Cohort` + :func:`mutual_learning_loss` — students that teach each other with no
  pretrained teacher (deep mutual learning, Zhang et al. 2018), trained as one module.
* :class:`WeightedSum` / :func:`weighted_sum` — ``sum_i w_i L_i`` of losses that all follow
  kd_lib's contract (e.g. cross-entropy + KD + a hint loss), as one ``loss_fn``.

Born-again networks and teacher-assistant chains need no new code: they are successive
calls of :func:`kd_lib.train`, each generation's student becoming the next one's teacher.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import average_positions, check_labels, check_temperature, kept_positions
from .losses import _cross_entropy, _kl_from_log_probs
from .outputs import ModelOutput, Output, feature_of, logits_of

Tensor = torch.Tensor

__all__ = ["Ensemble", "Cohort", "mutual_learning_loss", "WeightedSum", "weighted_sum"]


def _log_mean_probs(stacked: Tensor, temperature: float, dim: int) -> Tensor:
    log_probs = F.log_softmax(stacked.float() / temperature, dim=-1)
    return torch.logsumexp(log_probs, dim=dim) - math.log(stacked.shape[dim])


class Ensemble(nn.Module):
    """Several models as one teacher: their average prediction.

    ``average="probabilities"`` (the usual ensemble, Hinton et al. 2015): returns logits
    ``T * log(mean_k softmax(z_k / T))``, whose softmax at temperature ``T`` is exactly the
    mean of the members' softened distributions. ``average="logits"``: returns
    ``mean_k z_k``, whose softmax is a renormalised *geometric* mean of the members'
    distributions; it is sharper where members agree and differs from the other average.
    Use the loss's temperature here too: ``Ensemble(..., temperature=4)`` with
    ``kd_loss(temperature=4)`` distils the mean of the softened distributions, while the default
    ``temperature=1`` softens the T = 1 average afterwards, which is a different target.
    """

    def __init__(self, members: Sequence[nn.Module], average: str = "probabilities", temperature: float = 1.0):
        super().__init__()
        if len(members) < 1:
            raise ValueError("an Ensemble needs at least one member")
        if average not in ("probabilities", "logits"):
            raise ValueError(f"average must be 'probabilities' or 'logits', got {average!r}")
        self.members = nn.ModuleList(members)
        self.average, self.temperature = average, check_temperature(temperature)

    def forward(self, inputs: Tensor) -> Tensor:
        stacked = torch.stack([logits_of(member(inputs)).float() for member in self.members])
        if self.average == "logits":
            return stacked.mean(0)
        return self.temperature * _log_mean_probs(stacked, self.temperature, dim=0)


class Cohort(nn.Module):
    """Several students trained together as one module (for :func:`mutual_learning_loss`).

    ``forward`` returns a :class:`~kd_lib.outputs.ModelOutput` whose ``logits`` are the
    cohort's probability-average prediction (what ``train``'s evaluation reports) and whose
    feature ``"members"`` stacks each student's logits as ``[B, K, C]``. Evaluate one
    student alone with ``kd_lib.evaluate(cohort.members[k], ...)``.
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a Cohort needs at least 2 students, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, inputs: Tensor) -> ModelOutput:
        stacked = torch.stack([logits_of(member(inputs)) for member in self.members], dim=1)
        return ModelOutput(_log_mean_probs(stacked, 1.0, dim=1), {"members": stacked})


def mutual_learning_loss(
    student_output: Output,
    teacher_output: Optional[Output] = None,
    targets: Optional[Tensor] = None,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
) -> Tensor:
    """Deep mutual learning (Zhang et al. 2018, arXiv:1706.00384, eq. 9 for K students):

        L = sum_k [ CE(z_k, y) + 1/(K-1) sum_{j != k} T^2 KL(p_j || p_k) ]

    with ``p_j = softmax(z_j / T)`` detached: each student's gradient comes from its own
    term only, so one optimizer step over the cohort updates every student by its own DML
    loss at once (the paper alternates the students' updates within a step). With
    ``targets=None`` only the mutual terms remain. ``teacher_output`` is ignored. (A KD term
    added with :func:`weighted_sum` would see the Cohort's *averaged* prediction, not each
    student's; distilling a teacher into every member needs a loss over ``"members"``.)
    """
    if not (isinstance(student_output, ModelOutput) and "members" in student_output.features):
        raise ValueError("mutual_learning_loss needs the output of a kd_lib.Cohort: train "
                         "kd_lib.Cohort([student_a, student_b, ...]) as the student")
    stacked = student_output.features["members"]
    temperature = check_temperature(temperature)
    count = stacked.shape[1]
    members = [stacked[:, k] for k in range(count)]
    mask = kept_positions(None, targets, members[0], ignore_index)
    log_probs = [F.log_softmax(z.float() / temperature, dim=-1) for z in members]
    total = 0.0
    for k in range(count):
        if targets is not None:
            total = total + _cross_entropy(members[k], check_labels(targets, members[k], ignore_index), ignore_index)
        for j in range(count):
            if j != k:
                kl = _kl_from_log_probs(log_probs[j].detach(), log_probs[k])
                total = total + temperature**2 * average_positions(kl, mask) / (count - 1)
    return total


LossFn = Callable[..., Tensor]


class WeightedSum(nn.Module):
    """``sum_name weight * loss(student_output, teacher_output, targets)``, one ``loss_fn``.

    Losses that are modules (e.g. with a learned projection) are registered, so
    :func:`kd_lib.train` trains their parameters. ``last`` holds each term's value
    (detached) from the latest call, for logging.
    """

    def __init__(self, terms: Mapping[str, Tuple[float, LossFn]]):
        super().__init__()
        if not terms:
            raise ValueError("weighted_sum needs at least one (weight, loss) term")
        for name, term in terms.items():
            if not (isinstance(term, tuple) and len(term) == 2 and callable(term[1])):
                raise ValueError(f"term {name!r} must be a (weight, loss) pair, got {term!r}")
            if not math.isfinite(float(term[0])) or float(term[0]) < 0:
                raise ValueError(f"term {name!r} has weight {term[0]}; weights must be finite and >= 0")
        self.terms = {name: (float(weight), loss) for name, (weight, loss) in terms.items()}
        self.modules_ = nn.ModuleList(loss for _, loss in self.terms.values() if isinstance(loss, nn.Module))
        self.last: Dict[str, Tensor] = {}

    def forward(self, student_output: Output, teacher_output: Optional[Output] = None,
                targets: Optional[Tensor] = None) -> Tensor:
        total = 0.0
        for name, (weight, loss) in self.terms.items():
            value = loss(student_output, teacher_output, targets)
            self.last[name] = value.detach()
            total = total + weight * value
        return total


def weighted_sum(**terms: Tuple[float, LossFn]) -> WeightedSum:
    """``weighted_sum(ce=(0.5, cross_entropy_loss), kd=(0.5, partial(kd_loss, temperature=4)))``."""
    return WeightedSum(terms)
