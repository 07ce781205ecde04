"""Distillation losses as pure tensor functions.

Every function here follows the same rules, so that a reader can swap one for another:

* one signature, the one :func:`kd_lib.train` calls:
  ``loss(student_logits, teacher_logits, targets=None, *, <hyper-parameters>)``.
  Hyper-parameters are keyword-only, so ``partial(kd_loss, temperature=4)`` passes straight
  to ``train``. ``targets`` (class indices of the leading shape, or ``None``) set the
  positions to average over: those whose target is not ``ignore_index`` (padding). A
  ``mask`` (bool, leading shape) may also be passed; both then apply. Either logits argument
  may be a :class:`kd_lib.outputs.ModelOutput`; its ``.logits`` are used.
* logits have shape ``[..., C]``: ``[B, C]`` for classification, ``[B, L, V]`` for tokens.
  The divergence is summed over the last (class / vocabulary) dimension and averaged over
  every *position*, i.e. every index of the leading dimensions that the ``mask`` keeps.
* the computation runs in float32 whatever the input dtype (float16 / bfloat16 logits
  underflow in a softmax at high temperature), and stays finite for logits of +-1e4.
* the teacher never receives a gradient (its logits are detached); the student always does.
* the token-level divergences and the combined loss take ``chunk_size``: logits of 2^24 or
  more elements are computed a chunk of positions at a time, with the gradient formed in the
  forward pass (:mod:`kd_lib.chunked`), so peak memory stays near one gradient instead of
  several float32 copies of the logits; values and gradients equal the plain code's.
  ``chunk_size=0`` gives the plain graph (needed for double backward), an int sets the
  positions per chunk. A custom ``divergence`` of ``distillation_loss`` is chunked only when
  ``chunk_size`` is given.
* bad input raises ``ValueError`` naming the problem; an all-masked batch gives 0 with a
  zero gradient, never NaN.

Notation: ``z`` student logits, ``v`` teacher logits, ``T`` temperature,
``q = softmax(z / T)``, ``p = softmax(v / T)``.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ._checks import (
    average_positions, check_labels, check_logits, check_pair, check_temperature,
    check_unit_interval, kept_positions,
)
from .chunked import chunked_loss, rows_per_chunk
from .outputs import Output, logits_of

Tensor = torch.Tensor

__all__ = [
    "soften",
    "kd_loss",
    "soft_cross_entropy",
    "reverse_kl",
    "generalized_jsd",
    "skew_kl",
    "total_variation",
    "distillation_loss",
    "cross_entropy_loss",
]


def _log_probs(logits: Tensor, temperature: float) -> Tensor:
    return F.log_softmax(logits.float() / temperature, dim=-1)


def _kl_from_log_probs(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) summed over the last dim, from log-probabilities (finite for p -> 0)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


_CHUNKABLE = set()  # the losses below: they average over kept positions, as chunked_loss requires


def _is_kd_lib_loss(fn: Callable) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn in _CHUNKABLE


def _in_chunks(loss: Callable[..., Tensor], student_logits: Tensor, teacher_logits: Tensor,
               targets: Optional[Tensor], mask: Optional[Tensor], chunk_size: Optional[int],
               ignore_index: int, takes_mask: bool = True, **hyper) -> Tensor:
    """``loss`` computed by :func:`kd_lib.chunked.chunked_loss`, each chunk unchunked."""
    def piece(z, v, t, m):
        extra = {"mask": m} if takes_mask else {}
        return loss(z, v, t, ignore_index=ignore_index, chunk_size=0, **extra, **hyper)

    return chunked_loss(piece, student_logits, teacher_logits, targets, mask,
                        rows=rows_per_chunk(student_logits, chunk_size) or 1, ignore_index=ignore_index)


# ----------------------------------------------------------------------------- losses
def soften(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Soft targets: ``softmax(logits / T)`` over the last dim, in float32.

    T = 1 is the ordinary softmax; T > 1 flattens the distribution and reveals which wrong
    classes the model finds similar (Hinton et al. 2015, sec. 2); T -> infinity gives uniform.
    """
    check_logits("logits", logits)
    temperature = check_temperature(temperature)
    return torch.softmax(logits.float() / temperature, dim=-1)


