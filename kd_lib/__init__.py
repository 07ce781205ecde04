"""kd_lib: small, tested knowledge-distillation tools for PyTorch.

The companion library of the book *Knowledge Distillation, Measured*. The core: losses are
plain tensor functions (:mod:`kd_lib.losses`, :mod:`kd_lib.feature_losses`,
:mod:`kd_lib.transformer_losses`, :mod:`kd_lib.schemes`), there is one training loop
(:mod:`kd_lib.train`, on one process or under ``torchrun``), small models, offline datasets,
shipped teachers and metrics. Kits built on it: :mod:`kd_lib.lm` (language models),
:mod:`kd_lib.methods` (data-free distillation, pruning) and :mod:`kd_lib.lab` (the book's
experiment helpers).
"""
from .losses import (
    cross_entropy_loss,
    distillation_loss,
    generalized_jsd,
    kd_loss,
    reverse_kl,
    skew_kl,
    soft_cross_entropy,
    soften,
    total_variation,
)
from .feature_losses import attention_transfer_loss, hint_loss
from .metrics import evaluate
from .outputs import ModelOutput, Tapped
from .schemes import Cohort, Ensemble, WeightedSum, mutual_learning_loss, weighted_sum
from .transformer_losses import attention_loss, cosine_hidden_loss, hidden_state_loss, minilm_loss
from . import distributed
from .runtime import choose_device, seed_everything
from .train import History, TrainConfig, TrainState, train

__version__ = "0.1.0"

__all__ = [
    "soften", "kd_loss", "soft_cross_entropy", "reverse_kl", "generalized_jsd", "skew_kl",
    "total_variation",
    "distillation_loss", "cross_entropy_loss",
    "hint_loss", "attention_transfer_loss",
    "attention_loss", "hidden_state_loss", "minilm_loss", "cosine_hidden_loss",
    "mutual_learning_loss", "weighted_sum", "WeightedSum", "Ensemble", "Cohort",
    "ModelOutput", "Tapped",
    "train", "TrainConfig", "History", "TrainState", "evaluate", "choose_device", "seed_everything",
]
