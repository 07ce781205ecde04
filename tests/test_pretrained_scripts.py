"""The precomputed artefacts in data/ match the scripts that make them.

Chapters 04, 07 and 09 read stored runs (data/compression_sweep.json, data/lm_objectives_sweep.json,
data/evaluation_students.*). These tests check that each file holds every run its chapter
needs, that its recorded settings are the script's, and that the script's code still reproduces
stored runs bit for bit where the numerics are portable (a full re-run takes up to an hour; each
chapter re-trains some of its runs in full). The shipped MNIST-1D teacher is re-trained whole.
"""
import dataclasses
import json
from pathlib import Path

import pytest
from conftest import load_script
import torch

import kd_lib
from kd_lib.data import make_mnist1d
from kd_lib.pretrained import load_collection, load_manifest, load_pretrained

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"




@pytest.fixture(scope="module")
def sweep():
    return json.loads((DATA / "compression_sweep.json").read_text())


@pytest.fixture(scope="module")
def script():
    return load_script("sweep_compression")


# ----------------------------------------------------------------------------- compression sweep
def test_compression_sweep_records_the_scripts_settings(sweep, script):
    assert sweep["settings"] == {**sweep["settings"], **{k: v for k, v in script.settings().items()
                                                          if k not in ("torch", "numerics")}}
    assert sweep["settings"]["threads"] == 1 and "AVX2" in sweep["settings"]["numerics"]


def test_compression_sweep_holds_every_recipe_width_and_offset_once(sweep, script):
    keys = [(r["arch"], r["width"], r["name"], r["offset"]) for r in sweep["grid"]]
    assert len(keys) == len(set(keys)), "no run is stored twice"
    recipes = ["scratch", "scratch, regularised", "distilled", "teacher labels", "true labels"]
    for width in script.WIDTHS:
        for name in recipes:
            assert {o for a, w, n, o in keys if (a, w, n) == ("cnn", width, name)} == set(script.OFFSETS)
    gap = [(r["name"], r["teacher"], r["offset"]) for r in sweep["gap"]]
    assert len(gap) == len(set(gap)) == 8 * len(script.GAP_OFFSETS)


def test_compression_sweep_seeds_are_the_chapters_seed_offsets(sweep, script):
    for row in sweep["grid"] + sweep["gap"]:
        assert row["seed"] == 1000 * row["offset"] == kd_lib.lab.notebook.SEED_STRIDE * row["offset"]
    assert script.seeds_at(2) == (2000, 2001)


def test_compression_sweep_curves_end_at_the_final_accuracy(sweep):
    for row in sweep["grid"] + sweep["gap"]:
        assert row["curve"][-1] == pytest.approx(row["accuracy"], abs=1e-4)
        assert 0.0 <= row["accuracy"] <= 1.0


def test_compression_sweep_parameter_counts_match_the_models(sweep, script):
    for row in sweep["grid"]:
        model = script.cnn(row["width"]) if row["arch"] == "cnn" else script.mlp()
        assert row["parameters"] == kd_lib.metrics.count_parameters(model)


def test_compression_sweep_teacher_is_the_shipped_teacher(sweep):
    manifest = load_manifest("mnist1d_cnn")
    assert sweep["teacher"]["parameters"] == manifest["parameters"]
    assert sweep["teacher"]["accuracy"] == pytest.approx(manifest["metrics"]["test_accuracy"])


def _first_epoch(sweep, script, name, width, offset=1):
    """Train the stored run's exact recipe but stop after one epoch (the schedule is unchanged)."""
    split = make_mnist1d(5000, seed=42)
    teacher = load_pretrained("mnist1d_cnn")
    transfers = {offset: script.transfer_set(offset, split)}
    run = next(r for r in script.recipe_runs(lambda: script.cnn(width), {}, split, teacher, transfers,
                                             offsets=[offset], names=[name]))

    def stop(state):
        state.stop = True

    kd_lib.seed_everything(run.seed)  # as kd_lib.lab.sweep.run_sweep does, before building the model
    config = dataclasses.replace(run.config, seed=run.seed, progress=False)
    history = kd_lib.train(run.make_model(), run.train_data, teacher=run.teacher, loss_fn=run.loss_fn,
                           config=config, eval_data=(split.x_test, split.y_test), callbacks=[stop])
    return history["eval_accuracy"][0]


