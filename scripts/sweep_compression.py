"""Chapter 04's grid of trainings, too long for the chapter's budget: writes data/compression_sweep.json.

    python scripts/sweep_compression.py          # ~20 CPU-minutes on one thread

Chapter 04 loads the JSON, re-runs one pair of its runs live (seed 0 of the 35x student) and
asserts that the live result equals the stored one, so the file cannot drift from the code.

What it trains (all on one CPU thread, seeds 0, 1, 2):

* students of the teacher's own architecture (``CNN1D``) at first-layer width ``c``
  (channels ``(c, 2c, 2c)``, dense ``4c``; the shipped teacher is ``c = 32``), plus an MLP;
* each from scratch on the 4,000 labelled training examples (``SCRATCH`` recipe) and distilled
  from the shipped teacher on an unlabelled transfer set: the 4,000 training inputs plus 20,000
  fresh MNIST-1D inputs (generator seed 1, never the test set), labelled only by the teacher's
  probabilities (``kd_loss`` at T = 1, ``DISTIL`` recipe). Both get about the same number of
  optimizer steps (1,280 vs 1,410);
* the capacity-gap study: one small student (``c = 4``, seeds 0-4) distilled from teachers of
  different size and accuracy, directly and through a teacher assistant (Mirzadeh et al. 2020).
"""
import argparse
import json
import math
import time
from pathlib import Path

import torch

import kd_lib
from kd_lib.data import make_mnist1d
from kd_lib.metrics import accuracy, count_parameters, predict_logits
from kd_lib.models import CNN1D, CNN1DConfig, MLP, MLPConfig
from kd_lib.pretrained import DATA_DIR, load_pretrained
from kd_lib.sweep import Run, run_sweep

WIDTHS = [16, 8, 6, 5, 4, 2, 1]  # first-layer channels; the teacher has 32
SEEDS = [0, 1, 2]
GAP_SEEDS = [0, 1, 2, 3, 4]  # the capacity-gap differences are small: more seeds
TEMPERATURE = 1.0
TRANSFER = dict(num_samples=20000, seed=1)  # unlabelled inputs for distillation
EXTRA_LABELLED = dict(num_samples=20000, seed=2)  # labelled inputs for the "better" teacher only
SCRATCH = dict(num_epochs=160, batch_size=512, lr=5e-3, lr_schedule="cosine")
DISTIL = dict(num_epochs=30, batch_size=512, lr=5e-3, lr_schedule="cosine")
TEACHER_RECIPE = dict(num_epochs=30, batch_size=128, lr=2e-3, lr_schedule="cosine", seed=0)  # as the shipped one
GAP_STUDENT = 4  # width of the student in the capacity-gap study
TA_WIDTH = 8  # width of the teacher assistant


def cnn(width: int) -> CNN1D:
    return CNN1D(CNN1DConfig(channels=(width, 2 * width, 2 * width), hidden=4 * width))


def mlp() -> MLP:
    return MLP(MLPConfig(hidden=(64, 64)))


def kd(student_logits, teacher_logits, _labels):
    return kd_lib.kd_loss(student_logits, teacher_logits, TEMPERATURE)


def load_data():
    split = make_mnist1d(5000, seed=42)
    fresh = make_mnist1d(**TRANSFER, train_split=1.0)  # its labels are used only to describe teachers
    extra = make_mnist1d(**EXTRA_LABELLED, train_split=1.0)
    return split, fresh, extra


def distil_runs(make, name, transfer_inputs, teacher, tags, seeds=SEEDS):
    config = kd_lib.TrainConfig(**DISTIL, device="cpu")
    return [Run(name, make, (transfer_inputs, None), seed=seed, teacher=teacher, loss_fn=kd, config=config,
                tags=dict(tags)) for seed in seeds]


def scratch_runs(make, split, tags):
    config = kd_lib.TrainConfig(**SCRATCH, device="cpu")
    return [Run("scratch", make, (split.x_train, split.y_train), seed=seed, config=config, tags=dict(tags))
            for seed in SEEDS]


def train_teacher(make, inputs, labels, recipe, eval_data):
    kd_lib.seed_everything(recipe["seed"])
    model = make()
    kd_lib.train(model, (inputs, labels), config=kd_lib.TrainConfig(**recipe, device="cpu", progress=False),
                 eval_data=eval_data)
    return model.eval()


def describe(teacher, split, fresh=None):
    """Size and test accuracy; with ``fresh``, also how good and how soft its targets on the transfer set are."""
    info = {"parameters": count_parameters(teacher),
            "accuracy": accuracy(predict_logits(teacher, split.x_test), split.y_test)}
    if fresh is not None:
        logits = predict_logits(teacher, fresh.x_train)
        entropy = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1).mean()
        info.update({"fresh_accuracy": accuracy(logits, fresh.y_train), "fresh_entropy": float(entropy)})
    return info


