"""ONE training loop for every chapter: scratch training, distillation, token-level LM distillation.

    history = train(student, (x_train, y_train), teacher=teacher,
                    loss_fn=partial(distillation_loss, temperature=4.0, alpha=0.5),
                    config=TrainConfig(num_epochs=20), eval_data=(x_test, y_test))

What it takes care of, so that chapters do not repeat it:

* the teacher runs in eval mode under ``torch.no_grad`` (dropout off, BatchNorm frozen);
  when the inputs do not change between epochs (no ``augment``) its logits are computed once
  and cached on the device (2-3x faster at MNIST-1D scale);
* one loss contract: ``loss_fn(student_output, teacher_output, targets)``. Every loss in
  kd_lib meets it, with its hyper-parameters bound by name
  (``partial(kd_loss, temperature=4)``); ``teacher_output`` is ``None`` without a teacher.
  An output is what the model returns: logits, or a :class:`kd_lib.outputs.ModelOutput`
  with named features for feature and attention losses (wrap a model in
  :class:`kd_lib.outputs.Tapped`); the teacher may be an ensemble and the student a cohort
  of students trained together (:mod:`kd_lib.schemes`);
* a loss that is an ``nn.Module`` with parameters (a learned projection) is moved to the
  device and trained with the student: its parameters join the optimizer and checkpoints;
* per-position normalisation across gradient accumulation: each micro-batch's mean loss is
  weighted by its share of the non-padding positions of the whole optimizer step, so the
  update equals the full-batch one (not a mean of per-micro-batch means);
* data-parallel training under ``torchrun`` (PyTorch DDP; :mod:`kd_lib.distributed`): the data
  and the teacher's cache sharded per rank, the same global batch and the same per-token
  normalisation as one process, progress and checkpoints on rank 0;
* device choice (CUDA if available), optional bf16 autocast on CUDA, seeding, tqdm progress,
  a returned :class:`History`, callbacks, and checkpoint/resume that reproduces an
  uninterrupted run exactly (weights, optimizer, scheduler and RNG states are saved).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .data import batches
from .losses import cross_entropy_loss
from .metrics import evaluate, predict_logits, predict_outputs
from .outputs import ModelOutput, Output
from .optim import make_optimizer, make_schedule
from .runtime import choose_device, show_progress

Tensor = torch.Tensor
LossFn = Callable[[Output, Optional[Output], Optional[Tensor]], Tensor]

__all__ = ["TrainConfig", "History", "TrainState", "train"]


@dataclass
class TrainConfig:
    num_epochs: int = 10
    batch_size: int = 128  # micro-batch size (examples per forward pass)
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"  # "adam", "adamw" or "sgd" (momentum 0.9)
    lr_schedule: str = "constant"  # "constant" or "cosine" (decays to 0 at the last step)
    warmup_steps: int = 0  # linear warm-up, in optimizer steps
    max_grad_norm: Optional[float] = None  # clip the gradient norm when set
    # Stop with FloatingPointError once a step's loss exceeds this multiple of the first step's
    # loss: a finite divergence (a non-finite loss always stops training). None: never.
    divergence_factor: Optional[float] = None
    seed: int = 0  # seeds the shuffling / augmentation generator and torch's global RNG
    device: Optional[str] = None  # None: "cuda" when available, else "cpu"
    amp: bool = False  # bf16 autocast for forward passes; CUDA only
    # Run the teacher once over the training inputs and keep its outputs (logits, or a Tapped
    # teacher's features too; refused above MAX_CACHE_BYTES). None: cache when there is no `augment`.
    cache_teacher_logits: Optional[bool] = None
    ignore_index: int = -100  # target value that marks padding
    eval_batch_size: int = 1024
    checkpoint_path: Optional[str] = None  # save after every epoch when set
    progress: bool = True  # tqdm progress bar
    desc: str = "train"  # progress bar label


@dataclass
class History:
    """One dict per epoch: ``epoch, step, train_loss, lr, seconds, samples_per_second`` and,
    with ``eval_data``, ``eval_loss, eval_accuracy`` (and ``eval_agreement`` with a teacher)."""

    epochs: List[Dict[str, float]] = field(default_factory=list)

    def __getitem__(self, key: str) -> List[float]:
        return [record[key] for record in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    @property
    def final(self) -> Dict[str, float]:
        if not self.epochs:
            raise ValueError("the history is empty: no epoch has finished")
        return self.epochs[-1]


@dataclass
class TrainState:
    """What a callback sees. Set ``stop = True`` to end training after this epoch."""

    student: nn.Module
    teacher: Optional[nn.Module]
    optimizer: torch.optim.Optimizer
    config: TrainConfig
    history: History
    epoch: int = 0
    step: int = 0
    last_loss: Any = math.nan  # the last step's loss (a 0-dim tensor), or the epoch mean at epoch end
    stop: bool = False
    loss_module: Optional[nn.Module] = None  # a loss_fn with trainable parameters, trained too


def _validate(config: TrainConfig, inputs: Tensor, targets: Optional[Tensor]) -> None:
    for name in ("num_epochs", "batch_size", "grad_accum_steps"):
        if getattr(config, name) < 1:
            raise ValueError(f"config.{name} must be >= 1, got {getattr(config, name)}")
    if config.lr <= 0:
        raise ValueError(f"config.lr must be > 0, got {config.lr}")
    if config.divergence_factor is not None and not config.divergence_factor > 1:
        raise ValueError(f"config.divergence_factor must be > 1 (or None), got {config.divergence_factor}")
    if len(inputs) == 0:
        raise ValueError("train_data holds no examples")
    if targets is not None and len(targets) != len(inputs):
        raise ValueError(f"train_data: {len(inputs)} inputs but {len(targets)} targets")


MAX_CACHE_BYTES = 4 * 2**30  # a cached teacher output larger than this is refused


def _rows(output: Output, idx: Tensor) -> Output:
    return output.index(idx) if isinstance(output, ModelOutput) else output[idx]


def _call(callbacks: Sequence[Any], event: str, state: TrainState) -> None:
    for callback in callbacks:
        if hasattr(callback, event):
            getattr(callback, event)(state)
        elif event == "on_epoch_end" and callable(callback):
            callback(state)


def train(
    student: nn.Module,
    train_data: Tuple[Tensor, Optional[Tensor]],
    *,
    teacher: Optional[nn.Module] = None,
    loss_fn: Optional[LossFn] = None,
    config: Optional[TrainConfig] = None,
    eval_data: Optional[Tuple[Tensor, Tensor]] = None,
    augment: Optional[Callable[[Tensor, torch.Generator], Any]] = None,
    callbacks: Sequence[Any] = (),
    resume: bool = False,
) -> History:
    """Train ``student`` in place and return its :class:`History`.

    ``train_data`` is ``(inputs, targets)`` held in memory; ``targets`` may be ``None`` for an
    unlabelled transfer set (then ``loss_fn`` must not need labels). ``loss_fn`` defaults to
    hard-label cross-entropy. ``augment(inputs, generator)`` transforms each batch (e.g. noise
    for "function matching"); the teacher then sees the same transformed batch every step.
    ``augment`` may also return ``(inputs, targets)`` when it replaces the batch by new
    sequences (on-policy distillation: the student's own samples); their targets then set the
    padding mask and the per-token weight of that micro-batch. That weight is the number of
    targets that are not ``ignore_index``: a custom loss that also learns from rows whose target
    is ``ignore_index`` (e.g. unlabelled rows mixed into a labelled batch) should pass
    ``targets=None`` for them or mix the rows so that every micro-batch has some labels.
    ``callbacks`` are functions called as ``fn(state)`` after each epoch, or objects with
    ``on_step_end(state)`` / ``on_epoch_end(state)`` methods. With ``resume=True`` and an
    existing ``config.checkpoint_path``, training continues from the saved epoch.

    Under ``torchrun`` (a process group is initialised, :func:`kd_lib.distributed.init`), pass
    every rank the same ``train_data``: each keeps its shard. ``config.batch_size`` is then the
    micro-batch per rank, and the run equals a 1-process run with ``batch_size * world_size``.
    """
    config = config or TrainConfig()
    inputs, targets = train_data
    _validate(config, inputs, targets)
    if teacher is None and loss_fn is None:
        loss_fn = cross_entropy_loss
    elif loss_fn is None:
        raise ValueError("with a teacher, pass loss_fn (e.g. partial(distillation_loss, temperature=4, alpha=0.5))")
    use_cache = config.cache_teacher_logits
    if use_cache is None:
        use_cache = augment is None
    if use_cache and augment is not None:
        raise ValueError("cache_teacher_logits=True with augment: the inputs change every step, so the teacher must run every step")
    if resume and not config.checkpoint_path:
        raise ValueError("resume=True needs config.checkpoint_path")
    rank, world = distributed.world()
    if world > 1:
        if augment is not None:
            raise ValueError("augment under torchrun is not supported: each rank would draw a different "
                             "number of random numbers and the ranks' shuffles would drift apart")
        if len(inputs) < world:
            raise ValueError(f"train_data has {len(inputs)} examples for {world} processes: need at least one each")
    num_inputs = len(inputs)  # the global number; under torchrun this rank keeps rows rank::world

    device = choose_device(config.device)
    if world > 1 and config.device is None and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    use_amp = config.amp and device.type == "cuda"
    if config.amp and not use_amp:
        warnings.warn("amp=True is ignored on CPU: bf16 autocast is used on CUDA only", stacklevel=2)
    student.to(device)
    if teacher is not None:
        if len(getattr(teacher, "projections", ())) > 0:
            raise ValueError("the teacher's Tapped has projections: a teacher is never trained, so they would "
                             "stay random; give the projection to the student's Tapped instead")
        teacher.to(device).eval()
    loss_module = loss_fn if isinstance(loss_fn, nn.Module) and any(True for _ in loss_fn.parameters()) else None
    if loss_module is not None:
        loss_module.to(device).train()
    trained = student if loss_module is None else nn.ModuleList([student, loss_module])
    if world > 1:
        inputs, targets = inputs[rank::world], (targets[rank::world] if targets is not None else None)
    inputs = inputs.to(device)
    targets = targets.to(device) if targets is not None else None
    joint = None
    if world > 1:  # DDP broadcasts rank 0's weights now, so every rank starts from them
        joint = DistributedDataParallel(distributed.StudentAndLoss(student, loss_fn))

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = make_optimizer(trained, config)
    global_batch = config.batch_size * world
    micro_per_epoch = math.ceil(num_inputs / global_batch)
    steps_per_epoch = math.ceil(micro_per_epoch / config.grad_accum_steps)
    scheduler = make_schedule(optimizer, config, steps_per_epoch * config.num_epochs)
    state = TrainState(student, teacher, optimizer, config, History(), loss_module=loss_module)
    if resume and os.path.exists(config.checkpoint_path):
        load_checkpoint(config.checkpoint_path, state, scheduler, generator)

    autocast = lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp)  # noqa: E731

    def teacher_forward(batch_inputs: Tensor) -> Output:
        with torch.no_grad(), autocast():
            return teacher(batch_inputs)

    cached_logits = None
    if teacher is not None and use_cache:
        with autocast():
            cached_logits = predict_outputs(teacher, inputs, config.eval_batch_size, max_bytes=MAX_CACHE_BYTES)
    eval_teacher_logits = None
    if teacher is not None and eval_data is not None:
        with autocast():
            eval_teacher_logits = predict_logits(teacher, eval_data[0].to(device), config.eval_batch_size)

    def prepare(idx: Tensor):  # a micro-batch's inputs and targets, after augment
        batch_inputs, batch_targets = inputs[idx], (targets[idx] if targets is not None else None)
        if augment is not None:
            augmented = augment(batch_inputs, generator)
            batch_inputs, batch_targets = augmented if isinstance(augmented, tuple) else (augmented, batch_targets)
        return idx, batch_inputs, batch_targets

    def count(batch_inputs: Tensor, batch_targets: Optional[Tensor]) -> Tensor:  # positions in the loss
        if batch_targets is None:
            return torch.tensor(float(len(batch_inputs)), device=device)
        return (batch_targets != config.ignore_index).sum().float()

    first_loss = None  # the first step's loss (of this call), for divergence_factor
    bar = tqdm(total=steps_per_epoch * config.num_epochs, initial=state.step, desc=config.desc,
               disable=not show_progress(config.progress) or rank != 0,
               mininterval=0.5)
    student.train()
    while state.epoch < config.num_epochs and not state.stop:
        started, epoch_loss, epoch_weight = time.perf_counter(), torch.zeros((), device=device), 0
        micro_batches = list(batches(num_inputs, global_batch, generator=generator, device=device))
        if world > 1:  # the rows of each global micro-batch that this rank owns, in its shard
            micro_batches = [distributed.owned(idx, rank, world) for idx in micro_batches]
        for first in range(0, len(micro_batches), config.grad_accum_steps):
            window = [prepare(idx) for idx in micro_batches[first : first + config.grad_accum_steps]]
            counts = [count(batch_inputs, batch_targets) for _, batch_inputs, batch_targets in window]
            total = torch.stack(counts).sum()
            if world > 1:  # the positions of the whole step, over every rank
                total = distributed.all_reduce_sum(total.clone())
            optimizer.zero_grad(set_to_none=True)
            step_loss = torch.zeros((), device=device)
            for position, ((idx, batch_inputs, batch_targets), positions) in enumerate(zip(window, counts)):
                teacher_logits = None
                if teacher is not None and (world == 1 or len(idx) > 0):
                    teacher_logits = (_rows(cached_logits, idx) if cached_logits is not None
                                      else teacher_forward(batch_inputs))
                if world == 1:
                    with autocast():
                        student_logits = student(batch_inputs)
                    loss = loss_fn(student_logits, teacher_logits, batch_targets)
                    weighted = loss * (positions / total.clamp_min(1))
                    weighted.backward()
                else:  # DDP averages gradients over ranks: scale by world to get their sum
                    last = position == len(window) - 1
                    with (contextlib.nullcontext() if last else joint.no_sync()), autocast():
                        _, loss = joint(batch_inputs, teacher_logits, batch_targets)
                    weighted = loss * (positions / total.clamp_min(1))
                    (weighted * world).backward()
                step_loss = step_loss + weighted.detach()
            if world > 1:  # the step's per-token loss over all ranks (the same on every rank)
                step_loss = distributed.all_reduce_sum(step_loss)
            if not bool(torch.isfinite(step_loss)):
                raise FloatingPointError(
                    f"loss became {float(step_loss)} at epoch {state.epoch + 1}, step {state.step + 1}: "
                    "lower the learning rate, clip gradients (max_grad_norm), or check inputs for NaN/inf"
                )
            if config.divergence_factor is not None:
                first_loss = float(step_loss) if first_loss is None else first_loss
                if float(step_loss) > config.divergence_factor * abs(first_loss):
                    raise FloatingPointError(
                        f"loss {float(step_loss):.3g} at epoch {state.epoch + 1}, step {state.step + 1} is more "
                        f"than {config.divergence_factor:g}x the first step's {first_loss:.3g}: training diverged; "
                        "lower the learning rate or clip gradients (max_grad_norm)"
                    )
            if config.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(trained.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            state.step += 1
            epoch_loss += step_loss
            epoch_weight += 1
            state.last_loss = step_loss
            _call(callbacks, "on_step_end", state)
            bar.update(1)
        state.epoch += 1
        seconds = time.perf_counter() - started
        record = {
            "epoch": state.epoch,
            "step": state.step,
            "train_loss": float(epoch_loss) / epoch_weight,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": seconds,
            "samples_per_second": num_inputs / seconds,
        }
        if eval_data is not None:
            record.update(evaluate(student, eval_data[0].to(device), eval_data[1], teacher_logits=eval_teacher_logits,
                                   ignore_index=config.ignore_index, batch_size=config.eval_batch_size))
        state.history.epochs.append(record)
        state.last_loss = record["train_loss"]
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k in ("train_loss", "eval_accuracy")})
        if config.checkpoint_path and rank == 0:
            save_checkpoint(config.checkpoint_path, state, scheduler, generator)
        distributed.barrier()  # no rank reads a checkpoint before rank 0 has written it
        _call(callbacks, "on_epoch_end", state)
    bar.close()
    return state.history