@pytest.mark.parametrize("name", ["scratch", "distilled", "teacher labels"])
def test_script_reproduces_the_first_epoch_of_a_stored_run(sweep, script, name, portable_numerics):
    stored = next(r for r in sweep["grid"] if r["arch"] == "cnn" and r["width"] == 2 and r["name"] == name
                  and r["offset"] == 1)
    assert _first_epoch(sweep, script, name, width=2) == stored["curve"][0]


# ----------------------------------------------------------------------------- language-model sweep
@pytest.fixture(scope="module")
def lm_sweep():
    return json.loads((DATA / "lm_objectives_sweep.json").read_text())


def test_lm_sweep_holds_every_objective_at_every_offset(lm_sweep):
    script = load_script("sweep_language_models")
    runs = {(r["objective"], r["offset"]) for r in lm_sweep["runs"]}
    assert runs == {(name, o) for name in script.OBJECTIVES for o in script.OFFSETS}
    settings = lm_sweep["settings"]
    assert settings["recipe"] == script.RECIPE and settings["epochs"] == script.EPOCHS
    assert settings["student"] == script.STUDENT and settings["offsets"] == script.OFFSETS
    for row in lm_sweep["runs"]:
        assert row["seed"] == 1000 * row["offset"]
        assert 0 <= row["grammatical"] <= 1 and row["kl_to_truth"] >= 0


@pytest.mark.slow
def test_lm_script_reproduces_a_stored_student(lm_sweep, portable_numerics):
    script = load_script("sweep_language_models")
    from kd_lib.lm.language import Grammar

    grammar, teacher = Grammar(), load_pretrained("tiny_gpt_teacher")
    setting = script.Setting(grammar, teacher, offset=1)
    student = script.OBJECTIVES["forward KL"](setting)
    scored = script.score(student, grammar, script.validation(grammar), setting.seed)
    stored = next(r for r in lm_sweep["runs"] if r["objective"] == "forward KL" and r["offset"] == 1)
    assert {k: scored[k] for k in ("val_ce", "kl_to_truth", "grammatical")} == \
           {k: stored[k] for k in ("val_ce", "kl_to_truth", "grammatical")}


# ----------------------------------------------------------------------------- chapter 09's students
def test_evaluation_students_hold_every_recipe_at_every_offset():
    script = load_script("train_evaluation_students")
    manifest = load_manifest("evaluation_students")
    students = load_collection("evaluation_students")
    assert set(students) == {f"{r} | {o}" for r in script.RECIPES for o in script.OFFSETS}
    assert set(manifest["runs"]) == set(students)
    for key, run in manifest["runs"].items():
        assert run["seed"] == 1000 * run["offset"] and len(run["epochs"]) == script.RECIPES[run["recipe"]][1]


def test_a_stored_student_reproduces_its_recorded_test_accuracy():
    students, manifest = load_collection("evaluation_students"), load_manifest("evaluation_students")
    split = make_mnist1d(5000, seed=42)
    for key in ("scratch | 3", "distilled T=4 | 7"):
        logits = kd_lib.metrics.predict_logits(students[key], split.x_test)
        recorded = manifest["runs"][key]["epochs"][-1]["accuracy"]
        assert kd_lib.metrics.accuracy(logits, split.y_test) == pytest.approx(recorded, abs=1e-9)


@pytest.mark.slow
def test_evaluation_script_reproduces_a_stored_student_bit_for_bit(portable_numerics):
    script = load_script("train_evaluation_students")
    split, teacher = make_mnist1d(5000, seed=42), load_pretrained("mnist1d_cnn")
    student = script.train_student("teacher labels", 2, split, teacher)
    stored = load_collection("evaluation_students")["teacher labels | 2"]
    for name, tensor in stored.state_dict().items():
        assert torch.equal(student.state_dict()[name], tensor), name


# ----------------------------------------------------------------------------- the shipped teacher
@pytest.mark.slow
def test_teacher_script_reproduces_the_shipped_teacher_bit_for_bit(portable_numerics):
    """The whole MNIST-1D teacher (30 epochs, ~20 s) retrained: the same bytes as data/, on any AVX2 CPU."""
    module = load_script("train_mnist1d_teacher")
    teacher, history = module.build_and_train(progress=False)
    shipped = load_pretrained("mnist1d_cnn")
    for name, tensor in shipped.state_dict().items():
        assert torch.equal(teacher.state_dict()[name], tensor), name
    assert history.final["eval_loss"] == load_manifest("mnist1d_cnn")["metrics"]["test_loss"]
