"""Checkpoint and resume for :func:`kd_lib.train.train`.

A checkpoint holds everything that decides the rest of a run: the student's weights, the
optimizer's and scheduler's states, the epoch and step, the shuffling/augmentation generator,
torch's global RNG (dropout) and CUDA's, and the history so far. Resuming from it therefore
gives exactly the weights of an uninterrupted run. Saved with ``torch.save`` and loaded with
``weights_only=True`` (tensors and plain containers only: no code runs on load).
"""
from __future__ import annotations

import dataclasses
import os

import torch


def save_checkpoint(path: str, state, scheduler, generator: torch.Generator) -> None:
    payload = {
        "student": state.student.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "history": state.history.epochs,
        "config": dataclasses.asdict(state.config),
    }
    if state.loss_module is not None:  # a trained loss (learned projections)
        payload["loss_module"] = state.loss_module.state_dict()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp_path = path + ".tmp"
    torch.save(payload, tmp_path)
    os.replace(tmp_path, path)  # atomic: an interrupted save never leaves a broken checkpoint


def load_checkpoint(path: str, state, scheduler, generator: torch.Generator) -> None:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    saved = {k: v for k, v in payload["config"].items() if k not in ("num_epochs", "progress", "desc", "checkpoint_path")}
    current = {k: v for k, v in dataclasses.asdict(state.config).items() if k in saved}
    changed = {k: (saved[k], current[k]) for k in saved if saved[k] != current[k] and not (
        isinstance(saved[k], (list, tuple)) and list(saved[k]) == list(current[k]))}
    if changed:
        raise ValueError(f"cannot resume from {path}: config changed since the checkpoint: {changed}")
    if (state.loss_module is not None) != ("loss_module" in payload):
        saved = "with" if "loss_module" in payload else "without"
        now = "with" if state.loss_module is not None else "without"
        raise ValueError(f"cannot resume from {path}: it was saved {saved} a trained loss module (a loss_fn with "
                         f"parameters) and this run is {now} one; pass the same loss_fn as the saved run")
    state.student.load_state_dict(payload["student"])
    if state.loss_module is not None:
        state.loss_module.load_state_dict(payload["loss_module"])
    state.optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    state.epoch, state.step = payload["epoch"], payload["step"]
    state.history.epochs = list(payload["history"])
    generator.set_state(payload["generator"])
    torch.set_rng_state(payload["torch_rng"])
    if payload["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["cuda_rng"])
