"""kd_lib.lm.topk: caching top-k teacher log-probabilities, the tail rule, the cached teacher."""
import math
from functools import partial

import pytest
import torch

import kd_lib
from kd_lib.lm.gpt import GPT, GPTConfig
from kd_lib.lm.topk import CachedTeacher, TopKCache, expand_topk, topk_cache

V = 20



def teacher_and_inputs():
    torch.manual_seed(0)
    teacher = GPT(GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=1, n_embd=16)).eval()
    with torch.no_grad():
        teacher.tok_emb.weight.mul_(40)  # peaked, teacher-like distributions
    inputs = torch.randint(0, V, (10, 8), generator=torch.Generator().manual_seed(0))
    return teacher, inputs


def test_cache_shapes_dtypes_and_bytes():
    teacher, inputs = teacher_and_inputs()
    cache = topk_cache(teacher, inputs, k=3)
    assert isinstance(cache, TopKCache) and cache.k == 3 and cache.vocab_size == V
    assert cache.values.shape == cache.indices.shape == (10, 8, 3)
    assert cache.values.dtype == torch.float16 and cache.indices.dtype == torch.int16
    assert cache.nbytes == 10 * 8 * 3 * (2 + 2)  # vs 10 * 8 * V * 4 for full float32 logits
    assert bool((cache.values[..., :-1] >= cache.values[..., 1:]).all())  # sorted, most likely first
    with pytest.raises(ValueError, match="k must lie"):
        topk_cache(teacher, inputs, k=V + 1)


def test_full_k_reproduces_the_teacher_exactly():
    teacher, inputs = teacher_and_inputs()
    cache = topk_cache(teacher, inputs, k=V, dtype=torch.float32)
    full = expand_topk(cache.values, cache.indices, V)
    with torch.no_grad():
        logits = teacher(inputs)
    torch.testing.assert_close(full, torch.log_softmax(logits, -1), atol=1e-5, rtol=1e-5)
    student = torch.randn(10, 8, V)
    torch.testing.assert_close(kd_lib.kd_loss(student, full), kd_lib.kd_loss(student, logits), atol=1e-5, rtol=1e-5)


def test_uniform_tail_keeps_the_mass_and_spreads_the_rest_evenly():
    log_p = torch.log_softmax(torch.tensor([[3.0, 2.0, 1.0, 0.0, -1.0, -2.0]]), dim=-1)
    values, indices = log_p.topk(2, dim=-1)
    full = expand_topk(values, indices, 6, tail="uniform").exp()
    torch.testing.assert_close(full.sum(-1), torch.ones(1))
    torch.testing.assert_close(full[0, :2], log_p.exp()[0, :2])
    missing = 1 - float(log_p.exp()[0, :2].sum())
    torch.testing.assert_close(full[0, 2:], torch.full((4,), missing / 4))
    renorm = expand_topk(values, indices, 6, tail="renormalize").exp()
    torch.testing.assert_close(renorm[0, :2], log_p.exp()[0, :2] / log_p.exp()[0, :2].sum())
    assert float(renorm[0, 2:].sum()) == 0.0 and torch.isfinite(expand_topk(values, indices, 6, "renormalize")).all()


def test_information_lost_shrinks_as_k_grows():
    teacher, inputs = teacher_and_inputs()
    with torch.no_grad():
        logits = teacher(inputs)
    lost = []
    for k in (1, 2, 5, V):
        cache = topk_cache(teacher, inputs, k=k, dtype=torch.float32)
        lost.append(float(kd_lib.kd_loss(expand_topk(cache.values, cache.indices, V), logits)))  # KL(p_k || p)
    assert lost[0] > lost[1] > lost[2] > lost[3] and lost[3] < 1e-5


def test_bad_input_raises():
    values, indices = torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="differ in shape"):
        expand_topk(values, indices[:, :2], V)
    with pytest.raises(ValueError, match="does not fit"):
        expand_topk(values, indices, 2)
    with pytest.raises(ValueError, match="tail"):
        expand_topk(values, indices, V, tail="drop")


def test_cached_teacher_serves_kd_lib_train_without_running_the_teacher():
    teacher, inputs = teacher_and_inputs()
    cache = topk_cache(teacher, inputs, k=4)
    cached = CachedTeacher(inputs, cache)
    order = torch.tensor([3, 1, 7])
    expected = expand_topk(cache.values[order], cache.indices[order], V)
    torch.testing.assert_close(cached(inputs[order]), expected)
    with pytest.raises(ValueError, match="not in its cache"):
        cached(inputs[:1].flip(1))
    live = CachedTeacher(inputs, topk_cache(teacher, inputs, k=V, dtype=torch.float32), fallback=teacher)
    mixed = torch.cat([inputs[:2], inputs[:2].flip(1)])  # two cached rows, two new ones
    with torch.no_grad():
        torch.testing.assert_close(live(mixed), torch.log_softmax(teacher(mixed), -1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="tail"):
        CachedTeacher(inputs, cache, tail="drop")
    targets = torch.roll(inputs, -1, dims=1)
    student = GPT(GPTConfig(vocab_size=V, block_size=8, n_layer=1, n_head=1, n_embd=8))
    loss_fn = partial(kd_lib.distillation_loss, temperature=1.0, alpha=0.0)
    config = kd_lib.TrainConfig(num_epochs=20, batch_size=5, lr=1e-2, progress=False, cache_teacher_logits=False)
    history = kd_lib.train(student, (inputs, targets), teacher=cached, loss_fn=loss_fn, config=config)
    assert history["train_loss"][-1] < 0.5 * history["train_loss"][0]
    assert math.isfinite(history["train_loss"][-1])
