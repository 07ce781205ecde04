"""kd_lib's one loss contract: every public loss goes to kd_lib.train as it is.

``train`` calls ``loss_fn(student_output, teacher_output, targets)``; hyper-parameters are bound
by name (``partial(kd_loss, temperature=4)``). Each case below trains one or two epochs through
the one loop and checks that the loss was finite and that every trained weight moved, including
a learned projection that lives in a Tapped student or in a loss module.
"""
import inspect
from functools import partial

import pytest
import torch
from torch import nn

import kd_lib
from kd_lib import (
    Cohort, Ensemble, Tapped, TrainConfig, attention_loss, attention_transfer_loss, cosine_hidden_loss,
    cross_entropy_loss, distillation_loss, generalized_jsd, hidden_state_loss, hint_loss, kd_loss,
    minilm_loss, mutual_learning_loss, reverse_kl, skew_kl, soft_cross_entropy, train, weighted_sum,
)
from kd_lib.lm.gpt import GPT, GPTConfig
from kd_lib.models import CNN1D, CNN1DConfig, MLP, MLPConfig

QUIET = dict(progress=False, device="cpu", batch_size=32, lr=3e-3)


def blobs(n=96, features=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    return torch.randn(10, features, generator=g)[labels] + torch.randn(n, features, generator=g), labels


def mlp(seed=0, hidden=(32,)):
    torch.manual_seed(seed)
    return MLP(MLPConfig(hidden=hidden))


def cnn(seed=0, width=4):
    torch.manual_seed(seed)
    return CNN1D(CNN1DConfig(channels=(width, 2 * width), hidden=16))


def gpt(seed=0, layers=2, width=16, heads=2):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=12, block_size=10, n_layer=layers, n_head=heads, n_embd=width))


