"""kd_lib.lab.sweep: runs are reproducible and independent of order; rows and summaries are right."""
import math

import pytest
import torch

import kd_lib
from kd_lib.models import MLP, MLPConfig
from kd_lib.lab.sweep import Run, format_table, per_seed, run_sweep, summarize

torch.set_num_threads(1)


def _data(seed=0, n=200):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=generator)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    return x, y


def _student():
    return MLP(MLPConfig(in_features=8, hidden=(16,), num_classes=4))


CONFIG = kd_lib.TrainConfig(num_epochs=3, batch_size=32, device="cpu")


def test_run_sweep_returns_one_row_per_run_with_tags_and_metrics():
    x, y = _data()
    runs = [Run("scratch", _student, (x, y), seed=seed, config=CONFIG, tags={"width": 16}) for seed in (0, 1)]
    rows = run_sweep(runs, eval_data=_data(1), progress=False)
    assert [row["seed"] for row in rows] == [0, 1]
    for row in rows:
        assert row["name"] == "scratch" and row["width"] == 16
        assert row["parameters"] == 8 * 16 + 16 + 16 * 4 + 4
        assert 0.0 <= row["accuracy"] <= 1.0
        assert math.isnan(row["agreement"])  # no teacher
        assert len(row["history"]) == 3
        assert "model" not in row


def test_run_sweep_result_depends_on_the_run_not_on_what_ran_before():
    x, y = _data()
    run = Run("scratch", _student, (x, y), seed=3, config=CONFIG)
    alone = run_sweep([run], eval_data=_data(1), progress=False)[0]
    other = Run("scratch", _student, (x, y), seed=7, config=CONFIG)
    after = run_sweep([other, run], eval_data=_data(1), progress=False)[1]
    assert alone["history"]["train_loss"] == after["history"]["train_loss"]


def test_different_seeds_give_different_initial_weights():
    x, y = _data()
    rows = run_sweep([Run("s", _student, (x, y), seed=s, config=CONFIG) for s in (0, 1)], eval_data=_data(1),
                     keep_models=True, progress=False)
    assert not torch.equal(rows[0]["model"].head.weight, rows[1]["model"].head.weight)


def test_run_sweep_distils_from_a_teacher_on_unlabelled_data():
    x, y = _data()
    teacher = _student()
    kd_lib.train(teacher, (x, y), config=kd_lib.TrainConfig(num_epochs=20, batch_size=32, device="cpu", progress=False))
    run = Run("distilled", _student, (x, None), teacher=teacher, loss_fn=lambda s, t, _: kd_lib.kd_loss(s, t, temperature=2.0),
              config=CONFIG)
    row = run_sweep([run], eval_data=_data(1), progress=False, keep_models=True)[0]
    assert 0.0 <= row["agreement"] <= 1.0
    assert isinstance(row["model"], MLP)


def test_run_sweep_rejects_tags_that_clash_with_result_columns():
    x, y = _data()
    with pytest.raises(ValueError, match="clash"):
        run_sweep([Run("s", _student, (x, y), tags={"accuracy": 1})], eval_data=_data(1), progress=False)


def test_run_sweep_rejects_an_empty_list():
    with pytest.raises(ValueError, match="no runs"):
        run_sweep([], eval_data=_data(1), progress=False)


def test_summarize_gives_mean_and_sample_std_per_group_in_first_seen_order():
    rows = [{"name": "b", "accuracy": 0.5}, {"name": "a", "accuracy": 0.7}, {"name": "b", "accuracy": 0.7},
            {"name": "a", "accuracy": 0.9}]
    summary = summarize(rows, by=["name"])
    assert [group["name"] for group in summary] == ["b", "a"]
    assert summary[0]["mean"] == pytest.approx(0.6)
    assert summary[0]["std"] == pytest.approx(math.sqrt(0.02))  # n - 1 in the denominator
    assert summary[1]["min"] == pytest.approx(0.7) and summary[1]["max"] == pytest.approx(0.9)
    assert summary[1]["n"] == 2


def test_summarize_of_one_row_has_zero_std():
    assert summarize([{"k": 1, "accuracy": 0.3}], by=["k"])[0]["std"] == 0.0


def test_summarize_names_a_missing_column():
    with pytest.raises(ValueError, match="width"):
        summarize([{"accuracy": 0.3}], by=["width"])


