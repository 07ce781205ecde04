"""The shipped language-model teacher: its manifest, its weights, and a reproducible training script."""
import importlib.util
from pathlib import Path

import pytest
import torch

from kd_lib.lm.language import Grammar, lm_data
from kd_lib.metrics import count_parameters
from kd_lib.pretrained import WEIGHTS_DIR
from kd_lib.pretrained import load_manifest, load_pretrained, sha256_of

ROOT = Path(__file__).resolve().parent.parent
NAME = "tiny_gpt_teacher"



def load_script():
    spec = importlib.util.spec_from_file_location("train_gpt_teacher", ROOT / "scripts" / "train_gpt_teacher.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def manifest():
    return load_manifest(NAME)


def test_manifest_describes_the_weights(manifest):
    script = load_script()
    assert manifest["model_class"] == "GPT" and manifest["dtype"] == "float16"
    assert manifest["sha256"] == sha256_of(WEIGHTS_DIR / manifest["weights_file"])
    assert manifest["config"] == {**manifest["config"], **script.MODEL}
    assert {k: manifest["data"][k] for k in script.DATA} == script.DATA
    assert {k: manifest["training"][k] for k in script.RECIPE} == script.RECIPE
    assert manifest["training"]["steps"] == 1500 and manifest["training"]["threads"] == 1
    assert set(manifest["metrics"]) >= {"val_ce", "kl_to_truth", "grammatical", "val_accuracy"}
    assert manifest["metrics"]["kl_to_truth"] < 0.05 and manifest["metrics"]["grammatical"] > 0.8


def test_shipped_teacher_loads_without_pickle_and_matches_its_metrics(manifest):
    teacher = load_pretrained(NAME)
    assert count_parameters(teacher) == manifest["parameters"]
    grammar = Grammar()
    inputs, targets = lm_data(grammar.sample(manifest["data"]["val_stories"], seed=manifest["data"]["val_seed"]))
    assert inputs.shape[1] == manifest["data"]["sequence_length"]
    with torch.no_grad():
        logits = teacher(inputs[:200])
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets[:200], ignore_index=-100)
    assert abs(float(loss) - manifest["metrics"]["val_ce"]) < 0.05  # a 200-story subset of the val set


def test_the_first_training_steps_reproduce_bit_for_bit(manifest, portable_numerics):
    torch_threads = torch.get_num_threads()
    try:
        losses = load_script().first_step_losses(3)
    finally:
        torch.set_num_threads(torch_threads)
    assert losses == manifest["training"]["first_step_losses"][:3]
