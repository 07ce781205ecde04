"""Distillation across tokenizers: Universal Logit Distillation (Boizard et al. 2024, arXiv:2402.12030).

A teacher and a student with different tokenizers predict different things at different
positions: the teacher the next *word* (say), the student the next sub-word *piece*. Their
probability vectors cannot be compared entry by entry (kd_lib's other losses refuse a
vocabulary mismatch). ULD compares them after sorting: with ``p_(1) >= p_(2) >= ...`` the
teacher's probabilities in decreasing order and ``q_(i)`` the student's, the shorter one padded
with zeros,

    W(p, q) = sum_i |p_(i) - q_(i)|

which is the Wasserstein-1 distance between the two sorted distributions on the ranks (the
ULD paper's closed form). It transfers the *shape* of the teacher's uncertainty (how many
continuations it considers, how peaked), not which tokens they are. ULD adds it to the
ordinary cross-entropy on the student's own tokens:

    L = CE(student, tokens) + lambda * mean over aligned positions of W(p, q)

**Alignment.** Which student position should match which teacher position? Here both
tokenizers split the same whitespace-separated words, so :func:`word_alignment` pairs the
student position that predicts the *first piece* of word ``i`` with the teacher position that
predicts word ``i`` (and the two end-of-text predictions); positions predicting a later piece
of a word get the cross-entropy only. (The ULD paper aligns by index after truncation; GOLD in
TRL merges tokens. Both need text that both tokenizers can split.)

**Mapping instead of sorting.** When the teacher's vocabulary can be written in the student's
pieces, the teacher's distribution over next words can be *projected* onto the student's
first pieces, ``p_s(a) = sum_{w : first piece of w is a} p(w)`` (:func:`first_piece_map`,
``AlignedTeacher(..., vocab_map=...)``), and compared entry by entry with an ordinary loss
(``divergence=kd_lib.kd_loss``). Sorting throws away which token is which; the map keeps it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from .._checks import average_positions, check_logits, check_temperature, kept_positions
from ..losses import cross_entropy_loss
from ..outputs import Output, logits_of
from .topk import RowIndex

Tensor = torch.Tensor

__all__ = ["uld_loss", "word_alignment", "first_piece_map", "AlignedLogits", "AlignedTeacher",
           "uld_distillation_loss"]


def uld_loss(
    student_logits: Output,
    teacher_logits: Output,
    targets: Optional[Tensor] = None,
    *,
    temperature: float = 1.0,
    mask: Optional[Tensor] = None,
    ignore_index: int = -100,
) -> Tensor:
    """ULD's distance ``sum_i |sort(p)_i - sort(q)_i|`` per position, averaged over positions.

    ``student_logits [..., V_s]`` and ``teacher_logits [..., V_t]`` share their leading shape but
    not (necessarily) their vocabulary; ``p = softmax(v / T)``, ``q = softmax(z / T)`` in float32.
    ``targets``/``mask`` select positions as in every kd_lib loss. Bounded: 0 <= W <= 2.
    """
    student_logits, teacher_logits = logits_of(student_logits), logits_of(teacher_logits)
    check_logits("student_logits", student_logits)
    check_logits("teacher_logits", teacher_logits)
    if student_logits.shape[:-1] != teacher_logits.shape[:-1]:
        raise ValueError(f"ULD needs aligned positions: student_logits {tuple(student_logits.shape)} and "
                         f"teacher_logits {tuple(teacher_logits.shape)} differ before the vocabulary dimension")
    temperature = check_temperature(temperature)
    kept = kept_positions(mask, targets, student_logits, ignore_index)
    q = torch.softmax(student_logits.float() / temperature, dim=-1).sort(dim=-1, descending=True).values
    p = torch.softmax(teacher_logits.detach().float() / temperature, dim=-1).sort(dim=-1, descending=True).values
    width = max(q.shape[-1], p.shape[-1])
    q, p = F.pad(q, (0, width - q.shape[-1])), F.pad(p, (0, width - p.shape[-1]))
    return average_positions((q - p).abs().sum(-1), kept)


def word_alignment(tokenizer, word_stories: Sequence[Sequence[str]], max_length: int
                   ) -> Tuple[Tensor, Tensor, Tensor]:
    """Student ``(inputs, targets)`` for stories given as word lists, and the teacher position
    each student position is aligned with (``-1``: none).

    The student sees ``<bos> pieces <eos>`` (right-padded, targets -100 on padding), as
    :func:`kd_lib.lm.hf.encode_for_lm` builds them; the teacher is assumed to see
    ``<bos> word_1 ... word_n <eos>``, so teacher position ``i - 1`` predicts word ``i`` and
    position ``n`` predicts the end. The student position just before the first piece of word
    ``i`` is aligned with teacher position ``i - 1``, the one before the student's ``<eos>`` with
    ``n``.
    """
    rows: List[List[int]] = []
    aligned: List[List[int]] = []
    for words in word_stories:
        encoding = tokenizer(" ".join(words))
        ids, word_ids = encoding["input_ids"], encoding.word_ids()
        full = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
        where = [-1] * (len(full) - 1)  # one entry per input position
        seen = set()
        for piece, word in enumerate(word_ids):
            if word is not None and word not in seen:  # the first piece of this word is token piece + 1
                seen.add(word)
                where[piece] = word  # position `piece` predicts token piece + 1
        if len(seen) != len(words):
            raise ValueError(f"the tokenizer split {len(words)} words into {len(seen)}: the word boundaries differ")
        where[len(full) - 2] = len(words)  # predicts <eos>
        rows.append(full)
        aligned.append(where)
    longest = max(len(r) for r in rows)
    if longest > max_length:
        raise ValueError(f"a story has {longest} tokens with <bos>/<eos>, more than max_length={max_length}")
    batch = torch.full((len(rows), longest), tokenizer.pad_token_id, dtype=torch.long)
    positions = torch.full((len(rows), longest - 1), -1, dtype=torch.long)
    for n, (full, where) in enumerate(zip(rows, aligned)):
        batch[n, : len(full)] = torch.tensor(full)
        positions[n, : len(where)] = torch.tensor(where)
    lengths = torch.tensor([len(full) for full in rows])
    padding = torch.arange(1, longest)[None, :] >= lengths[:, None]  # target index past the story's end
    return batch[:, :-1], batch[:, 1:].masked_fill(padding, -100), positions


def first_piece_map(tokenizer, teacher_vocab: Sequence[str], specials: Dict[str, int]) -> Tensor:
    """``M [V_t, V_s]`` with ``M[w, a] = 1`` when the student tokenizer's first piece of teacher
    token ``w`` is ``a``; ``specials`` maps teacher special tokens to student ids (e.g. end of
    text), and other special tokens map nowhere (their row is 0). ``p @ M`` projects a teacher
    distribution over words onto the student's first pieces."""
    mapping = torch.zeros(len(teacher_vocab), len(tokenizer))
    for w, word in enumerate(teacher_vocab):
        if word in specials:
            mapping[w, specials[word]] = 1.0
        elif not (word.startswith("<") and word.endswith(">")):
            mapping[w, tokenizer(word)["input_ids"][0]] = 1.0
    return mapping


