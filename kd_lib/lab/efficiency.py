"""What a forward pass costs: multiply-accumulates counted by hooks, and an energy estimate.

Energy is *estimated*, not measured: we count the multiply-accumulates (MACs) of one forward
pass and multiply by an energy per operation from Horowitz (2014), "Computing's energy problem
(and what we can do about it)", ISSCC 2014 (45 nm process, 0.9 V):

=============  ========  ===========  ===========
operation      fp32      fp16         int8
=============  ========  ===========  ===========
multiply       3.7 pJ    1.1 pJ       0.2 pJ
add            0.9 pJ    0.4 pJ       0.03 pJ
=============  ========  ===========  ===========

and a 32-bit read costs 5 pJ from an 8 KB SRAM and 640 pJ from DRAM. Three figures follow:
arithmetic only (every weight already in registers: a lower bound), reading every weight once
from a small on-chip SRAM (a model that stays in cache), and reading every weight once from DRAM
(a model too big to stay in cache, batch size 1). Which memory term applies depends on the model
and the chip, so the estimate gives both and decides nothing. Real chips differ
(newer processes are cheaper; a CPU spends most of its power on everything but the arithmetic),
so use these numbers to *compare* models, never as a measurement.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List

import torch
from torch import nn

from ..metrics import count_parameters

Tensor = torch.Tensor

__all__ = ["MAC_PICOJOULES", "SRAM_READ_PICOJOULES_PER_32BIT", "DRAM_READ_PICOJOULES_PER_32BIT", "count_macs",
           "EnergyEstimate", "estimate_energy"]

# Horowitz (2014), 45 nm: energy of one multiply plus one add.
MAC_PICOJOULES: Dict[str, float] = {"fp32": 3.7 + 0.9, "fp16": 1.1 + 0.4, "int8": 0.2 + 0.03}
SRAM_READ_PICOJOULES_PER_32BIT = 5.0  # an 8 KB SRAM
DRAM_READ_PICOJOULES_PER_32BIT = 640.0
_BITS = {"fp32": 32, "fp16": 16, "int8": 8}

# Leaf modules with parameters that cost no multiply-accumulate worth counting: look-ups, or
# per-channel affine maps that fold into the preceding layer at inference time.
_FREE_WITH_PARAMETERS = (nn.Embedding, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)


def _layer_macs(module: nn.Module, output: Tensor) -> int:
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        return output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    return 0


@torch.no_grad()
def count_macs(model: nn.Module, example_inputs: Tensor) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on ``example_inputs`` (eval mode).

    Counts ``nn.Linear`` (``in_features`` MACs per output element) and ``nn.Conv1d`` /
    ``nn.Conv2d`` (``in_channels / groups * kernel size`` per output element); biases,
    activations, pooling and normalisation are left out (a few percent at most). Pass a batch
    of one to get the MACs per inference. Raises ``ValueError`` for a leaf module with
    parameters that it cannot count, rather than silently undercounting. Matrix products
    written inside ``forward`` (e.g. attention scores) are not modules and are not counted.
    """
    if not isinstance(example_inputs, torch.Tensor) or example_inputs.dim() == 0 or len(example_inputs) == 0:
        raise ValueError("example_inputs must be a non-empty batch tensor, e.g. inputs[:1]")
    unknown: List[str] = []
    counted = (nn.Linear, nn.Conv1d, nn.Conv2d)
    for name, module in model.named_modules():
        is_leaf = next(module.children(), None) is None
        has_parameters = next(module.parameters(recurse=False), None) is not None
        if is_leaf and has_parameters and not isinstance(module, counted + _FREE_WITH_PARAMETERS):
            unknown.append(f"{name} ({type(module).__name__})")
    if unknown:
        raise ValueError(f"count_macs cannot count these layers: {unknown}")
    total = [0]

    def hook(module: nn.Module, _inputs, output: Tensor) -> None:
        total[0] += _layer_macs(module, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, counted)]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(example_inputs.to(device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total[0]


@dataclass
class EnergyEstimate:
    """Energy of one inference, from counted operations (see the module docstring)."""

    macs: int  # multiply-accumulates per inference
    parameters: int
    dtype: str  # "fp32", "fp16" or "int8"
    arithmetic_joules: float  # macs * energy per MAC: the lower bound
    dram_joules: float  # reading every weight once from DRAM (a model that does not fit in cache)
    sram_joules: float = 0.0  # reading every weight once from a small on-chip SRAM

    @property
    def total_joules(self) -> float:
        """Arithmetic plus weights from DRAM: the pessimistic end."""
        return self.arithmetic_joules + self.dram_joules


def estimate_energy(model: nn.Module, example: Tensor, dtype: str = "fp32") -> EnergyEstimate:
    """Estimate the energy of one inference on ``example`` (a batch of one) at ``dtype``.

    ``arithmetic_joules = MACs * E_mac[dtype]``, ``sram_joules = parameters * bits / 32 * 5 pJ`` and
    ``dram_joules = parameters * bits / 32 * 640 pJ`` with Horowitz's (2014) 45 nm energies. An
    estimate for comparing models, not a measurement.
    """
    if dtype not in MAC_PICOJOULES:
        raise ValueError(f"dtype must be one of {sorted(MAC_PICOJOULES)}, got {dtype!r}")
    if not isinstance(example, torch.Tensor) or example.dim() == 0 or len(example) != 1:
        raise ValueError(f"example must be a batch of one input, e.g. inputs[:1]; got shape {tuple(getattr(example, 'shape', ()))}")
    macs = count_macs(model, example)
    parameters = count_parameters(model)
    arithmetic = macs * MAC_PICOJOULES[dtype] * 1e-12
    words = parameters * _BITS[dtype] / 32
    dram = words * DRAM_READ_PICOJOULES_PER_32BIT * 1e-12
    sram = words * SRAM_READ_PICOJOULES_PER_32BIT * 1e-12
    return EnergyEstimate(macs, parameters, dtype, arithmetic, dram, sram)
