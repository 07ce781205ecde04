"""kd_lib.lm.generation: sampling (with and without a cache), padding masks, on-policy distillation."""
from functools import partial

import pytest
import torch
from torch import nn

import kd_lib
from kd_lib.lm.generation import OnPolicy, padding_mask, sample
from kd_lib.lm.gpt import GPT, GPTConfig

V, BOS, EOS, PAD = 12, 1, 2, 0
IDS = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD)



def model(seed=0, width=16):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=V, block_size=16, n_layer=1, n_head=2, n_embd=width))


class NoCache(nn.Module):
    """The same network without forward_cached: sample() recomputes every prefix."""

    def __init__(self, gpt):
        super().__init__()
        self.gpt = gpt

    def forward(self, tokens):
        return self.gpt(tokens)


def test_samples_start_with_bos_and_pad_after_eos():
    gpt = model()
    out = sample(gpt, 50, 16, generator=torch.Generator().manual_seed(0), **IDS)
    assert out.shape == (50, 16) and bool((out[:, 0] == BOS).all())
    for row in out:
        ends = (row == EOS).nonzero()
        if len(ends):
            assert bool((row[int(ends[0]) + 1 :] == PAD).all())
    again = sample(gpt, 50, 16, generator=torch.Generator().manual_seed(0), **IDS)
    assert torch.equal(out, again) and gpt.training  # reproducible; train mode restored
    uncached = sample(NoCache(gpt), 50, 16, generator=torch.Generator().manual_seed(0), **IDS)
    assert float((uncached == out).float().mean()) > 0.95  # same distribution, up to float rounding
    with pytest.raises(ValueError, match="temperature"):
        sample(gpt, 2, 8, temperature=0.0, **IDS)


def test_low_temperature_is_greedy():
    gpt = model().eval()
    out = sample(gpt, 4, 10, temperature=1e-4, generator=torch.Generator().manual_seed(1), **IDS)
    assert bool((out == out[0]).all())  # every sequence is the arg-max path


def test_padding_mask_matches_lm_targets():
    inputs = torch.tensor([[BOS, 5, 6, EOS, PAD], [BOS, 7, 8, 9, 10]])
    assert padding_mask(inputs, eos_id=EOS, pad_id=PAD).tolist() == [[True, True, True, False, False], [True] * 5]


def test_on_policy_distillation_through_kd_lib_train():
    teacher, student = model(seed=1, width=32).eval(), model(seed=2, width=8)
    tokens = sample(teacher, 32, 16, generator=torch.Generator().manual_seed(0), **IDS)
    data = (tokens[:, :-1], tokens[:, 1:].masked_fill(~padding_mask(tokens[:, :-1], eos_id=EOS, pad_id=PAD), -100))
    policy = OnPolicy(student, max_len=15, student_fraction=0.5, **IDS)
    config = kd_lib.TrainConfig(num_epochs=3, batch_size=8, lr=1e-2, progress=False)
    history = kd_lib.train(student, data, teacher=teacher, loss_fn=partial(kd_lib.generalized_jsd, beta=0.5), augment=policy.augment,
                           config=config)
    assert 0 < policy.student_batches < 12 and len(history) == 3
    assert history["train_loss"][-1] < history["train_loss"][0]
    with pytest.raises(ValueError, match="student_fraction"):
        OnPolicy(student, max_len=15, student_fraction=2.0, **IDS)
