"""A tiny GPT: a decoder-only causal transformer for the book's language-model chapter.

Pre-LayerNorm blocks (``x + attn(ln(x))``, ``x + mlp(ln(x))``, as in GPT-2, Radford et al. 2019),
learned position embeddings, and an output layer tied to the token embedding (Press & Wolf 2017):
``logits = ln_f(h) @ E^T`` for the token embedding ``E``. The book's teacher (3 layers, 96 wide)
has ~351k parameters, its student (1 layer, 48 wide) ~36k.

``forward(tokens [B, L]) -> logits [B, L, V]``: position ``t`` predicts token ``t + 1`` from
tokens ``0..t`` only (causal attention). Right-padding therefore needs no attention mask: a
real position never attends to the padding after it. :meth:`GPT.forward_cached` runs the same
network incrementally with a key/value cache, which makes sampling cost one forward pass per
new token instead of one per prefix (see :mod:`kd_lib.generation`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor
Cache = List[Tuple[Tensor, Tensor]]

__all__ = ["GPTConfig", "GPT", "HFCausalLM"]


@dataclass
class GPTConfig:
    vocab_size: int = 104  # the synthetic language of kd_lib.language
    block_size: int = 128  # longest input the position embedding covers
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128  # model width; must be divisible by n_head
    dropout: float = 0.0


class _Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.ln_1, self.ln_2 = nn.LayerNorm(config.n_embd), nn.LayerNorm(config.n_embd)
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.mlp = nn.Sequential(nn.Linear(config.n_embd, 4 * config.n_embd), nn.GELU(),
                                 nn.Linear(4 * config.n_embd, config.n_embd), nn.Dropout(config.dropout))

    def forward(self, x: Tensor, past: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        batch, length, width = x.shape
        heads = lambda t: t.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2)  # noqa: E731
        q, k, v = (heads(t) for t in self.qkv(self.ln_1(x)).split(width, dim=2))
        mask, causal = None, True
        if past is not None:  # incremental decoding: new queries see every cached key
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            mask = torch.ones(length, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - length)
            causal = False
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                                  dropout_p=self.dropout if self.training else 0.0)
        attended = self.proj(attended.transpose(1, 2).reshape(batch, length, width))
        x = x + F.dropout(attended, self.dropout, self.training)
        return x + self.mlp(self.ln_2(x)), (k, v)


class GPT(nn.Module):
    """Token + position embedding, ``n_layer`` pre-LN blocks, final LayerNorm, tied output layer."""

    def __init__(self, config: GPTConfig = GPTConfig()):
        super().__init__()
        if config.n_embd % config.n_head != 0:
            raise ValueError(f"n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head})")
        if min(config.vocab_size, config.block_size, config.n_layer, config.n_head) < 1:
            raise ValueError(f"vocab_size, block_size, n_layer and n_head must be >= 1, got {config}")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Embedding(config.block_size, config.n_embd)
        self.blocks = nn.ModuleList(_Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.apply(self._init)
        for block in self.blocks:  # GPT-2: shrink the residual projections with depth
            for layer in (block.proj, block.mlp[2]):
                nn.init.normal_(layer.weight, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _check(self, tokens: Tensor, start: int) -> None:
        if not isinstance(tokens, Tensor) or tokens.dim() != 2 or tokens.dtype not in (torch.long, torch.int32):
            raise ValueError(f"GPT expects integer tokens [B, L], got {getattr(tokens, 'dtype', type(tokens))} "
                             f"{tuple(getattr(tokens, 'shape', ()))}")
        if start + tokens.shape[1] > self.config.block_size:
            raise ValueError(f"sequence of {start + tokens.shape[1]} tokens exceeds "
                             f"block_size={self.config.block_size}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.config.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")

    def forward_cached(self, tokens: Tensor, cache: Optional[Cache] = None) -> Tuple[Tensor, Cache]:
        """Logits for ``tokens`` that follow the ``cache``d prefix, and the extended cache."""
        start = 0 if cache is None else cache[0][0].shape[2]
        self._check(tokens, start)
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        x = self.tok_emb(tokens) + self.pos_emb(positions)
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if cache is None else cache[i])
            new_cache.append(kv)
        return F.linear(self.ln_f(x), self.tok_emb.weight), new_cache  # tied output layer

    def forward(self, tokens: Tensor) -> Tensor:
        return self.forward_cached(tokens)[0]


class HFCausalLM(nn.Module):
    """Adapter for a Hugging Face ``transformers`` causal LM: ``forward(tokens) -> .logits``.

    Lets :func:`kd_lib.train` and every :mod:`kd_lib.losses` function work on a hub model
    (``AutoModelForCausalLM``), which returns an output object rather than a tensor. With
    right padding and causal attention no attention mask is needed for the real positions.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(input_ids=tokens).logits
