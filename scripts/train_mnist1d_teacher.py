"""Train the book's MNIST-1D teacher (a 1-D CNN) and ship it to kd_lib/weights/mnist1d_cnn.*.

    python scripts/train_mnist1d_teacher.py            # ~15 s on one CPU thread

Data: the published MNIST-1D split regenerated offline (5,000 samples, seed 42, 4,000 train /
1,000 test). The teacher sees only the 4,000 training samples; the test set is never trained on.
"""
import argparse
import time

import torch

import kd_lib
from kd_lib.data import make_mnist1d
from kd_lib.metrics import count_parameters
from kd_lib.models import CNN1D, CNN1DConfig
from kd_lib.pretrained import save_pretrained
from kd_lib.lab.numerics import use_portable_numerics

NUMERICS = use_portable_numerics()  # before the first tensor operation (kd_lib/numerics.py)

RECIPE = dict(num_epochs=30, batch_size=128, lr=2e-3, lr_schedule="cosine", seed=0)


def build_and_train(num_epochs: int = RECIPE["num_epochs"], progress: bool = True):
    torch.set_num_threads(1)
    split = make_mnist1d(5000, seed=42)
    kd_lib.seed_everything(RECIPE["seed"])
    teacher = CNN1D(CNN1DConfig())
    config = kd_lib.TrainConfig(**{**RECIPE, "num_epochs": num_epochs}, device="cpu", progress=progress,
                                desc="teacher")
    history = kd_lib.train(teacher, (split.x_train, split.y_train), config=config,
                           eval_data=(split.x_test, split.y_test))
    return teacher, history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None, help="folder to write to (default: the repository's data/)")
    args = parser.parse_args()
    started = time.perf_counter()
    teacher, history = build_and_train()
    manifest = save_pretrained(teacher, "mnist1d_cnn", {
        "description": "1-D CNN teacher for MNIST-1D (book chapters 01-04, 09-10)",
        "made_by": "python scripts/train_mnist1d_teacher.py",
        "data": {"dataset": "mnist1d (generated)", "num_samples": 5000, "seed": 42, "train": 4000, "test": 1000},
        "training": {**RECIPE, "optimizer": "adam", "threads": 1, "torch": torch.__version__,
                     "numerics": str(NUMERICS)},
        "parameters": count_parameters(teacher),
        "metrics": {"test_accuracy": history.final["eval_accuracy"], "test_loss": history.final["eval_loss"]},
        "seconds": round(time.perf_counter() - started, 1),
    }, data_dir=args.out)
    print({k: manifest[k] for k in ("parameters", "metrics", "sha256", "seconds")})


if __name__ == "__main__":
    main()
