"""Chapter 04's grid of trainings, too long for the chapter's budget: writes data/compression_sweep.json.

    python scripts/sweep_compression.py              # ~70 CPU-minutes on one thread
    python scripts/sweep_compression.py --part grid  # or only one part (grid | gap), then
    python scripts/sweep_compression.py --part gap   #   --merge to combine the two files

Chapter 04 loads the JSON, re-runs one pair of its runs live and asserts that the live result
equals the stored one, so the file cannot drift from the code.

**Seeds are the chapter's seed offsets.** Run ``i`` of every recipe is what the chapter itself
computes at ``KD_BOOK_SEED_OFFSET=i``: student seed ``kd_lib.lab.notebook.shifted_seed(0)`` and
transfer-set seed ``shifted_seed(1)`` at that offset (0 and 1, 1000 and 1001, ...). So each
run draws its own initial weights, batch order *and* unlabelled inputs, and the chapter's live
re-run at any stored offset must match the stored run exactly.

What it trains (one CPU thread, AVX2-pinned numerics, ``OFFSETS`` runs per recipe):

* students of the teacher's own architecture (``CNN1D``) at first-layer width ``c``
  (channels ``(c, 2c, 2c)``, dense ``4c``; the shipped teacher is ``c = 32``), plus an MLP;
* five recipes per student, so that what distillation adds can be told apart from what extra
  inputs add (the distilled students see six times more inputs than the scratch ones):
  - ``scratch``: the 4,000 labelled training examples (``SCRATCH``, 160 epochs);
  - ``scratch, regularised``: the same, with weight decay and input noise chosen per width on
    1,000 labelled validation inputs that are never trained on (``REGULARISATION`` grid);
  - ``distilled``: the teacher's probabilities (``kd_loss``, T = 1) on a transfer set of 24,000
    inputs, the 4,000 training inputs plus 20,000 fresh ones (``DISTIL``, 30 epochs);
  - ``teacher labels``: the teacher's top class on the same 24,000 inputs (cross-entropy);
  - ``true labels``: the generator's own labels of the same 24,000 inputs (an oracle: real
    labels for every input the teacher labelled);
* the capacity-gap study: one small student (``c = 4``) distilled from teachers of different
  size and accuracy, directly and through a teacher assistant (Mirzadeh et al. 2020), with
  ``GAP_OFFSETS`` runs each so that differences of a point or two can be tested paired by seed.
"""
import argparse
import json
import math
import time
from functools import partial
from pathlib import Path

import torch

import kd_lib
from kd_lib.data import make_mnist1d
from kd_lib.metrics import accuracy, count_parameters, predict_logits
from kd_lib.models import CNN1D, CNN1DConfig, MLP, MLPConfig
from kd_lib.lab.numerics import use_portable_numerics
from kd_lib.lab import DATA_DIR
from kd_lib.pretrained import load_pretrained
from kd_lib.lab.sweep import Run, run_sweep

NUMERICS = use_portable_numerics()  # before the first tensor operation (kd_lib/numerics.py)

WIDTHS = [16, 8, 6, 5, 4, 2, 1]  # first-layer channels; the teacher has 32
OFFSETS = [0, 1, 2, 3, 4]  # run i = the chapter at KD_BOOK_SEED_OFFSET=i
GAP_OFFSETS = list(range(10))  # the capacity-gap differences are small: more runs
SEED_STRIDE = 1000  # kd_lib.lab.notebook.SEED_STRIDE: offset i shifts seed s to s + 1000 i
STUDENT_SEED, TRANSFER_SEED = 0, 1  # the chapter's base seeds (shifted per offset)
TEMPERATURE = 1.0
TRANSFER_SIZE = 20000  # fresh inputs added to the 4,000 training inputs
VALIDATION = dict(num_samples=1000, seed=3)  # labelled, only to choose the regularisation
EXTRA_LABELLED = dict(num_samples=20000, seed=2)  # labelled inputs for the "better" teacher only
SCRATCH = dict(num_epochs=160, batch_size=512, lr=5e-3, lr_schedule="cosine")
DISTIL = dict(num_epochs=30, batch_size=512, lr=5e-3, lr_schedule="cosine")
REGULARISATION = {"weight_decay": [0.0, 1e-3, 1e-2], "input_noise": [0.0, 0.2]}  # AdamW; Gaussian noise
TEACHER_RECIPE = dict(num_epochs=30, batch_size=128, lr=2e-3, lr_schedule="cosine", seed=0)  # as the shipped one
GAP_STUDENT = 4  # width of the student in the capacity-gap study
TA_WIDTH = 8  # width of the teacher assistant


def cnn(width: int) -> CNN1D:
    return CNN1D(CNN1DConfig(channels=(width, 2 * width, 2 * width), hidden=4 * width))


def mlp() -> MLP:
    return MLP(MLPConfig(hidden=(64, 64)))


kd = partial(kd_lib.kd_loss, temperature=TEMPERATURE)


def seeds_at(offset: int):
    """The chapter's (student seed, transfer-set seed) at a seed offset."""
    return STUDENT_SEED + SEED_STRIDE * offset, TRANSFER_SEED + SEED_STRIDE * offset


