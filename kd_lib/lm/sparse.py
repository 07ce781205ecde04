"""Sparse teacher targets for offline distillation: top-k with a tail rule, or sampled tokens.

A cache of the teacher keeps a few (token id, probability) pairs per position instead of all V
probabilities. How the student is trained on them decides whether the cache biases it. Write
``p`` for the teacher's distribution at a position, ``S`` for the ids the cache keeps and
``q = softmax(z)`` for the student's. :func:`sparse_kd_loss` computes, per position,

* ``tail="none"`` (top-k **renormalised**, or **sampled**): ``sum_{i in S} w_i (log w_i - log q_i)``
  with weights ``w`` that sum to 1. For top-k, ``w = p_S / sum p_S``: the student is taught a
  sharper teacher, since every token outside the top k is asked to get probability 0.
* ``tail="uniform"``: the missing mass ``r = 1 - sum_{i in S} p_i`` spread evenly over the
  ``V - k`` other tokens (what :func:`kd_lib.lm.topk.expand_topk` builds), i.e. the full forward KL
  to that flattened teacher.
* ``tail="bucket"``: KL between the ``k + 1``-category distributions ``(p_S, r)`` and
  ``(q_S, 1 - sum q_S)``, the tail bucket of TRL's top-k teacher server. It constrains how much
  mass the student leaves outside ``S``, not where it goes.

**Random-sampling KD** (Anshumann et al., ACL 2025, "Sparse Logit Sampling"): draw ``n`` tokens
from ``p`` with replacement and use their frequencies ``w_i = count_i / n`` as the target, with
``tail="none"``. Since ``E[w] = p``, the loss's gradient ``sum_i w_i (q - e_i)`` has the full
forward KL's gradient ``q - p`` as its expectation: the estimator is unbiased, only noisier. The
top-k rules are deterministic, so their error does not average out over positions or epochs.

Storage per position: top-k costs ``k`` float16 values + ``k`` int16 ids (4k bytes); ``n``
sampled ids cost 2n bytes (the frequencies are the repeats). The tail mass needs no storage.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .._checks import average_positions, check_logits, kept_positions
from ..metrics import predict_logits
from ..outputs import Output, logits_of
from .topk import RowIndex, TopKCache

Tensor = torch.Tensor

__all__ = ["SparseTarget", "SampledCache", "sample_cache", "sparse_target", "SparseCachedTeacher",
           "sparse_kd_loss"]

TAILS = ("none", "uniform", "bucket")


@dataclass
class SparseTarget:
    """Teacher probabilities ``probs [..., m]`` of the token ids ``indices [..., m]`` at each
    position, and how the loss treats the rest of the vocabulary (``tail``, see the module)."""

    indices: Tensor
    probs: Tensor
    vocab_size: int
    tail: str = "none"

    def to(self, device) -> "SparseTarget":
        return SparseTarget(self.indices.to(device), self.probs.to(device), self.vocab_size, self.tail)


@dataclass
class SampledCache:
    """``n`` token ids per position drawn from the teacher's distribution (with replacement)."""

    samples: Tensor  # [N, L, n] int16 (int32 for vocabularies over 32,768)
    vocab_size: int

    @property
    def nbytes(self) -> int:
        return self.samples.numel() * self.samples.element_size()


