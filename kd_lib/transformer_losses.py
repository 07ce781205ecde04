"""Distilling a transformer's internals: attention maps, hidden states, value relations.

The outputs come from :class:`kd_lib.outputs.Tapped` around a model with
``forward_internals`` (:class:`kd_lib.lm.gpt.GPT`), which names its internals per block ``i``:
``hidden.{i}`` (``hidden.0`` is the embedding), ``scores.{i}``, ``attention.{i}``,
``values.{i}``. A ``layer_map`` ``[(student_block, teacher_block), ...]`` pairs the layers
(TinyBERT's mapping function ``g``). Every loss takes kd_lib's one contract,
``loss(student_output, teacher_output, targets, *, ...)``: positions whose target is
``ignore_index`` (padding) are left out, and with causal attention only the (query, key)
pairs with ``key <= query`` exist. The teacher never receives a gradient.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ._checks import check_labels
from .outputs import Output, feature_of, logits_of

Tensor = torch.Tensor

__all__ = ["attention_loss", "hidden_state_loss", "minilm_loss", "cosine_hidden_loss"]


def _queries_kept(output: Output, targets: Optional[Tensor], mask: Optional[Tensor],
                  ignore_index: int) -> Optional[Tensor]:
    logits = logits_of(output)
    kept = mask
    if mask is not None and (mask.dtype != torch.bool or mask.shape != logits.shape[:-1]):
        raise ValueError(f"mask must be bool of shape {tuple(logits.shape[:-1])}, got {mask.dtype} "
                         f"{tuple(mask.shape)}")
    if targets is not None:
        from_targets = check_labels(targets, logits, ignore_index) != ignore_index
        kept = from_targets if kept is None else kept & from_targets
    return kept


def _mean_over(values: Tensor, kept: Optional[Tensor]) -> Tensor:
    """Mean of ``values`` over the entries ``kept`` selects (0, not NaN, when none)."""
    if kept is None:
        return values.mean()
    kept = kept.expand_as(values)
    return torch.where(kept, values, torch.zeros_like(values)).sum() / kept.sum().clamp_min(1)


def _pairs(student: Tensor, teacher: Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"{what}: student {tuple(student.shape)} and teacher {tuple(teacher.shape)} differ; "
                         "attention maps need the same number of heads and the same sequence length")


def _resolve(output: Output, index: int, prefix: str, who: str) -> int:
    """``index`` itself, or for -1 the last ``prefix.{i}`` the output holds."""
    if index >= 0:
        return index
    if index != -1:
        raise ValueError(f"a layer index must be >= 0, or -1 for the last one, got {index}")
    found = [int(name.split(".")[1]) for name in getattr(output, "features", {})
             if name.startswith(prefix + ".") and name.split(".")[1].isdigit()]
    if not found:
        feature_of(output, f"{prefix}.0", who)  # raises the error that says what to tap
    return max(found)


def _causal(length: int, device) -> Tensor:
    return torch.ones(length, length, dtype=torch.bool, device=device).tril()


def attention_loss(
    student_output: Output,
    teacher_output: Output,
    targets: Optional[Tensor] = None,
    *,
    layer_map: Sequence[Tuple[int, int]],
    on: str = "scores",
    mask: Optional[Tensor] = None,
    ignore_index: int = -100,
) -> Tensor:
    """TinyBERT's attention loss (Jiao et al. 2020, arXiv:1909.10351, eq. 7):

        L_attn = sum_(m, n) in layer_map  1/h sum_heads MSE(A^S_m, A^T_n)

    ``A`` is the unnormalised attention score ``q k^T / sqrt(d)`` (``on="scores"``, as
    TinyBERT chose for faster convergence) or the attention weights (``on="attention"``);
    the mean runs over heads and over the existing (query, key) pairs (``key <= query``,
    kept queries only). Both models need the same number of heads.
    """
    if on not in ("scores", "attention"):
        raise ValueError(f"on must be 'scores' or 'attention', got {on!r}")
    if not layer_map:
        raise ValueError("layer_map must pair at least one (student_block, teacher_block)")
    kept = _queries_kept(student_output, targets, mask, ignore_index)
    total = 0.0
    for m, n in layer_map:
        a_s = feature_of(student_output, f"{on}.{m}", "student").float()
        a_t = feature_of(teacher_output, f"{on}.{n}", "teacher").detach().float()
        _pairs(a_s, a_t, f"attention_loss (student block {m}, teacher block {n})")
        exists = _causal(a_s.shape[-1], a_s.device)[None, None]
        if kept is not None:
            exists = exists & kept[:, None, :, None]
        diff = torch.where(exists, a_s - a_t, torch.zeros_like(a_s))  # 0 where -inf - -inf
        total = total + _mean_over(diff.pow(2), exists)
    return total


def hidden_state_loss(
    student_output: Output,
    teacher_output: Output,
    targets: Optional[Tensor] = None,
    *,
    layer_map: Sequence[Tuple[int, int]],
    mask: Optional[Tensor] = None,
    ignore_index: int = -100,
) -> Tensor:
    """TinyBERT's hidden-state loss (Jiao et al. 2020, eq. 8): ``MSE(H^S W_h, H^T)``.

    Summed over ``layer_map`` pairs ``(m, n)`` of hidden states (``hidden.0`` is the
    embedding, ``hidden.i`` block ``i - 1``'s output); the mean runs over kept positions and
    the hidden dimension. ``W_h`` is the projection :class:`~kd_lib.outputs.Tapped` applies
    to the student's ``hidden.m`` when the widths differ.
    """
    if not layer_map:
        raise ValueError("layer_map must pair at least one (student_layer, teacher_layer)")
    kept = _queries_kept(student_output, targets, mask, ignore_index)
    total = 0.0
    for m, n in layer_map:
        h_s = feature_of(student_output, f"hidden.{m}", "student").float()
        h_t = feature_of(teacher_output, f"hidden.{n}", "teacher").detach().float()
        if h_s.shape != h_t.shape:
            raise ValueError(f"hidden_state_loss: student hidden.{m} {tuple(h_s.shape)} vs teacher hidden.{n} "
                             f"{tuple(h_t.shape)}: project the student's layer in Tapped "
                             "({'hidden.%d': nn.Linear(student_width, teacher_width)})" % m)
        total = total + _mean_over((h_s - h_t).pow(2), None if kept is None else kept[..., None])
    return total


def _relation_kl(log_p: Tensor, log_q: Tensor, exists: Tensor) -> Tensor:
    """KL(p || q) over keys, per (head, query), with non-existent keys contributing 0."""
    terms = torch.where(exists, log_p.exp() * (log_p - log_q), torch.zeros_like(log_p))
    return terms.sum(-1)


def minilm_loss(
    student_output: Output,
    teacher_output: Output,
    targets: Optional[Tensor] = None,
    *,
    student_block: int = -1,
    teacher_block: int = -1,
    mask: Optional[Tensor] = None,
    ignore_index: int = -100,
) -> Tensor:
    """MiniLM's deep self-attention distillation (Wang et al. 2020, arXiv:2002.10957, eqs. 6-8):

        L = 1/(A_h |x|) sum_a sum_t KL(A^T_{a,t} || A^S_{a,t})
          + 1/(A_h |x|) sum_a sum_t KL(VR^T_{a,t} || VR^S_{a,t}),
        VR = softmax(V V^T / sqrt(d_k))

    on the LAST block of each model (``-1``; other blocks by index): the attention
    distributions and the value relation, both over the keys a query may see (``key <=
    query`` under causal attention). Widths may differ (the relations are ``L x L``); the
    number of heads must match. The mean runs over heads and kept queries.
    """
    kept = _queries_kept(student_output, targets, mask, ignore_index)
    blocks = [_resolve(student_output, student_block, "attention", "student"),
              _resolve(teacher_output, teacher_block, "attention", "teacher")]
    a_s = feature_of(student_output, f"attention.{blocks[0]}", "student").float()
    a_t = feature_of(teacher_output, f"attention.{blocks[1]}", "teacher").detach().float()
    _pairs(a_s, a_t, "minilm_loss attention")
    exists = _causal(a_s.shape[-1], a_s.device)[None, None]
    log_a_s = torch.log(a_s.clamp_min(1e-30))
    log_a_t = torch.log(a_t.clamp_min(1e-30))
    per_query = _relation_kl(log_a_t, log_a_s, exists)  # [B, H, L]

    def value_relation(values: Tensor) -> Tensor:
        scores = values.float() @ values.float().transpose(-2, -1) / math.sqrt(values.shape[-1])
        return F.log_softmax(scores.masked_fill(~exists, float("-inf")), dim=-1)

    v_s = feature_of(student_output, f"values.{blocks[0]}", "student")
    v_t = feature_of(teacher_output, f"values.{blocks[1]}", "teacher").detach()
    if v_s.shape[:3] != v_t.shape[:3]:
        raise ValueError(f"minilm_loss values: student {tuple(v_s.shape)} and teacher {tuple(v_t.shape)} need the "
                         "same batch, heads and length")
    per_query = per_query + _relation_kl(value_relation(v_t), value_relation(v_s), exists)
    return _mean_over(per_query, None if kept is None else kept[:, None, :])


def cosine_hidden_loss(
    student_output: Output,
    teacher_output: Output,
    targets: Optional[Tensor] = None,
    *,
    student_layer: int = -1,
    teacher_layer: int = -1,
    mask: Optional[Tensor] = None,
    ignore_index: int = -100,
) -> Tensor:
    """DistilBERT's cosine loss (Sanh et al. 2019, arXiv:1910.01108): ``1 - cos(h^S, h^T)``,

    averaged over kept positions, between hidden states of the same width (the last,
    ``-1``, by default): it aligns the directions of the student's and the teacher's
    hidden-state vectors.
    """
    kept = _queries_kept(student_output, targets, mask, ignore_index)
    h_s = feature_of(student_output, f"hidden.{_resolve(student_output, student_layer, 'hidden', 'student')}",
                     "student").float()
    h_t = feature_of(teacher_output, f"hidden.{_resolve(teacher_output, teacher_layer, 'hidden', 'teacher')}",
                     "teacher").detach().float()
    if h_s.shape != h_t.shape:
        raise ValueError(f"cosine_hidden_loss: student {tuple(h_s.shape)} vs teacher {tuple(h_t.shape)}: "
                         "the hidden widths must match (DistilBERT keeps the teacher's width)")
    return _mean_over(1 - F.cosine_similarity(h_s, h_t, dim=-1), kept)
