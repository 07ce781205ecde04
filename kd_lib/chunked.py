"""Token-level losses in chunks of positions, so that memory does not grow with the vocabulary.

A divergence over ``[N, V]`` logits written the plain way keeps several full-size float32
temporaries alive for the backward pass (``log_softmax`` of each side, their ``exp``, the
product): measured on one CPU at 4,096 x 32,000, ``kd_loss`` forward + backward peaks at 5x one
float32 logits tensor above its inputs, gradient included (10x one bfloat16 tensor). At a
128k-token vocabulary that, not the model, is what runs out of memory.

:func:`chunked_loss` computes the same loss a chunk of ``rows`` positions at a time, in the
forward pass, and keeps only the gradient (the same approach as Liger-Kernel's fused losses and
TRL's chunked JSD):

    L = sum_c (n_c / N) * L_c,    dL/dz_c = (n_c / N) * dL_c/dz_c

where ``L_c`` is the loss (an average over the kept positions of chunk ``c``), ``n_c`` the
number of positions it keeps and ``N`` the number kept in all. Each chunk runs the unchunked
loss and ``torch.autograd.grad`` on its own slice, so values and gradients equal the unchunked
code up to float rounding, masks and ``ignore_index`` included; the gradient is written into one
tensor of the logits' shape and dtype, and the backward pass only scales it (in place).

Peak memory above the inputs is then that gradient plus one chunk's temporaries. The price: the
gradient is computed in the forward pass even if no backward follows (with autograd off, or for
logits that need no gradient, chunks are evaluated without it), and the graph can be
back-propagated once (a second ``backward`` raises; pass ``chunk_size=0`` to keep the plain
graph, e.g. for double backward).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ._checks import kept_positions

Tensor = torch.Tensor

__all__ = ["AUTO_CHUNK_ELEMENTS", "CHUNK_ELEMENTS", "rows_per_chunk", "chunked_loss"]

AUTO_CHUNK_ELEMENTS = 2**24  # student logits of at least this many elements (64 MB in float32) are chunked
CHUNK_ELEMENTS = 2**20  # elements per chunk when automatic: 4 MB per float32 temporary


def rows_per_chunk(logits: Tensor, chunk_size: Optional[int]) -> int:
    """Positions per chunk for ``logits [..., V]``, or 0 to compute unchunked.

    ``chunk_size=None`` (the losses' default) chunks automatically once the logits hold
    ``AUTO_CHUNK_ELEMENTS`` or more, with ``CHUNK_ELEMENTS // V`` positions (at least 1) per chunk;
    ``0`` never chunks; a positive int is the number of positions per chunk.
    """
    positions = logits.numel() // max(logits.shape[-1], 1)
    if chunk_size is None:
        if logits.numel() < AUTO_CHUNK_ELEMENTS:
            return 0
        rows = max(1, CHUNK_ELEMENTS // logits.shape[-1])
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 0:
        raise ValueError(f"chunk_size must be None (automatic), 0 (off) or a positive int, got {chunk_size!r}")
    elif chunk_size == 0:
        return 0
    else:
        rows = chunk_size
    return rows if rows < positions else 0


class _Chunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student, teacher, loss, targets, mask, weights, rows):
        vocab = student.shape[-1]
        flat_student, flat_teacher = student.reshape(-1, vocab), teacher.reshape(-1, vocab)
        flat_targets = None if targets is None else targets.reshape(-1)
        flat_mask = None if mask is None else mask.reshape(-1)
        needs_grad = ctx.needs_input_grad[0]
        grad = torch.empty(student.shape, dtype=student.dtype, device=student.device) if needs_grad else None
        flat_grad = None if grad is None else grad.view(-1, vocab)
        total = None
        for start in range(0, flat_student.shape[0], rows):
            part = slice(start, start + rows)
            weight = weights[part].sum()  # n_c / N
            piece = flat_student[part].detach().requires_grad_(needs_grad)
            with torch.set_grad_enabled(needs_grad):
                value = loss(piece, flat_teacher[part],
                             None if flat_targets is None else flat_targets[part],
                             None if flat_mask is None else flat_mask[part]) * weight
            if needs_grad:
                (flat_grad[part],) = torch.autograd.grad(value, piece)
            value = value.detach()
            total = value if total is None else total + value
        ctx.grad, ctx.used = grad, False
        return total

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.used:
            raise RuntimeError("a chunked kd_lib loss can be back-propagated only once (its gradient is "
                               "computed in the forward pass and scaled in place); pass chunk_size=0 for "
                               "the plain graph (retain_graph, double backward)")
        grad, ctx.grad, ctx.used = ctx.grad, None, True
        if grad is not None and not bool(grad_output == 1):
            grad.mul_(grad_output.to(grad.dtype))
        return grad, None, None, None, None, None, None


def chunked_loss(loss: Callable[..., Tensor], student_logits: Tensor, teacher_logits: Tensor,
                 targets: Optional[Tensor], mask: Optional[Tensor], *, rows: int, ignore_index: int) -> Tensor:
    """``loss`` over ``[..., V]`` logits, ``rows`` positions at a time (see the module docstring).

    ``loss(student, teacher, targets, mask)`` gets ``[rows, V]`` slices (targets and mask of
    shape ``[rows]`` or None) and must average over the positions that ``mask`` and
    ``targets != ignore_index`` keep, as every loss of :mod:`kd_lib.losses` does; it is called
    with autograd on, and its unchunked value is what this returns.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    kept = kept_positions(mask, targets, student_logits, ignore_index)
    positions = student_logits.shape[:-1].numel()
    if kept is None:
        weights = torch.full((positions,), 1.0 / max(positions, 1), dtype=torch.float32,
                             device=student_logits.device)
    else:
        kept = kept.reshape(-1)
        weights = kept.to(torch.float32) / kept.sum().clamp_min(1)
    return _Chunked.apply(student_logits, teacher_logits.detach(), loss, targets, mask, weights, rows)
