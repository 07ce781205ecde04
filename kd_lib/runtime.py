"""Where and how reproducibly a run computes: the device, the seeds of every RNG, and whether
long loops show a progress bar."""
from __future__ import annotations

import os
from typing import Optional

import torch

__all__ = ["choose_device", "seed_everything", "show_progress", "PROGRESS_VARIABLE"]

# Set to 0 (or off, false, no) to silence every kd_lib progress bar, whatever the code asks:
# the book's notebooks are executed and tested with it, so that no bar is saved in their
# outputs, while a reader running a chapter live still sees the bars.
PROGRESS_VARIABLE = "KD_PROGRESS"


def choose_device(device: Optional[str] = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def show_progress(requested: bool = True) -> bool:
    """``requested``, unless the environment variable ``KD_PROGRESS`` turns bars off."""
    value = os.environ.get(PROGRESS_VARIABLE, "").strip().lower()
    return bool(requested) and value not in ("0", "off", "false", "no")
