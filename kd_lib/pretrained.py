"""Shipped teacher checkpoints: safetensors weights plus a JSON manifest, loaded without pickle.

A checkpoint ``NAME`` ships inside the package, in ``kd_lib/weights/`` (package data, so a
``pip install`` of kd_lib carries every teacher the book uses), as

* ``NAME.safetensors`` — the ``state_dict`` (tensors only: nothing executes on load);
* ``NAME.json`` — the manifest: model class and config, how it was trained (data seed,
  epochs, the command that made it), its final metrics, and the sha256 of the weights file.

:func:`load_pretrained` rebuilds the model from the manifest, checks the sha256, and loads the
weights. The scripts that make each checkpoint live in the repository's ``scripts/``. Model
classes are looked up in :mod:`kd_lib.models`, and ``GPT`` in :mod:`kd_lib.lm.gpt`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import importlib

import torch
from torch import nn

__all__ = ["WEIGHTS_DIR", "unique_state", "save_pretrained", "load_pretrained", "load_manifest", "sha256_of",
           "save_collection", "load_collection"]

# The shipped checkpoints (package data); KD_LIB_WEIGHTS points the loaders at another folder.
WEIGHTS_DIR = Path(os.environ.get("KD_LIB_WEIGHTS", Path(__file__).resolve().parent / "weights"))
# The module that defines each model class a manifest may name (and its ``<class>Config``).
MODEL_MODULES = {"MLP": "kd_lib.models", "CNN1D": "kd_lib.models", "GPT": "kd_lib.lm.gpt"}


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


def _config_of(model: nn.Module) -> Dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(model.config).items()}


def _paths(name: str, data_dir: Optional[Path]) -> Tuple[Path, Path]:
    folder = Path(data_dir) if data_dir is not None else WEIGHTS_DIR
    return folder / f"{name}.safetensors", folder / f"{name}.json"


def save_pretrained(model: nn.Module, name: str, info: Dict[str, Any], data_dir: Optional[Path] = None) -> Dict[str, Any]:
    """Write ``model``'s weights and a manifest (``info`` plus model class, config, sha256)."""
    from safetensors.torch import save_file

    weights_path, manifest_path = _paths(name, data_dir)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    save_file(unique_state(model), str(weights_path))
    manifest = {
        "name": name,
        "model_class": type(model).__name__,
        "config": _config_of(model),
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
            f"no checkpoint manifest {manifest_path}. The shipped checkpoints are package data in "
            f"kd_lib/weights/ ({', '.join(sorted(p.stem for p in WEIGHTS_DIR.glob('*.json'))) or 'none found'}); "
            "check the name, reinstall kd_lib if that folder is empty, or run the script in the "
            "repository's scripts/ that trains it"
        )
    return json.loads(manifest_path.read_text())


def _checked_weights(name: str, data_dir: Optional[Path]) -> Tuple[Dict[str, Any], Dict[str, torch.Tensor], Path]:
    """The manifest and the weights of checkpoint ``name``, after checking the file's sha256."""
    from safetensors.torch import load_file

    manifest = load_manifest(name, data_dir)
    weights_path, _ = _paths(name, data_dir)
    actual = sha256_of(weights_path)
    if actual != manifest["sha256"]:
        raise ValueError(f"{weights_path} is corrupt or changed: sha256 {actual} != manifest {manifest['sha256']}")
    return manifest, load_file(str(weights_path)), weights_path


def _build(model_class: str, config: Dict[str, Any], state: Dict[str, torch.Tensor], where: str, device) -> nn.Module:
    """A ``model_class`` model with ``config``, loaded with ``state`` (eval mode)."""
    if model_class not in MODEL_MODULES:
        raise ValueError(f"{where}: unknown model class {model_class!r}; known: {sorted(MODEL_MODULES)}")
    module = importlib.import_module(MODEL_MODULES[model_class])
    model = getattr(module, model_class)(getattr(module, model_class + "Config")(**config))
    expected = unique_state(model)  # the names a save of this architecture holds (tied weights once)
    if set(state) != set(expected):
        raise ValueError(f"{where} does not fit {model_class}: missing "
                         f"{sorted(set(expected) - set(state))}, unexpected {sorted(set(state) - set(expected))}")
    model.load_state_dict(state, strict=False)
    return model.to(device if device is not None else "cpu").eval()


def load_pretrained(name: str, data_dir: Optional[Path] = None, device=None) -> nn.Module:
    """Rebuild the model named in the manifest and load its weights (eval mode)."""
    manifest, state, weights_path = _checked_weights(name, data_dir)
    return _build(manifest["model_class"], manifest["config"], state, str(weights_path), device)


def save_collection(models_by_key: Dict[str, nn.Module], name: str, info: Dict[str, Any],
                    data_dir: Optional[Path] = None) -> Dict[str, Any]:
    """Write several small models (e.g. one per recipe and seed) into one safetensors file.

    Each model's tensors are stored under ``"<key>/<tensor name>"``; the manifest lists every
    key with its model class and config, plus ``info`` and the file's sha256.
    """
    from safetensors.torch import save_file

    if not models_by_key or any("/" in key for key in models_by_key):
        raise ValueError("need at least one model, and keys without '/'")
    weights_path, manifest_path = _paths(name, data_dir)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"{key}/{tensor}": value for key, model in models_by_key.items() for tensor, value in unique_state(model).items()}
    save_file(state, str(weights_path))
    entries = {key: {"model_class": type(model).__name__, "config": _config_of(model)}
               for key, model in models_by_key.items()}
    manifest = {"name": name, "models": entries, **info, "weights_file": weights_path.name,
                "sha256": sha256_of(weights_path), "bytes": weights_path.stat().st_size}
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def load_collection(name: str, data_dir: Optional[Path] = None, device=None) -> Dict[str, nn.Module]:
    """The models written by :func:`save_collection`, by key (eval mode), after a sha256 check."""
    manifest, state, weights_path = _checked_weights(name, data_dir)
    loaded = {}
    for key, entry in manifest["models"].items():
        own = {k[len(key) + 1:]: v for k, v in state.items() if k.startswith(f"{key}/")}
        loaded[key] = _build(entry["model_class"], entry["config"], own, f"{weights_path} [{key}]", device)
    return loaded
