"""kd_lib.lm.hf: kd_lib losses and kd_lib.train on `transformers` causal LMs, offline.

`transformers` and `tokenizers` are pinned in requirements.txt, so these always run. The models
are tiny GPT-2s built from a config and the tokenizers are trained here: nothing is downloaded
(HF_HUB_OFFLINE is set before transformers is imported). Chapter 07 runs the same path under nbval.
"""
import os
from functools import partial

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # read when huggingface_hub is imported: never touch the network
import transformers  # noqa: E402

import kd_lib  # noqa: E402
from kd_lib.lm.hf import HFCausalLM, encode_for_lm, train_tokenizer  # noqa: E402




def tiny_gpt2(layers, vocab=50, seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=vocab, n_positions=32, n_embd=32, n_layer=layers, n_head=2)
    return transformers.GPT2LMHeadModel(config)


def batch(vocab=50):
    tokens = torch.randint(3, vocab, (4, 12), generator=torch.Generator().manual_seed(0))
    tokens[1, 7:] = 0  # right padding
    tokens[3, 4:] = 0
    targets = tokens[:, 1:].masked_fill(tokens[:, 1:] == 0, -100)
    return tokens[:, :-1], targets


def test_adapter_returns_logits_and_losses_accept_them():
    teacher, student = HFCausalLM(tiny_gpt2(2)).eval(), HFCausalLM(tiny_gpt2(1, seed=1))
    inputs, targets = batch()
    logits = student(inputs)
    assert logits.shape == (4, 11, 50)
    with torch.no_grad():
        teacher_logits = teacher(inputs)
    loss = kd_lib.distillation_loss(logits, teacher_logits, targets, temperature=2.0, alpha=0.5)
    loss.backward()
    assert torch.isfinite(loss) and student.model.transformer.wte.weight.grad is not None
    with pytest.raises(ValueError, match="vocabulary size mismatch"):
        kd_lib.kd_loss(logits, HFCausalLM(tiny_gpt2(1, vocab=60))(inputs))


def test_kd_lib_train_distils_a_transformers_model():
    teacher, student = HFCausalLM(tiny_gpt2(2)), HFCausalLM(tiny_gpt2(1, seed=1))
    loss_fn = partial(kd_lib.distillation_loss, temperature=1.0, alpha=0.0, divergence=kd_lib.reverse_kl)
    config = kd_lib.TrainConfig(num_epochs=8, batch_size=2, grad_accum_steps=2, lr=5e-3, progress=False)
    history = kd_lib.train(student, batch(), teacher=teacher, loss_fn=loss_fn, config=config)
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]


STORIES = ["once upon a time there was a fox named tom .", "long ago there lived a queen named mia .",
           "tom liked the apples ."]


def test_a_trained_tokenizer_and_padded_batches():
    tokenizer = train_tokenizer(STORIES, vocab_size=40)
    assert [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id] == [0, 1, 2]
    inputs, targets = encode_for_lm(tokenizer, STORIES, max_length=64)
    lengths = [len(tokenizer(s)["input_ids"]) + 2 for s in STORIES]  # with <bos> and <eos>
    assert inputs.shape == targets.shape == (3, max(lengths) - 1)
    for row, length in enumerate(lengths):  # real targets, then -100 exactly where padding is
        assert (targets[row] != -100).sum() == length - 1 and targets[row, length - 2] == tokenizer.eos_token_id
        assert (inputs[row, length:] == tokenizer.pad_token_id).all()
    words = train_tokenizer(STORIES, vocab_size=100, kind="word")
    assert words.tokenize(STORIES[0]) == STORIES[0].split()
    with pytest.raises(ValueError, match="max_length"):
        encode_for_lm(tokenizer, STORIES, max_length=4)
    with pytest.raises(ValueError, match="kind"):
        train_tokenizer(STORIES, 40, kind="chars")


def test_the_attention_mask_hides_padding_from_the_model():
    torch.manual_seed(0)
    model = tiny_gpt2(1).eval()
    padded = torch.tensor([[0, 0, 5, 6]])  # left padding: only the mask keeps the real tokens clean
    with torch.no_grad():
        masked = HFCausalLM(model, pad_token_id=0)(padded)[0, -1]
        unmasked = HFCausalLM(model)(padded)[0, -1]
    assert not torch.allclose(masked, unmasked, atol=1e-4)  # the mask changes what the model sees
    with pytest.raises(ValueError, match="integer token ids"):
        HFCausalLM(model)(torch.randn(2, 3))
