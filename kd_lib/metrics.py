"""Measures of a model: accuracy, agreement with a teacher, size.

Logit-based metrics accept ``[..., C]`` logits and labels of the leading shape, and leave out
positions whose label equals ``ignore_index`` (padding).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
from torch import nn

from .losses import cross_entropy_loss

Tensor = torch.Tensor

__all__ = [
    "predict_logits", "predict_outputs", "accuracy", "agreement", "count_parameters", "bytes_on_disk",
    "expected_calibration_error", "ReliabilityBins", "reliability_bins", "latency", "evaluate",
]


def _batched(model: nn.Module, inputs: Tensor, batch_size: int, keep: Callable) -> list:
    """``keep(output, index)`` of each batch's output, in eval mode (restored afterwards)."""
    if len(inputs) == 0:
        raise ValueError("predict_logits / predict_outputs got no inputs")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        return [keep(model(inputs[i : i + batch_size].to(device)), i) for i in range(0, len(inputs), batch_size)]
    finally:
        model.train(was_training)


@torch.no_grad()
def predict_outputs(model: nn.Module, inputs: Tensor, batch_size: int = 1024, max_bytes: Optional[int] = None):
    """The model's outputs (logits, or a :class:`~kd_lib.outputs.ModelOutput`) for ``inputs``,
    in eval mode, without gradients, batched to bound memory.

    The model's train/eval mode is restored afterwards. Inputs move to the model's device.
    With ``max_bytes``, a ``ModelOutput`` whose features would take more than that for all the
    inputs (estimated from the first batch) raises ``ValueError`` before the rest is computed.
    """
    from .outputs import ModelOutput

    def keep(output, index: int):
        if index == 0 and max_bytes is not None and isinstance(output, ModelOutput):
            _check_size(output, len(inputs), max_bytes)
        return output

    chunks = _batched(model, inputs, batch_size, keep)
    if isinstance(chunks[0], ModelOutput):
        return ModelOutput.cat(chunks)
    return torch.cat(chunks).float()


def _check_size(first, total_rows: int, max_bytes: int) -> None:
    tensors = [first.logits, *first.features.values()]
    per_row = sum(t.element_size() * t[0].numel() for t in tensors)
    if per_row * total_rows > max_bytes:
        raise ValueError(f"caching the teacher's outputs would take {per_row * total_rows / 2**30:.1f} GiB "
                         f"(its features: {sorted(first.features)}); pass "
                         "TrainConfig(cache_teacher_logits=False) so that the teacher runs on every batch instead")


@torch.no_grad()
def predict_logits(model: nn.Module, inputs: Tensor, batch_size: int = 1024) -> Tensor:
    """Logits (float32) for ``inputs`` in eval mode, without gradients, batched to bound memory.

    For a model that returns a :class:`~kd_lib.outputs.ModelOutput`, only each batch's logits
    are kept (its features are dropped batch by batch).
    """
    from .outputs import logits_of

    return torch.cat(_batched(model, inputs, batch_size, lambda output, _: logits_of(output).float()))


def _kept(labels: Tensor, ignore_index: int) -> Tensor:
    return labels != ignore_index


def accuracy(logits: Tensor, labels: Tensor, *, ignore_index: int = -100) -> float:
    """Fraction of kept positions whose arg-max logit equals the label (0..1)."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}")
    kept = _kept(labels, ignore_index)
    if not bool(kept.any()):
        raise ValueError("accuracy is undefined: every label equals ignore_index")
    correct = (logits.argmax(-1) == labels) & kept
    return float(correct.sum()) / float(kept.sum())


def agreement(
    student_logits: Tensor, teacher_logits: Tensor, mask: Optional[Tensor] = None
) -> float:
    """Top-1 agreement: fraction of positions where student and teacher pick the same class.

    A fidelity measure (Stanton et al. 2021): how closely the student imitates its teacher,
    whether or not the teacher is right.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"shape mismatch: student {tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)}"
        )
    same = student_logits.argmax(-1) == teacher_logits.argmax(-1)
    if mask is None:
        return float(same.float().mean())
    if mask.shape != same.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must be {tuple(same.shape)}")
    if not bool(mask.any()):
        raise ValueError("agreement is undefined: the mask keeps no position")
    return float((same & mask).sum()) / float(mask.sum())


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen, total = set(), 0
    for parameter in model.parameters():
        if id(parameter) in seen or (trainable_only and not parameter.requires_grad):
            continue
        seen.add(id(parameter))
        total += parameter.numel()
    return total


def bytes_on_disk(model: nn.Module, dtype: Optional[torch.dtype] = None) -> int:
    """Size in bytes of the model's ``state_dict`` as a safetensors file (weights + a small header).

    ``dtype`` (e.g. ``torch.float16``) casts floating tensors first, to size a compressed copy.
    Buffers (BatchNorm statistics) count; tensors shared between names (tied weights) count once.
    """
    from safetensors.torch import save

    from .pretrained import unique_state

    state = {
        name: (t.to(dtype) if dtype is not None and t.is_floating_point() else t)
        for name, t in unique_state(model).items()
    }
    return len(save(state))


