"""Feature-based distillation: match what the teacher computes inside, not only its logits.

Both losses follow kd_lib's one contract, ``loss(student_output, teacher_output, targets,
*, <hyper-parameters>)``: the outputs are :class:`kd_lib.outputs.ModelOutput` objects of
models wrapped in :class:`kd_lib.outputs.Tapped`, and the layers are named by keyword:

    student = Tapped(student_net, {"body.1": nn.Linear(64, 128)})   # learned projection
    teacher = Tapped(teacher_net, ["dense.2"])
    loss_fn = partial(hint_loss, student_layer="body.1", teacher_layer="dense.2")
    train(student, data, teacher=teacher, loss_fn=loss_fn)

``targets`` are accepted (and unused) so that the losses fit :func:`kd_lib.train`; add the
logit or label terms with :func:`kd_lib.schemes.weighted_sum`. Both average over *examples*
and use no padding mask: they are for per-example features (images, signals). For token
features of a language model use :func:`kd_lib.transformer_losses.hidden_state_loss`, which
leaves out positions whose target is ``ignore_index``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from .outputs import Output, feature_of

Tensor = torch.Tensor

__all__ = ["hint_loss", "attention_map", "attention_transfer_loss"]


def _check_features(student: Tensor, teacher: Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"{what}: student feature {tuple(student.shape)} and teacher feature "
            f"{tuple(teacher.shape)} differ in shape; give the student's layer a projection "
            "in Tapped (e.g. {layer: nn.Linear(student_width, teacher_width)})"
        )


def hint_loss(
    student_output: Output,
    teacher_output: Output,
    targets: Optional[Tensor] = None,
    *,
    student_layer: str,
    teacher_layer: str,
) -> Tensor:
    """FitNets' hint loss (Romero et al. 2015, arXiv:1412.6550, eq. 3):

        L_hint = 1 / (2 N) * sum_n || r(u_n) - w_n ||^2

    the squared distance between the teacher's hint ``w`` (layer ``teacher_layer``) and the
    student's guided layer ``u`` after the regressor ``r`` (the projection that
    :class:`~kd_lib.outputs.Tapped` applies to ``student_layer``), summed over the feature's
    elements and averaged over the ``N`` examples. The teacher's feature gets no gradient.
    Feature maps of any shape compare once projected to the teacher's shape.
    """
    u = feature_of(student_output, student_layer, "student").float()
    w = feature_of(teacher_output, teacher_layer, "teacher").detach().float()
    _check_features(u, w, "hint_loss")
    return 0.5 * (u - w).pow(2).reshape(len(u), -1).sum(1).mean()


def attention_map(feature: Tensor, p: float = 2.0) -> Tensor:
    """Activation-based attention map of Zagoruyko & Komodakis (2017, arXiv:1612.03928):

        Q = vec( sum_c |A_c|^p ),   returned as Q / ||Q||_2

    for a conv feature ``A`` of shape ``[B, C, *spatial]`` (``[B, C, L]`` for a 1-D CNN),
    flattened to ``[B, prod(spatial)]``: where along the input the layer is active.
    """
    if feature.dim() < 3:
        raise ValueError(
            f"attention_map needs a conv feature [B, C, *spatial], got {tuple(feature.shape)}: "
            "a fully connected layer has no spatial positions to attend to"
        )
    q = feature.float().abs().pow(p).sum(1).reshape(len(feature), -1)
    return q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)


def attention_transfer_loss(
    student_output: Output,
    teacher_output: Output,
    targets: Optional[Tensor] = None,
    *,
    layer_pairs: Sequence[Tuple[str, str]],
    beta: float = 1000.0,
    p: float = 2.0,
) -> Tensor:
    """Attention transfer (Zagoruyko & Komodakis 2017, arXiv:1612.03928), as in the authors' code:

        L_AT = beta / 2 * sum_j mean_(n, i) ( Q_S^j / ||Q_S^j||_2 - Q_T^j / ||Q_T^j||_2 )^2

    over ``layer_pairs`` ``[(student_layer, teacher_layer), ...]`` whose conv features have
    the same spatial size (channel counts may differ: the map sums over channels). The mean
    runs over the batch and the map's positions: the paper's eq. 2 writes the norm of the
    difference and says beta is 1000 "divided by the number of elements in the attention map
    and batch size"; its code (and torchdistill's) square the difference and take the mean,
    with ``p = 2`` and ``beta = 1000``. Add the cross-entropy with
    :func:`kd_lib.schemes.weighted_sum`.
    """
    if not layer_pairs:
        raise ValueError("attention_transfer_loss needs at least one (student_layer, teacher_layer) pair")
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    total = 0.0
    for student_layer, teacher_layer in layer_pairs:
        q_s = attention_map(feature_of(student_output, student_layer, "student"), p)
        q_t = attention_map(feature_of(teacher_output, teacher_layer, "teacher").detach(), p)
        _check_features(q_s, q_t, f"attention_transfer_loss ({student_layer} vs {teacher_layer}) spatial size")
        total = total + (q_s - q_t).pow(2).mean()
    return beta / 2 * total
