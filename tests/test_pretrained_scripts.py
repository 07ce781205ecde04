"""The precomputed artefact data/compression_sweep.json matches the script that makes it.

Chapter 04 reads this file. These tests check that it holds every run the chapter needs, that
its recorded settings are the script's, and that the script's code still reproduces the first
epoch of stored runs (a full re-run takes ~20 CPU-minutes; chapter 04 re-runs one pair in full).
"""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import kd_lib
from kd_lib.data import make_mnist1d
from kd_lib.pretrained import load_pretrained

ROOT = Path(__file__).resolve().parent.parent
ARTEFACT = ROOT / "data" / "compression_sweep.json"


def _script():
    spec = importlib.util.spec_from_file_location("sweep_compression", ROOT / "scripts" / "sweep_compression.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sweep():
    return json.loads(ARTEFACT.read_text())


@pytest.fixture(scope="module")
def script():
    return _script()


def test_artefact_records_the_scripts_settings(sweep, script):
    settings = sweep["settings"]
    assert settings["widths"] == script.WIDTHS and settings["seeds"] == script.SEEDS
    assert settings["scratch"] == script.SCRATCH and settings["distil"] == script.DISTIL
    assert settings["temperature"] == script.TEMPERATURE and settings["transfer"] == script.TRANSFER
    assert settings["threads"] == 1


def test_artefact_holds_scratch_and_distilled_runs_for_every_width_and_seed(sweep, script):
    keys = {(r["arch"], r["width"], r["name"], r["seed"]) for r in sweep["grid"]}
    for width in script.WIDTHS:
        for seed in script.SEEDS:
            assert ("cnn", width, "scratch", seed) in keys and ("cnn", width, "distilled", seed) in keys
    assert len(keys) == len(sweep["grid"]), "no run is stored twice"


def test_artefact_curves_end_at_the_final_accuracy(sweep):
    for row in sweep["grid"] + sweep["gap"]:
        assert row["curve"][-1] == pytest.approx(row["accuracy"], abs=1e-4)
        assert 0.0 <= row["accuracy"] <= 1.0


def test_artefact_parameter_counts_match_the_models(sweep, script):
    for row in sweep["grid"]:
        model = script.cnn(row["width"]) if row["arch"] == "cnn" else script.mlp()
        assert row["parameters"] == kd_lib.metrics.count_parameters(model)


def test_artefact_teacher_is_the_shipped_teacher(sweep):
    manifest = kd_lib.pretrained.load_manifest("mnist1d_cnn")
    assert sweep["teacher"]["parameters"] == manifest["parameters"]
    assert sweep["teacher"]["accuracy"] == pytest.approx(manifest["metrics"]["test_accuracy"])


def _first_epoch(sweep, script, name, width, seed=0):
    """Train the stored run's exact recipe but stop after one epoch (the schedule is unchanged)."""
    torch.set_num_threads(1)
    split = make_mnist1d(5000, seed=42)
    recipe = sweep["settings"]["scratch" if name == "scratch" else "distil"]
    config = kd_lib.TrainConfig(**recipe, seed=seed, device="cpu", progress=False)
    if name == "scratch":
        data, teacher, loss_fn = (split.x_train, split.y_train), None, None
    else:
        transfer = make_mnist1d(**script.TRANSFER, train_split=1.0).x_train
        data, teacher, loss_fn = (torch.cat([split.x_train, transfer]), None), load_pretrained("mnist1d_cnn"), script.kd
    kd_lib.seed_everything(seed)
    model = script.cnn(width)

    def stop(state):
        state.stop = True

    history = kd_lib.train(model, data, teacher=teacher, loss_fn=loss_fn, config=config,
                           eval_data=(split.x_test, split.y_test), callbacks=[stop])
    return history["eval_accuracy"][0]


@pytest.mark.parametrize("name", ["scratch", "distilled"])
def test_script_reproduces_the_first_epoch_of_a_stored_run(sweep, script, name, portable_numerics):
    stored = next(r for r in sweep["grid"] if r["arch"] == "cnn" and r["width"] == 2 and r["name"] == name
                  and r["seed"] == 0)
    assert _first_epoch(sweep, script, name, width=2) == pytest.approx(stored["curve"][0], abs=1e-4)


@pytest.mark.slow
def test_teacher_script_reproduces_the_shipped_teacher_bit_for_bit(tmp_path, portable_numerics):
    """The whole MNIST-1D teacher (30 epochs, ~20 s) retrained: the same bytes as data/, on any AVX2 CPU."""
    spec = importlib.util.spec_from_file_location("train_mnist1d_teacher", ROOT / "scripts" / "train_mnist1d_teacher.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    teacher, history = module.build_and_train(progress=False)
    shipped = load_pretrained("mnist1d_cnn")
    for name, tensor in shipped.state_dict().items():
        assert torch.equal(teacher.state_dict()[name], tensor), name
    manifest = kd_lib.pretrained.load_manifest("mnist1d_cnn")
    assert history.final["eval_loss"] == manifest["metrics"]["test_loss"]
