"""kd_lib.total_variation, the book's objective beyond KL (chapter 11): reference values against an
independent float64 NumPy computation, gradients (autograd.gradcheck in float64 and the closed
form), masks, errors, extreme logits, and one training through kd_lib.train."""
import inspect
from functools import partial

import numpy as np
import pytest
import torch

import kd_lib
from kd_lib import ModelOutput, TrainConfig, kd_loss, total_variation, train
from kd_lib.lm.gpt import GPT, GPTConfig
from kd_lib.models import MLP, MLPConfig


def np_softmax(z, T=1.0):
    z = np.asarray(z, dtype=np.float64) / T
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def np_tv(student, teacher, T=1.0):
    return 0.5 * np.abs(np_softmax(student, T) - np_softmax(teacher, T)).sum(-1)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 10, generator=g) * 3, torch.randn(8, 10, generator=g) * 3


@pytest.fixture
def token_logits():
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(3, 5, 7, generator=g), torch.randn(3, 5, 7, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    return student, teacher, mask


# ----------------------------------------------------------------------------- values
@pytest.mark.parametrize("T", [0.5, 1.0, 2.0, 5.0])
def test_matches_numpy_reference(logits, T):
    student, teacher = logits
    expected = np_tv(student.numpy(), teacher.numpy(), T).mean()
    assert total_variation(student, teacher, temperature=T).item() == pytest.approx(expected, rel=1e-5)


def test_a_hand_computed_value():
    # p = (0.5, 0.5), q = (0.9, 0.1): TV = (0.4 + 0.4) / 2 = 0.4
    p, q = torch.tensor([[0.5, 0.5]]).log(), torch.tensor([[0.9, 0.1]]).log()
    assert total_variation(q, p).item() == pytest.approx(0.4, abs=1e-6)


def test_zero_at_a_perfect_match_symmetric_and_bounded(logits):
    student, teacher = logits
    assert total_variation(teacher.clone(), teacher).item() == pytest.approx(0.0, abs=1e-7)
    assert total_variation(student + 3.0, student).item() == pytest.approx(0.0, abs=1e-6)  # shift-invariant
    torch.testing.assert_close(total_variation(student, teacher), total_variation(teacher, student))
    far = total_variation(torch.tensor([[50.0, 0.0]]), torch.tensor([[0.0, 50.0]]))
    assert far.item() == pytest.approx(1.0, abs=1e-6)
    assert 0.0 <= total_variation(student, teacher).item() <= 1.0


def test_pinsker_bounds_it_by_the_kl(logits):
    # Pinsker's inequality: TV(p, q) <= sqrt(KL(p || q) / 2), position by position
    student, teacher = logits
    for i in range(len(student)):
        tv = total_variation(student[i : i + 1], teacher[i : i + 1]).item()
        kl = kd_loss(student[i : i + 1], teacher[i : i + 1]).item()
        assert tv <= (kl / 2) ** 0.5 + 1e-6


def test_accepts_model_outputs(logits):
    student, teacher = logits
    wrapped = total_variation(ModelOutput(student, {}), ModelOutput(teacher, {}))
    torch.testing.assert_close(wrapped, total_variation(student, teacher))


# ----------------------------------------------------------------------------- gradients
def test_gradcheck_in_float64():
    g = torch.Generator().manual_seed(2)
    student = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(4, 6, generator=g, dtype=torch.float64)
    assert total_variation(student, teacher).dtype == torch.float64
    for T in (1.0, 3.0):
        assert torch.autograd.gradcheck(lambda z: total_variation(z, teacher, temperature=T), (student,))
    mask = torch.tensor([True, False, True, True])
    assert torch.autograd.gradcheck(lambda z: total_variation(z, teacher, mask=mask), (student,))


def test_gradient_has_the_closed_form(logits):
    student, teacher = logits
    T, N = 2.0, len(student)
    z = student.clone().requires_grad_(True)
    total_variation(z, teacher, temperature=T).backward()
    q, p = torch.softmax(student / T, -1), torch.softmax(teacher / T, -1)
    s = torch.sign(q - p)
    expected = q * (s - (q * s).sum(-1, keepdim=True)) / (2 * T * N)
    torch.testing.assert_close(z.grad, expected, rtol=1e-5, atol=1e-8)
    assert (N * z.grad).abs().max() <= 1 / T


def test_gradient_reaches_the_student_and_never_the_teacher(logits):
    student, teacher = (t.clone().requires_grad_(True) for t in logits)
    total_variation(student, teacher, temperature=2.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


# ----------------------------------------------------------------------------- masks
def test_mask_averages_over_kept_positions_only(token_logits):
    student, teacher, mask = token_logits
    expected = np_tv(student.numpy(), teacher.numpy())[mask.numpy()].mean()
    noisy = student.clone()
    noisy[~mask] = 1e4  # garbage in padded positions must not matter
    assert total_variation(noisy, teacher, mask=mask).item() == pytest.approx(expected, rel=1e-5)


def test_targets_mask_through_ignore_index(token_logits):
    student, teacher, mask = token_logits
    targets = torch.randint(0, 7, mask.shape, generator=torch.Generator().manual_seed(3))
    targets[~mask] = -100
    torch.testing.assert_close(total_variation(student, teacher, targets), total_variation(student, teacher, mask=mask))
    both = total_variation(student, teacher, targets, mask=torch.arange(5).expand(3, 5) < 2)
    torch.testing.assert_close(both, total_variation(student, teacher, mask=mask & (torch.arange(5) < 2)))


def test_without_mask_averages_over_every_token(token_logits):
    student, teacher, _ = token_logits
    expected = np_tv(student.numpy(), teacher.numpy()).mean()
    assert total_variation(student, teacher).item() == pytest.approx(expected, rel=1e-5)


def test_all_masked_batch_gives_zero_and_zero_gradient(token_logits):
    student, teacher, mask = token_logits
    z = student.clone().requires_grad_(True)
    value = total_variation(z, teacher, mask=torch.zeros_like(mask))
    value.backward()
    assert value.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))
    y = torch.full(mask.shape, -100)
    assert total_variation(student, teacher, y).item() == 0.0


