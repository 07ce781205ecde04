"""kd_lib.train: the one training loop, checked against a plain PyTorch loop and for every promise it makes."""
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import kd_lib
from kd_lib import TrainConfig, distillation_loss, kd_loss, train
from kd_lib.models import MLP, MLPConfig

QUIET = dict(progress=False, device="cpu")


@pytest.fixture
def blobs():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 6, generator=g) * 3
    labels = torch.arange(200) % 4
    inputs = centers[labels] + torch.randn(200, 6, generator=g)
    return inputs, labels


def small_mlp(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    return MLP(MLPConfig(in_features=6, hidden=(16,), num_classes=4, dropout=dropout))


class TinyLM(nn.Module):
    """Embedding -> linear: logits [B, L, V] for token ids [B, L]."""

    def __init__(self, vocab=7, width=8, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.embed, self.head = nn.Embedding(vocab, width), nn.Linear(width, vocab)

    def forward(self, tokens):
        return self.head(self.embed(tokens))


class SpyTeacher(nn.Module):
    """Records the mode and grad state of every forward call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, inputs):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.model(inputs)


def test_plain_pytorch_loop_and_kd_lib_train_give_identical_weights(blobs):
    inputs, labels = blobs
    config = TrainConfig(num_epochs=3, batch_size=32, lr=1e-2, seed=5, **QUIET)
    ours = small_mlp()
    train(ours, (inputs, labels), config=config)

    plain = small_mlp()
    torch.manual_seed(5)
    generator = torch.Generator().manual_seed(5)
    optimizer = torch.optim.Adam(plain.parameters(), lr=1e-2)
    for _ in range(3):
        for idx in torch.randperm(200, generator=generator).split(32):
            optimizer.zero_grad()
            F.cross_entropy(plain(inputs[idx]), labels[idx]).backward()
            optimizer.step()
    for a, b in zip(ours.parameters(), plain.parameters()):
        assert torch.equal(a, b)


def test_training_from_scratch_learns_separable_blobs(blobs):
    history = train(small_mlp(), blobs, config=TrainConfig(num_epochs=10, lr=1e-2, **QUIET), eval_data=blobs)
    assert history.final["eval_accuracy"] > 0.95
    assert history["train_loss"][-1] < history["train_loss"][0] / 3
    assert set(history.final) >= {"epoch", "step", "train_loss", "lr", "seconds", "samples_per_second", "eval_loss", "eval_accuracy"}


def test_teacher_runs_in_eval_mode_without_gradients(blobs):
    teacher = SpyTeacher(small_mlp(seed=1, dropout=0.5))
    teacher.train()
    before = [p.clone() for p in teacher.parameters()]
    loss = functools.partial(distillation_loss, temperature=2.0, alpha=0.5)
    for cache in (True, False):
        teacher.calls.clear()
        train(small_mlp(), blobs, teacher=teacher, loss_fn=loss, config=TrainConfig(num_epochs=2, cache_teacher_logits=cache, **QUIET))
        assert teacher.calls and all(mode == (False, False) for mode in teacher.calls)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters()))
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_logits_are_cached_once_and_match_running_the_teacher_every_step(blobs):
    teacher = SpyTeacher(small_mlp(seed=1))
    loss = functools.partial(distillation_loss, temperature=2.0, alpha=0.5)
    students = {}
    for cache in (True, False):
        teacher.calls.clear()
        students[cache] = small_mlp()
        train(students[cache], blobs, teacher=teacher, loss_fn=loss,
              config=TrainConfig(num_epochs=3, batch_size=50, cache_teacher_logits=cache, **QUIET))
        calls = len(teacher.calls)
        assert calls == (1 if cache else 3 * 4)
    for a, b in zip(students[True].parameters(), students[False].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_caching_with_augment_is_rejected(blobs):
    noise = lambda x, g: x + torch.randn(x.shape, generator=g)  # noqa: E731
    with pytest.raises(ValueError, match="augment"):
        train(small_mlp(), blobs, teacher=small_mlp(1), loss_fn=lambda s, t, y: kd_loss(s, t),
              config=TrainConfig(num_epochs=1, cache_teacher_logits=True, **QUIET), augment=noise)


def test_augment_feeds_the_same_noisy_batch_to_teacher_and_student(blobs):
    seen = []

    class Recorder(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            seen.append(x.clone())
            return self.model(x)

    noise = lambda x, g: x + torch.randn(x.shape, generator=g)  # noqa: E731
    train(Recorder(small_mlp()), blobs, teacher=Recorder(small_mlp(1)), loss_fn=lambda s, t, y: kd_loss(s, t),
          config=TrainConfig(num_epochs=1, batch_size=100, **QUIET), augment=noise)
    teacher_batch, student_batch = seen[0], seen[1]
    assert torch.equal(teacher_batch, student_batch)
    assert not any(torch.equal(student_batch, blobs[0][i : i + 100]) for i in (0, 100))


def test_unlabelled_transfer_set_trains_with_a_label_free_loss(blobs):
    teacher = small_mlp(1)
    train(teacher, blobs, config=TrainConfig(num_epochs=10, lr=1e-2, **QUIET))
    student = small_mlp()
    history = train(student, (blobs[0], None), teacher=teacher, loss_fn=lambda s, t, y: kd_loss(s, t, temperature=2.0),
                    config=TrainConfig(num_epochs=10, lr=1e-2, **QUIET), eval_data=blobs)
    assert history.final["eval_agreement"] > 0.95


def lm_batch():
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 7, (4, 6), generator=g)
    targets = torch.randint(0, 7, (4, 6), generator=g)
    targets[0, 1:] = -100  # very uneven padding: 1, 6, 4, 2 real tokens
    targets[2, 4:] = -100
    targets[3, 2:] = -100
    return tokens, targets


def one_sgd_step(batch_size, grad_accum_steps, loss_fn, teacher=None):
    model = TinyLM()
    config = TrainConfig(num_epochs=1, batch_size=batch_size, grad_accum_steps=grad_accum_steps, optimizer="sgd", lr=0.5, **QUIET)
    train(model, lm_batch(), teacher=teacher, loss_fn=loss_fn, config=config)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("with_teacher", [False, True])
def test_gradient_accumulation_normalises_per_token_like_one_full_batch(with_teacher):
    teacher = TinyLM(seed=9) if with_teacher else None
    loss = functools.partial(distillation_loss, temperature=2.0, alpha=0.3) if with_teacher else None
    full = one_sgd_step(4, 1, loss, teacher)
    for micro in (2, 1):
        torch.testing.assert_close(one_sgd_step(micro, 4 // micro, loss, teacher), full, rtol=1e-5, atol=1e-6)


def test_mean_of_micro_batch_means_would_differ_from_the_per_token_mean():
    """The reason for the weighting above: naive accumulation over-weights short sequences."""
    model = TinyLM()
    tokens, targets = lm_batch()
    logits = model(tokens)
    per_token = kd_lib.cross_entropy_loss(logits, None, targets)
    naive = sum(kd_lib.cross_entropy_loss(logits[i : i + 1], None, targets[i : i + 1]) for i in range(4)) / 4
    assert abs(per_token.item() - naive.item()) > 0.01


def test_token_level_distillation_with_padding_reduces_the_divergence():
    tokens, targets = lm_batch()
    teacher, student = TinyLM(seed=9), TinyLM(seed=0)
    mask = targets != -100
    before = kd_loss(student(tokens), teacher(tokens), mask=mask).item()
    loss = functools.partial(distillation_loss, temperature=1.0, alpha=0.0)
    train(student, (tokens, targets), teacher=teacher, loss_fn=loss, config=TrainConfig(num_epochs=50, lr=1e-2, **QUIET))
    assert kd_loss(student(tokens), teacher(tokens), mask=mask).item() < before / 4


def test_vocabulary_mismatch_between_teacher_and_student_raises():
    tokens, targets = lm_batch()
    with pytest.raises(ValueError, match="vocabulary size mismatch"):
        train(TinyLM(vocab=7), (tokens, targets), teacher=TinyLM(vocab=8),
              loss_fn=functools.partial(distillation_loss, temperature=1.0, alpha=0.5), config=TrainConfig(num_epochs=1, **QUIET))


def test_resume_from_checkpoint_gives_the_same_final_weights_as_an_uninterrupted_run(blobs, tmp_path):
    config = TrainConfig(num_epochs=4, batch_size=32, lr=1e-2, seed=3, checkpoint_path=str(tmp_path / "run.pt"), **QUIET)
    uninterrupted = small_mlp(dropout=0.3)  # dropout makes the global RNG state matter
    full_history = train(uninterrupted, blobs, config=TrainConfig(**{**config.__dict__, "checkpoint_path": None}))

    def stop_after_two(state):
        state.stop = state.epoch == 2

    interrupted = small_mlp(dropout=0.3)
    first = train(interrupted, blobs, config=config, callbacks=[stop_after_two])
    assert len(first) == 2
    resumed = small_mlp(seed=123, dropout=0.3)  # a different init: everything must come from the checkpoint
    history = train(resumed, blobs, config=config, resume=True)
    assert len(history) == 4 and history["step"] == full_history["step"]
    assert history["train_loss"] == pytest.approx(full_history["train_loss"])
    for a, b in zip(resumed.parameters(), uninterrupted.parameters()):
        assert torch.equal(a, b)


def test_resume_with_a_changed_config_is_refused(blobs, tmp_path):
    path = str(tmp_path / "run.pt")
    train(small_mlp(), blobs, config=TrainConfig(num_epochs=1, checkpoint_path=path, **QUIET))
    with pytest.raises(ValueError, match="config changed.*lr"):
        train(small_mlp(), blobs, config=TrainConfig(num_epochs=2, lr=0.5, checkpoint_path=path, **QUIET), resume=True)


def test_nan_loss_raises_a_clear_error(blobs):
    inputs = blobs[0].clone()
    inputs[5, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="loss became nan at epoch 1"):
        train(small_mlp(), (inputs, blobs[1]), config=TrainConfig(num_epochs=1, **QUIET))


def test_a_finite_divergence_stops_training_when_divergence_factor_is_set(blobs):
    config = TrainConfig(num_epochs=20, optimizer="sgd", lr=5.0, divergence_factor=100, **QUIET)
    with pytest.raises(FloatingPointError, match=r"more than 100x the first step's .*training diverged"):
        train(small_mlp(), blobs, config=config)


def test_without_divergence_factor_a_finite_blow_up_is_not_an_error(blobs):
    losses = []
    config = TrainConfig(num_epochs=2, optimizer="sgd", lr=5.0, **QUIET)
    callback = type("Recorder", (), {"on_step_end": lambda self, state: losses.append(float(state.last_loss))})()
    try:
        train(small_mlp(), blobs, config=config, callbacks=[callback])
    except FloatingPointError:  # it may also overflow to inf: that is always an error
        pass
    assert max(losses) > 100 * losses[0]


@pytest.mark.parametrize("factor", [1.0, 0.5, -3])
def test_divergence_factor_must_exceed_one(blobs, factor):
    with pytest.raises(ValueError, match="divergence_factor must be > 1"):
        train(small_mlp(), blobs, config=TrainConfig(divergence_factor=factor, **QUIET))


def test_callbacks_see_every_step_and_epoch_and_can_stop_training(blobs):
    events = []

    class Recorder:
        def on_step_end(self, state):
            events.append(("step", state.step))

        def on_epoch_end(self, state):
            events.append(("epoch", state.epoch))
            state.stop = state.epoch == 2

    history = train(small_mlp(), blobs, config=TrainConfig(num_epochs=5, batch_size=100, **QUIET),
                    callbacks=[Recorder(), lambda state: events.append(("fn", state.epoch))])
    assert len(history) == 2
    assert events == [("step", 1), ("step", 2), ("epoch", 1), ("fn", 1), ("step", 3), ("step", 4), ("epoch", 2), ("fn", 2)]


def test_cosine_schedule_with_warmup_ends_at_zero(blobs):
    history = train(small_mlp(), blobs, config=TrainConfig(num_epochs=3, batch_size=50, lr_schedule="cosine", warmup_steps=2, **QUIET))
    assert history.final["lr"] == pytest.approx(0.0, abs=1e-12)


def test_device_is_chosen_automatically():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert kd_lib.choose_device().type == expected
    assert kd_lib.choose_device("cpu").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_amp_is_ignored_with_a_warning_on_cpu(blobs):
    with pytest.warns(UserWarning, match="amp=True is ignored on CPU"):
        train(small_mlp(), blobs, config=TrainConfig(num_epochs=1, amp=True, **QUIET))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(config=TrainConfig(batch_size=0)), "batch_size"),
        (dict(config=TrainConfig(lr=0)), "lr"),
        (dict(config=TrainConfig(optimizer="lbfgs")), "optimizer"),
        (dict(config=TrainConfig(lr_schedule="step")), "lr_schedule"),
        (dict(teacher=nn.Linear(6, 4)), "pass loss_fn"),
        (dict(resume=True), "checkpoint_path"),
    ],
)
def test_bad_arguments_raise_clear_errors(blobs, kwargs, message):
    kwargs.setdefault("config", TrainConfig(num_epochs=1, **QUIET))
    kwargs["config"].progress = False
    with pytest.raises(ValueError, match=message):
        train(small_mlp(), blobs, **kwargs)


def test_mismatched_inputs_and_targets_raise(blobs):
    with pytest.raises(ValueError, match="200 inputs but 199 targets"):
        train(small_mlp(), (blobs[0], blobs[1][:-1]), config=TrainConfig(num_epochs=1, **QUIET))


def test_augment_may_replace_inputs_and_targets_and_their_padding_sets_the_weights():
    """On-policy style: augment swaps in new sequences with their own padding; the update must
    equal the one computed on those sequences directly, also across gradient accumulation."""
    tokens, targets = lm_batch()
    new_tokens, new_targets = tokens.flip(0), targets.flip(0).roll(1, dims=1)  # other padding pattern
    order = {}

    def swap(batch_inputs, generator):
        rows = [int(torch.nonzero((tokens == row).all(1))[0]) for row in batch_inputs]
        order.setdefault("rows", []).extend(rows)
        return new_tokens[rows], new_targets[rows]

    teacher = TinyLM(seed=9)
    loss = functools.partial(distillation_loss, temperature=2.0, alpha=0.3)
    swapped = TinyLM()
    config = TrainConfig(num_epochs=1, batch_size=2, grad_accum_steps=2, optimizer="sgd", lr=0.5, **QUIET)
    train(swapped, (tokens, targets), teacher=teacher, loss_fn=loss, config=config, augment=swap)
    direct = TinyLM()
    train(direct, (new_tokens, new_targets), teacher=teacher, loss_fn=loss,
          config=TrainConfig(num_epochs=1, batch_size=4, optimizer="sgd", lr=0.5, **QUIET))
    assert sorted(order["rows"]) == [0, 1, 2, 3]
    for a, b in zip(swapped.parameters(), direct.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
