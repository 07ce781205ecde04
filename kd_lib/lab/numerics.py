"""Portable CPU numerics: the same float32 results on every x86-64 CPU with AVX2.

PyTorch's CPU kernels are chosen at run time for the instruction set of the machine. Three
libraries do this independently: ATen's own vectorised kernels (``ATEN_CPU_CAPABILITY``), MKL's
BLAS (``MKL_CBWR``, "conditional bitwise reproducibility") and oneDNN's convolutions
(``ONEDNN_MAX_CPU_ISA``). An AVX-512 kernel adds numbers in a different order than an AVX2
kernel, so the last bits of a result differ, and a few hundred optimizer steps turn those bits
into different accuracies. :func:`use_portable_numerics` pins all three to AVX2, a level that
almost every x86-64 CPU sold since 2013 has, before the first tensor operation reads them:

    import kd_lib.lab.numerics
    kd_lib.lab.numerics.use_portable_numerics()   # before any tensor is created

Measured with torch 2.13.0 (CPU wheel): the book's first MNIST-1D teacher had the test loss
0.10827047377824783 under these settings both on an AVX2-only AMD EPYC and on an AVX-512 AMD EPYC
(Zen 5), where the unpinned values differ in the 8th digit; a first training epoch matched too.
On the AVX-512 machine the pin cost 0-3 s per chapter (chapters take 10-70 s); on an AVX2 machine
it changes nothing. On an Intel CPU it is not enough: on an Intel Xeon with AMX, AVX-512-BF16
and AVX-VNNI (2026-12-03), the pinned runs trained differently from the AMD ones (chapter 2's
SGD students at T = 1, lr 0.3: test accuracies 0.591, 0.633, 0.663 against the committed 0.609,
0.637, 0.646; chapter 7b's live student: KL to the truth 0.013331 against the stored 0.013196),
and none of MKL_CBWR=COMPATIBLE, MKL_CBWR=AVX2,STRICT, ONEDNN_MAX_CPU_ISA=SSE41 or AVX, or oneDNN
switched off reproduced the committed values. Intel's MKL documentation says why: on non-Intel
CPUs MKL_CBWR=AVX2 is not honoured and MKL's AUTO branch runs instead, so the committed outputs
carry the AMD machines' own MKL choice, which no setting on an Intel CPU selects. On that Xeon
(2026-12-03) the short workload of tests/test_numerics.py gave one digest under MKL_CBWR=AVX2 with
MKL's instructions uncapped, capped at AVX2, or as on an AVX2-only CPU, but another with
MKL_ENABLE_INSTRUCTIONS=AVX512; under MKL_CBWR=COMPATIBLE all four agreed. COMPATIBLE is
slower on matrix-heavy work: chapter 7 took 103-105 s against 69-71 s with the AVX2 pin.
COMPATIBLE, the branch MKL offers for any x86 CPU, is thus the candidate pin for every vendor; it
is not used yet, because switching means re-running the sweeps in data/ and re-executing every
chapter, and an AMD machine must first show the same digest as an Intel one. So only AMD CPUs
(where the committed outputs were made) count as portable; on any other vendor's CPU the status says so, and the book's tests run
every cell and assert but do not compare outputs with the committed ones. On a CPU without AVX2 (or not x86-64, e.g. arm64) there is nothing to pin to:
:func:`use_portable_numerics` then changes nothing and says why, and results may differ in the
last bits from the book's committed outputs. Set ``KD_BOOK_NUMERICS=native`` to skip the pin
(faster on AVX-512 machines, but not comparable with the committed outputs).
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass

__all__ = ["PORTABLE_ENV", "NumericsStatus", "use_portable_numerics", "portable_numerics_status"]

# The one place these settings are written. Values are the AVX2 levels of each library.
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised kernels (sums, softmax, exp, ...)
    "MKL_CBWR": "AVX2",  # MKL's BLAS (matrix products) takes its AVX2 code path
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN's convolutions (forward and backward)
}
OPT_OUT = "KD_BOOK_NUMERICS"  # "native": leave the machine's own best kernels


@dataclass(frozen=True)
class NumericsStatus:
    portable: bool  # True when results can be compared bit for bit with the committed outputs
    reason: str  # one line for people

    def __str__(self) -> str:
        return self.reason


def _is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def _has_avx2() -> bool:
    try:  # Linux: the kernel lists the CPU's flags
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return "avx2" in line.split()
    except OSError:
        pass
    try:  # elsewhere, torch's cpuinfo (does not fix the kernel choice, unlike tensor operations)
        import torch

        return bool(torch.cpu._is_avx2_supported())
    except Exception:  # noqa: BLE001 - an unknown CPU is not portable
        return False


# CPU vendors on which the pinned results were checked to match the committed outputs.
VERIFIED_VENDORS = ("AuthenticAMD",)


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def portable_numerics_status() -> NumericsStatus:
    """Whether this machine reproduces the committed outputs with the pinned settings (it does
    not apply them)."""
    if os.environ.get(OPT_OUT, "").lower() == "native":
        return NumericsStatus(False, f"{OPT_OUT}=native: the machine's own kernels, results not portable")
    if not _is_x86_64():
        return NumericsStatus(False, f"{platform.machine()} CPU: no x86-64 AVX2 kernels to pin, results not portable")
    if not _has_avx2():
        return NumericsStatus(False, "x86-64 CPU without AVX2: nothing to pin to, results not portable")
    vendor = _cpu_vendor()
    if vendor not in VERIFIED_VENDORS:
        return NumericsStatus(False, f"{vendor} CPU: the AVX2 pin does not reproduce the committed outputs "
                                     "here (checked on an Intel Xeon, 2026-12-03), results not portable")
    return NumericsStatus(True, "portable: AVX2 kernels pinned (ATen, MKL, oneDNN)")


def use_portable_numerics() -> NumericsStatus:
    """Pin ATen, MKL and oneDNN to their AVX2 kernels; call before the first tensor operation.

    Returns a :class:`NumericsStatus`. Raises ``RuntimeError`` if ATen already chose other
    kernels, which happens once any tensor operation has run: restart the process (in Jupyter,
    the kernel) and call this first. Calling it again later is harmless.
    """
    status = portable_numerics_status()
    if not status.portable:
        return status
    os.environ.update(PORTABLE_ENV)
    import torch

    chosen = torch.backends.cpu.get_cpu_capability()  # ATen reads its variable once, now at the latest
    if chosen != "AVX2":
        raise RuntimeError(
            f"ATen already uses {chosen} kernels: a tensor operation ran before use_portable_numerics(). "
            "Restart the process (in Jupyter: the kernel) and call it before creating any tensor."
        )
    return status
