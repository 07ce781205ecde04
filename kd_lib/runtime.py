"""Where and how reproducibly a run computes: the device, and the seeds of every RNG."""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["choose_device", "seed_everything"]


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
