"""Sampling from causal language models, for sequence-level and on-policy distillation.

* :func:`sample` draws complete sequences (ancestral sampling, optionally at a temperature),
  with a key/value cache when the model has one (:meth:`kd_lib.lm.gpt.GPT.forward_cached`).
* Sequence-level KD (Kim & Rush 2016) trains the student with plain cross-entropy on
  sequences *sampled from the teacher*: ``lm_data(sample(teacher, ...))``.
* On-policy distillation (GKD, Agarwal et al. 2023) scores the *student's own* samples with
  the teacher: :class:`OnPolicy` plugs that into :func:`kd_lib.train` (see its docstring).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn

Tensor = torch.Tensor

__all__ = ["sample", "padding_mask", "OnPolicy"]


@torch.no_grad()
def sample(
    model: nn.Module,
    num_sequences: int,
    max_len: int,
    *,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    generator: Optional[torch.Generator] = None,
    batch_size: int = 512,
) -> Tensor:
    """``[N, max_len]`` token ids: ``bos``, sampled tokens, ``eos``, then ``pad`` to the end.

    Each token is drawn from ``softmax(logits / temperature)``; a sequence that has not
    produced ``eos`` by ``max_len`` is cut there (a grammaticality check will reject it).
    The model is put in eval mode and restored afterwards; ``generator`` (a seeded
    ``torch.Generator`` on the CPU) makes the samples reproducible.
    """
    if num_sequences < 1 or max_len < 2:
        raise ValueError(f"need num_sequences >= 1 and max_len >= 2, got {num_sequences}, {max_len}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    try:
        chunks = [_sample_batch(model, min(batch_size, num_sequences - i), max_len, bos_id, eos_id, pad_id,
                                temperature, generator, device) for i in range(0, num_sequences, batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(chunks)


def _sample_batch(model, n, max_len, bos_id, eos_id, pad_id, temperature, generator, device) -> Tensor:
    tokens = torch.full((n, max_len), pad_id, dtype=torch.long, device=device)
    tokens[:, 0] = bos_id
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    cached = hasattr(model, "forward_cached")
    cache = None
    for t in range(1, max_len):
        if cached:
            logits, cache = model.forward_cached(tokens[:, t - 1 : t], cache)
        else:  # no cache: run the whole prefix again
            logits = model(tokens[:, :t])
        probs = torch.softmax(logits[:, -1].float() / temperature, dim=-1)
        token = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(device)
        tokens[:, t] = torch.where(finished, torch.full_like(token, pad_id), token)
        finished |= token == eos_id
        if bool(finished.all()):
            break
    return tokens


def padding_mask(inputs: Tensor, *, eos_id: int, pad_id: int) -> Tensor:
    """Positions whose next token counts: every input token before the first ``eos``/``pad``.

    For well-formed sequences (``inputs = tokens[:, :-1]`` of grammar samples) this equals
    ``targets != ignore_index`` of :func:`kd_lib.lm.language.lm_data` (position t predicts token
    t + 1, up to and including ``eos``). For a student's samples it is stricter: a ``pad`` token
    sampled mid-sequence ends the sequence here, while ``lm_data`` would only skip that one position.
    """
    stop = (inputs == eos_id) | (inputs == pad_id)
    return stop.long().cumsum(dim=1) == 0


class OnPolicy:
    """On-policy distillation through :func:`kd_lib.train`, GKD-style (Agarwal et al. 2023).

    With probability ``student_fraction`` (GKD's lambda) a micro-batch is replaced by fresh
    samples from the current student; otherwise the fixed data batch is kept. The teacher
    then scores whatever the student trains on, token by token, with ``train``'s ``loss_fn``
    (any kd_lib divergence, as it is):

        policy = OnPolicy(student, max_len=..., bos_id=..., eos_id=..., pad_id=...)
        kd_lib.train(student, lm_data(tokens), teacher=teacher,
                     loss_fn=partial(generalized_jsd, beta=0.5),
                     augment=policy.augment, config=TrainConfig(cache_teacher_logits=False))

    ``augment`` returns the samples *with their own next-token targets* (``lm_data`` of the
    sampled sequences), so ``kd_lib.train`` masks their padding and weights every micro-batch by
    its real tokens, also across gradient accumulation; a kept data batch keeps its targets.
    """

    def __init__(self, student: nn.Module, *, max_len: int, bos_id: int,
                 eos_id: int, pad_id: int, student_fraction: float = 1.0, temperature: float = 1.0,
                 ignore_index: int = -100):
        if not 0.0 <= student_fraction <= 1.0:
            raise ValueError(f"student_fraction must lie in [0, 1], got {student_fraction}")
        self.student, self.student_fraction = student, student_fraction
        self.ids = dict(bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
        self.max_len, self.temperature, self.ignore_index = max_len, temperature, ignore_index
        self.student_batches = 0

    def augment(self, inputs: Tensor, generator: torch.Generator) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        if float(torch.rand((), generator=generator)) >= self.student_fraction:
            return inputs  # keep the data batch and its targets
        tokens = sample(self.student, len(inputs), self.max_len + 1, temperature=self.temperature,
                        generator=generator, **self.ids).to(inputs.device)
        self.student_batches += 1
        targets = tokens[:, 1:].clone()
        targets[~padding_mask(tokens[:, :-1], **{k: self.ids[k] for k in ("eos_id", "pad_id")})] = self.ignore_index
        return tokens[:, :-1].contiguous(), targets

