"""Chapter 09's students, trained once: writes kd_lib/weights/evaluation_students.{safetensors,json}.

    python scripts/train_evaluation_students.py        # ~4 CPU-minutes on one thread

Chapter 09 evaluates one teacher and four kinds of student. Differences of a point or two
between them need many seeds, more than the chapter can train in its budget, so this script
trains every student once and ships the weights (about 7 KB each), and the chapter re-trains one
of them live and checks that it reproduces the stored one.

**Seeds are the chapter's seed offsets.** Student ``i`` of every recipe is what the chapter
trains at ``KD_BOOK_SEED_OFFSET=i``: model seed ``shifted_seed(0)`` and transfer-set seed
``shifted_seed(1)`` at that offset (``kd_lib.lab.notebook``), so each student has its own initial
weights, batch order and unlabelled inputs. The recipes (all one small ``CNN1D``, 47x smaller
than the teacher, Adam, lr 1e-2 with a cosine schedule):

* ``scratch``: cross-entropy on the 4,000 labelled training examples, 30 epochs;
* ``distilled T=1`` / ``distilled T=4``: ``kd_loss`` at T = 1 or 4 on 20,000 fresh unlabelled
  MNIST-1D inputs (generator seed ``shifted_seed(1)``, never the test set), 8 epochs;
* ``teacher labels``: cross-entropy on the teacher's top class on the same 20,000 inputs, 8
  epochs: as many inputs as the distilled students, none of the soft targets.

The manifest also stores, for every epoch of every student, its test accuracy, top-1 agreement
with the teacher and predictive KL(teacher || student) (the chapter's fidelity-vs-accuracy plot),
and each student's agreement and KL on the 20,000 transfer inputs of its offset (for the distilled
students, their own training inputs).
"""
import argparse
import time
from functools import partial
from pathlib import Path

import torch

import kd_lib
from kd_lib.data import make_mnist1d
from kd_lib.lab.evaluation import predictive_kl
from kd_lib.metrics import accuracy, agreement, predict_logits
from kd_lib.models import CNN1D, CNN1DConfig
from kd_lib.lab.numerics import use_portable_numerics
from kd_lib.pretrained import load_pretrained, save_collection

NUMERICS = use_portable_numerics()  # before the first tensor operation (kd_lib/numerics.py)

NAME = "evaluation_students"
OFFSETS = list(range(10))  # student i = the chapter at KD_BOOK_SEED_OFFSET=i
SEED_STRIDE = 1000  # kd_lib.lab.notebook.SEED_STRIDE
STUDENT_SEED, TRANSFER_SEED = 0, 1  # the chapter's base seeds (shifted per offset)
STUDENT = dict(channels=(8, 8, 8), hidden=16)
TRANSFER_SIZE = 20000
LEARNING = dict(lr=1e-2, lr_schedule="cosine")
RECIPES = {  # name: (temperature or None for labels, epochs, labels: "true" | "teacher" | None)
    "scratch": (None, 30, "true"),
    "distilled T=1": (1.0, 8, None),
    "distilled T=4": (4.0, 8, None),
    "teacher labels": (None, 8, "teacher"),
}


def seeds_at(offset: int):
    return STUDENT_SEED + SEED_STRIDE * offset, TRANSFER_SEED + SEED_STRIDE * offset


def kd_at(temperature: float):
    return partial(kd_lib.kd_loss, temperature=temperature)


def train_student(recipe: str, offset: int, split, teacher, transfer=None, callbacks=()):
    """One student of ``recipe`` at a seed offset, exactly as chapter 09 trains it."""
    temperature, num_epochs, labels = RECIPES[recipe]
    seed, transfer_seed = seeds_at(offset)
    if transfer is None and recipe != "scratch":
        transfer = make_mnist1d(TRANSFER_SIZE, seed=transfer_seed, train_split=1.0).x_train.to(split.x_train.device)
    if recipe == "scratch":
        data, loss_fn, model_teacher = (split.x_train, split.y_train), None, None
    elif labels == "teacher":
        data, loss_fn, model_teacher = (transfer, predict_logits(teacher, transfer).argmax(-1)), None, None
    else:
        data, loss_fn, model_teacher = (transfer, None), kd_at(temperature), teacher
    kd_lib.seed_everything(seed)
    student = CNN1D(CNN1DConfig(**STUDENT))
    config = kd_lib.TrainConfig(num_epochs=num_epochs, seed=seed, progress=False, **LEARNING)
    kd_lib.train(student, data, teacher=model_teacher, loss_fn=loss_fn, config=config, callbacks=callbacks)
    return student


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="folder (default: the repository's data/)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.process_time()
    split = make_mnist1d(5000, seed=42)
    teacher = load_pretrained("mnist1d_cnn")
    teacher_test = predict_logits(teacher, split.x_test)
    students, records = {}, {}
    for offset in OFFSETS:
        transfer = make_mnist1d(TRANSFER_SIZE, seed=seeds_at(offset)[1], train_split=1.0).x_train
        teacher_transfer = predict_logits(teacher, transfer)
        for recipe in RECIPES:
            epochs = []

            def snapshot(state):
                logits = predict_logits(state.student, split.x_test)
                epochs.append({"accuracy": accuracy(logits, split.y_test),
                               "agreement": agreement(logits, teacher_test),
                               "kl": round(predictive_kl(logits, teacher_test), 6)})

            key = f"{recipe} | {offset}"
            student = students[key] = train_student(recipe, offset, split, teacher, transfer, callbacks=[snapshot])
            on_transfer = predict_logits(student, transfer)  # the distilled students' own training inputs
            records[key] = {"recipe": recipe, "offset": offset, "seed": seeds_at(offset)[0], "epochs": epochs,
                            "transfer_agreement": agreement(on_transfer, teacher_transfer),
                            "transfer_kl": round(predictive_kl(on_transfer, teacher_transfer), 6)}
            print(f"{key}: test accuracy {epochs[-1]['accuracy']:.3f}", flush=True)
    info = {"made_by": "python scripts/train_evaluation_students.py",
            "settings": {"offsets": OFFSETS, "seed_stride": SEED_STRIDE, "student_seed": STUDENT_SEED,
                         "transfer_seed": TRANSFER_SEED, "transfer_size": TRANSFER_SIZE, "student": STUDENT,
                         "learning": LEARNING, "recipes": {k: list(v) for k, v in RECIPES.items()},
                         "threads": 1, "torch": torch.__version__, "numerics": str(NUMERICS)},
            "runs": records, "cpu_seconds": round(time.process_time() - started, 1)}
    manifest = save_collection(students, NAME, info, data_dir=args.out)
    print(f"wrote {len(students)} students, {manifest['bytes']:,} bytes, in {info['cpu_seconds']} CPU-s")


if __name__ == "__main__":
    main()