@torch.no_grad()
def sample_cache(teacher: nn.Module, inputs: Tensor, num_samples: int, *, seed: int,
                 batch_size: int = 256) -> SampledCache:
    """Run ``teacher`` over ``inputs`` once and keep ``num_samples`` draws from each position's
    next-token distribution (``torch.multinomial`` with a generator seeded by ``seed``)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    probs = torch.softmax(predict_logits(teacher, inputs, batch_size).float(), dim=-1)
    vocab_size = probs.shape[-1]
    generator = torch.Generator().manual_seed(seed)
    draws = torch.multinomial(probs.reshape(-1, vocab_size).cpu(), num_samples, replacement=True, generator=generator)
    index_dtype = torch.int16 if vocab_size <= 2**15 else torch.int32
    return SampledCache(draws.reshape(*probs.shape[:-1], num_samples).to(index_dtype), vocab_size)


def sparse_target(cache, rows: Tensor, tail: str = "none") -> SparseTarget:
    """The :class:`SparseTarget` of cache rows ``rows`` (a :class:`TopKCache` or :class:`SampledCache`).

    Top-k: ``tail="none"`` renormalises the k probabilities; ``"uniform"`` and ``"bucket"`` keep
    them and leave the missing mass to the tail rule. Sampled: the weights are the frequencies
    (each draw weighs ``1/n``; repeated ids simply repeat) and the tail must be ``"none"``.
    """
    if tail not in TAILS:
        raise ValueError(f"tail must be one of {TAILS}, got {tail!r}")
    if isinstance(cache, SampledCache):
        if tail != "none":
            raise ValueError("a sampled cache is already a distribution (the frequencies): use tail='none'")
        ids = cache.samples[rows].long()
        return SparseTarget(ids, torch.full(ids.shape, 1.0 / ids.shape[-1]), cache.vocab_size, "none")
    if not isinstance(cache, TopKCache):
        raise ValueError(f"cache must be a TopKCache or SampledCache, got {type(cache).__name__}")
    values = cache.values[rows].float()
    probs = torch.softmax(values, dim=-1) if tail == "none" else values.exp()
    return SparseTarget(cache.indices[rows].long(), probs, cache.vocab_size, tail)


class SparseCachedTeacher(nn.Module):
    """A stand-in teacher for :func:`kd_lib.train` that returns :class:`SparseTarget` rows of a
    cache, found by each input row's tokens; train with ``loss_fn=sparse_kd_loss`` and
    ``TrainConfig(cache_teacher_logits=False)``."""

    def __init__(self, inputs: Tensor, cache, tail: str = "none"):
        super().__init__()
        stored = cache.samples if isinstance(cache, SampledCache) else getattr(cache, "values", None)
        if stored is None or inputs.shape != stored.shape[:-1]:
            raise ValueError(f"inputs {tuple(inputs.shape)} do not match the cache")
        sparse_target(cache, torch.tensor([0]), tail)  # validates cache and tail now
        self.cache, self.tail = cache, tail
        self.index = RowIndex(inputs)
        self._anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # gives the module a device

    def forward(self, tokens: Tensor) -> SparseTarget:
        found = self.index.find(tokens)
        if any(row is None for row in found):
            raise ValueError("SparseCachedTeacher got a sequence that is not in its cache: offline distillation "
                             "can only train on the transfer set the teacher was run on")
        return sparse_target(self.cache, torch.tensor(found), self.tail).to(tokens.device)


def sparse_kd_loss(
    student_logits: Output,
    teacher: SparseTarget,
    targets: Optional[Tensor] = None,
    *,
    mask: Optional[Tensor] = None,
    ignore_index: int = -100,
) -> Tensor:
    """Forward KL from a sparse teacher target to the student, averaged over positions (T = 1).

    The formulas per ``teacher.tail`` are in the module docstring. Same contract as the losses of
    :mod:`kd_lib.losses` (float32, ``targets``/``mask`` select positions, 0 when none is kept).
    """
    student_logits = logits_of(student_logits)
    check_logits("student_logits", student_logits)
    if not isinstance(teacher, SparseTarget):
        raise ValueError(f"sparse_kd_loss needs a SparseTarget as the teacher output, got {type(teacher).__name__}")
    vocab = student_logits.shape[-1]
    if teacher.vocab_size != vocab:
        raise ValueError(f"vocabulary size mismatch: student_logits have {vocab} classes, the cache {teacher.vocab_size}")
    if teacher.indices.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(f"the target covers positions {tuple(teacher.indices.shape[:-1])}, "
                         f"the logits {tuple(student_logits.shape[:-1])}")
    kept = kept_positions(mask, targets, student_logits, ignore_index)
    log_q = torch.log_softmax(student_logits.float(), dim=-1)
    log_q_kept = log_q.gather(-1, teacher.indices)
    w = teacher.probs.float()
    per_position = (torch.special.xlogy(w, w) - w * log_q_kept).sum(-1)
    if teacher.tail != "none" and teacher.indices.shape[-1] < vocab:  # k = V: no tail, r = 0
        missing = (1.0 - w.sum(-1)).clamp_min(0.0)  # r
        if teacher.tail == "bucket":
            # log(1 - sum q_S) as a logsumexp over the ids outside S: no cancellation when q_S -> 1
            log_student_missing = torch.logsumexp(log_q.scatter(-1, teacher.indices, -torch.inf), dim=-1)
            tail_term = torch.special.xlogy(missing, missing) - missing * log_student_missing
            per_position = per_position + torch.where(missing > 0, tail_term, torch.zeros_like(tail_term))
        else:  # uniform over the V - k ids not kept
            others = vocab - teacher.indices.shape[-1]
            tail_log_q = log_q.sum(-1) - log_q_kept.sum(-1)
            per_position = per_position + torch.special.xlogy(missing, missing / others) - missing / others * tail_log_q
    return average_positions(per_position, kept)
