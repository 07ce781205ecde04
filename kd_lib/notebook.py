"""One call that every chapter's setup cell makes: seeds, thread count, device, figure style."""
from __future__ import annotations

import torch

from .train import choose_device, seed_everything

__all__ = ["setup_notebook"]


def setup_notebook(seed: int = 0, threads: int = 1, dpi: int = 80, device=None, verbose: bool = True) -> torch.device:
    """Seed every RNG, fix torch's CPU thread count, choose the device, style matplotlib.

    The thread count is fixed because it changes results: floating-point sums are split
    differently across threads, and small students trained with 1 or 2 threads end up several
    accuracy points apart. One thread is also the fastest choice for these small models when
    the CPU is shared. Returns the device (CUDA when available, unless ``device`` is given).
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    seed_everything(seed)
    chosen = choose_device(device)
    try:
        import matplotlib.pyplot as plt

        plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi, "figure.figsize": (6.4, 3.6),
                             "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                             "axes.spines.right": False})
    except ImportError:  # matplotlib is optional for the library
        pass
    if verbose:
        from . import __version__

        print(f"kd_lib {__version__} | torch {torch.__version__} | device: {chosen.type} | "
              f"threads: {torch.get_num_threads()} | seed: {seed}")
    return chosen
