"""Chapters 05 and 06's stored sweeps and teachers match the scripts that make them.

Each file must hold every recipe at every offset once, record the script's settings, and be
reproduced bit for bit by the script's own code for a run the chapters do not re-train live
(they re-train offsets 0 and 1 in the book's tests). Full re-runs take 20-30 CPU-minutes each.
"""
import json
from pathlib import Path

import pytest
from conftest import load_script
import torch

from kd_lib.data import make_mnist1d
from kd_lib.metrics import accuracy, predict_logits
from kd_lib.pretrained import load_collection, load_manifest, load_pretrained

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
SPLIT = None




@pytest.fixture(scope="module")
def features():
    return json.loads((DATA / "feature_distillation_sweep.json").read_text()), load_script("sweep_feature_distillation")


@pytest.fixture(scope="module")
def schemes():
    return json.loads((DATA / "training_schemes_sweep.json").read_text()), load_script("sweep_training_schemes")


@pytest.fixture(scope="module")
def split():
    return make_mnist1d(5000, seed=42)


def test_feature_sweep_holds_every_recipe_at_every_offset_once(features):
    sweep, script = features
    assert sweep["offsets"] == script.OFFSETS
    teacher = load_pretrained("mnist1d_cnn")
    cnn_keys = [(r["student"], r["recipe"], r["offset"]) for r in sweep["cnn"]["runs"]]
    assert len(cnn_keys) == len(set(cnn_keys)) == len(script.cnn_recipes(teacher)) * len(script.OFFSETS)
    lm_keys = [(r["recipe"], r["offset"]) for r in sweep["lm"]["runs"]]
    assert len(lm_keys) == len(set(lm_keys)) == 7 * len(script.OFFSETS)
    settings = sweep["cnn"]["settings"]
    assert settings["hint_weights"] == script.HINT_WEIGHTS and settings["recipe"] == script.CNN_RECIPE
    assert sweep["lm"]["settings"]["student"] == script.LM_STUDENT and "AVX2" in sweep["numerics"]


def test_feature_script_reproduces_a_stored_cnn_run(features, split, portable_numerics):
    sweep, script = features
    torch.set_num_threads(1)
    offset, recipe = 3, ("CNN", "hint, then logit KD")
    fit = script.cnn_recipes(load_pretrained("mnist1d_cnn"))[recipe]
    student = fit(script.SEED_STRIDE * offset, (split.x_train, split.y_train))
    stored = next(r for r in sweep["cnn"]["runs"]
                  if (r["student"], r["recipe"], r["offset"]) == (*recipe, offset))
    assert accuracy(predict_logits(student, split.x_test), split.y_test) == stored["accuracy"]


def test_scheme_teachers_are_the_scripts_and_reproduce(schemes, split, portable_numerics):
    sweep, script = schemes
    manifest = load_manifest("scheme_teachers")
    assert manifest["seeds"] == script.TEACHER_SEEDS and manifest["recipe"] == script.SCRATCH
    teachers = load_collection("scheme_teachers")
    for name, model in teachers.items():
        assert accuracy(predict_logits(model, split.x_test), split.y_test) == manifest["test_accuracy"][name]
    torch.set_num_threads(1)
    again = script.scratch(script.TEACHER_WIDTH, script.TEACHER_SEEDS[0], (split.x_train, split.y_train))
    for a, b in zip(again.state_dict().values(), teachers["teacher 0"].state_dict().values()):
        assert torch.equal(a, b), "teacher 0 re-trains bit for bit"


def test_scheme_sweep_holds_every_part_at_every_offset(schemes):
    sweep, script = schemes
    assert sweep["settings"]["offsets"] == script.OFFSETS
    ensemble = [(r["recipe"], r["offset"]) for r in sweep["ensemble"]]
    assert len(ensemble) == len(set(ensemble)) == 11 * len(script.OFFSETS)
    born = [(r["generation"], r["offset"]) for r in sweep["born-again"]]
    assert len(born) == len(set(born)) == (script.GENERATIONS + 1) * len(script.OFFSETS)
    assert len(sweep["mutual"]) == 2 * len(script.OFFSETS)
    assert len(sweep["progressive"]) == (len(script.CHAIN) + 1) * len(script.OFFSETS)
    task = [(r["route"], r["offset"]) for r in sweep["task"]]
    assert len(task) == len(set(task)) == 7 * len(script.OFFSETS)  # six routes and the teachers
    assert sweep["settings"]["pet_grammar"] == {**script.PET_GRAMMAR, "heroes": list(script.PET_GRAMMAR["heroes"])}


def test_scheme_script_reproduces_a_stored_mutual_learning_run(schemes, split, portable_numerics):
    sweep, script = schemes
    torch.set_num_threads(1)
    rows = script.run_mutual(split, [2])
    stored = [r for r in sweep["mutual"] if r["offset"] == 2]
    assert [(r["mutual"], r["alone"]) for r in rows] == [(r["mutual"], r["alone"]) for r in stored]
