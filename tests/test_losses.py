"""kd_lib.losses against independent float64 NumPy references, gradients, edge cases and errors."""
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import kd_lib
from kd_lib import (
    cross_entropy_loss, distillation_loss, generalized_jsd, kd_loss, reverse_kl, skew_kl,
    soft_cross_entropy, soften,
)

DIVERGENCES = [kd_loss, reverse_kl, soft_cross_entropy, generalized_jsd, skew_kl]


def np_softmax(z, T=1.0):
    z = np.asarray(z, dtype=np.float64) / T
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def np_kl(p, q):
    return (p * (np.log(p) - np.log(q))).sum(-1)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 10, generator=g) * 3, torch.randn(8, 10, generator=g) * 3


@pytest.fixture
def token_logits():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(3, 5, 7, generator=g)
    teacher = torch.randn(3, 5, 7, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    return student, teacher, mask


# ----------------------------------------------------------------------------- reference values
def test_soften_matches_numpy_softmax_of_logits_over_temperature(logits):
    student, _ = logits
    for T in (0.5, 1.0, 4.0):
        np.testing.assert_allclose(soften(student, T).numpy(), np_softmax(student.numpy(), T), rtol=1e-5, atol=1e-7)


def test_soften_tends_to_uniform_as_temperature_grows(logits):
    assert torch.allclose(soften(logits[0], 1e6), torch.full((8, 10), 0.1), atol=1e-5)


def test_kd_loss_matches_numpy_reference(logits):
    student, teacher = logits
    for T in (1.0, 2.0, 5.0):
        p, q = np_softmax(teacher.numpy(), T), np_softmax(student.numpy(), T)
        expected = T**2 * np_kl(p, q).mean()
        assert kd_loss(student, teacher, temperature=T).item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_matches_pytorch_kl_div_batchmean_times_t_squared(logits):
    student, teacher = logits
    T = 3.0
    expected = F.kl_div(F.log_softmax(student / T, -1), F.softmax(teacher / T, -1), reduction="batchmean") * T**2
    assert kd_loss(student, teacher, temperature=T).item() == pytest.approx(expected.item(), rel=1e-5)


def test_kd_loss_is_zero_when_student_equals_teacher(logits):
    assert kd_loss(logits[0], logits[0].clone(), temperature=4.0).item() == pytest.approx(0.0, abs=1e-6)


def test_reverse_kl_matches_numpy_reference_and_differs_from_forward(logits):
    student, teacher = logits
    T = 2.0
    p, q = np_softmax(teacher.numpy(), T), np_softmax(student.numpy(), T)
    assert reverse_kl(student, teacher, temperature=T).item() == pytest.approx(T**2 * np_kl(q, p).mean(), rel=1e-5)
    assert abs(reverse_kl(student, teacher, temperature=T).item() - kd_loss(student, teacher, temperature=T).item()) > 1e-3


def test_generalized_jsd_matches_numpy_reference(logits):
    student, teacher = logits
    for beta in (0.1, 0.5, 0.9):
        p, q = np_softmax(teacher.numpy(), 2.0), np_softmax(student.numpy(), 2.0)
        m = beta * p + (1 - beta) * q
        expected = (beta * np_kl(p, m) + (1 - beta) * np_kl(q, m)).mean()
        assert generalized_jsd(student, teacher, beta=beta, temperature=2.0).item() == pytest.approx(expected, rel=1e-5)


def test_generalized_jsd_at_one_half_is_symmetric_and_at_most_log_two(logits):
    student, teacher = logits
    forward = generalized_jsd(student * 10, teacher * 10, beta=0.5).item()
    backward = generalized_jsd(teacher * 10, student * 10, beta=0.5).item()
    assert forward == pytest.approx(backward, rel=1e-5)
    assert forward <= math.log(2) + 1e-6


def test_generalized_jsd_endpoints_are_forward_and_reverse_kl_without_t_squared(logits):
    student, teacher = logits
    T = 2.0
    assert generalized_jsd(student, teacher, beta=0.0, temperature=T).item() == pytest.approx(kd_loss(student, teacher, temperature=T).item() / T**2, rel=1e-5)
    assert generalized_jsd(student, teacher, beta=1.0, temperature=T).item() == pytest.approx(reverse_kl(student, teacher, temperature=T).item() / T**2, rel=1e-5)


def test_generalized_jsd_over_beta_tends_to_forward_kl_as_beta_goes_to_zero(logits):
    student, teacher = logits[0] / 3, logits[1] / 3  # the limit needs beta * p / q << 1
    forward = kd_loss(student, teacher).item()
    assert generalized_jsd(student, teacher, beta=1e-3).item() / 1e-3 == pytest.approx(forward, rel=5e-3)
    assert generalized_jsd(student, teacher, beta=1 - 1e-3).item() / 1e-3 == pytest.approx(reverse_kl(student, teacher).item(), rel=5e-3)


def test_skew_kl_matches_numpy_reference_and_skew_zero_is_forward_kl(logits):
    student, teacher = logits
    p, q = np_softmax(teacher.numpy()), np_softmax(student.numpy())
    expected = np_kl(p, 0.1 * p + 0.9 * q).mean()
    assert skew_kl(student, teacher, skew=0.1).item() == pytest.approx(expected, rel=1e-5)
    assert skew_kl(student, teacher, skew=0.0).item() == pytest.approx(kd_loss(student, teacher).item(), rel=1e-5)


def test_skew_kl_stays_bounded_where_forward_kl_explodes():
    teacher = torch.tensor([[0.0, 0.0]])
    student = torch.tensor([[50.0, -50.0]])  # q puts ~e^-100 on class 1, where p has 0.5
    assert kd_loss(student, teacher).item() > 40
    assert skew_kl(student, teacher, skew=0.1).item() < -0.5 * math.log(0.1 * 0.5) + 1


def test_cross_entropy_loss_matches_pytorch(logits):
    labels = torch.arange(8) % 10
    expected = F.cross_entropy(logits[0], labels)
    assert cross_entropy_loss(logits[0], None, labels).item() == pytest.approx(expected.item(), rel=1e-6)


# ----------------------------------------------------------------------------- gradients
def test_kd_loss_student_gradient_is_t_times_q_minus_p_over_n(logits):
    student, teacher = logits[0].clone().requires_grad_(True), logits[1].clone().requires_grad_(True)
    T, N = 4.0, student.shape[0]
    kd_loss(student, teacher, temperature=T).backward()
    expected = T * (soften(student.detach(), T) - soften(teacher.detach(), T)) / N
    torch.testing.assert_close(student.grad, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss", DIVERGENCES + [functools.partial(distillation_loss, targets=torch.arange(8) % 10, alpha=0.3, temperature=2.0)])
def test_gradient_reaches_the_student_and_never_the_teacher(logits, loss):
    student, teacher = logits[0].clone().requires_grad_(True), logits[1].clone().requires_grad_(True)
    loss(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_soft_cross_entropy_and_kl_give_equal_gradients_and_differ_by_teacher_entropy(logits):
    T = 3.0
    grads = []
    for loss in (kd_loss, soft_cross_entropy):
        student = logits[0].clone().requires_grad_(True)
        value = loss(student, logits[1], temperature=T)
        value.backward()
        grads.append(student.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)
    p = np_softmax(logits[1].numpy(), T)
    entropy = -(p * np.log(p)).sum(-1).mean()
    gap = soft_cross_entropy(*logits, temperature=T).item() - kd_loss(*logits, temperature=T).item()
    assert gap == pytest.approx(T**2 * entropy, rel=1e-4)


def test_high_temperature_soft_loss_tends_to_squared_logit_difference_over_2c(logits):
    """Hinton sec. 2.1: for zero-mean logits and large T, T^2 KL -> sum_i (z_i - v_i)^2 / (2C)."""
    student = logits[0] - logits[0].mean(-1, keepdim=True)
    teacher = logits[1] - logits[1].mean(-1, keepdim=True)
    C = student.shape[-1]
    limit = ((student - teacher) ** 2).sum(-1).mean().item() / (2 * C)
    errors = [abs(kd_loss(student, teacher, temperature=T).item() - limit) / limit for T in (2.0, 10.0, 50.0)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.01
    approx_grad = (student - teacher) / (C * student.shape[0])  # gradient of the limit
    grad_errors = []
    for T in (2.0, 10.0, 50.0):
        leaf = student.clone().requires_grad_(True)
        kd_loss(leaf, teacher, temperature=T).backward()
        grad_errors.append(((leaf.grad - approx_grad).norm() / approx_grad.norm()).item())
    assert grad_errors[0] > grad_errors[1] > grad_errors[2]
    assert grad_errors[2] < 0.05


def test_t_squared_keeps_the_gradient_scale_roughly_constant_across_temperatures(logits):
    norms = []
    for T in (1.0, 4.0, 16.0):
        student = logits[0].clone().requires_grad_(True)
        kd_loss(student, logits[1], temperature=T).backward()
        norms.append(student.grad.norm().item())
    unscaled = [n / T**2 for n, T in zip(norms, (1.0, 4.0, 16.0))]
    assert max(norms) / min(norms) < 5  # stays within a small factor...
    assert unscaled[0] / unscaled[2] > 50  # ...while without T^2 it would shrink ~T^2-fold


# ----------------------------------------------------------------------------- masks and padding
@pytest.mark.parametrize("loss", DIVERGENCES)
def test_mask_averages_over_kept_token_positions_only(token_logits, loss):
    student, teacher, mask = token_logits
    expected = loss(student[mask], teacher[mask], temperature=2.0)
    noisy_student = student.clone()
    noisy_student[~mask] = 1e4  # garbage in padded positions must not matter
    assert loss(noisy_student, teacher, temperature=2.0, mask=mask).item() == pytest.approx(expected.item(), rel=1e-5)


def test_kd_loss_without_mask_averages_over_every_token_not_the_batch(token_logits):
    student, teacher, _ = token_logits
    flat = kd_loss(student.reshape(-1, 7), teacher.reshape(-1, 7))
    assert kd_loss(student, teacher).item() == pytest.approx(flat.item(), rel=1e-6)
    batchmean = F.kl_div(F.log_softmax(student, -1), F.softmax(teacher, -1), reduction="batchmean")
    assert batchmean.item() == pytest.approx(5 * flat.item(), rel=1e-5)  # divides by B, not B*L


def test_distillation_loss_ignores_padding_labels_in_both_terms(token_logits):
    student, teacher, mask = token_logits
    labels = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(2))
    labels[~mask] = -100
    got = distillation_loss(student, teacher, labels, temperature=2.0, alpha=0.4)
    hard = F.cross_entropy(student[mask], labels[mask])
    soft = 4.0 * np_kl(np_softmax(teacher[mask].numpy(), 2.0), np_softmax(student[mask].numpy(), 2.0)).mean()
    assert got.item() == pytest.approx(0.4 * hard.item() + 0.6 * soft, rel=1e-5)


def test_distillation_loss_alpha_weights_the_hard_term(logits):
    labels = torch.arange(8) % 10
    student, teacher = logits
    hard = cross_entropy_loss(student, None, labels).item()
    soft = kd_loss(student, teacher, temperature=3.0).item()
    assert distillation_loss(student, teacher, labels, temperature=3.0, alpha=1.0).item() == pytest.approx(hard, rel=1e-6)
    assert distillation_loss(student, teacher, labels, temperature=3.0, alpha=0.0).item() == pytest.approx(soft, rel=1e-6)
    assert distillation_loss(student, teacher, labels, temperature=3.0, alpha=0.25).item() == pytest.approx(0.25 * hard + 0.75 * soft, rel=1e-6)


def test_distillation_loss_accepts_another_divergence(logits):
    labels = torch.arange(8) % 10
    got = distillation_loss(*logits, labels, temperature=2.0, alpha=0.0, divergence=reverse_kl)
    assert got.item() == pytest.approx(reverse_kl(*logits, temperature=2.0).item(), rel=1e-6)
    jsd = functools.partial(generalized_jsd, beta=0.3)
    got = distillation_loss(*logits, labels, temperature=2.0, alpha=0.0, divergence=jsd)
    assert got.item() == pytest.approx(generalized_jsd(*logits, beta=0.3, temperature=2.0).item(), rel=1e-6)


@pytest.mark.parametrize("loss", DIVERGENCES)
def test_all_masked_batch_gives_zero_and_zero_gradient(token_logits, loss):
    student, teacher, mask = token_logits
    student = student.clone().requires_grad_(True)
    value = loss(student, teacher, temperature=2.0, mask=torch.zeros_like(mask))
    value.backward()
    assert value.item() == 0.0
    assert torch.equal(student.grad, torch.zeros_like(student))


def test_all_ignored_labels_give_zero_not_nan(token_logits):
    student, teacher, _ = token_logits
    student = student.clone().requires_grad_(True)
    labels = torch.full((3, 5), -100)
    value = distillation_loss(student, teacher, labels, temperature=2.0, alpha=0.5)
    value.backward()
    assert value.item() == 0.0 and not torch.isnan(student.grad).any()
    assert cross_entropy_loss(student, None, labels).item() == 0.0


# ----------------------------------------------------------------------------- dtypes and extremes
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("loss", DIVERGENCES)
def test_half_precision_inputs_are_computed_in_float32(logits, loss, dtype):
    student, teacher = (t.to(dtype) for t in logits)
    value = loss(student, teacher, temperature=8.0)
    assert value.dtype == torch.float32
    reference = loss(student.float(), teacher.float(), temperature=8.0)
    assert value.item() == pytest.approx(reference.item(), rel=1e-6)


@pytest.mark.parametrize("loss", DIVERGENCES)
def test_logits_of_plus_minus_1e4_stay_finite(loss):
    student = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], requires_grad=True)
    teacher = torch.tensor([[-1e4, 1e4, 0.0], [1e4, -1e4, -1e4]])
    for T in (1.0, 4.0):
        value = loss(student, teacher, temperature=T)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(student.grad).all()
        student.grad = None


def test_distillation_loss_is_finite_for_extreme_logits():
    student = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    value = distillation_loss(student, torch.tensor([[-1e4, 1e4, 0.0]]), torch.tensor([2]), temperature=1.0, alpha=0.5)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(student.grad).all()


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("T", [0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_or_non_finite_temperature_raises(logits, T):
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(*logits, temperature=T)
    with pytest.raises(ValueError, match="temperature"):
        soften(logits[0], T)


@pytest.mark.parametrize("alpha", [-0.1, 1.1, float("nan")])
def test_alpha_outside_unit_interval_raises(logits, alpha):
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(*logits, torch.arange(8) % 10, temperature=2.0, alpha=alpha)


@pytest.mark.parametrize("beta", [-0.5, 1.5])
def test_beta_outside_unit_interval_raises(logits, beta):
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(*logits, beta=beta)


@pytest.mark.parametrize("loss", DIVERGENCES)
def test_vocabulary_size_mismatch_raises_naming_it(loss):
    with pytest.raises(ValueError, match="vocabulary size mismatch.*151936.*152064"):
        loss(torch.zeros(2, 3, 151936), torch.zeros(2, 3, 152064))


@pytest.mark.parametrize("loss", DIVERGENCES)
def test_shape_mismatch_raises(loss):
    with pytest.raises(ValueError, match="shape mismatch"):
        loss(torch.zeros(4, 10), torch.zeros(5, 10))


def test_mask_of_wrong_shape_or_dtype_raises(token_logits):
    student, teacher, mask = token_logits
    with pytest.raises(ValueError, match="mask shape"):
        kd_loss(student, teacher, mask=mask[:, :4])
    with pytest.raises(ValueError, match="bool"):
        kd_loss(student, teacher, mask=mask.long())


def test_bad_labels_raise(logits):
    with pytest.raises(ValueError, match="labels shape"):
        distillation_loss(*logits, torch.zeros(7, dtype=torch.long), temperature=1.0, alpha=0.5)
    with pytest.raises(ValueError, match=r"lie in \[0, 10\)"):
        distillation_loss(*logits, torch.full((8,), 10), temperature=1.0, alpha=0.5)
    with pytest.raises(ValueError, match="integer"):
        distillation_loss(*logits, torch.zeros(8), temperature=1.0, alpha=0.5)


def test_integer_logits_raise():
    with pytest.raises(ValueError, match="floating point"):
        kd_loss(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3))


def test_public_api_is_exported_from_kd_lib():
    for name in ("soften", "kd_loss", "distillation_loss", "reverse_kl", "generalized_jsd", "train"):
        assert callable(getattr(kd_lib, name))
