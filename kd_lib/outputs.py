"""What a model hands to a loss: its logits, and, when asked, its intermediate activations.

Every loss in kd_lib takes ``(student_output, teacher_output, targets)``. An output is either
a logits tensor or a :class:`ModelOutput`, which carries the logits *and* named features
(hidden activations, attention maps). Logit losses read ``.logits`` and ignore the rest;
feature losses (:mod:`kd_lib.feature_losses`, :mod:`kd_lib.transformer_losses`) read
features by name. :class:`Tapped` turns any model into one that returns a ``ModelOutput``:

    student = Tapped(MLP(...), {"body.1": nn.Linear(256, 128)})  # a learned projection
    teacher = Tapped(CNN1D(...), ["dense.2"])

A projection given to ``Tapped`` is part of the wrapped student: :func:`kd_lib.train` trains
it with the student's weights (FitNets' regressor, Romero et al. 2015), and it is dropped
at the end by keeping ``student.model``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from .models import capture_features

Tensor = torch.Tensor

__all__ = ["ModelOutput", "Tapped", "logits_of", "feature_of"]


@dataclass
class ModelOutput:
    """A model's logits plus named features (each with the batch as its first dim)."""

    logits: Tensor
    features: Dict[str, Tensor] = field(default_factory=dict)

    def index(self, idx: Tensor) -> "ModelOutput":
        """The rows ``idx`` of the batch (used to serve cached teacher outputs)."""
        return ModelOutput(self.logits[idx], {k: v[idx] for k, v in self.features.items()})

    @staticmethod
    def cat(outputs: Sequence["ModelOutput"]) -> "ModelOutput":
        """Concatenate batches along the first dim."""
        names = outputs[0].features.keys()
        return ModelOutput(torch.cat([o.logits for o in outputs]),
                           {k: torch.cat([o.features[k] for o in outputs]) for k in names})


Output = Union[Tensor, ModelOutput]


def logits_of(output: Output) -> Tensor:
    """The logits of a model's output (the tensor itself, or ``ModelOutput.logits``)."""
    return output.logits if isinstance(output, ModelOutput) else output


def feature_of(output: Output, name: str, who: str = "model") -> Tensor:
    """The feature ``name`` of an output; a clear error when the model was not tapped there."""
    if not isinstance(output, ModelOutput):
        raise ValueError(
            f"this loss needs the {who}'s feature {name!r}, but the {who} returned plain logits: "
            f"wrap it as kd_lib.Tapped({who}, [{name!r}])"
        )
    if name not in output.features:
        raise ValueError(f"the {who} output has no feature {name!r}; it has {sorted(output.features)}")
    return output.features[name]


class Tapped(nn.Module):
    """Wrap ``model`` so that ``forward`` returns a :class:`ModelOutput`.

    ``layers`` names what to record: submodule names (``"body.1"``, see
    ``model.named_modules()``), recorded by forward hooks, or, for a model with a
    ``forward_internals`` method such as :class:`kd_lib.lm.gpt.GPT`, the names it reports
    (``"hidden.1"``, ``"attention.0"``, ...). A mapping ``{name: module}`` also passes that
    feature through ``module`` (a learned projection; ``None`` for none); the projections'
    weights are trained with the model's by :func:`kd_lib.train` when the model is the student
    (a teacher's ``Tapped`` may not have projections: ``train`` refuses it).
    """

    def __init__(self, model: nn.Module, layers: Union[Sequence[str], Mapping[str, Optional[nn.Module]]]):
        super().__init__()
        if isinstance(layers, str):
            raise ValueError(f"layers must be a list or dict of names, got the string {layers!r}")
        layers = dict(layers) if isinstance(layers, Mapping) else {name: None for name in layers}
        if not layers:
            raise ValueError("Tapped needs at least one layer name")
        self.model = model
        self.names = list(layers)
        self.projections = nn.ModuleDict({_key(k): m for k, m in layers.items() if m is not None})
        self._internal = hasattr(model, "forward_internals")
        if not self._internal:
            modules = dict(model.named_modules())
            missing = [name for name in self.names if name not in modules]
            if missing:
                raise ValueError(f"no submodule named {missing}; available: {list(modules)[1:]}")

    def forward(self, inputs: Tensor) -> ModelOutput:
        if self._internal:
            output = self.model.forward_internals(inputs)
            missing = [name for name in self.names if name not in output.features]
            if missing:
                raise ValueError(f"{type(self.model).__name__} has no internal {missing}; "
                                 f"it reports {sorted(output.features)}")
            logits, recorded = output.logits, output.features
        else:
            with capture_features(self.model, self.names) as recorded:
                logits = self.model(inputs)
        features = {}
        for name in self.names:
            projection = self.projections[_key(name)] if _key(name) in self.projections else None
            features[name] = recorded[name] if projection is None else projection(recorded[name])
        return ModelOutput(logits, features)


def _key(name: str) -> str:  # ModuleDict keys may not contain dots
    return name.replace(".", "__")
