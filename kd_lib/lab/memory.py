"""Peak memory of a piece of code, on CPU or CUDA, counted in allocator bytes.

On CUDA, :func:`torch.cuda.max_memory_allocated`. On CPU, PyTorch has no such counter, so
:func:`peak_memory` runs the code under :mod:`torch.profiler` with ``profile_memory=True`` and
replays its allocation records (every allocation and free of a tensor's storage, in order): the
running sum's maximum is the peak. Both count tensor storage only (not Python objects, not
the allocator's cached or fragmented pages), which is what a loss's temporaries cost; the
result does not depend on the CPU, the allocator or what else the process holds.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

__all__ = ["MemoryPeak", "peak_memory"]


@dataclass(frozen=True)
class MemoryPeak:
    """Bytes above what was allocated when the measurement began."""

    peak: int  # the most allocated at any moment
    retained: int  # still allocated at the end (e.g. a gradient in ``.grad``)

    def ratio(self, reference_bytes: int) -> float:
        """``peak`` in units of ``reference_bytes`` (e.g. one logits tensor's ``nbytes``)."""
        return self.peak / reference_bytes


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (the profiler's native "profiler_start" log lines, which a
    notebook kernel would show as output); Python-level errors still raise normally."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(fn: Callable[[], object], device: str = "cpu") -> MemoryPeak:
    """Run ``fn()`` once and return its peak and retained memory above the starting point."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return MemoryPeak(torch.cuda.max_memory_allocated(device) - start,
                          torch.cuda.memory_allocated(device) - start)
    if device.type != "cpu":
        raise ValueError(f"peak_memory measures 'cpu' or 'cuda', got {device}")
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = [event for event in prof.profiler.kineto_results.events()
               if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU]
    records.sort(key=lambda event: event.start_ns())
    current = peak = 0
    for event in records:
        current += event.nbytes()
        peak = max(peak, current)
    return MemoryPeak(peak, current)
