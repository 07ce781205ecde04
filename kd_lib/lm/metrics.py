"""Measures of a language model against a language whose truth is known (:mod:`kd_lib.lm.language`).

* :func:`kl_to_truth`: mean per-token KL(truth || model) on held-out stories, the part of the
  cross-entropy a better model could still remove (cross-entropy = entropy + this KL);
* :func:`lm_metrics`: the scorecard of the book's language-model chapter: validation
  cross-entropy, KL to the truth, and the fraction of sampled stories that are grammatical.
"""
from __future__ import annotations

from typing import Dict

import torch

from .generation import sample
from .language import BOS, EOS, PAD, Grammar
from ..losses import kd_loss
from ..metrics import evaluate, predict_logits

Tensor = torch.Tensor

__all__ = ["kl_to_truth", "truth_scorer", "lm_metrics"]


@torch.no_grad()
def kl_to_truth(model, grammar: Grammar, inputs: Tensor, targets: Tensor, *, ignore_index: int = -100,
                batch_size: int = 256) -> float:
    """Mean per-token KL(truth || model) in nats over non-padding positions of real stories.

    The model's cross-entropy on the same tokens estimates entropy + this KL; the KL alone is
    the part a better model could still remove (0 for a perfect model).
    """
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} differ in shape")
    total, positions = 0.0, 0
    for i in range(0, len(inputs), batch_size):
        x, y = inputs[i : i + batch_size], targets[i : i + batch_size]
        truth = grammar.next_token_probs(x).clamp_min(1e-30).log().clamp_min(-1e4)
        logits = predict_logits(model, x, batch_size)
        mask = (y != ignore_index).to(logits.device)
        kept = int(mask.sum())
        total += float(kd_loss(logits, truth.to(logits.device), mask=mask)) * kept
        positions += kept
    if positions == 0:
        raise ValueError("kl_to_truth: every target is padding")
    return total / positions


def truth_scorer(grammar: Grammar, inputs: Tensor, targets: Tensor, *, ignore_index: int = -100):
    """A function ``model -> KL(truth || model)`` on fixed stories, with the truth computed once.

    The KL is :func:`kl_to_truth`'s (mean per non-padding token), in one batch; use it to
    score many models, or one model many times while it trains, on the same stories.
    """
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} differ in shape")
    mask = targets != ignore_index
    if not bool(mask.any()):
        raise ValueError("truth_scorer: every target is padding")
    truth = grammar.next_token_probs(inputs).clamp_min(1e-30).log().clamp_min(-1e4)

    def score(model) -> float:
        logits = predict_logits(model, inputs)
        return float(kd_loss(logits, truth.to(logits.device), mask=mask.to(logits.device)))

    return score


def lm_metrics(model, grammar: Grammar, inputs: Tensor, targets: Tensor, *, num_samples: int = 500,
               seed: int = 0) -> Dict[str, float]:
    """The chapter's scorecard of a language model on held-out stories ``(inputs, targets)``:

    * ``val_ce``: cross-entropy in nats/token (= true entropy + ``kl_to_truth``, on average);
    * ``kl_to_truth``: mean KL(truth || model) per token (see :func:`kl_to_truth`);
    * ``grammatical``: fraction of ``num_samples`` stories sampled at temperature 1 that the
      grammar can generate (agreement, copying, a proper ending within ``grammar.max_len``).
    """
    ids = dict(bos_id=grammar.index[BOS], eos_id=grammar.index[EOS], pad_id=grammar.index[PAD])
    stories = sample(model, num_samples, grammar.max_len, generator=torch.Generator().manual_seed(seed), **ids)
    return {"val_ce": evaluate(model, inputs, targets)["eval_loss"],
            "kl_to_truth": kl_to_truth(model, grammar, inputs, targets),
            "grammatical": float(grammar.is_grammatical(stories.cpu()).float().mean())}