# ----------------------------------------------------------------------------- dtypes, extremes
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(logits, dtype):
    student, teacher = (t.to(dtype) for t in logits)
    value = total_variation(student, teacher, temperature=4.0)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value, total_variation(student.float(), teacher.float(), temperature=4.0))


def test_logits_of_plus_minus_1e4_stay_finite():
    student = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]], requires_grad=True)
    teacher = torch.tensor([[-1e4, 1e4, 0.0], [1e4, -1e4, -1e4]])
    for T in (0.5, 1.0, 8.0):
        value = total_variation(student, teacher, temperature=T)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(student.grad).all()
        assert value.item() == pytest.approx(1.0, abs=1e-6)
        student.grad = None


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("T", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_raises(logits, T):
    with pytest.raises(ValueError, match="temperature"):
        total_variation(*logits, temperature=T)


def test_vocabulary_and_shape_mismatch_raise(logits):
    student, teacher = logits
    with pytest.raises(ValueError, match="vocabulary size mismatch"):
        total_variation(student[:, :9], teacher)
    with pytest.raises(ValueError, match="shape mismatch"):
        total_variation(student[:4], teacher)


def test_bad_mask_and_labels_raise(token_logits):
    student, teacher, mask = token_logits
    with pytest.raises(ValueError, match="mask shape"):
        total_variation(student, teacher, mask=mask[:, :4])
    with pytest.raises(ValueError, match="dtype torch.bool"):
        total_variation(student, teacher, mask=mask.float())
    with pytest.raises(ValueError, match="labels must lie"):
        total_variation(student, teacher, torch.full(mask.shape, 9))


def test_integer_logits_and_positional_hyper_parameters_raise(logits):
    with pytest.raises(ValueError, match="floating point"):
        total_variation(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(TypeError, match="by name"):
        total_variation(*logits, 2.0)


# ----------------------------------------------------------------------------- the one contract
def test_signature_follows_the_one_loss_contract():
    params = list(inspect.signature(total_variation).parameters.values())
    assert [p.name for p in params[:3]] == ["student_logits", "teacher_logits", "targets"]
    assert [p.kind for p in params[:3]] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * 3
    assert params[2].default is None
    assert all(p.kind == inspect.Parameter.KEYWORD_ONLY for p in params[3:])
    assert "total_variation" in kd_lib.__all__ and "total_variation" in kd_lib.losses.__all__


def _moved(before, module):
    return all(not torch.equal(a, b.detach()) for a, b in zip(before, module.parameters()))


def test_trains_through_kd_lib_train_on_classes():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(96) % 10
    x = torch.randn(10, 40, generator=g)[labels] + torch.randn(96, 40, generator=g)
    torch.manual_seed(0)
    teacher = MLP(MLPConfig(hidden=(32,))).eval()
    torch.manual_seed(1)
    student = MLP(MLPConfig(hidden=(32,)))
    before = [p.detach().clone() for p in student.parameters()]
    config = TrainConfig(num_epochs=3, batch_size=32, lr=3e-3, progress=False, device="cpu")
    history = train(student, (x, None), teacher=teacher, loss_fn=partial(total_variation, temperature=2.0),
                    config=config)
    losses = history["train_loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0] and _moved(before, student)


def test_trains_through_kd_lib_train_on_padded_tokens():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 12, (24, 9), generator=g)
    y = torch.roll(x, -1, dims=1)
    y[:12, 6:] = -100
    torch.manual_seed(0)
    teacher = GPT(GPTConfig(vocab_size=12, block_size=10, n_layer=2, n_head=2, n_embd=16)).eval()
    torch.manual_seed(1)
    student = GPT(GPTConfig(vocab_size=12, block_size=10, n_layer=1, n_head=2, n_embd=16))
    before = [p.detach().clone() for p in student.parameters()]
    config = TrainConfig(num_epochs=2, batch_size=8, lr=3e-3, progress=False, device="cpu")
    history = train(student, (x, y), teacher=teacher, loss_fn=total_variation, config=config)
    assert all(np.isfinite(history["train_loss"])) and _moved(before, student)
