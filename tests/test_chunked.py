"""Chunked token-level losses (kd_lib.chunked): the same values and gradients as the plain code,
masks and ignore_index included, and the memory they promise, at a size small enough for a test."""
import functools

import pytest
import torch

import kd_lib
from kd_lib import chunked
from kd_lib import losses as L
from kd_lib.lab.memory import peak_memory

LOSSES = [
    ("kd_loss", L.kd_loss, dict(temperature=2.0)),
    ("soft_cross_entropy", L.soft_cross_entropy, dict(temperature=3.0)),
    ("reverse_kl", L.reverse_kl, dict(temperature=1.5)),
    ("generalized_jsd 0.3", L.generalized_jsd, dict(beta=0.3, temperature=2.0)),
    ("generalized_jsd 0", L.generalized_jsd, dict(beta=0.0)),
    ("generalized_jsd 1", L.generalized_jsd, dict(beta=1.0)),
    ("skew_kl", L.skew_kl, dict(skew=0.1)),
    ("total_variation", L.total_variation, dict(temperature=2.0)),
    ("distillation_loss", L.distillation_loss, dict(temperature=2.0, alpha=0.3)),
    ("distillation_loss jsd", L.distillation_loss,
     dict(temperature=2.0, alpha=0.5, divergence=functools.partial(L.generalized_jsd, beta=0.5))),
    ("distillation_loss alpha 0", L.distillation_loss, dict(temperature=4.0, alpha=0.0)),
]


def _case(seed=0, batch=3, length=7, vocab=50, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    student = (torch.randn(batch, length, vocab, generator=generator) * 3).to(dtype)
    teacher = (torch.randn(batch, length, vocab, generator=generator) * 3).to(dtype)
    targets = torch.randint(0, vocab, (batch, length), generator=generator)
    targets[0, :3] = -100  # padding inside a chunk
    targets[2] = -100  # a whole sequence of padding: some chunks keep nothing
    mask = torch.rand(batch, length, generator=generator) > 0.3
    return student, teacher, targets, mask


def _value_and_grad(fn, student, *args, scale=0.7, **kwargs):
    student = student.clone().requires_grad_()
    value = fn(student, *args, **kwargs)
    (value * scale).backward()  # a scale != 1, as in alpha * loss: the backward scales in place
    return value.detach(), student.grad


@pytest.mark.parametrize("name,fn,hyper", LOSSES, ids=[case[0] for case in LOSSES])
@pytest.mark.parametrize("rows", [1, 4, 20])
def test_chunked_equals_unchunked(name, fn, hyper, rows):
    student, teacher, targets, mask = _case()
    extra = {} if fn is L.distillation_loss else {"mask": mask}
    plain = _value_and_grad(fn, student, teacher, targets, chunk_size=0, **extra, **hyper)
    chunks = _value_and_grad(fn, student, teacher, targets, chunk_size=rows, **extra, **hyper)
    torch.testing.assert_close(chunks[0], plain[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunks[1], plain[1], rtol=1e-5, atol=1e-6)
    assert float(plain[1].abs().max()) > 1e-4  # the comparison is of real gradients


@pytest.mark.parametrize("name,fn,hyper", LOSSES[:8], ids=[case[0] for case in LOSSES[:8]])
def test_chunked_without_targets_and_in_bfloat16(name, fn, hyper):
    student, teacher, _, _ = _case(seed=1, dtype=torch.bfloat16)
    plain = _value_and_grad(fn, student, teacher, chunk_size=0, **hyper)
    chunks = _value_and_grad(fn, student, teacher, chunk_size=5, **hyper)
    assert chunks[1].dtype == torch.bfloat16  # the gradient keeps the logits' dtype
    torch.testing.assert_close(chunks[0], plain[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunks[1].float(), plain[1].float(), rtol=1e-2, atol=1e-6)  # bf16 rounding


def test_all_masked_gives_zero_and_zero_gradient():
    student, teacher, _, _ = _case()
    value, grad = _value_and_grad(L.kd_loss, student, teacher, mask=torch.zeros(3, 7, dtype=torch.bool),
                                  chunk_size=2)
    assert float(value) == 0.0 and float(grad.abs().max()) == 0.0


def test_automatic_chunking_threshold(monkeypatch):
    logits = torch.zeros(8, 100)
    assert chunked.rows_per_chunk(logits, None) == 0  # small: plain code
    monkeypatch.setattr(chunked, "AUTO_CHUNK_ELEMENTS", 800)
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 300)
    assert chunked.rows_per_chunk(logits, None) == 3
    assert chunked.rows_per_chunk(logits, 0) == 0
    assert chunked.rows_per_chunk(logits, 8) == 0  # one chunk would hold everything
    for bad in (-1, 2.5, True, "4"):
        with pytest.raises(ValueError, match="chunk_size"):
            chunked.rows_per_chunk(logits, bad)


def test_a_custom_divergence_is_chunked_only_when_asked():
    calls = []

    def divergence(z, v, targets, **kwargs):
        calls.append(z.shape[0])
        return L.kd_loss(z, v, targets, **kwargs)

    student, teacher, targets, _ = _case()
    flat = [t.reshape(-1, *t.shape[2:]) for t in (student, teacher, targets)]
    L.distillation_loss(*flat, temperature=2.0, alpha=0.5, divergence=divergence)
    assert calls == [21]
    calls.clear()
    L.distillation_loss(*flat, temperature=2.0, alpha=0.5, divergence=divergence, chunk_size=10)
    assert calls == [10, 10, 1]


def test_second_backward_and_no_grad():
    student, teacher, _, _ = _case()
    student.requires_grad_()
    value = L.kd_loss(student, teacher, chunk_size=4)
    value.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="only once"):
        value.backward()
    with torch.no_grad():
        torch.testing.assert_close(L.kd_loss(student, teacher, chunk_size=4), L.kd_loss(student, teacher, chunk_size=0))


def test_train_with_a_chunked_loss_matches_the_plain_loss():
    torch.manual_seed(0)
    inputs, labels = torch.randn(64, 12), torch.randint(0, 30, (64,))
    teacher = torch.nn.Linear(12, 30)
    results = []
    for chunk_size in (0, 5):
        torch.manual_seed(1)
        student = torch.nn.Linear(12, 30)
        loss = functools.partial(L.distillation_loss, temperature=2.0, alpha=0.5, chunk_size=chunk_size)
        kd_lib.train(student, (inputs, labels), teacher=teacher, loss_fn=loss,
                     config=kd_lib.TrainConfig(num_epochs=2, batch_size=16, progress=False, device="cpu"))
        results.append(student.weight.detach())
    torch.testing.assert_close(results[0], results[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_peak_memory_of_forward_and_backward(dtype):
    """At 512 x 4,096 the plain kd_loss peaks at several logits tensors; chunked, at the gradient
    plus one chunk's float32 temporaries (4 positions, 1/128 of the positions, as the automatic
    chunks are at 4,096 x 32,000)."""
    student, teacher = torch.randn(512, 4096, dtype=dtype), torch.randn(512, 4096, dtype=dtype)
    one = student.numel() * student.element_size()
    ratios = {}
    for chunk_size in (0, 4):
        student.grad = None
        leaf = student.requires_grad_()
        peak = peak_memory(lambda: L.kd_loss(leaf, teacher, temperature=2.0, chunk_size=chunk_size).backward())
        assert peak.retained == one  # the gradient, nothing else
        ratios[chunk_size] = peak.ratio(one)
    assert ratios[0] >= 4.0  # the measurement sees the plain code's temporaries
    assert ratios[4] <= 1.25, ratios
