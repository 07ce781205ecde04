"""kd_lib.data, kd_lib.models, kd_lib.metrics, kd_lib.pretrained, kd_lib.lab.plots, kd_lib.lab.notebook."""
import json
import re

import numpy as np
import pytest
import torch
from torch import nn

import kd_lib
import kd_lib.lab
from kd_lib import metrics
from kd_lib.data import batches, make_digits, make_mnist1d
from kd_lib.models import CNN1D, CNN1DConfig, MLP, MLPConfig, capture_features
from kd_lib.lab.plots import scrubber
from kd_lib.pretrained import load_manifest, load_pretrained, save_pretrained, sha256_of


# ----------------------------------------------------------------------------- data
def test_mnist1d_is_generated_offline_and_deterministic_in_its_seed():
    first, again, other = make_mnist1d(200, seed=7), make_mnist1d(200, seed=7), make_mnist1d(200, seed=8)
    assert first.x_train.shape == (160, 40) and first.x_test.shape == (40, 40)
    assert first.x_train.dtype == torch.float32 and first.y_train.dtype == torch.int64
    assert torch.equal(first.x_train, again.x_train)
    assert not torch.equal(first.x_train, other.x_train)
    assert torch.bincount(torch.cat([first.y_train, first.y_test])).tolist() == [20] * 10


def test_default_mnist1d_reproduces_the_published_split_sizes():
    split = make_mnist1d()
    assert (len(split.x_train), len(split.x_test), split.num_classes) == (4000, 1000, 10)
    assert abs(float(torch.cat([split.x_train, split.x_test]).std()) - 1) < 1e-3


def test_bad_dataset_arguments_raise():
    with pytest.raises(ValueError, match="num_samples"):
        make_mnist1d(5)
    with pytest.raises(ValueError, match="test_fraction"):
        make_digits(test_fraction=1.5)


def test_digits_are_scaled_and_stratified():
    split = make_digits(test_fraction=0.3, seed=0)
    assert split.x_train.shape[1] == 64 and float(split.x_train.max()) <= 1.0
    full = torch.bincount(torch.cat([split.y_train, split.y_test])).float()
    assert (torch.bincount(split.y_test).float() - 0.3 * full).abs().max() <= 1


def test_batches_cover_every_index_once_and_reproduce_with_a_seeded_generator():
    order = torch.cat(list(batches(103, 10, generator=torch.Generator().manual_seed(0))))
    assert sorted(order.tolist()) == list(range(103))
    again = torch.cat(list(batches(103, 10, generator=torch.Generator().manual_seed(0))))
    assert torch.equal(order, again)
    assert [len(b) for b in batches(103, 10, shuffle=False, drop_last=True)] == [10] * 10
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(10, 0))


# ----------------------------------------------------------------------------- models
def test_models_map_inputs_to_class_logits():
    x = torch.randn(5, 40)
    assert MLP(MLPConfig(hidden=(8,))).forward(x).shape == (5, 10)
    assert CNN1D().forward(x).shape == (5, 10)
    assert MLP(MLPConfig(in_features=64, hidden=(), num_classes=3))(torch.randn(2, 64)).shape == (2, 3)


def test_models_reject_wrong_input_shapes_and_bad_configs():
    with pytest.raises(ValueError, match=r"inputs \[B, 40\]"):
        MLP()(torch.randn(5, 41))
    with pytest.raises(ValueError, match="inputs"):
        CNN1D()(torch.randn(5, 1, 40))
    with pytest.raises(ValueError, match="odd"):
        CNN1D(CNN1DConfig(kernel_size=4))
    with pytest.raises(ValueError, match="hidden widths"):
        MLP(MLPConfig(hidden=(0,)))


def test_capture_features_records_named_layers_with_their_graph():
    model = MLP(MLPConfig(hidden=(8, 6)))
    with capture_features(model, ["body.1", "body.3"]) as features:
        model(torch.randn(4, 40))
    assert features["body.1"].shape == (4, 8) and features["body.3"].shape == (4, 6)
    assert features["body.3"].requires_grad
    assert not model.body[1]._forward_hooks  # removed afterwards
    with pytest.raises(ValueError, match="no submodule"):
        with capture_features(model, ["nope"]):
            pass


# ----------------------------------------------------------------------------- metrics
def test_accuracy_and_agreement_count_kept_positions():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]]])
    labels = torch.tensor([[0, 0, -100]])
    assert metrics.accuracy(logits, labels) == 0.5
    teacher = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])
    assert metrics.agreement(logits, teacher) == pytest.approx(1 / 3)
    assert metrics.agreement(logits, teacher, labels != -100) == 0.5
    with pytest.raises(ValueError, match="ignore_index"):
        metrics.accuracy(logits, torch.full((1, 3), -100))


def test_expected_calibration_error_matches_a_hand_computed_case():
    # two bins used: confident-and-right (conf 0.9, acc 1) and unsure-and-wrong (conf 0.6, acc 0)
    p_high, p_low = np.log(0.9 / 0.1), np.log(0.6 / 0.4)
    logits = torch.tensor([[p_high, 0.0], [p_high, 0.0], [p_low, 0.0], [p_low, 0.0]], dtype=torch.float32)
    labels = torch.tensor([0, 0, 1, 1])
    expected = 0.5 * abs(1 - 0.9) + 0.5 * abs(0 - 0.6)
    assert metrics.expected_calibration_error(logits, labels, num_bins=10) == pytest.approx(expected, rel=1e-5)


