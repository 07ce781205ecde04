"""What every chapter's setup cell needs: numerics, seeds, threads, device, figure style, glue.

* :func:`setup_notebook` pins portable numerics (:mod:`kd_lib.lab.numerics`), seeds every RNG,
  fixes the thread count and picks the device.
* :func:`shifted_seed` and :func:`seeds` shift the chapter's training, initialisation and transfer-set
  seeds by ``KD_BOOK_SEED_OFFSET`` (default 0), so that the book's tests can check that every
  claim still holds with other seeds. Standard data splits and evaluation sets keep their seeds.
* :data:`DATA_DIR` is the repository's ``data/`` folder: the stored sweeps the chapters read
  (a checkout's; ``KD_BOOK_DATA`` points elsewhere). The teachers are package data instead
  (:data:`kd_lib.pretrained.WEIGHTS_DIR`).
* :func:`glue` records a number that the prose quotes (myst-nb's ``{glue:text}`` role), so
  that the text and the output that computed it cannot disagree.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List

from .numerics import use_portable_numerics

__all__ = ["setup_notebook", "seed_offset", "shifted_seed", "seeds", "glue", "SEED_STRIDE", "DATA_DIR"]

DATA_DIR = Path(os.environ.get("KD_BOOK_DATA", Path(__file__).resolve().parents[2] / "data"))

SEED_OFFSET_VARIABLE = "KD_BOOK_SEED_OFFSET"
# Offset k moves seed s to s + 1000 k: the seeds of different offsets never overlap, and a
# shifted data seed never lands on a fixed split's seed (the MNIST-1D split uses 42).
SEED_STRIDE = 1000


def seed_offset() -> int:
    """The integer ``KD_BOOK_SEED_OFFSET`` (0 when unset); a ``ValueError`` names a bad value."""
    text = os.environ.get(SEED_OFFSET_VARIABLE, "").strip()
    if not text:
        return 0
    try:
        offset = int(text)
    except ValueError:
        raise ValueError(f"{SEED_OFFSET_VARIABLE} must be a non-negative integer, got {text!r}") from None
    if offset < 0:
        raise ValueError(f"{SEED_OFFSET_VARIABLE} must be a non-negative integer, got {offset}")
    return offset


def shifted_seed(base: int) -> int:
    """``base`` shifted by the seed offset: ``base + 1000 * KD_BOOK_SEED_OFFSET``."""
    return base + SEED_STRIDE * seed_offset()


def seeds(count: int, start: int = 0) -> List[int]:
    """``count`` consecutive seeds from ``start``, shifted by the seed offset."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    return [shifted_seed(start + i) for i in range(count)]


def glue(name: str, value: Any) -> None:
    """Record ``value`` under ``name`` for the prose (``{glue:text}`name```).

    Format numbers before gluing (``glue("gain", f"{gain:.1f}")``): the text then shows exactly
    the digits the output shows, and the book's tests compare them on every run. Where myst-nb
    is not installed (Colab), nothing is recorded and the value is printed instead. Returns
    nothing, so a cell that ends with a ``glue`` call shows no stray output.
    """
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        print(f"{name} = {value}")
    else:
        myst_glue(name, value, display=False)


def setup_notebook(seed: int = 0, threads: int = 1, dpi: int = 80, device=None, verbose: bool = True):
    """Pin portable numerics, seed every RNG, fix the thread count, pick the device, style plots.

    Numerics come first because they must be fixed before the first tensor operation: CPUs
    with and without AVX-512 otherwise round differently (:mod:`kd_lib.lab.numerics`). The thread
    count is fixed because it changes results too: floating-point sums are split differently
    across threads, and small students trained with 1 or 2 threads end up several accuracy
    points apart. One thread is also the fastest choice for these small models when the CPU is
    shared. ``seed`` is shifted by ``KD_BOOK_SEED_OFFSET`` like every other training seed.
    Returns the device (CUDA when available, unless ``device`` is given).
    """
    numerics = use_portable_numerics()
    import torch

    from ..runtime import choose_device, seed_everything

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    shifted = shifted_seed(seed)
    seed_everything(shifted)
    chosen = choose_device(device)
    try:
        import matplotlib.pyplot as plt

        plt.rcParams.update({"figure.dpi": dpi, "savefig.dpi": dpi, "figure.figsize": (6.4, 3.6),
                             "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                             "axes.spines.right": False})
    except ImportError:  # matplotlib is optional for the library
        pass
    if verbose:
        from .. import __version__

        offset = seed_offset()
        print(f"kd_lib {__version__} | torch {torch.__version__} | device: {chosen.type} | "
              f"threads: {torch.get_num_threads()} | seed: {shifted}"
              + (f" (offset {offset})" if offset else ""))
        print(f"numerics: {numerics}")
    return chosen
