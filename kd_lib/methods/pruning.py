"""Structured pruning: remove whole channels, neurons, heads or blocks, then recover by distillation.

Pruning returns a *new, smaller dense model* (nothing is masked): the kept units' weights are
copied in, so its parameter count, speed and memory are those of its shape.

* CNN (:class:`kd_lib.models.CNN1D`): :func:`cnn_importance` scores every conv channel and
  every dense neuron, by the L1 norm of its weights (Li et al. 2017, "Pruning Filters for
  Efficient ConvNets") or by its mean activation on a calibration set (the activation-based
  score of Minitron, Muralidharan et al. 2024); :func:`prune_cnn` keeps the highest-scoring
  units.
* GPT (:class:`kd_lib.lm.gpt.GPT`), Minitron-style: :func:`gpt_importance` scores on calibration
  tokens (1) each MLP neuron by its mean absolute activation, (2) each attention head by the
  mean L2 norm of its output, (3) each embedding channel by the mean absolute value of every
  LayerNorm's output in that channel, and (4) each block by how much removing it moves the
  model's predictions (KL from the full model's next-token distribution);
  :func:`prune_gpt` keeps the top units of each kind (width) and a subset of blocks (depth).

Importances are computed in eval mode, without gradients; the source model is not modified.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..lm.gpt import GPT, GPTConfig
from ..models import CNN1D, CNN1DConfig

Tensor = torch.Tensor

__all__ = ["cnn_importance", "prune_cnn", "GPTImportance", "gpt_importance", "prune_gpt", "top_units"]


def top_units(scores: Tensor, keep: int, name: str = "units") -> Tensor:
    """Indices of the ``keep`` highest ``scores``, in increasing index order (ties: lower index)."""
    if scores.dim() != 1:
        raise ValueError(f"{name}: scores must be 1-D, got shape {tuple(scores.shape)}")
    if not 1 <= keep <= len(scores):
        raise ValueError(f"{name}: keep must lie in [1, {len(scores)}], got {keep}")
    if not torch.isfinite(scores).all():
        raise ValueError(f"{name}: scores contain NaN or inf")
    order = torch.sort(scores.double(), descending=True, stable=True).indices
    return order[:keep].sort().values


def _convs_and_norms(model: CNN1D):
    layers = list(model.features)
    convs = [m for m in layers if isinstance(m, nn.Conv1d)]
    norms = [m for m in layers if isinstance(m, nn.BatchNorm1d)]
    return convs, norms


@torch.no_grad()
def cnn_importance(model: CNN1D, method: str = "l1", inputs: Optional[Tensor] = None) -> List[Tensor]:
    """One score per unit: a tensor per conv block (its channels), then one for the dense layer.

    ``method="l1"``: the L1 norm of each conv filter (``weight[c]``) and of each dense neuron's
    input weights. ``method="activation"``: the mean, over the calibration ``inputs`` and the
    positions, of each unit's output after BatchNorm and ReLU (each dense neuron's after ReLU).
    """
    if not isinstance(model, CNN1D):
        raise ValueError(f"cnn_importance expects a kd_lib.models.CNN1D, got {type(model).__name__}")
    convs, _ = _convs_and_norms(model)
    dense = model.dense[1]
    if method == "l1":
        return [conv.weight.abs().sum(dim=(1, 2)) for conv in convs] + [dense.weight.abs().sum(1)]
    if method != "activation":
        raise ValueError(f"method must be 'l1' or 'activation', got {method!r}")
    if inputs is None or inputs.dim() != 2 or len(inputs) < 1:
        raise ValueError("method='activation' needs calibration inputs [B, in_features]")
    relus = [m for m in model.features if isinstance(m, nn.ReLU)] + [model.dense[2]]
    sums: Dict[int, Tensor] = {}

    def hook(index):
        def record(_module, _args, output):
            dims = [0] + list(range(2, output.dim()))
            sums[index] = output.float().mean(dims)
        return record

    was_training = model.training
    model.eval()
    handles = [relu.register_forward_hook(hook(i)) for i, relu in enumerate(relus)]
    try:
        model(inputs.to(next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [sums[i] for i in range(len(relus))]


@torch.no_grad()
def prune_cnn(model: CNN1D, channels: Sequence[int], hidden: int, importance: Sequence[Tensor]) -> CNN1D:
    """A new :class:`CNN1D` with ``channels[i]`` channels in conv block ``i`` and ``hidden`` dense
    neurons: the top units by ``importance`` (from :func:`cnn_importance`), weights copied.

    Removing a conv channel removes its filter, bias and BatchNorm entries, and its input slice
    in the next conv (or its columns in the dense layer, where the flattened features are
    channel-major: column ``c * length + position``).
    """
    if not isinstance(model, CNN1D):
        raise ValueError(f"prune_cnn expects a kd_lib.models.CNN1D, got {type(model).__name__}")
    old = model.config
    if len(channels) != len(old.channels):
        raise ValueError(f"channels must give {len(old.channels)} widths, got {list(channels)}")
    if len(importance) != len(old.channels) + 1:
        raise ValueError(f"importance must hold {len(old.channels) + 1} tensors (conv blocks, then dense)")
    keep = [top_units(score, k, f"conv block {i}")
            for i, (score, k) in enumerate(zip(importance, channels))]
    keep_hidden = top_units(importance[-1], hidden, "dense layer")
    for i, (score, width) in enumerate(zip(importance, list(old.channels) + [old.hidden])):
        if len(score) != width:
            raise ValueError(f"importance[{i}] has {len(score)} scores for {width} units")
    config = CNN1DConfig(**{**old.__dict__, "channels": tuple(channels), "hidden": hidden})
    pruned = CNN1D(config).to(next(model.parameters()).device)
    (old_convs, old_norms), (new_convs, new_norms) = _convs_and_norms(model), _convs_and_norms(pruned)
    previous = torch.arange(1)
    for i, kept in enumerate(keep):
        new_convs[i].weight.copy_(old_convs[i].weight[kept][:, previous])
        new_convs[i].bias.copy_(old_convs[i].bias[kept])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new_norms[i], name).copy_(getattr(old_norms[i], name)[kept])
        new_norms[i].num_batches_tracked.copy_(old_norms[i].num_batches_tracked)
        previous = kept
    length = model.dense[1].in_features // old.channels[-1]  # positions per flattened channel
    columns = (previous[:, None] * length + torch.arange(length)).reshape(-1)
    pruned.dense[1].weight.copy_(model.dense[1].weight[keep_hidden][:, columns])
    pruned.dense[1].bias.copy_(model.dense[1].bias[keep_hidden])
    pruned.head.weight.copy_(model.head.weight[:, keep_hidden])
    pruned.head.bias.copy_(model.head.bias)
    pruned.train(model.training)
    return pruned


@dataclass
class GPTImportance:
    """Scores from :func:`gpt_importance`; higher means more important."""

    neurons: List[Tensor]  # per block: [mlp_width] mean |GELU output|
    heads: List[Tensor]  # per block: [n_head] mean L2 norm of the head's attention output
    channels: Tensor  # [n_embd] mean |LayerNorm output|, summed over every LayerNorm
    blocks: Tensor  # [n_layer] KL(full model || model without the block), nats per token


def _kl(reference: Tensor, logits: Tensor) -> float:
    return float(F.kl_div(F.log_softmax(logits.float(), -1), F.log_softmax(reference.float(), -1),
                          log_target=True, reduction="none").sum(-1).mean())


@torch.no_grad()
def gpt_importance(model: GPT, tokens: Tensor) -> GPTImportance:
    """Minitron's activation-based importances of ``model`` on calibration ``tokens`` [B, L]."""
    if not isinstance(model, GPT):
        raise ValueError(f"gpt_importance expects a kd_lib.lm.gpt.GPT, got {type(model).__name__}")
    model._check(tokens, 0)
    was_training = model.training
    model.eval()
    tokens = tokens.to(next(model.parameters()).device)
    neurons: Dict[int, Tensor] = {}
    heads: Dict[int, Tensor] = {}
    channels = torch.zeros(model.config.n_embd, device=tokens.device)
    handles = []

    def on_gelu(i):
        def record(_m, _a, output):
            neurons[i] = output.float().abs().mean((0, 1))
        return record

    def on_proj(i, n_head, head_dim):
        def record(_m, args):
            x = args[0].float()  # [B, L, n_head * head_dim], the heads' outputs side by side
            heads[i] = x.view(*x.shape[:2], n_head, head_dim).norm(dim=-1).mean((0, 1))
        return record

    def on_norm(_m, _a, output):
        channels.add_(output.float().abs().mean((0, 1)))

    for i, block in enumerate(model.blocks):
        handles.append(block.mlp[1].register_forward_hook(on_gelu(i)))
        handles.append(block.proj.register_forward_pre_hook(on_proj(i, block.n_head, block.head_dim)))
        handles += [block.ln_1.register_forward_hook(on_norm), block.ln_2.register_forward_hook(on_norm)]
    handles.append(model.ln_f.register_forward_hook(on_norm))
    try:
        full = model(tokens)
    finally:
        for handle in handles:
            handle.remove()
    blocks = []
    for i in range(model.config.n_layer):
        if model.config.n_layer == 1:
            blocks.append(float("inf"))  # the only block cannot be removed
            continue
        blocks.append(_kl(full, _without_block(model, i)(tokens)))
    model.train(was_training)
    return GPTImportance([neurons[i] for i in range(len(model.blocks))],
                         [heads[i] for i in range(len(model.blocks))], channels,
                         torch.tensor(blocks))