def test_format_table_rounds_floats_and_aligns_columns():
    text = format_table([{"name": "scratch", "mean": 0.71234}, {"name": "distilled", "mean": 0.9}], digits=2)
    lines = text.splitlines()
    assert lines[0].split() == ["name", "mean"]
    assert lines[1].split() == ["scratch", "0.71"] and lines[2].split() == ["distilled", "0.90"]
    assert len({len(line) for line in lines}) == 1


def test_format_table_leaves_out_objects_such_as_history_and_model_by_default():
    text = format_table([{"name": "x", "history": [1, 2], "model": object()}])
    assert "history" not in text and "model" not in text


def test_format_table_keeps_a_plain_column_even_when_it_is_called_model():
    assert format_table([{"model": "teacher", "ms": 1.5}]).splitlines()[1].split() == ["teacher", "1.500"]


def test_format_table_shows_columns_that_only_later_rows_have():
    lines = format_table([{"name": "a"}, {"name": "b", "extra": 2}]).splitlines()
    assert lines[0].split() == ["name", "extra"]
    assert lines[1].split() == ["a"] and lines[2].split() == ["b", "2"]


def test_format_table_rejects_an_empty_list():
    with pytest.raises(ValueError, match="no rows"):
        format_table([])


def test_per_seed_lines_up_two_recipes_seed_by_seed():
    rows = [{"name": "b", "seed": 2, "accuracy": 0.3}, {"name": "a", "seed": 1, "accuracy": 0.5},
            {"name": "b", "seed": 1, "accuracy": 0.4}, {"name": "a", "seed": 2, "accuracy": 0.6}]
    assert per_seed(rows, name="a") == [0.5, 0.6] and per_seed(rows, name="b") == [0.4, 0.3]
    with pytest.raises(ValueError, match="no row has"):
        per_seed(rows, name="c")


def test_score_at_steps_records_a_learning_curve():
    import kd_lib
    from kd_lib.models import MLP, MLPConfig
    from kd_lib.lab.sweep import ScoreAtSteps

    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    model = MLP(MLPConfig(in_features=4, hidden=(8,), num_classes=2, dropout=0.5))
    modes = []
    at = ScoreAtSteps([2, 4, 4, 1], lambda m: modes.append(m.training) or len(modes))
    kd_lib.train(model, (x, y), config=kd_lib.TrainConfig(num_epochs=2, batch_size=32, progress=False),
                 callbacks=[at])
    assert at.steps == [1, 2, 4] and at.curve() == [1.0, 2.0, 3.0]
    assert modes == [False] * 3 and model.training  # scored in eval mode, then restored
    late = ScoreAtSteps([10], lambda m: 0.0)
    kd_lib.train(model, (x, y), config=kd_lib.TrainConfig(num_epochs=1, batch_size=32, progress=False),
                 callbacks=[late])
    with pytest.raises(ValueError, match="ended before"):
        late.curve()
    with pytest.raises(ValueError, match="steps"):
        ScoreAtSteps([0], lambda m: 0.0)


def test_truth_scorer_equals_kl_to_truth():
    from kd_lib.lm.gpt import GPT, GPTConfig
    from kd_lib.lm.language import Grammar, lm_data
    from kd_lib.lm.metrics import kl_to_truth, truth_scorer

    grammar = Grammar()
    x, y = lm_data(grammar.sample(20, seed=3))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=grammar.vocab_size, block_size=grammar.max_len, n_layer=1, n_head=2,
                          n_embd=16))
    assert truth_scorer(grammar, x, y)(model) == pytest.approx(kl_to_truth(model, grammar, x, y), rel=1e-5)
    with pytest.raises(ValueError, match="padding"):
        truth_scorer(grammar, x, torch.full_like(y, -100))


def test_kd_progress_turns_every_bar_off(monkeypatch):
    from kd_lib.runtime import show_progress

    monkeypatch.delenv("KD_PROGRESS", raising=False)
    assert show_progress(True) and not show_progress(False)
    for off in ("0", "off", "false", "No"):
        monkeypatch.setenv("KD_PROGRESS", off)
        assert not show_progress(True)
    monkeypatch.setenv("KD_PROGRESS", "1")
    assert show_progress(True)