def transfer_set(offset: int, split):
    """The 24,000 transfer inputs at an offset, with the generator's own labels (for the oracle only)."""
    fresh = make_mnist1d(TRANSFER_SIZE, seed=seeds_at(offset)[1], train_split=1.0)
    return torch.cat([split.x_train, fresh.x_train]), torch.cat([split.y_train, fresh.y_train])


def noise(sigma: float):
    """An ``augment`` that adds Gaussian noise of std ``sigma`` to every batch (None for 0)."""
    if sigma == 0:
        return None
    return lambda x, generator: x + sigma * torch.randn(x.shape, generator=generator).to(x)


def config(recipe: dict, weight_decay: float = 0.0) -> kd_lib.TrainConfig:
    optimizer = "adamw" if weight_decay else "adam"
    return kd_lib.TrainConfig(**recipe, optimizer=optimizer, weight_decay=weight_decay, device="cpu")


def recipe_runs(make, tags, split, teacher, transfers, offsets=None, names=None):
    """Runs of every recipe (or ``names``) for one student architecture, one per offset."""
    runs = []
    for offset in OFFSETS if offsets is None else offsets:
        seed = seeds_at(offset)[0]
        inputs, true_labels = transfers[offset]
        row_tags = {**tags, "offset": offset}
        recipes = {
            "scratch": lambda: Run("scratch", make, (split.x_train, split.y_train), seed=seed, config=config(SCRATCH),
                                   tags=row_tags),
            "distilled": lambda: Run("distilled", make, (inputs, None), seed=seed, teacher=teacher, loss_fn=kd,
                                     config=config(DISTIL), tags=row_tags),
            "teacher labels": lambda: Run("teacher labels", make, (inputs, predict_logits(teacher, inputs).argmax(-1)),
                                          seed=seed, config=config(DISTIL), tags=row_tags),
            "true labels": lambda: Run("true labels", make, (inputs, true_labels), seed=seed, config=config(DISTIL),
                                       tags=row_tags),
        }
        runs += [recipes[name]() for name in (names or recipes)]
    return runs


def choose_regularisation(make, split, validation):
    """The (weight decay, input noise) with the best validation accuracy, trained on the 4,000 labels."""
    runs = [Run("regularisation search", make, (split.x_train, split.y_train), seed=STUDENT_SEED,
                config=config(SCRATCH, wd), augment=noise(sigma), tags={"weight_decay": wd, "input_noise": sigma})
            for wd in REGULARISATION["weight_decay"] for sigma in REGULARISATION["input_noise"]]
    rows = run_sweep(runs, (validation.x_train, validation.y_train), progress=False)
    best = max(rows, key=lambda row: row["accuracy"])  # first best on ties
    return {"weight_decay": best["weight_decay"], "input_noise": best["input_noise"],
            "validation_accuracy": best["accuracy"],
            "searched": [{k: r[k] for k in ("weight_decay", "input_noise", "accuracy")} for r in rows]}


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
        logits = predict_logits(teacher, fresh[0])
        entropy = -(torch.softmax(logits, -1) * torch.log_softmax(logits, -1)).sum(-1).mean()
        info.update({"fresh_accuracy": accuracy(logits, fresh[1]), "fresh_entropy": float(entropy)})
    return info


def as_record(row):
    record = {k: v for k, v in row.items() if k not in ("history", "model")}
    record["agreement"] = None if math.isnan(row["agreement"]) else row["agreement"]  # JSON has no NaN
    record["curve"] = [round(a, 4) for a in row["history"]["eval_accuracy"]]
    record["cpu_seconds"] = round(row["cpu_seconds"], 2)
    return record


def settings() -> dict:
    return {"widths": WIDTHS, "offsets": OFFSETS, "gap_offsets": GAP_OFFSETS, "seed_stride": SEED_STRIDE,
            "student_seed": STUDENT_SEED, "transfer_seed": TRANSFER_SEED, "transfer_size": TRANSFER_SIZE,
            "temperature": TEMPERATURE, "validation": VALIDATION, "extra_labelled": EXTRA_LABELLED,
            "scratch": SCRATCH, "distil": DISTIL, "regularisation": REGULARISATION, "teacher_recipe": TEACHER_RECIPE,
            "gap_student_width": GAP_STUDENT, "ta_width": TA_WIDTH, "threads": 1, "torch": torch.__version__,
            "numerics": str(NUMERICS)}