def _without_block(model: GPT, index: int) -> GPT:
    kept = [i for i in range(model.config.n_layer) if i != index]
    return prune_gpt(model, None, layers=kept)


@torch.no_grad()
def prune_gpt(
    model: GPT,
    importance: Optional[GPTImportance],
    *,
    n_embd: Optional[int] = None,
    n_head: Optional[int] = None,
    mlp_hidden: Optional[int] = None,
    layers: Optional[Sequence[int]] = None,
) -> GPT:
    """A new, smaller :class:`GPT`: keep the blocks ``layers`` (depth; default all), and in every
    kept block the top ``n_head`` heads and ``mlp_hidden`` MLP neurons, and the top ``n_embd``
    embedding channels throughout (width; default: keep all). ``importance`` (from
    :func:`gpt_importance`) is needed for any width pruning.

    Heads keep their width (``head_dim``); channel pruning slices the embeddings, every
    LayerNorm, the input of ``qkv`` and the first MLP layer, and the output of ``proj`` and the
    second MLP layer, as Minitron does (LayerNorm then normalises over the kept channels only).
    """
    if not isinstance(model, GPT):
        raise ValueError(f"prune_gpt expects a kd_lib.lm.gpt.GPT, got {type(model).__name__}")
    old = model.config
    layers = list(range(old.n_layer)) if layers is None else list(layers)
    if not layers or any(not 0 <= i < old.n_layer for i in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"layers must be distinct block indices in [0, {old.n_layer}), got {layers}")
    width = {"n_embd": n_embd, "n_head": n_head, "mlp_hidden": mlp_hidden}
    if importance is None and any(v is not None for v in width.values()):
        raise ValueError("width pruning (n_embd, n_head, mlp_hidden) needs importance scores")
    n_embd = old.n_embd if n_embd is None else n_embd
    n_head = old.n_head if n_head is None else n_head
    mlp_hidden = old.mlp_width if mlp_hidden is None else mlp_hidden
    for name, value, limit in (("n_embd", n_embd, old.n_embd), ("n_head", n_head, old.n_head),
                               ("mlp_hidden", mlp_hidden, old.mlp_width)):
        if not 1 <= value <= limit:
            raise ValueError(f"{name} must lie in [1, {limit}], got {value}")
    all_channels = torch.arange(old.n_embd)
    ch = all_channels if n_embd == old.n_embd else top_units(importance.channels, n_embd, "channels")
    config = GPTConfig(**{**old.__dict__, "n_layer": len(layers), "n_embd": n_embd, "n_head": n_head,
                          "head_dim": old.head_width, "mlp_hidden": mlp_hidden})
    pruned = GPT(config).to(next(model.parameters()).device)
    pruned.tok_emb.weight.copy_(model.tok_emb.weight[:, ch])
    pruned.pos_emb.weight.copy_(model.pos_emb.weight[:, ch])
    _copy_norm(pruned.ln_f, model.ln_f, ch)
    d = old.head_width
    for new, i in zip(pruned.blocks, layers):
        block = model.blocks[i]
        hd = (torch.arange(old.n_head) if n_head == old.n_head
              else top_units(importance.heads[i], n_head, f"heads of block {i}"))
        nr = (torch.arange(old.mlp_width) if mlp_hidden == old.mlp_width
              else top_units(importance.neurons[i], mlp_hidden, f"neurons of block {i}"))
        inner = (hd[:, None] * d + torch.arange(d)).reshape(-1)  # the kept heads' columns
        rows = torch.cat([inner + part * old.n_head * d for part in range(3)])  # q, k and v
        _copy_norm(new.ln_1, block.ln_1, ch)
        _copy_norm(new.ln_2, block.ln_2, ch)
        new.qkv.weight.copy_(block.qkv.weight[rows][:, ch])
        new.qkv.bias.copy_(block.qkv.bias[rows])
        new.proj.weight.copy_(block.proj.weight[ch][:, inner])
        new.proj.bias.copy_(block.proj.bias[ch])
        new.mlp[0].weight.copy_(block.mlp[0].weight[nr][:, ch])
        new.mlp[0].bias.copy_(block.mlp[0].bias[nr])
        new.mlp[2].weight.copy_(block.mlp[2].weight[ch][:, nr])
        new.mlp[2].bias.copy_(block.mlp[2].bias[ch])
    pruned.train(model.training)
    return pruned


def _copy_norm(new: nn.LayerNorm, old: nn.LayerNorm, channels: Tensor) -> None:
    new.weight.copy_(old.weight[channels])
    new.bias.copy_(old.bias[channels])
