"""Hugging Face models and tokenizers in kd_lib's loop: an adapter, a tokenizer, padded batches.

A ``transformers`` causal LM returns an output object; :class:`HFCausalLM` makes it a module
from token ids to logits ``[B, L, V]``, which is all :func:`kd_lib.train` and the losses need.
It passes the ``attention_mask`` (``tokens != pad_token_id``), so padded positions attend to
nothing, and :func:`encode_for_lm` marks them ``-100`` in the targets, so no loss counts them:

    tokenizer = train_tokenizer(stories, vocab_size=200)          # `tokenizers` BPE, offline
    inputs, targets = encode_for_lm(tokenizer, stories, max_length=64)
    student = HFCausalLM(GPT2LMHeadModel(config), tokenizer.pad_token_id)
    kd_lib.train(student, (inputs, targets), teacher=HFCausalLM(teacher, tokenizer.pad_token_id),
                 loss_fn=kd_lib.kd_loss)

A hub model works the same way (``AutoModelForCausalLM.from_pretrained``); the book's "Use it
on your model" page shows it. ``transformers`` and ``tokenizers`` are imported only when used.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn

Tensor = torch.Tensor

__all__ = ["HFCausalLM", "train_tokenizer", "encode_for_lm", "SPECIAL_TOKENS"]

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


class HFCausalLM(nn.Module):
    """A ``transformers`` causal LM as ``forward(tokens) -> logits`` for :func:`kd_lib.train`.

    With ``pad_token_id`` the model gets ``attention_mask = (tokens != pad_token_id)``: a
    left-padded or packed batch then needs nothing else. (With right padding and causal
    attention the real positions never see the padding anyway; the mask is still the right
    habit, since a model may pad with a token it also uses, e.g. end-of-text: then pass the
    tokenizer's own mask by calling the model yourself.)
    """

    def __init__(self, model: nn.Module, pad_token_id: Optional[int] = None):
        super().__init__()
        self.model = model
        self.pad_token_id = pad_token_id

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"HFCausalLM expects integer token ids [batch, length], got {tuple(tokens.shape)} "
                             f"{tokens.dtype}")
        mask = None if self.pad_token_id is None else (tokens != self.pad_token_id).long()
        return self.model(input_ids=tokens, attention_mask=mask).logits


def train_tokenizer(texts: Sequence[str], vocab_size: int, *, kind: str = "bpe"):
    """A ``transformers`` fast tokenizer trained offline by the ``tokenizers`` library.

    ``kind="bpe"``: byte-pair merges over whitespace-split words (sub-word pieces);
    ``kind="word"``: one token per distinct word. The special tokens ``<pad> <bos> <eos> <unk>``
    get ids 0-3. The result is a ``PreTrainedTokenizerFast`` (``pad_token_id``, ``decode``,
    ``save_pretrained``).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise ValueError("train_tokenizer needs at least one text")
    if kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                      show_progress=False)
    elif kind == "word":
        tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                            show_progress=False)
    else:
        raise ValueError(f"kind must be 'bpe' or 'word', got {kind!r}")
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")


def encode_for_lm(tokenizer, texts: Sequence[str], max_length: int) -> Tuple[Tensor, Tensor]:
    """``(inputs, targets)`` for next-token training: ``<bos> text <eos>``, right-padded.

    ``inputs = ids[:, :-1]`` and ``targets = ids[:, 1:]`` with every padding position set to
    -100 (ignored by kd_lib's losses). Raises if a text is longer than ``max_length`` tokens
    (truncating would silently cut the end-of-text the model must learn).
    """
    ids = [[tokenizer.bos_token_id, *tokenizer(text)["input_ids"], tokenizer.eos_token_id] for text in texts]
    longest = max(len(row) for row in ids)
    if longest > max_length:
        raise ValueError(f"a text has {longest} tokens with <bos>/<eos>, more than max_length={max_length}")
    pad = tokenizer.pad_token_id
    batch = torch.full((len(ids), longest), pad, dtype=torch.long)
    real = torch.zeros((len(ids), longest), dtype=torch.bool)
    for row, tokens in enumerate(ids):
        batch[row, : len(tokens)] = torch.tensor(tokens)
        real[row, : len(tokens)] = True
    targets = batch[:, 1:].masked_fill(~real[:, 1:], -100)
    return batch[:, :-1], targets
