"""kd_lib.lm.gpt: the tiny GPT (shapes, causality, cache, checkpoints) and token-level distillation with it."""
import copy
from functools import partial

import pytest
import torch

import kd_lib
from kd_lib.lm.gpt import GPT, GPTConfig
from kd_lib.metrics import count_parameters
from kd_lib.pretrained import load_pretrained, save_pretrained

V = 104



def tiny(**overrides):
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**dict(vocab_size=V, block_size=24, n_layer=2, n_head=2, n_embd=32), **overrides}))


def tokens(batch=3, length=10, seed=0):
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_parameter_counts():
    model = tiny()
    assert model(tokens()).shape == (3, 10, V)
    teacher = GPT(GPTConfig(vocab_size=V, block_size=56, n_layer=3, n_head=4, n_embd=96))
    student = GPT(GPTConfig(vocab_size=V, block_size=56, n_layer=1, n_head=2, n_embd=64))
    assert 300_000 < count_parameters(teacher) < 400_000 and 50_000 < count_parameters(student) < 70_000
    assert "head.weight" not in model.state_dict()  # the output layer is the (tied) token embedding


def test_causal_attention_and_right_padding():
    model = tiny().eval()
    x = tokens()
    changed = x.clone()
    changed[:, 6:] = 0  # e.g. padding after the end of a story
    with torch.no_grad():
        a, b = model(x), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])  # earlier positions never see later tokens
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_cached_decoding_matches_the_full_forward():
    model = tiny().eval()
    x = tokens(length=12)
    with torch.no_grad():
        full = model(x)
        logits, cache = model.forward_cached(x[:, :5])
        steps = [logits]
        for t in range(5, 12):
            logits, cache = model.forward_cached(x[:, t : t + 1], cache)
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_bad_input_raises_clear_errors():
    model = tiny()
    with pytest.raises(ValueError, match="integer tokens"):
        model(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="block_size"):
        model(tokens(length=25))
    with pytest.raises(ValueError, match="token ids"):
        model(torch.tensor([[1, V]]))
    with pytest.raises(ValueError, match="divisible"):
        GPT(GPTConfig(n_embd=30, n_head=4))


def test_safetensors_round_trip_in_float16(tmp_path):
    model = tiny().eval()
    save_pretrained(copy.deepcopy(model).half(), "gpt_test", {"note": "test"}, data_dir=tmp_path)
    loaded = load_pretrained("gpt_test", data_dir=tmp_path)
    assert isinstance(loaded, GPT) and next(loaded.parameters()).dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens()), model(tokens()), atol=2e-3, rtol=0)


def lm_batch(seed=0):
    x = tokens(batch=6, length=12, seed=seed)
    y = torch.roll(x, -1, dims=1)
    lengths = [12, 3, 9, 1, 7, 12]  # unequal padding: per-token averaging matters
    for row, n in enumerate(lengths):
        y[row, n:] = -100
    return x, y


def test_token_level_distillation_is_normalised_per_token_across_accumulation():
    teacher, x, y = tiny(n_layer=1).eval(), *lm_batch()
    loss_fn = partial(kd_lib.distillation_loss, temperature=2.0, alpha=0.3)
    students = []
    for micro, accum in ((6, 1), (2, 3)):
        student = tiny(n_embd=16, n_head=2)
        config = kd_lib.TrainConfig(num_epochs=1, batch_size=micro, grad_accum_steps=accum, optimizer="sgd", lr=0.1,
                                    progress=False, seed=0)
        kd_lib.train(student, (x, y), teacher=teacher, loss_fn=loss_fn, config=config)
        students.append(student)
    for a, b in zip(students[0].parameters(), students[1].parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)  # one step, same update


def test_distillation_lowers_the_divergence_and_rejects_a_vocabulary_mismatch():
    teacher, x, y = tiny(n_layer=1).eval(), *lm_batch()
    with torch.no_grad():
        teacher.tok_emb.weight.mul_(30)  # confident predictions: something to learn
    student = tiny(n_embd=16)
    loss_fn = partial(kd_lib.distillation_loss, temperature=1.0, alpha=0.0, divergence=kd_lib.reverse_kl)
    config = kd_lib.TrainConfig(num_epochs=15, batch_size=6, lr=2e-2, progress=False)
    history = kd_lib.train(student, (x, y), teacher=teacher, loss_fn=loss_fn, config=config)
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    wrong_vocab = GPT(GPTConfig(vocab_size=V + 8, block_size=24, n_layer=1, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="vocabulary size mismatch"):
        kd_lib.train(student, (x, y), teacher=wrong_vocab, loss_fn=loss_fn, config=config)