def tokens(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 12, (n, 9), generator=g)
    y = torch.roll(x, -1, dims=1)
    y[: n // 2, 6:] = -100  # right padding in half the rows
    return x, y


def snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def assert_all_moved(before, module):
    moved = [not torch.equal(a, b.detach()) for a, b in zip(before, module.parameters())]
    assert all(moved), f"{moved.count(False)} of {len(moved)} parameter tensors did not move"


def run(student, data, loss_fn, teacher=None, epochs=2, trained=None):
    trained = trained if trained is not None else student
    before = snapshot(trained)
    history = train(student, data, teacher=teacher, loss_fn=loss_fn, config=TrainConfig(num_epochs=epochs, **QUIET))
    assert len(history) == epochs and all(torch.isfinite(torch.tensor(history["train_loss"])))
    assert_all_moved(before, trained)
    return history


def case_logits(loss):
    return lambda: run(mlp(1), blobs(), loss, teacher=mlp(0).eval())


def case_tokens(loss):
    return lambda: run(gpt(1, layers=1), tokens(), loss, teacher=gpt(0).eval())


def case_hint():
    student = Tapped(mlp(1), {"body.1": nn.Linear(32, 64)})
    teacher = Tapped(mlp(0, hidden=(64,)).eval(), ["body.1"])
    loss = partial(hint_loss, student_layer="body.1", teacher_layer="body.1")
    run(student, blobs(), loss, teacher=teacher, trained=nn.ModuleList([student.model.body, student.projections]))


def case_attention_transfer():
    student, teacher = Tapped(cnn(1, 4), ["features.2"]), Tapped(cnn(0, 8).eval(), ["features.2"])
    loss = partial(attention_transfer_loss, layer_pairs=[("features.2", "features.2")])
    run(student, blobs(), loss, teacher=teacher, trained=student.model.features[0])


def case_transformer(loss, student_names, teacher_names, projection=None, teacher_width=24):
    def body():
        layers = {name: None for name in student_names}
        if projection:
            layers[projection] = nn.Linear(16, 24)
        student = Tapped(gpt(1, layers=1, width=16), layers)
        teacher = Tapped(gpt(0, layers=2, width=teacher_width).eval(), teacher_names)
        run(student, tokens(), loss, teacher=teacher, trained=student.model.blocks[0].qkv)
    return body


def case_mutual():
    cohort = Cohort([mlp(1), mlp(2), mlp(3)])
    run(cohort, blobs(), partial(mutual_learning_loss, temperature=2.0))


def case_weighted_sum_with_a_projection_in_the_loss():
    class ProjectedHint(nn.Module):  # a loss module with its own trainable projection
        def __init__(self):
            super().__init__()
            self.projection = nn.Linear(32, 64)

        def forward(self, student_output, teacher_output, targets=None):
            projected = kd_lib.ModelOutput(student_output.logits,
                                           {"h": self.projection(student_output.features["body.1"])})
            return hint_loss(projected, teacher_output, targets, student_layer="h", teacher_layer="body.1")

    hint = ProjectedHint()
    loss = weighted_sum(ce=(0.5, cross_entropy_loss), kd=(0.5, partial(kd_loss, temperature=4.0)), hint=(0.1, hint))
    student, teacher = Tapped(mlp(1), ["body.1"]), Tapped(mlp(0, hidden=(64,)).eval(), ["body.1"])
    before = snapshot(hint)
    run(student, blobs(), loss, teacher=teacher)
    assert_all_moved(before, hint)
    assert set(loss.last) == {"ce", "kd", "hint"}


CASES = {
    "kd_loss": case_logits(kd_loss),
    "kd_loss, temperature=4": case_logits(partial(kd_loss, temperature=4)),
    "soft_cross_entropy": case_logits(partial(soft_cross_entropy, temperature=2.0)),
    "reverse_kl": case_logits(partial(reverse_kl, temperature=2.0)),
    "generalized_jsd": case_logits(partial(generalized_jsd, beta=0.5, temperature=2.0)),
    "skew_kl": case_logits(partial(skew_kl, skew=0.1)),
    "total_variation": case_logits(partial(kd_lib.total_variation, temperature=2.0)),
    "distillation_loss": case_logits(partial(distillation_loss, temperature=4.0, alpha=0.5)),
    "distillation_loss, reverse KL": case_logits(partial(distillation_loss, temperature=2.0, alpha=0.3,
                                                         divergence=reverse_kl)),
    "cross_entropy_loss": lambda: run(mlp(1), blobs(), cross_entropy_loss),
    "kd_loss on tokens": case_tokens(kd_loss),
    "generalized_jsd on tokens": case_tokens(partial(generalized_jsd, beta=0.9)),
    "distillation_loss on tokens": case_tokens(partial(distillation_loss, temperature=2.0, alpha=0.5)),
    "kd_loss from an ensemble": lambda: run(mlp(3), blobs(), kd_loss, teacher=Ensemble([mlp(0), mlp(1)]).eval()),
    "hint_loss": case_hint,
    "attention_transfer_loss": case_attention_transfer,
    "attention_loss": case_transformer(partial(attention_loss, layer_map=[(0, 1)]), ["scores.0"], ["scores.1"]),
    "hidden_state_loss": case_transformer(partial(hidden_state_loss, layer_map=[(1, 2)]), [], ["hidden.2"],
                                          projection="hidden.1"),
    "minilm_loss": case_transformer(minilm_loss, ["attention.0", "values.0"], ["attention.1", "values.1"]),
    "cosine_hidden_loss": case_transformer(cosine_hidden_loss, ["hidden.1"], ["hidden.2"], teacher_width=16),
    "mutual_learning_loss": case_mutual,
    "weighted_sum": case_weighted_sum_with_a_projection_in_the_loss,
}

# every public function of these modules whose name ends in _loss or names a divergence
LOSS_MODULES = [kd_lib.losses, kd_lib.feature_losses, kd_lib.transformer_losses, kd_lib.schemes]
DIVERGENCE_NAMES = {"kd_loss", "soft_cross_entropy", "reverse_kl", "generalized_jsd", "skew_kl", "total_variation",
                    "weighted_sum"}


def public_losses():
    names = set()
    for module in LOSS_MODULES:
        names |= {n for n in module.__all__ if n.endswith("_loss") or n in DIVERGENCE_NAMES}
    return names


def test_every_public_loss_has_a_case_here():
    covered = {name.split(",")[0].split(" ")[0] for name in CASES}
    assert public_losses() <= covered, f"no train() case for {public_losses() - covered}"


def test_every_public_loss_takes_student_teacher_targets_then_keywords():
    for module in LOSS_MODULES:
        for name in module.__all__:
            if not (name.endswith("_loss") or name in DIVERGENCE_NAMES - {"weighted_sum"}):
                continue
            params = list(inspect.signature(getattr(module, name)).parameters.values())
            assert [p.kind for p in params[:3]] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * 3, name
            assert params[2].name == "targets" and params[2].default is None, name
            assert all(p.kind == inspect.Parameter.KEYWORD_ONLY for p in params[3:]), name


@pytest.mark.parametrize("name", list(CASES))
def test_train_accepts_the_loss_directly(name):
    CASES[name]()


def test_positional_hyper_parameter_names_the_fix():
    z, v = torch.randn(4, 10), torch.randn(4, 10)
    with pytest.raises(TypeError, match=r"temperature=4.0"):
        kd_loss(z, v, 4.0)
    with pytest.raises(TypeError, match="by name"):
        generalized_jsd(z, v, 0.5)


def test_targets_set_the_mask_through_ignore_index():
    z, v = torch.randn(3, 5, 7), torch.randn(3, 5, 7)
    y = torch.randint(0, 7, (3, 5))
    y[0, 2:] = -100
    for loss in (kd_loss, reverse_kl, soft_cross_entropy, partial(generalized_jsd, beta=0.3), skew_kl):
        torch.testing.assert_close(loss(z, v, y), loss(z, v, mask=y != -100))
    torch.testing.assert_close(kd_loss(z, v, y.masked_fill(y == -100, 5), ignore_index=5),
                               kd_loss(z, v, mask=(y != -100) & (y != 5)))
    both = kd_loss(z, v, y, mask=torch.arange(5).expand(3, 5) < 3)
    torch.testing.assert_close(both, kd_loss(z, v, mask=(y != -100) & (torch.arange(5) < 3)))


def test_hard_label_loss_without_labels_says_so():
    z, v = torch.randn(4, 10), torch.randn(4, 10)
    with pytest.raises(ValueError, match="targets is None"):
        distillation_loss(z, v, None, temperature=2.0, alpha=0.5)
    assert distillation_loss(z, v, None, temperature=2.0, alpha=0.0) == kd_loss(z, v, temperature=2.0)
    with pytest.raises(ValueError, match="needs labels"):
        cross_entropy_loss(z, None, None)


def test_feature_loss_on_plain_logits_says_to_tap_the_model():
    with pytest.raises(ValueError, match="Tapped"):
        train(mlp(1), blobs(), teacher=mlp(0), loss_fn=partial(hint_loss, student_layer="body.1",
                                                               teacher_layer="body.1"),
              config=TrainConfig(num_epochs=1, **QUIET))


def test_resume_restores_a_trained_loss_module(tmp_path):
    def make():
        hint = weighted_sum(ce=(1.0, cross_entropy_loss))
        hint.extra = nn.Linear(3, 3)  # a parameter the optimizer must carry across the resume
        return hint

    def fit(epochs, path, loss, resume=False):
        student = mlp(1)
        config = TrainConfig(num_epochs=epochs, checkpoint_path=str(path), **QUIET)
        train(student, blobs(), loss_fn=loss, config=config, resume=resume)
        return student

    straight = fit(3, tmp_path / "a.pt", make())
    fit(1, tmp_path / "b.pt", make())
    loss = make()
    resumed = fit(3, tmp_path / "b.pt", loss, resume=True)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert "loss_module" in torch.load(tmp_path / "b.pt", weights_only=True)


def test_clear_errors_for_teacher_projections_missing_loss_module_and_huge_caches(tmp_path, monkeypatch):
    teacher = Tapped(mlp(0, hidden=(64,)), {"body.1": nn.Linear(64, 32)})
    with pytest.raises(ValueError, match="teacher's Tapped has projections"):
        train(Tapped(mlp(1), ["body.1"]), blobs(), teacher=teacher, loss_fn=kd_loss,
              config=TrainConfig(num_epochs=1, **QUIET))
    path = tmp_path / "c.pt"
    train(mlp(1), blobs(), loss_fn=cross_entropy_loss, config=TrainConfig(num_epochs=1, checkpoint_path=str(path),
                                                                         **QUIET))
    loss = weighted_sum(ce=(1.0, cross_entropy_loss))
    loss.extra = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="without a trained loss module"):
        train(mlp(1), blobs(), loss_fn=loss, config=TrainConfig(num_epochs=2, checkpoint_path=str(path), **QUIET),
              resume=True)
    import importlib

    monkeypatch.setattr(importlib.import_module("kd_lib.train"), "MAX_CACHE_BYTES", 1000)
    with pytest.raises(ValueError, match="cache_teacher_logits=False"):
        train(Tapped(mlp(1), ["body.1"]), blobs(), teacher=Tapped(mlp(0), ["body.1"]), loss_fn=kd_loss,
              config=TrainConfig(num_epochs=1, **QUIET))
    with pytest.raises(ValueError, match="kd_lib.Cohort"):
        mutual_learning_loss(torch.randn(3, 10))