def expected_calibration_error(logits: Tensor, labels: Tensor, num_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017) with equal-width confidence bins.

        ECE = sum_b (|B_b| / N) * |accuracy(B_b) - mean confidence(B_b)|

    where confidence is the top softmax probability. 0 is perfectly calibrated.
    """
    return reliability_bins(logits, labels, num_bins).ece


@torch.no_grad()
def latency(model: nn.Module, example_inputs: Tensor, repeats: int = 50, warmup: int = 5) -> float:
    """Median wall time in seconds of one forward pass on ``example_inputs`` (eval mode).

    Measures the batch as given (use a batch of 1 for per-request latency). On CUDA it
    synchronises around each call. Report it with the thread count and the machine.
    """
    import time

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), example_inputs.device)  # no parameters: stay put
    example_inputs = example_inputs.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    try:
        for _ in range(warmup):
            model(example_inputs)
        times = []
        for _ in range(repeats):
            sync()
            started = time.perf_counter()
            model(example_inputs)
            sync()
            times.append(time.perf_counter() - started)
    finally:
        model.train(was_training)
    return float(torch.tensor(times).median())


def _check_logits_labels(logits: Tensor, labels: Tensor) -> None:
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError("got no examples")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits contain NaN or inf")
    if labels.is_floating_point() or bool((labels < 0).any() or (labels >= logits.shape[1]).any()):
        raise ValueError(f"labels must be integer class indices in [0, {logits.shape[1]})")


@dataclass
class ReliabilityBins:
    """Equal-width confidence bins: what a reliability diagram draws.

    ``accuracy`` and ``confidence`` are NaN for an empty bin (``counts == 0``): there is
    nothing to measure there, and plotting skips NaN.
    """

    edges: Tensor  # [num_bins + 1], 0 .. 1
    counts: Tensor  # [num_bins] examples whose top-class confidence falls in the bin
    accuracy: Tensor  # [num_bins] fraction of them predicted correctly
    confidence: Tensor  # [num_bins] their mean top-class confidence

    @property
    def ece(self) -> float:
        """``sum_b |B_b| / N * |accuracy_b - confidence_b|`` over non-empty bins."""
        kept = self.counts > 0
        weights = self.counts[kept].double() / self.counts.sum()
        return float((weights * (self.accuracy[kept] - self.confidence[kept]).abs().double()).sum())


def reliability_bins(logits: Tensor, labels: Tensor, num_bins: int = 15) -> ReliabilityBins:
    """Bin examples by top-class softmax confidence (bins ``[k/n, (k+1)/n)``, the last one closed).

    The returned tensors are on the CPU, whatever the device of ``logits``.

    The binning is the one of :func:`kd_lib.metrics.expected_calibration_error`, so
    ``reliability_bins(z, y, n).ece`` equals ``expected_calibration_error(z, y, n)``.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    _check_logits_labels(logits, labels)
    logits, labels = logits.detach().float().cpu(), labels.cpu()  # small tensors; plots need CPU
    confidence, predicted = torch.softmax(logits, dim=-1).max(dim=-1)
    correct = (predicted == labels).float()
    index = torch.clamp((confidence * num_bins).long(), max=num_bins - 1)
    counts = torch.bincount(index, minlength=num_bins)
    sums_correct = torch.zeros(num_bins).index_add_(0, index, correct)
    sums_confidence = torch.zeros(num_bins).index_add_(0, index, confidence)
    safe = counts.clamp_min(1).float()
    empty = counts == 0
    accuracy = torch.where(empty, torch.full((num_bins,), math.nan), sums_correct / safe)
    mean_confidence = torch.where(empty, torch.full((num_bins,), math.nan), sums_confidence / safe)
    return ReliabilityBins(torch.linspace(0, 1, num_bins + 1), counts, accuracy, mean_confidence)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    teacher_logits: Optional[Tensor] = None,
    ignore_index: int = -100,
    batch_size: int = 1024,
) -> Dict[str, float]:
    """Cross-entropy and accuracy over non-padding positions (and teacher agreement).

    What :func:`kd_lib.train` reports each epoch for ``eval_data``.
    """
    logits = predict_logits(model, inputs, batch_size)
    targets = targets.to(logits.device)
    result = {
        "eval_loss": float(cross_entropy_loss(logits, None, targets, ignore_index=ignore_index)),
        "eval_accuracy": accuracy(logits, targets, ignore_index=ignore_index),
    }
    if teacher_logits is not None:
        result["eval_agreement"] = agreement(logits, teacher_logits.to(logits.device), targets != ignore_index)
    return result
