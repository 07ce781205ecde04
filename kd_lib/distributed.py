"""Data-parallel training: :func:`kd_lib.train` under ``torchrun``, on PyTorch DDP.

    torchrun --nproc_per_node 4 my_script.py      # my_script calls kd_lib.distributed.init()

Nothing else changes in the script: :func:`kd_lib.train` sees the process group and then

* **shards the data**: rank ``r`` of ``W`` keeps the rows ``r, r + W, r + 2W, ...`` of
  ``train_data`` and runs the teacher (and caches its logits) on those rows only;
* **keeps the global batch**: each optimizer step covers the same rows as a 1-process run with
  ``batch_size * W``: every rank draws the same shuffled order (one seed), and each micro-batch
  of ``batch_size * W`` rows is computed by the ranks that own them (about ``batch_size`` each;
  uneven counts are fine);
* **normalises per token globally**: a rank's micro-batch loss is weighted by its number of
  non-padding targets over the number in the whole step, summed over ranks and accumulation
  micro-batches (one ``all_reduce`` of the counts per step), times ``W`` since DDP averages the
  gradients. The step's gradient is then the full-batch per-token mean, whatever the padding on
  each rank (Megatron and TRL normalise the same way; a mean of per-rank means does not);
* wraps the student (and a trained loss) in ``DistributedDataParallel``, syncing gradients only
  at the last micro-batch of a step (``no_sync``); rank 0 alone shows progress and saves
  checkpoints; every rank evaluates ``eval_data`` (so every rank returns the same history).

With the same seed and global batch its weights equal a 1-process run's, up to float rounding
in the all-reduce (``tests/test_distributed.py`` checks it on 2 CPU processes with gloo).
On GPUs use the NCCL backend (the default when CUDA is available): one process per GPU.
Teachers too large for one device need a sharded engine (FSDP, DeepSpeed ZeRO-3); the book's
"Many GPUs" page says where they come in.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from .outputs import logits_of

__all__ = ["init", "world", "is_main", "owned", "all_reduce_sum", "barrier", "StudentAndLoss"]


def init(backend: Optional[str] = None) -> Tuple[int, int]:
    """Join the process group that ``torchrun`` describes (``RANK``, ``WORLD_SIZE`` ...).

    ``backend`` defaults to ``"nccl"`` with CUDA, else ``"gloo"``. Without ``torchrun`` (no
    ``WORLD_SIZE``) it does nothing and returns ``(0, 1)``. Returns ``(rank, world_size)``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return world()


def world() -> Tuple[int, int]:
    """``(rank, world_size)``: ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process is rank 0 (always true without a process group)."""
    return world()[0] == 0


def owned(global_rows: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """The rows of a global micro-batch that ``rank`` owns, as indices into its shard.

    Rank ``r`` owns global rows ``g`` with ``g % world_size == r``; it stores them at
    ``g // world_size`` (its shard is ``data[r::world_size]``).
    """
    mine = global_rows[global_rows % world_size == rank]
    return torch.div(mine, world_size, rounding_mode="floor")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place (a no-op without a process group)."""
    if world()[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


class StudentAndLoss(nn.Module):
    """What DDP wraps: the student's forward and the loss, so a trained loss syncs too."""

    def __init__(self, student: nn.Module, loss_fn: Callable):
        super().__init__()
        self.student = student
        self.loss_fn = loss_fn

    def forward(self, batch_inputs: torch.Tensor, teacher_output: Any, batch_targets: Optional[torch.Tensor]):
        output = self.student(batch_inputs)
        if len(batch_inputs) == 0:  # this rank owns no row of the micro-batch: a zero that syncs
            return output, logits_of(output).sum() * 0.0
        return output, self.loss_fn(output, teacher_output, batch_targets)
