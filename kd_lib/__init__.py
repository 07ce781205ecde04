"""kd_lib: small, tested knowledge-distillation tools for PyTorch.

The companion library of the book *Knowledge Distillation, Measured*. Losses are plain tensor
functions (:mod:`kd_lib.losses`), there is one training loop (:mod:`kd_lib.train`), and small
models, offline datasets and metrics to run every experiment of the book on a laptop CPU.
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
from .notebook import glue, seeds, setup_notebook, shifted_seed
from .outputs import ModelOutput, Tapped
from .schemes import Cohort, Ensemble, WeightedSum, mutual_learning_loss, weighted_sum
from .transformer_losses import attention_loss, cosine_hidden_loss, hidden_state_loss, minilm_loss
from .train import History, TrainConfig, TrainState, choose_device, evaluate, seed_everything, train

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
    "setup_notebook", "seeds", "shifted_seed", "glue",
]
