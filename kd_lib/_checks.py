"""Argument checks shared by the losses: every problem raises ValueError with a message naming it
(a TypeError for a hyper-parameter passed where ``targets`` go).

Also the one reduction rule of :mod:`kd_lib.losses`: average over the positions a mask keeps,
and give 0 (with a zero gradient, never NaN) when it keeps none.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

Tensor = torch.Tensor


def check_temperature(temperature: float) -> float:
    temperature = float(temperature)
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    return temperature


def check_unit_interval(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return value


def check_logits(name: str, logits: Tensor) -> None:
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be floating point logits, got dtype {logits.dtype}")
    if logits.dim() < 1 or logits.shape[-1] < 1:
        raise ValueError(f"{name} must have a class dimension, got shape {tuple(logits.shape)}")


def check_pair(student_logits: Tensor, teacher_logits: Tensor) -> None:
    check_logits("student_logits", student_logits)
    check_logits("teacher_logits", teacher_logits)
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(
            "vocabulary size mismatch: student_logits have "
            f"{student_logits.shape[-1]} classes, teacher_logits have {teacher_logits.shape[-1]} "
            "(pad or slice both to a shared vocabulary first; for a teacher and student with different "
            "tokenizers, see kd_lib.lm.uld: uld_loss compares sorted probabilities, first_piece_map projects "
            "the teacher's vocabulary)"
        )
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"shape mismatch: student_logits {tuple(student_logits.shape)} vs "
            f"teacher_logits {tuple(teacher_logits.shape)}"
        )


def check_mask(mask: Optional[Tensor], logits: Tensor) -> Optional[Tensor]:
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask must be a bool tensor, got {type(mask).__name__}")
    if mask.shape != logits.shape[:-1]:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} must equal the logits' leading dims "
            f"{tuple(logits.shape[:-1])}"
        )
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must have dtype torch.bool, got {mask.dtype}")
    return mask


def kept_positions(mask: Optional[Tensor], targets: Optional[Tensor], logits: Tensor,
                   ignore_index: int) -> Optional[Tensor]:
    """The positions a loss averages over: ``mask`` and ``targets != ignore_index``, where given."""
    mask = check_mask(mask, logits)
    if targets is None:
        return mask
    if not isinstance(targets, torch.Tensor):
        raise TypeError(
            f"the third argument of a kd_lib loss is `targets` (class indices or None), got "
            f"{type(targets).__name__} {targets!r}: pass hyper-parameters by name, "
            "e.g. kd_loss(student_logits, teacher_logits, temperature=4.0)"
        )
    kept = check_labels(targets, logits, ignore_index) != ignore_index
    return kept if mask is None else mask & kept


def average_positions(per_position: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Mean over kept positions; 0 (with zero gradient) when nothing is kept."""
    if mask is None:
        return per_position.mean()
    kept = torch.where(mask, per_position, torch.zeros_like(per_position))
    return kept.sum() / mask.sum().clamp_min(1)


def check_labels(labels: Tensor, logits: Tensor, ignore_index: int) -> Tensor:
    if labels is None:
        raise ValueError("this loss needs labels (targets), got None: an unlabelled batch cannot give a hard-label loss")
    if not isinstance(labels, torch.Tensor) or labels.dtype not in (
        torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8
    ):
        raise ValueError(f"labels must be an integer tensor of class indices, got {getattr(labels, 'dtype', type(labels))}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} must equal the logits' leading dims "
            f"{tuple(logits.shape[:-1])}"
        )
    labels = labels.long()
    num_classes = logits.shape[-1]
    if labels.numel() == 0:
        return labels
    low, high = labels.aminmax()  # one pass; the full check only when something is out of range
    if int(low) >= 0 and int(high) < num_classes:
        return labels
    invalid = ((labels < 0) | (labels >= num_classes)) & (labels != ignore_index)
    if bool(invalid.any()):
        raise ValueError(
            f"labels must lie in [0, {num_classes}) or equal ignore_index={ignore_index}"
        )
    return labels