def kd_loss(
    student_logits: Output,
    teacher_logits: Output,
    targets: Optional[Tensor] = None,
    *,
    temperature: float = 1.0,
    mask: Optional[Tensor] = None,
    ignore_index: int = -100,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """Hinton's soft-target loss: ``T^2 * KL(p || q)``, averaged over positions.

        L = T^2 / N * sum_n sum_c p_nc (log p_nc - log q_nc)

    with ``p = softmax(v/T)`` (teacher, no gradient) and ``q = softmax(z/T)`` (student).
    Its gradient w.r.t. a student logit is ``T (q - p) / N``; the T^2 keeps that gradient's
    size roughly constant as T changes (Hinton, Vinyals & Dean 2015, arXiv:1503.02531).
    This is PyTorch's ``F.kl_div(log q, p, reduction='batchmean') * T**2`` for ``[B, C]``
    inputs, but averaged per position (token) for ``[B, L, V]`` and with a padding mask.
    """
    student_logits, teacher_logits = logits_of(student_logits), logits_of(teacher_logits)
    check_pair(student_logits, teacher_logits)
    temperature = check_temperature(temperature)
    mask = kept_positions(mask, targets, student_logits, ignore_index)
    if rows_per_chunk(student_logits, chunk_size):
        return _in_chunks(kd_loss, student_logits, teacher_logits, targets, mask, chunk_size,
                          ignore_index, temperature=temperature)
    log_p = _log_probs(teacher_logits.detach(), temperature)
    log_q = _log_probs(student_logits, temperature)
    return temperature**2 * average_positions(_kl_from_log_probs(log_p, log_q), mask)


def soft_cross_entropy(
    student_logits: Output,
    teacher_logits: Output,
    targets: Optional[Tensor] = None,
    *,
    temperature: float = 1.0,
    mask: Optional[Tensor] = None,
    ignore_index: int = -100,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """``T^2 * H(p, q) = T^2 * -sum_c p_c log q_c``, averaged over positions.

    Differs from :func:`kd_loss` by ``T^2 * H(p)``, the teacher's entropy, which does not
    depend on the student: both give the same gradient, but only the KL is 0 at a perfect match.
    """
    student_logits, teacher_logits = logits_of(student_logits), logits_of(teacher_logits)
    check_pair(student_logits, teacher_logits)
    temperature = check_temperature(temperature)
    mask = kept_positions(mask, targets, student_logits, ignore_index)
    if rows_per_chunk(student_logits, chunk_size):
        return _in_chunks(soft_cross_entropy, student_logits, teacher_logits, targets, mask, chunk_size,
                          ignore_index, temperature=temperature)
    p = soften(teacher_logits.detach(), temperature)
    log_q = _log_probs(student_logits, temperature)
    return temperature**2 * average_positions(-(p * log_q).sum(-1), mask)


def reverse_kl(
    student_logits: Output,
    teacher_logits: Output,
    targets: Optional[Tensor] = None,
    *,
    temperature: float = 1.0,
    mask: Optional[Tensor] = None,
    ignore_index: int = -100,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """Reverse KL, ``T^2 * KL(q || p)``, averaged over positions (MiniLLM, Gu et al. 2023).

        L = T^2 / N * sum_n sum_c q_nc (log q_nc - log p_nc)

    Forward KL (:func:`kd_loss`) punishes the student for missing any teacher mode
    (mode covering); reverse KL punishes it for putting mass where the teacher has little
    (mode seeking).
    """
    student_logits, teacher_logits = logits_of(student_logits), logits_of(teacher_logits)
    check_pair(student_logits, teacher_logits)
    temperature = check_temperature(temperature)
    mask = kept_positions(mask, targets, student_logits, ignore_index)
    if rows_per_chunk(student_logits, chunk_size):
        return _in_chunks(reverse_kl, student_logits, teacher_logits, targets, mask, chunk_size,
                          ignore_index, temperature=temperature)
    log_p = _log_probs(teacher_logits.detach(), temperature)
    log_q = _log_probs(student_logits, temperature)
    return temperature**2 * average_positions(_kl_from_log_probs(log_q, log_p), mask)


def generalized_jsd(
    student_logits: Output,
    teacher_logits: Output,
    targets: Optional[Tensor] = None,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    mask: Optional[Tensor] = None,
    ignore_index: int = -100,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """Generalized Jensen-Shannon divergence of GKD (Agarwal et al. 2023, arXiv:2306.13649).

        m = beta * p + (1 - beta) * q
        JSD_beta = beta * KL(p || m) + (1 - beta) * KL(q || m)

    averaged over positions; no T^2 factor. For 0 < beta < 1 it is bounded and symmetric at
    beta = 0.5 (the ordinary JSD). It vanishes at both ends (m becomes q or p), but
    ``JSD_beta / beta -> KL(p || q)`` as beta -> 0 and ``JSD_beta / (1 - beta) -> KL(q || p)``
    as beta -> 1, so, as in GKD and TRL, ``beta=0`` returns forward KL(p || q) and
    ``beta=1`` reverse KL(q || p) (both without T^2).
    """
    student_logits, teacher_logits = logits_of(student_logits), logits_of(teacher_logits)
    check_pair(student_logits, teacher_logits)
    beta = check_unit_interval(beta, "beta")
    temperature = check_temperature(temperature)
    mask = kept_positions(mask, targets, student_logits, ignore_index)
    if rows_per_chunk(student_logits, chunk_size):
        return _in_chunks(generalized_jsd, student_logits, teacher_logits, targets, mask, chunk_size,
                          ignore_index, beta=beta, temperature=temperature)
    log_p = _log_probs(teacher_logits.detach(), temperature)
    log_q = _log_probs(student_logits, temperature)
    if beta == 0.0:
        per_position = _kl_from_log_probs(log_p, log_q)
    elif beta == 1.0:
        per_position = _kl_from_log_probs(log_q, log_p)
    else:
        log_m = torch.logsumexp(
            torch.stack([log_p + math.log(beta), log_q + math.log1p(-beta)]), dim=0
        )
        per_position = beta * _kl_from_log_probs(log_p, log_m) + (1 - beta) * _kl_from_log_probs(
            log_q, log_m
        )
    return average_positions(per_position, mask)


def skew_kl(
    student_logits: Output,
    teacher_logits: Output,
    targets: Optional[Tensor] = None,
    *,
    skew: float = 0.1,
    temperature: float = 1.0,
    mask: Optional[Tensor] = None,
    ignore_index: int = -100,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """Skew KL of DistiLLM (Ko et al. 2024): ``KL(p || skew * p + (1 - skew) * q)``.

    Mixing a little of the teacher into the student keeps the log finite where q -> 0,
    which bounds the gradient; ``skew=0`` is forward KL(p || q). No T^2 factor.
    """
    student_logits, teacher_logits = logits_of(student_logits), logits_of(teacher_logits)
    check_pair(student_logits, teacher_logits)
    skew = check_unit_interval(skew, "skew")
    temperature = check_temperature(temperature)
    mask = kept_positions(mask, targets, student_logits, ignore_index)
    if rows_per_chunk(student_logits, chunk_size):
        return _in_chunks(skew_kl, student_logits, teacher_logits, targets, mask, chunk_size,
                          ignore_index, skew=skew, temperature=temperature)
    log_p = _log_probs(teacher_logits.detach(), temperature)
    log_q = _log_probs(student_logits, temperature)
    if skew == 0.0:
        log_m = log_q
    elif skew == 1.0:
        log_m = log_p
    else:
        log_m = torch.logsumexp(
            torch.stack([log_p + math.log(skew), log_q + math.log1p(-skew)]), dim=0
        )
    return average_positions(_kl_from_log_probs(log_p, log_m), mask)


def _probs_at_least_float32(logits: Tensor, temperature: float) -> Tensor:
    """``softmax(logits / T)`` in float32, or in float64 for float64 logits (for gradcheck)."""
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return torch.softmax(logits.to(dtype) / temperature, dim=-1)


def total_variation(
    student_logits: Output,
    teacher_logits: Output,
    targets: Optional[Tensor] = None,
    *,
    temperature: float = 1.0,
    mask: Optional[Tensor] = None,
    ignore_index: int = -100,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """Total variation distance between the softened distributions, averaged over positions.

        TV(p, q) = 1/2 * sum_c |p_c - q_c|,    p = softmax(v/T), q = softmax(z/T)

    the largest difference in probability the two distributions give any set of classes; one of
    the f-divergences of f-DISTILL (Wen, Li, Du & Mou, ACL 2023), which call it TVD. Unlike KL it
    is symmetric and bounded (0 <= TV <= 1), and it weighs an error by its size in probability,
    not by a log-ratio: a class both give almost no probability hardly matters, however
    different the two tiny probabilities are. No T^2 factor (DistillKit multiplies its TVD by
    T^2; do so with ``weighted_sum`` if wanted). The gradient with respect to a student logit is
    ``q_j (s_j - sum_c q_c s_c) / (2 T)`` per position, with ``s = sign(q - p)``: at most ``1 / T``
    in size however far apart the logits are.
    Computed in float32 (float64 logits stay float64, so ``torch.autograd.gradcheck`` can
    check the gradient).
    """
    student_logits, teacher_logits = logits_of(student_logits), logits_of(teacher_logits)
    check_pair(student_logits, teacher_logits)
    temperature = check_temperature(temperature)
    mask = kept_positions(mask, targets, student_logits, ignore_index)
    if rows_per_chunk(student_logits, chunk_size):
        return _in_chunks(total_variation, student_logits, teacher_logits, targets, mask, chunk_size,
                          ignore_index, temperature=temperature)
    p = _probs_at_least_float32(teacher_logits.detach(), temperature)
    q = _probs_at_least_float32(student_logits, temperature)
    return average_positions(0.5 * (q - p.to(q.dtype)).abs().sum(-1), mask)


def cross_entropy_loss(
    student_logits: Output,
    teacher_logits: Optional[Output] = None,
    targets: Optional[Tensor] = None,
    *,
    ignore_index: int = -100,
) -> Tensor:
    """Ordinary cross-entropy with hard labels, averaged over non-ignored positions.

    Takes (and ignores) ``teacher_logits`` so that it has the same signature as every other
    training loss (see :func:`kd_lib.train.train`). An all-ignored batch gives 0, not NaN.
    """
    student_logits = logits_of(student_logits)
    check_logits("student_logits", student_logits)
    labels = check_labels(targets, student_logits, ignore_index)
    return _cross_entropy(student_logits, labels, ignore_index)


def _cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int) -> Tensor:
    total = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=ignore_index, reduction="sum"
    )
    return total / (labels != ignore_index).sum().clamp_min(1)


def distillation_loss(
    student_logits: Output,
    teacher_logits: Output,
    targets: Optional[Tensor] = None,
    *,
    temperature: float,
    alpha: float,
    ignore_index: int = -100,
    divergence: Callable[..., Tensor] = kd_loss,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """The combined loss: ``alpha * CE(z, y) + (1 - alpha) * kd_loss(z, v, temperature=T)``.

    ``alpha`` weights the HARD-label term, as in the book's syllabus; Hinton et al. (2015)
    and some libraries write the weight on the soft term instead. Positions whose label is
    ``ignore_index`` (padding) are left out of both terms, and both are averaged over the
    same kept positions. ``divergence`` swaps the soft term for another loss of this module
    (it is called as ``divergence(z, v, targets, temperature=T, ignore_index=...)``), e.g.
    ``reverse_kl`` or ``functools.partial(generalized_jsd, beta=0.5)``. With ``alpha=0`` no
    labels are needed (``targets=None``: every position counts).
    """
    student_logits, teacher_logits = logits_of(student_logits), logits_of(teacher_logits)
    check_pair(student_logits, teacher_logits)
    alpha = check_unit_interval(alpha, "alpha")
    temperature = check_temperature(temperature)
    if alpha > 0.0 and targets is None:
        raise ValueError(f"alpha={alpha} weights a hard-label term, but targets is None (an unlabelled batch): "
                         "pass labels, or alpha=0")
    if rows_per_chunk(student_logits, chunk_size if _is_kd_lib_loss(divergence) else chunk_size or 0):
        return _in_chunks(distillation_loss, student_logits, teacher_logits, targets, None, chunk_size,
                          ignore_index, temperature=temperature, alpha=alpha, divergence=divergence,
                          takes_mask=False)
    soft = divergence(student_logits, teacher_logits, targets, temperature=temperature, ignore_index=ignore_index)
    if alpha == 0.0:
        return soft
    labels = check_labels(targets, student_logits, ignore_index)
    return alpha * _cross_entropy(student_logits, labels, ignore_index) + (1 - alpha) * soft


_CHUNKABLE.update({kd_loss, soft_cross_entropy, reverse_kl, generalized_jsd, skew_kl, total_variation})