def run_grid(split, teacher, eval_data):
    transfers = {offset: transfer_set(offset, split) for offset in OFFSETS}
    validation = make_mnist1d(**VALIDATION, train_split=1.0)
    runs, regularisation = [], {}
    for width in WIDTHS:
        make = lambda width=width: cnn(width)  # noqa: E731
        runs += recipe_runs(make, {"arch": "cnn", "width": width}, split, teacher, transfers)
        chosen = regularisation[width] = choose_regularisation(make, split, validation)
        sigma, wd = chosen["input_noise"], chosen["weight_decay"]
        runs += [Run("scratch, regularised", make, (split.x_train, split.y_train), seed=seeds_at(offset)[0],
                     config=config(SCRATCH, wd), augment=noise(sigma),
                     tags={"arch": "cnn", "width": width, "offset": offset}) for offset in OFFSETS]
        print(f"c={width}: regularisation chosen on validation data {chosen['weight_decay']}, "
              f"{chosen['input_noise']} ({chosen['validation_accuracy']:.3f})", flush=True)
    runs += recipe_runs(mlp, {"arch": "mlp", "width": 64}, split, teacher, transfers, names=["scratch", "distilled"])
    grid = run_sweep(runs, eval_data, desc="size grid")
    return {"teacher": describe(teacher, split), "grid": [as_record(r) for r in grid],
            "regularisation": {str(w): chosen for w, chosen in regularisation.items()}}


def run_gap(split, teacher, eval_data):
    transfers = {offset: transfer_set(offset, split) for offset in GAP_OFFSETS}
    extra = make_mnist1d(**EXTRA_LABELLED, train_split=1.0)
    scratch_teacher = lambda width: train_teacher(lambda: cnn(width), split.x_train, split.y_train,  # noqa: E731
                                                  dict(SCRATCH, seed=STUDENT_SEED), eval_data)
    teachers = {
        "cnn c=8, scratch": (scratch_teacher(8), "a c=8 student trained from scratch (the grid's recipe, seed 0)"),
        "cnn c=16, scratch": (scratch_teacher(16), "a c=16 student trained from scratch (the grid's recipe, seed 0)"),
        "cnn c=32, shipped": (teacher, "the shipped teacher"),
        "cnn c=64": (train_teacher(lambda: cnn(64), split.x_train, split.y_train, TEACHER_RECIPE, eval_data),
                     "the teacher's recipe at twice the width, same 4,000 labels"),
        "cnn c=32, 24k labels": (train_teacher(lambda: cnn(32), torch.cat([split.x_train, extra.x_train]),
                                               torch.cat([split.y_train, extra.y_train]),
                                               dict(TEACHER_RECIPE, num_epochs=20, batch_size=256), eval_data),
                                 "the teacher's architecture trained on 24,000 labelled examples"),
    }
    # teacher assistants: a c=8 student distilled (offset 0's transfer set) from each large teacher
    assistants = {}
    for name in ("cnn c=32, shipped", "cnn c=64", "cnn c=32, 24k labels"):
        run = Run("assistant", lambda: cnn(TA_WIDTH), (transfers[0][0], None), seed=STUDENT_SEED,
                  teacher=teachers[name][0], loss_fn=kd, config=config(DISTIL))
        assistants[name] = run_sweep([run], eval_data, keep_models=True, progress=False)[0]["model"].eval()
    make = lambda: cnn(GAP_STUDENT)  # noqa: E731
    runs = []
    for route, models in (("direct", {n: m for n, (m, _) in teachers.items()}), ("via assistant", assistants)):
        for name, model in models.items():
            runs += [Run(route, make, (transfers[offset][0], None), seed=seeds_at(offset)[0], teacher=model,
                         loss_fn=kd, config=config(DISTIL), tags={"teacher": name, "offset": offset})
                     for offset in GAP_OFFSETS]
    gap = run_sweep(runs, eval_data, desc="capacity gap")
    fresh = (transfers[0][0][len(split.x_train):], transfers[0][1][len(split.x_train):])
    return {"gap_teachers": {n: {**describe(m, split, fresh), "what": what} for n, (m, what) in teachers.items()},
            "assistants": {n: describe(m, split, fresh) for n, m in assistants.items()},
            "gap": [as_record(r) for r in gap]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DATA_DIR / "compression_sweep.json")
    parser.add_argument("--part", choices=["all", "grid", "gap"], default="all",
                        help="run one part only; it is written to OUT with .grid/.gap before .json")
    parser.add_argument("--merge", action="store_true", help="combine the .grid and .gap parts into OUT")
    args = parser.parse_args()
    part_path = lambda part: args.out.with_suffix(f".{part}.json")  # noqa: E731
    if args.merge:
        parts = [json.loads(part_path(part).read_text()) for part in ("grid", "gap")]
        result = {**parts[0], **parts[1], "cpu_seconds": round(parts[0]["cpu_seconds"] + parts[1]["cpu_seconds"], 1)}
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
        return
    torch.set_num_threads(1)
    started = time.process_time()
    split = make_mnist1d(5000, seed=42)
    eval_data = (split.x_test, split.y_test)
    teacher = load_pretrained("mnist1d_cnn")
    result = {"made_by": "python scripts/sweep_compression.py", "settings": settings()}
    if args.part in ("all", "grid"):
        result.update(run_grid(split, teacher, eval_data))
    if args.part in ("all", "gap"):
        result.update(run_gap(split, teacher, eval_data))
    result["cpu_seconds"] = round(time.process_time() - started, 1)
    out = args.out if args.part == "all" else part_path(args.part)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out} in {result['cpu_seconds']} CPU-s")


if __name__ == "__main__":
    main()