def test_parameter_count_and_bytes_on_disk():
    model = MLP(MLPConfig(in_features=4, hidden=(3,), num_classes=2))
    assert metrics.count_parameters(model) == 4 * 3 + 3 + 3 * 2 + 2
    full, half = metrics.bytes_on_disk(model), metrics.bytes_on_disk(model, torch.float16)
    assert 23 * 4 < full < 23 * 4 + 1024 and half == full - 23 * 2


def test_predict_logits_restores_the_training_mode_and_latency_is_positive():
    model = MLP(MLPConfig(hidden=(8,), dropout=0.5)).train()
    x = torch.randn(3000, 40)
    logits = metrics.predict_logits(model, x, batch_size=1000)
    assert logits.shape == (3000, 10) and model.training
    assert torch.allclose(logits, metrics.predict_logits(model, x))  # eval mode: dropout off
    assert 0 < metrics.latency(model, x[:1], repeats=3, warmup=1) < 1


def test_latency_works_for_a_module_without_parameters():
    assert metrics.latency(nn.Identity(), torch.zeros(1, 40), repeats=3) > 0


# ----------------------------------------------------------------------------- pretrained
def test_shipped_teacher_loads_checks_its_sha256_and_reaches_its_manifest_accuracy():
    manifest = load_manifest("mnist1d_cnn")
    assert manifest["sha256"] == sha256_of(kd_lib.pretrained.WEIGHTS_DIR / manifest["weights_file"])
    teacher = load_pretrained("mnist1d_cnn")
    split = make_mnist1d(5000, seed=42)
    accuracy = metrics.accuracy(metrics.predict_logits(teacher, split.x_test), split.y_test)
    assert accuracy == pytest.approx(manifest["metrics"]["test_accuracy"], abs=1e-9)
    assert accuracy > 0.95


def test_save_and_load_round_trip_and_corruption_is_detected(tmp_path):
    model = MLP(MLPConfig(hidden=(5,)))
    save_pretrained(model, "tiny", {"note": "test"}, data_dir=tmp_path)
    loaded = load_pretrained("tiny", data_dir=tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert json.loads((tmp_path / "tiny.json").read_text())["note"] == "test"
    with open(tmp_path / "tiny.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(ValueError, match="corrupt"):
        load_pretrained("tiny", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="package data"):
        load_pretrained("missing", data_dir=tmp_path)


def test_a_collection_of_models_round_trips_by_key_and_corruption_is_detected(tmp_path):
    from kd_lib.pretrained import load_collection, save_collection

    torch.manual_seed(0)
    models = {"mlp | 0": MLP(MLPConfig(hidden=(5,))), "cnn | 1": CNN1D(CNN1DConfig(channels=(2, 2, 2), hidden=4))}
    manifest = save_collection(models, "students", {"note": "test"}, data_dir=tmp_path)
    assert set(manifest["models"]) == set(models) and manifest["note"] == "test"
    loaded = load_collection("students", data_dir=tmp_path)
    for key, model in models.items():
        assert type(loaded[key]) is type(model) and not loaded[key].training
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded[key].state_dict().values()))
    with open(tmp_path / "students.safetensors", "r+b") as handle:
        handle.seek(-4, 2)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(ValueError, match="corrupt"):
        load_collection("students", data_dir=tmp_path)


def test_a_collection_key_may_not_contain_a_slash(tmp_path):
    from kd_lib.pretrained import save_collection

    with pytest.raises(ValueError, match="without '/'"):
        save_collection({"a/b": MLP(MLPConfig(hidden=(5,)))}, "bad", {}, data_dir=tmp_path)


# ----------------------------------------------------------------------------- plots, notebook
def test_scrubber_embeds_every_frame_and_links_only_the_icon_font():
    html = scrubber(lambda ax, value: ax.set_title(f"value {value}"), [1, 2, 3]).data
    assert html.count("data:image/png;base64") == 3
    external = re.findall(r"https?://[^\"' ]+", html)
    assert all("font-awesome" in url for url in external), external  # dropped on the site (icons inlined)
    with pytest.raises(ValueError, match="at least 2"):
        scrubber(lambda ax, v: None, [1])


def test_scrubber_opens_on_its_start_value():
    draw = lambda ax, value: ax.set_title(f"value {value}")  # noqa: E731
    opened = scrubber(draw, [1, 2, 4, 8], start=4).data
    assert re.search(r"anim[0-9a-f]+ = new Animation\([^;]*\);\s*anim[0-9a-f]+\.set_frame\(2\);", opened)
    assert ".set_frame(" not in scrubber(draw, [1, 2, 4, 8]).data.split("new Animation")[1].split("</script>")[0]
    with pytest.raises(ValueError, match="not one of the scrubber's values"):
        scrubber(draw, [1, 2, 4, 8], start=3)


def test_setup_notebook_fixes_threads_seeds_and_returns_the_device(capsys):
    before = torch.get_num_threads()
    try:
        device = kd_lib.lab.setup_notebook(seed=3, threads=1)
        assert torch.get_num_threads() == 1 and device == kd_lib.choose_device()
        assert "threads: 1" in capsys.readouterr().out
        first = torch.rand(1)
        kd_lib.lab.setup_notebook(seed=3, threads=1, verbose=False)
        assert torch.equal(first, torch.rand(1))
        with pytest.raises(ValueError, match="threads"):
            kd_lib.lab.setup_notebook(threads=0)
    finally:
        torch.set_num_threads(before)
