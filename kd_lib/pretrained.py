"""Shipped teacher checkpoints: safetensors weights plus a JSON manifest, loaded without pickle.

A checkpoint ``NAME`` lives in the repository's ``data/`` folder as

* ``NAME.safetensors`` — the ``state_dict`` (tensors only: nothing executes on load);
* ``NAME.json`` — the manifest: model class and config, how it was trained (data seed,
  epochs, the command that made it), its final metrics, and the sha256 of the weights file.

:func:`load_pretrained` rebuilds the model from the manifest, checks the sha256, and loads the
weights. The scripts that make each checkpoint live in ``scripts/``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from . import models

__all__ = ["DATA_DIR", "unique_state", "save_pretrained", "load_pretrained", "load_manifest", "sha256_of"]

DATA_DIR = Path(os.environ.get("KD_LIB_DATA", Path(__file__).resolve().parent.parent / "data"))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def unique_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """``state_dict`` on the CPU, contiguous, with tied tensors (one storage, several names) kept once."""
    state, seen = {}, set()
    for name, tensor in model.state_dict().items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and key in seen:
            continue
        seen.add(key)
        state[name] = tensor.detach().cpu().contiguous()
    return state


def _paths(name: str, data_dir: Optional[Path]) -> Tuple[Path, Path]:
    folder = Path(data_dir) if data_dir is not None else DATA_DIR
    return folder / f"{name}.safetensors", folder / f"{name}.json"


def save_pretrained(model: nn.Module, name: str, info: Dict[str, Any], data_dir: Optional[Path] = None) -> Dict[str, Any]:
    """Write ``model``'s weights and a manifest (``info`` plus model class, config, sha256)."""
    from safetensors.torch import save_file

    weights_path, manifest_path = _paths(name, data_dir)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(unique_state(model), str(weights_path))
    config = dataclasses.asdict(model.config)
    manifest = {
        "name": name,
        "model_class": type(model).__name__,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
        **info,
        "weights_file": weights_path.name,
        "sha256": sha256_of(weights_path),
        "bytes": weights_path.stat().st_size,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_manifest(name: str, data_dir: Optional[Path] = None) -> Dict[str, Any]:
    weights_path, manifest_path = _paths(name, data_dir)
    if not manifest_path.exists():
        raise FileNotFoundError(
            f"no checkpoint manifest {manifest_path}. The shipped checkpoints live in the repository's "
            "data/ folder: clone the repository (or set KD_LIB_DATA to that folder), or run the script "
            "in scripts/ that trains it"
        )
    return json.loads(manifest_path.read_text())


def load_pretrained(name: str, data_dir: Optional[Path] = None, device=None) -> nn.Module:
    """Rebuild the model named in the manifest and load its weights (eval mode)."""
    from safetensors.torch import load_file

    manifest = load_manifest(name, data_dir)
    weights_path, _ = _paths(name, data_dir)
    actual = sha256_of(weights_path)
    if actual != manifest["sha256"]:
        raise ValueError(f"{weights_path} is corrupt or changed: sha256 {actual} != manifest {manifest['sha256']}")
    model_class = getattr(models, manifest["model_class"])
    config_class = getattr(models, manifest["model_class"] + "Config")
    model = model_class(config_class(**manifest["config"]))
    state = load_file(str(weights_path))
    expected = unique_state(model)  # the names a save of this architecture holds (tied weights once)
    if set(state) != set(expected):
        raise ValueError(f"{weights_path} does not fit {manifest['model_class']}: missing "
                         f"{sorted(set(expected) - set(state))}, unexpected {sorted(set(state) - set(expected))}")
    model.load_state_dict(state, strict=False)
    return model.to(device if device is not None else "cpu").eval()
