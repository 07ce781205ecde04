"""A tiny GPT: a decoder-only causal transformer for the book's language-model chapter.

Pre-LayerNorm blocks (``x + attn(ln(x))``, ``x + mlp(ln(x))``, as in GPT-2, Radford et al. 2019),
learned position embeddings, and an output layer tied to the token embedding (Press & Wolf 2017):
``logits = ln_f(h) @ E^T`` for the token embedding ``E``. The book's teacher (3 layers, 96 wide)
has ~351k parameters, its student (1 layer, 48 wide) ~36k.

``forward(tokens [B, L]) -> logits [B, L, V]``: position ``t`` predicts token ``t + 1`` from
tokens ``0..t`` only (causal attention). Right-padding therefore needs no attention mask: a
real position never attends to the padding after it. :meth:`GPT.forward_cached` runs the same
network incrementally with a key/value cache, which makes sampling cost one forward pass per
new token instead of one per prefix (see :mod:`kd_lib.lm.generation`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor
Cache = List[Tuple[Tensor, Tensor]]

__all__ = ["GPTConfig", "GPT", "init_from_teacher"]


@dataclass
class GPTConfig:
    vocab_size: int = 104  # the synthetic language of kd_lib.lm.language
    block_size: int = 128  # longest input the position embedding covers
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128  # model width (the residual stream)
    dropout: float = 0.0
    # Width of each attention head; None: n_embd // n_head (then n_embd must divide by n_head).
    # Set by structured pruning (kd_lib.methods.pruning), which can drop heads or channels separately.
    head_dim: Optional[int] = None
    mlp_hidden: Optional[int] = None  # hidden units of each block's MLP; None: 4 * n_embd

    @property
    def head_width(self) -> int:
        return self.n_embd // self.n_head if self.head_dim is None else self.head_dim

    @property
    def mlp_width(self) -> int:
        return 4 * self.n_embd if self.mlp_hidden is None else self.mlp_hidden


class _Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim, self.dropout = config.n_head, config.head_width, config.dropout
        inner = config.n_head * config.head_width  # attention width (n_embd unless pruned)
        self.ln_1, self.ln_2 = nn.LayerNorm(config.n_embd), nn.LayerNorm(config.n_embd)
        self.qkv = nn.Linear(config.n_embd, 3 * inner)
        self.proj = nn.Linear(inner, config.n_embd)
        self.mlp = nn.Sequential(nn.Linear(config.n_embd, config.mlp_width), nn.GELU(),
                                 nn.Linear(config.mlp_width, config.n_embd), nn.Dropout(config.dropout))

    def forward(self, x: Tensor, past: Optional[Tuple[Tensor, Tensor]] = None,
                record: Optional[Dict[str, Tensor]] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        batch, length, _ = x.shape
        inner = self.n_head * self.head_dim
        heads = lambda t: t.view(batch, length, self.n_head, self.head_dim).transpose(1, 2)  # noqa: E731
        q, k, v = (heads(t) for t in self.qkv(self.ln_1(x)).split(inner, dim=2))
        mask, causal = None, True
        if past is not None:  # incremental decoding: new queries see every cached key
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            mask = torch.ones(length, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - length)
            causal = False
        if record is not None and past is not None:
            raise ValueError("internals are recorded for a full forward pass only, not with a key/value cache")
        if record is not None:  # explicit attention, so that its scores and weights can be returned
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
            weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
            record.update(scores=scores, attention=weights, queries=q, keys=k, values=v)
            attended = F.dropout(weights, self.dropout, self.training) @ v
        else:
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                                      dropout_p=self.dropout if self.training else 0.0)
        attended = self.proj(attended.transpose(1, 2).reshape(batch, length, inner))
        x = x + F.dropout(attended, self.dropout, self.training)
        return x + self.mlp(self.ln_2(x)), (k, v)


class GPT(nn.Module):
    """Token + position embedding, ``n_layer`` pre-LN blocks, final LayerNorm, tied output layer."""

    def __init__(self, config: GPTConfig = GPTConfig()):
        super().__init__()
        if config.head_dim is None and config.n_embd % config.n_head != 0:
            raise ValueError(f"n_embd ({config.n_embd}) must be divisible by n_head ({config.n_head})")
        if (config.head_dim is not None and config.head_dim < 1) or (
                config.mlp_hidden is not None and config.mlp_hidden < 1):
            raise ValueError(f"head_dim and mlp_hidden must be >= 1 when set, got {config}")
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

    def forward_internals(self, tokens: Tensor):
        """Logits and internals as a :class:`kd_lib.outputs.ModelOutput`, for feature losses.

        Features, for block ``i`` (0-based) of ``n_layer``:
        ``hidden.0`` the embeddings, ``hidden.{i+1}`` block ``i``'s output (all ``[B, L, n_embd]``);
        ``scores.{i}`` the raw attention scores ``q k^T / sqrt(d_head)`` before the causal mask and
        ``attention.{i}`` the attention weights (rows sum to 1 over keys ``<=`` the query),
        both ``[B, n_head, L, L]``; ``queries.{i}``, ``keys.{i}``, ``values.{i}``
        ``[B, n_head, L, d_head]``. Attention is computed explicitly here (not by the fused
        kernel), so the logits agree with :meth:`forward` to float rounding, not bit for bit.
        """
        from ..outputs import ModelOutput

        self._check(tokens, 0)
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.tok_emb(tokens) + self.pos_emb(positions)
        features = {"hidden.0": x}
        for i, block in enumerate(self.blocks):
            record: Dict[str, Tensor] = {}
            x, _ = block(x, None, record)
            features.update({f"{name}.{i}": value for name, value in record.items()})
            features[f"hidden.{i + 1}"] = x
        return ModelOutput(F.linear(self.ln_f(x), self.tok_emb.weight), features)


def init_from_teacher(teacher: GPT, layers: Sequence[int]) -> GPT:
    """DistilBERT's initialisation (Sanh et al. 2019): a student with ``len(layers)`` blocks,
    copied from the teacher's blocks ``layers`` (DistilBERT takes one block in two), with the
    teacher's embeddings and final LayerNorm; the width and heads stay the teacher's.
    The teacher is not modified.
    """
    if not layers:
        raise ValueError("layers must name at least one teacher block")
    bad = [i for i in layers if not 0 <= i < teacher.config.n_layer]
    if bad:
        raise ValueError(f"teacher has blocks 0..{teacher.config.n_layer - 1}, got {bad}")
    config = GPTConfig(**{**teacher.config.__dict__, "n_layer": len(layers)})
    student = GPT(config).to(next(teacher.parameters()).device)
    student.tok_emb.load_state_dict(teacher.tok_emb.state_dict())
    student.pos_emb.load_state_dict(teacher.pos_emb.state_dict())
    student.ln_f.load_state_dict(teacher.ln_f.state_dict())
    for mine, theirs in zip(student.blocks, layers):
        mine.load_state_dict(teacher.blocks[theirs].state_dict())
    return student