@dataclass
class AlignedLogits:
    """Teacher logits moved to the student's positions, and which positions have one."""

    logits: Tensor  # [B, L_s, V_t]
    aligned: Tensor  # [B, L_s] bool


class AlignedTeacher(nn.Module):
    """A stand-in teacher for :func:`kd_lib.train`: for each student input row (found by its
    tokens), the teacher's logits at the aligned positions (zeros elsewhere).

    ``teacher_logits [N, L_t, V_t]`` are the teacher's outputs on its own tokenization of the
    same ``N`` stories; ``positions [N, L_s]`` comes from :func:`word_alignment`. With a
    ``vocab_map [V_t, V_s]`` (:func:`first_piece_map`) the stored outputs are instead the log of
    the teacher's probabilities projected onto the student's vocabulary.
    """

    def __init__(self, student_inputs: Tensor, teacher_logits: Tensor, positions: Tensor,
                 vocab_map: Optional[Tensor] = None):
        super().__init__()
        if student_inputs.shape != positions.shape or len(teacher_logits) != len(positions):
            raise ValueError(f"student_inputs {tuple(student_inputs.shape)}, positions {tuple(positions.shape)} "
                             f"and teacher_logits {tuple(teacher_logits.shape)} do not describe the same stories")
        if int(positions.max()) >= teacher_logits.shape[1]:
            raise ValueError("positions point past the teacher's sequence length")
        teacher_logits = teacher_logits.float()
        if vocab_map is not None:
            if vocab_map.shape[0] != teacher_logits.shape[-1]:
                raise ValueError(f"vocab_map has {vocab_map.shape[0]} rows for a teacher vocabulary of "
                                 f"{teacher_logits.shape[-1]}")
            projected = torch.softmax(teacher_logits, dim=-1) @ vocab_map.float()
            teacher_logits = projected.clamp_min(1e-30).log().clamp_min(-1e4)
        index = positions.clamp_min(0)[..., None].expand(-1, -1, teacher_logits.shape[-1])
        self.logits = teacher_logits.gather(1, index) * positions.ge(0)[..., None]
        self.aligned = positions.ge(0)
        self.index = RowIndex(student_inputs)
        self._anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # gives the module a device

    def forward(self, tokens: Tensor) -> AlignedLogits:
        found = self.index.find(tokens)
        if any(row is None for row in found):
            raise ValueError("AlignedTeacher got a sequence it has no teacher outputs for")
        rows = torch.tensor(found)
        return AlignedLogits(self.logits[rows].to(tokens.device), self.aligned[rows].to(tokens.device))


def uld_distillation_loss(
    student_logits: Output,
    teacher: AlignedLogits,
    targets: Tensor,
    *,
    weight: float = 1.0,
    temperature: float = 1.0,
    ignore_index: int = -100,
    divergence: Callable[..., Tensor] = uld_loss,
) -> Tensor:
    """ULD's training loss: ``CE(student, targets) + weight * uld_loss`` at the aligned positions.

    ``divergence`` swaps ULD's sorted distance for another kd_lib loss, e.g. ``kd_lib.kd_loss``
    when the teacher's outputs were projected onto the student's vocabulary (``vocab_map``)."""
    if not isinstance(teacher, AlignedLogits):
        raise ValueError(f"uld_distillation_loss needs AlignedLogits (from AlignedTeacher), got {type(teacher).__name__}")
    ce = cross_entropy_loss(student_logits, None, targets, ignore_index=ignore_index)
    soft = divergence(student_logits, teacher.logits, targets, temperature=temperature, mask=teacher.aligned,
                      ignore_index=ignore_index)
    return ce + weight * soft
