"""Measures of a language model against a language whose truth is known (:mod:`kd_lib.lm.language`).

* :func:`kl_to_truth`: mean per-token KL(truth || model) on held-out stories, the part of the
  cross-entropy a better model could still remove (cross-entropy = entropy + this KL);
* :func:`calibration_to_truth`: how confident the model is against how right it is, where "right"
  is the true probability of its top token (no sampling noise), and whether it is sharper or
  flatter than the truth (the entropy gap);
* :func:`story_log_probs` and :func:`kl_per_word`: KL to the truth per *word* from whole-story
  log-probabilities, which compares models with different tokenizers;
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

__all__ = ["kl_to_truth", "truth_scorer", "calibration_to_truth", "story_log_probs", "kl_per_word", "lm_metrics"]


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


@torch.no_grad()
def calibration_to_truth(model, grammar: Grammar, inputs: Tensor, targets: Tensor, *, num_bins: int = 15,
                         ignore_index: int = -100) -> Dict[str, float]:
    """Calibration of next-token predictions against the true distribution, over kept positions.

    With ``c = max_j q_j`` the model's confidence and ``a = p*(argmax_j q_j)`` the true
    probability of the token it ranks first, positions are put into ``num_bins`` equal-width
    bins of ``c``:

    * ``ece = sum_b (n_b / N) |mean_b c - mean_b a|`` (expected calibration error, Guo et al.
      2017, with the exact probability of being right in place of a sampled 0/1);
    * ``overconfidence = mean(c - a)``: > 0 when the model is surer than it should be;
    * ``entropy_gap = mean(H(q) - H(p*))`` in nats: < 0 when the model is sharper than the truth.
    """
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} differ in shape")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    kept = targets != ignore_index
    if not bool(kept.any()):
        raise ValueError("calibration_to_truth: every target is padding")
    truth = grammar.next_token_probs(inputs)[kept]
    q = torch.softmax(predict_logits(model, inputs).float().cpu(), dim=-1)[kept]
    confidence, top = q.max(-1)
    right = truth.gather(-1, top[:, None])[:, 0]
    bins = (confidence * num_bins).long().clamp_max(num_bins - 1)
    ece = 0.0
    for b in range(num_bins):
        inside = bins == b
        if bool(inside.any()):
            ece += float(inside.float().mean()) * abs(float(confidence[inside].mean() - right[inside].mean()))
    entropy = lambda p: -torch.special.xlogy(p, p).sum(-1)  # noqa: E731
    return {"ece": ece, "overconfidence": float((confidence - right).mean()),
            "entropy_gap": float((entropy(q) - entropy(truth)).mean())}


@torch.no_grad()
def story_log_probs(model, inputs: Tensor, targets: Tensor, *, ignore_index: int = -100,
                    batch_size: int = 256) -> Tensor:
    """``log q(story)`` per row: the sum of the model's log-probabilities of its targets (nats)."""
    if inputs.shape != targets.shape:
        raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} differ in shape")
    log_q = torch.log_softmax(predict_logits(model, inputs, batch_size).float().cpu(), dim=-1)
    kept = targets != ignore_index
    picked = log_q.gather(-1, targets.clamp_min(0)[..., None])[..., 0]
    return torch.where(kept, picked, torch.zeros_like(picked)).sum(-1)


def kl_per_word(grammar: Grammar, word_inputs: Tensor, word_targets: Tensor, model_log_probs: Tensor, *,
                ignore_index: int = -100) -> float:
    """KL(truth || model) in nats per word, from whole stories sampled from the truth.

        KL = E_story[log p*(story) - log q(story)] / E[words per story]

    with ``p*`` from the grammar on the word-level ``(word_inputs, word_targets)`` (the end of a
    story counts as a word) and ``model_log_probs`` the model's :func:`story_log_probs` of the
    *same* stories in its own tokenization. For a word-level model the expectation equals the
    per-token KL summed over the story, so this estimates :func:`kl_to_truth` (with more sampling
    noise). For a sub-word model ``q(story)`` is the probability of the story's one canonical
    tokenization, a lower bound on the probability the model gives the text, so the KL is an
    upper bound.
    """
    if word_inputs.shape != word_targets.shape or len(model_log_probs) != len(word_inputs):
        raise ValueError("word_inputs, word_targets and model_log_probs must describe the same stories")
    truth = grammar.next_token_probs(word_inputs)
    kept = word_targets != ignore_index
    picked = truth.gather(-1, word_targets.clamp_min(0)[..., None])[..., 0].clamp_min(1e-30).log()
    truth_log_probs = torch.where(kept, picked, torch.zeros_like(picked)).sum(-1)
    return float((truth_log_probs - model_log_probs.cpu()).mean() / kept.sum(-1).float().mean())


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
