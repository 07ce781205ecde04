"""Offline distillation: run the teacher once, keep its top-k log-probabilities, train later.

Storing a teacher's full output costs ``N * L * V`` floats (for a 150k-token vocabulary, 600 kB
per token in float32), so offline pipelines such as DistillKit, and TRL's trainers that query a
teacher server, keep only the ``k`` most likely tokens of each position: their log-probability
(float16) and id (int16/int32). Training then needs a rule for the *missing tail mass*
``r = 1 - sum_{top k} p``, the probability the teacher gave to the ``V - k`` tokens not stored:

* ``tail="uniform"`` (default): spread ``r`` evenly over the ``V - k`` other tokens,
  ``log p_j = log(r / (V - k))``. The teacher keeps its total mass and its uncertainty; the
  student is asked to put ``r`` outside the top k, without knowing where. Exact when k = V.
* ``tail="renormalize"``: drop the tail and rescale the top k to sum to 1 (``p_j = 0``
  outside). The student learns a sharper teacher; forward KL then ignores where the student
  puts mass outside the top k, and reverse KL punishes any such mass hard.

:func:`expand_topk` rebuilds ``[..., V]`` teacher log-probabilities, which every loss in
:mod:`kd_lib.losses` takes as ``teacher_logits`` (a log-softmax of log-probabilities is the same
log-probabilities). :class:`CachedTeacher` serves a cache to :func:`kd_lib.train` as if it were
the teacher, looking each input sequence up by its tokens.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from torch import nn

from ..metrics import predict_logits

Tensor = torch.Tensor

__all__ = ["TopKCache", "topk_cache", "expand_topk", "RowIndex", "CachedTeacher"]

_LOG_ZERO = -1e4  # "log 0": finite, so the losses stay finite; exp() of it is exactly 0 in float32


@dataclass
class TopKCache:
    """The teacher's ``k`` largest log-probabilities per position and their token ids."""

    values: Tensor  # [N, L, k] log-probabilities, sorted descending (float16)
    indices: Tensor  # [N, L, k] token ids (int16 when the vocabulary fits, else int32)
    vocab_size: int

    @property
    def k(self) -> int:
        return self.values.shape[-1]

    @property
    def nbytes(self) -> int:
        """Bytes the cache occupies (compare with ``N * L * V * 4`` for full float32 logits)."""
        return self.values.numel() * self.values.element_size() + self.indices.numel() * self.indices.element_size()


@torch.no_grad()
def topk_cache(teacher: nn.Module, inputs: Tensor, k: int, *, batch_size: int = 256,
               dtype: torch.dtype = torch.float16) -> TopKCache:
    """Run ``teacher`` over ``inputs`` once (eval mode) and keep the top-``k`` log-probabilities."""
    logits = predict_logits(teacher, inputs, batch_size)
    vocab_size = logits.shape[-1]
    if not 1 <= k <= vocab_size:
        raise ValueError(f"k must lie in [1, {vocab_size}] (the vocabulary size), got {k}")
    values, indices = torch.log_softmax(logits, dim=-1).topk(k, dim=-1)
    index_dtype = torch.int16 if vocab_size <= 2**15 else torch.int32
    return TopKCache(values.to(dtype), indices.to(index_dtype), vocab_size)


def expand_topk(values: Tensor, indices: Tensor, vocab_size: int, tail: str = "uniform") -> Tensor:
    """Full ``[..., V]`` teacher log-probabilities from top-k ``values``/``indices`` ``[..., k]``.

    ``tail`` says what the ``V - k`` missing tokens get (see the module docstring):
    ``"uniform"``: ``log(r / (V - k))`` with ``r = 1 - sum(exp(values))``; ``"renormalize"``:
    the top k are rescaled to sum to 1 and the rest get probability 0 (a finite ``-1e4``).
    """
    if values.shape != indices.shape:
        raise ValueError(f"values {tuple(values.shape)} and indices {tuple(indices.shape)} differ in shape")
    k = values.shape[-1]
    if not 1 <= k <= vocab_size:
        raise ValueError(f"top-k of {k} does not fit a vocabulary of {vocab_size}")
    if tail not in ("uniform", "renormalize"):
        raise ValueError(f"tail must be 'uniform' or 'renormalize', got {tail!r}")
    values = values.float()
    if tail == "renormalize" or k == vocab_size:
        fill, values = _LOG_ZERO, values - torch.logsumexp(values, dim=-1, keepdim=True)
        full = torch.full((*values.shape[:-1], vocab_size), fill, device=values.device)
    else:
        missing = (-torch.expm1(torch.logsumexp(values, dim=-1, keepdim=True))).clamp_min(0.0)  # r = 1 - sum p
        fill = (missing / (vocab_size - k)).clamp_min(1e-30).log().clamp_min(_LOG_ZERO)
        full = fill.expand(*values.shape[:-1], vocab_size).clone()
    return full.scatter(-1, indices.long(), values)


class RowIndex:
    """Finds input rows among the rows a cache was made from, by their token ids."""

    def __init__(self, inputs: Tensor):
        self.rows: Dict[bytes, int] = {row.numpy().tobytes(): i for i, row in enumerate(inputs.cpu())}

    def find(self, tokens: Tensor) -> List[Optional[int]]:
        """The cache row of each row of ``tokens``, or None for a row that is not cached."""
        return [self.rows.get(row.numpy().tobytes()) for row in tokens.cpu()]


class CachedTeacher(nn.Module):
    """A stand-in teacher for :func:`kd_lib.train` that returns cached outputs.

    ``forward(tokens)`` finds each row of ``tokens`` among the cached ``inputs`` (by its token
    ids) and returns ``expand_topk`` of its cache entry, so the real teacher does not run. A row
    that is not in the cache (e.g. a sample from the student in on-policy distillation) goes to
    ``fallback``, the live teacher, when one is given, and raises ``ValueError`` otherwise.
    Train with ``TrainConfig(cache_teacher_logits=False)``: the expansion to ``[B, L, V]`` then
    happens per batch, and only the compact cache stays in memory.
    """

    def __init__(self, inputs: Tensor, cache: TopKCache, tail: str = "uniform", fallback: Optional[nn.Module] = None):
        super().__init__()
        if inputs.shape != cache.values.shape[:-1]:
            raise ValueError(f"inputs {tuple(inputs.shape)} do not match the cache {tuple(cache.values.shape[:-1])}")
        expand_topk(cache.values[:1, :1], cache.indices[:1, :1], cache.vocab_size, tail)  # validates `tail`
        self.cache, self.tail, self.fallback = cache, tail, fallback
        self.index = RowIndex(inputs)
        self._anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # gives the module a device

    def forward(self, tokens: Tensor) -> Tensor:
        found = self.index.find(tokens)
        hits = [i for i, row in enumerate(found) if row is not None]
        misses = [i for i, row in enumerate(found) if row is None]
        if misses and self.fallback is None:
            raise ValueError("CachedTeacher got a sequence that is not in its cache: offline distillation "
                             "can only train on the transfer set the teacher was run on (or pass fallback=teacher)")
        out = torch.empty(*tokens.shape, self.cache.vocab_size, device=tokens.device)
        if hits:
            rows = torch.tensor([found[i] for i in hits])
            expanded = expand_topk(self.cache.values[rows], self.cache.indices[rows], self.cache.vocab_size, self.tail)
            out[hits] = expanded.to(tokens.device)
        if misses:
            with torch.no_grad():
                out[misses] = torch.log_softmax(self.fallback(tokens[misses]).float(), dim=-1).to(tokens.device)
        return out