def as_record(row):
    record = {k: v for k, v in row.items() if k not in ("history", "model")}
    record["agreement"] = None if math.isnan(row["agreement"]) else row["agreement"]  # JSON has no NaN
    record["curve"] = [round(a, 4) for a in row["history"]["eval_accuracy"]]
    record["cpu_seconds"] = round(row["cpu_seconds"], 2)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DATA_DIR / "compression_sweep.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.process_time()
    split, fresh, extra = load_data()
    transfer_inputs = torch.cat([split.x_train, fresh.x_train])
    eval_data = (split.x_test, split.y_test)
    teacher = load_pretrained("mnist1d_cnn")

    # 1. the size grid: scratch and distilled students (models kept: some become teachers below)
    runs = []
    for width in WIDTHS:
        make = lambda width=width: cnn(width)  # noqa: E731
        runs += scratch_runs(make, split, {"arch": "cnn", "width": width})
        runs += distil_runs(make, "distilled", transfer_inputs, teacher, {"arch": "cnn", "width": width})
    runs += scratch_runs(mlp, split, {"arch": "mlp", "width": 64})
    runs += distil_runs(mlp, "distilled", transfer_inputs, teacher, {"arch": "mlp", "width": 64})
    grid = run_sweep(runs, eval_data, keep_models=True, desc="size grid")

    def grid_model(name, width):
        return next(r["model"] for r in grid if r["arch"] == "cnn" and r["name"] == name and r["width"] == width
                    and r["seed"] == 0).eval()

    # 2. teachers of different size and accuracy for one small student
    big = train_teacher(lambda: cnn(64), split.x_train, split.y_train, TEACHER_RECIPE, eval_data)
    better = train_teacher(lambda: cnn(32), torch.cat([split.x_train, extra.x_train]),
                           torch.cat([split.y_train, extra.y_train]), dict(TEACHER_RECIPE, num_epochs=20, batch_size=256),
                           eval_data)
    teachers = {
        "cnn c=8, scratch": (grid_model("scratch", 8), "c=8 student trained from scratch (seed 0 of the grid)"),
        "cnn c=16, scratch": (grid_model("scratch", 16), "c=16 student trained from scratch (seed 0 of the grid)"),
        "cnn c=32, shipped": (teacher, "the shipped teacher"),
        "cnn c=64": (big, "the teacher's recipe at twice the width, same 4,000 labels"),
        "cnn c=32, 24k labels": (better, "the teacher's architecture trained on 24,000 labelled examples"),
    }
    # 3. teacher assistants: a c=8 student distilled from the teacher, which then teaches the student
    assistants = {"cnn c=32, shipped": grid_model("distilled", TA_WIDTH)}
    for name in ("cnn c=64", "cnn c=32, 24k labels"):
        ta_run = distil_runs(lambda: cnn(TA_WIDTH), "assistant", transfer_inputs, teachers[name][0], {})[:1]
        assistants[name] = run_sweep(ta_run, eval_data, keep_models=True, progress=False)[0]["model"].eval()

    gap_runs = []
    make = lambda: cnn(GAP_STUDENT)  # noqa: E731
    for name, (model, _) in teachers.items():
        gap_runs += distil_runs(make, "direct", transfer_inputs, model, {"teacher": name}, GAP_SEEDS)
    for name, model in assistants.items():
        gap_runs += distil_runs(make, "via assistant", transfer_inputs, model, {"teacher": name}, GAP_SEEDS)
    gap = run_sweep(gap_runs, eval_data, desc="capacity gap")

    result = {
        "made_by": "python scripts/sweep_compression.py",
        "settings": {"widths": WIDTHS, "seeds": SEEDS, "temperature": TEMPERATURE, "transfer": TRANSFER,
                     "extra_labelled": EXTRA_LABELLED, "scratch": SCRATCH, "distil": DISTIL,
                     "teacher_recipe": TEACHER_RECIPE, "gap_student_width": GAP_STUDENT, "gap_seeds": GAP_SEEDS, "ta_width": TA_WIDTH,
                     "threads": 1, "torch": torch.__version__},
        "teacher": describe(teacher, split),
        "grid": [as_record(r) for r in grid],
        "gap_teachers": {name: {**describe(model, split, fresh), "what": what} for name, (model, what) in teachers.items()},
        "assistants": {name: describe(model, split, fresh) for name, model in assistants.items()},
        "gap": [as_record(r) for r in gap],
        "cpu_seconds": round(time.process_time() - started, 1),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} in {result['cpu_seconds']} CPU-s")


if __name__ == "__main__":
    main()
