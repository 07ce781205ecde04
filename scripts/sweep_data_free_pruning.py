"""Chapter 08's grid of trainings: writes data/data_free_pruning_sweep.json.

    python scripts/sweep_data_free_pruning.py                  # ~25 CPU-minutes on one thread
    python scripts/sweep_data_free_pruning.py --part data-free  # or one part at a time, then --merge

Chapter 08 re-runs one training of each part live and asserts that it reproduces the stored
one exactly, so the file cannot drift from the code.

**Seeds are the chapter's seed offsets.** Run ``i`` is what the chapter computes at
``KD_BOOK_SEED_OFFSET=i``: every seed below is ``base + 1000 * i`` (``kd_lib.lab.shifted_seed``).

* ``data-free``: the shipped MNIST-1D CNN teacher distilled (``kd_loss``, T = 4) into chapter
  03's MLP student (40-64-64-10) on transfer sets of: standard normal noise (4,000 inputs);
  DeepInversion (Yin et al. 2020; 4,000 inputs, ``kd_lib.methods.data_free.deep_inversion``); a DAFL
  generator (Chen et al. 2019), as published and with DeepInversion's BatchNorm term added
  (4,000 samples each); 10 real training inputs per class (100); the 4,000 real training
  inputs; and chapter 03's transfer set (those plus 20,000 fresh unlabelled inputs). Every
  student gets chapter 03's 1,280 optimizer steps (the transfer set: its 1,410).
* ``cnn-pruning``: the teacher (channels 32, 64, 64; dense 128) pruned to chapter 04's c = 8
  shape (8, 16, 16; dense 32) by L1 weight norm and by mean activation on 512 training inputs,
  then trained on the 4,000 training inputs for up to 16 x 40 steps (Adam, constant lr): by
  cross-entropy on the labels (fine-tuning) or by ``kd_loss`` (T = 1) from the unpruned teacher;
  and the same shape from a random initialisation, trained both ways. Test accuracy is recorded
  at 40, 80, 160, 320 and 640 steps.
* ``gpt-pruning``: the tiny GPT teacher (3 blocks, width 96, 4 heads, MLP 384) pruned
  Minitron-style on 64 calibration stories, in width (width 64, 2 heads, MLP 192) or in depth
  (its most important block kept), then trained on 2,000 stories for up to 16 x 50 steps
  (Adam, constant lr after warm-up): cross-entropy (fine-tuning) or ``kd_loss`` (T = 1) from
  the unpruned teacher; and the width-pruned shape from a random initialisation, both ways.
  KL to the true language (chapter 07's 300 validation stories) at 50 ... 800 steps.
"""
import argparse
import copy
import json
import time
from functools import partial
from pathlib import Path

import torch

import kd_lib
from kd_lib.data import make_mnist1d
from kd_lib.methods.data_free import DAFLConfig, Generator, InversionConfig, deep_inversion, sample_generator
from kd_lib.methods.data_free import train_dafl_generator
from kd_lib.lm.gpt import GPT
from kd_lib.lm.language import Grammar, lm_data
from kd_lib.lm.metrics import truth_scorer
from kd_lib.metrics import accuracy, count_parameters, predict_logits
from kd_lib.models import MLP, MLPConfig
from kd_lib.lab.numerics import use_portable_numerics
from kd_lib.lab import DATA_DIR
from kd_lib.pretrained import load_pretrained
from kd_lib.lab.sweep import ScoreAtSteps
from kd_lib.methods.pruning import cnn_importance, gpt_importance, prune_cnn, prune_gpt

NUMERICS = use_portable_numerics()  # before the first tensor operation (kd_lib/numerics.py)

OFFSETS = list(range(5))
SEED_STRIDE = 1000  # kd_lib.lab.notebook.SEED_STRIDE
SEEDS = dict(student=0, transfer=1, inversion=10, dafl=20, noise=30, few=40, calibration=50,
             stories=10, lm_calibration=5)
SET_SIZE, FEW_PER_CLASS, TRANSFER_SIZE = 4000, 10, 20000
STUDENT_HIDDEN = (64, 64)  # chapter 03's student
TEMPERATURE = 4.0
STEPS = 1280  # chapter 03: 160 epochs over 4,000 inputs at batch 512
DISTIL = dict(batch_size=512, lr=5e-3, lr_schedule="cosine")
TRANSFER_EPOCHS = 30  # chapter 03's transfer-set recipe (1,410 steps)
INVERSION = dict(num_steps=200, batch_size=500)
DAFL = dict(num_steps=1500, batch_size=256)
DAFL_BN_WEIGHT = 1.0
PRUNED_CNN = dict(channels=(8, 16, 16), hidden=32)  # chapter 04's c = 8 student
CALIBRATION = 512
CNN_BUDGET, CNN_RECIPE = 40, dict(batch_size=512, lr=2e-3)
CHECKPOINTS = [1, 2, 4, 8, 16]  # multiples of the recovery budget
LM_BUDGET = 50
LM_RECIPE = dict(batch_size=16, lr=3e-3, warmup_steps=20, max_grad_norm=1.0)
LM_STORIES, LM_CALIBRATION, VAL_STORIES, VAL_SEED = 2000, 64, 300, 11  # chapter 07's validation
GPT_WIDTH = dict(n_embd=64, n_head=2, mlp_hidden=192)
EXAMPLES = 4  # synthetic signals per method kept for the chapter's figure (offset 0)


def seed(name: str, offset: int) -> int:
    return SEEDS[name] + SEED_STRIDE * offset


def epochs_for(num_inputs: int, batch_size: int = 512, steps: int = STEPS) -> int:
    return steps // -(-num_inputs // batch_size)


def mlp_student(seed_: int) -> MLP:
    torch.manual_seed(seed_)
    return MLP(MLPConfig(hidden=STUDENT_HIDDEN))


def distil_on(inputs, teacher, split, offset, epochs=None) -> float:
    student = mlp_student(seed("student", offset))
    config = kd_lib.TrainConfig(num_epochs=epochs or epochs_for(len(inputs)), **DISTIL,
                                seed=seed("student", offset), progress=False, device="cpu")
    kd_lib.train(student, (inputs, None), teacher=teacher,
                 loss_fn=partial(kd_lib.kd_loss, temperature=TEMPERATURE), config=config)
    return accuracy(predict_logits(student, split.x_test), split.y_test)


def few_per_class(split, offset: int) -> torch.Tensor:
    order = torch.randperm(len(split.y_train), generator=torch.Generator().manual_seed(seed("few", offset)))
    picked = [order[split.y_train[order] == c][:FEW_PER_CLASS] for c in range(10)]
    return split.x_train[torch.cat(picked).sort().values]


def dafl_inputs(teacher, offset: int, bn_weight: float) -> torch.Tensor:
    generator = Generator()
    train_dafl_generator(teacher, generator, DAFLConfig(**DAFL, bn_weight=bn_weight,
                                                        seed=seed("dafl", offset), progress=False))
    return sample_generator(generator, SET_SIZE, seed=seed("dafl", offset))


def transfer_sets(teacher, split, offset: int) -> dict:
    inversion, _, _ = deep_inversion(teacher, SET_SIZE, 40, 10,
                                     InversionConfig(**INVERSION, seed=seed("inversion", offset), progress=False))
    fresh = make_mnist1d(TRANSFER_SIZE, seed=seed("transfer", offset), train_split=1.0)
    return {
        "noise": torch.randn(SET_SIZE, 40, generator=torch.Generator().manual_seed(seed("noise", offset))),
        "DeepInversion": inversion,
        "DAFL": dafl_inputs(teacher, offset, 0.0),
        "DAFL + BatchNorm term": dafl_inputs(teacher, offset, DAFL_BN_WEIGHT),
        "10 real per class": few_per_class(split, offset),
        "real, 4,000": split.x_train,
        "real + 20,000 unlabelled": torch.cat([split.x_train, fresh.x_train]),
    }


def part_data_free() -> dict:
    split, teacher = make_mnist1d(5000, seed=42), load_pretrained("mnist1d_cnn")
    rows, examples = [], {}
    for offset in OFFSETS:
        sets = transfer_sets(teacher, split, offset)
        for name, inputs in sets.items():
            epochs = TRANSFER_EPOCHS if name == "real + 20,000 unlabelled" else None
            with torch.no_grad():
                probs = predict_logits(teacher, inputs).softmax(-1)
            rows.append({"set": name, "offset": offset, "inputs": len(inputs),
                         "accuracy": distil_on(inputs, teacher, split, offset, epochs),
                         "teacher_confidence": float(probs.max(-1).values.mean()),
                         "classes_seen": int(torch.bincount(probs.argmax(-1), minlength=10).gt(0).sum())})
            if offset == 0 and name in ("noise", "DAFL", "DAFL + BatchNorm term"):
                examples[name] = inputs[:EXAMPLES].tolist()
            print(rows[-1], flush=True)
    return {"data-free": rows, "examples": examples}


def cnn_routes(teacher, split, offset: int) -> list:
    calibration = split.x_train[torch.randperm(len(split.x_train), generator=torch.Generator().manual_seed(
        seed("calibration", offset)))[:CALIBRATION]]
    score = lambda m: accuracy(predict_logits(m, split.x_test), split.y_test)  # noqa: E731
    starts = {method: prune_cnn(teacher, importance=cnn_importance(teacher, method, calibration), **PRUNED_CNN)
              for method in ("l1", "activation")}
    torch.manual_seed(seed("student", offset))
    starts["random"] = kd_lib.models.CNN1D(kd_lib.models.CNN1DConfig(**PRUNED_CNN))
    rows = []
    steps = [CNN_BUDGET * k for k in CHECKPOINTS]
    for start, model in starts.items():
        for recovery in ("labels", "distillation"):
            student = copy.deepcopy(model)
            checkpoints = ScoreAtSteps(steps, score)
            config = kd_lib.TrainConfig(num_epochs=steps[-1] // 8, **CNN_RECIPE, seed=seed("student", offset),
                                        progress=False, device="cpu")
            kd_lib.train(student, (split.x_train, split.y_train if recovery == "labels" else None),
                         teacher=None if recovery == "labels" else teacher,
                         loss_fn=None if recovery == "labels" else kd_lib.kd_loss,
                         config=config, callbacks=[checkpoints])
            rows.append({"start": start, "recovery": recovery, "offset": offset, "before": score(model),
                         "accuracy": checkpoints.curve(), "steps": steps,
                         "parameters": count_parameters(student)})
            print(rows[-1], flush=True)
    return rows


def part_cnn_pruning() -> dict:
    split, teacher = make_mnist1d(5000, seed=42), load_pretrained("mnist1d_cnn")
    return {"cnn-pruning": [row for offset in OFFSETS for row in cnn_routes(teacher, split, offset)]}


def gpt_routes(teacher, grammar, score, offset: int) -> list:
    calibration = grammar.sample(LM_CALIBRATION, seed=seed("lm_calibration", offset))[:, :-1]
    importance = gpt_importance(teacher, calibration)
    best_block = int(importance.blocks.argmax())
    starts = {"width": prune_gpt(teacher, importance, **GPT_WIDTH),
              "depth": prune_gpt(teacher, importance, layers=[best_block])}
    torch.manual_seed(seed("student", offset))
    starts["random"] = GPT(starts["width"].config)
    data = lm_data(grammar.sample(LM_STORIES, seed=seed("stories", offset)))
    steps = [LM_BUDGET * k for k in CHECKPOINTS]
    rows = []
    for start, model in starts.items():
        for recovery in ("labels", "distillation"):
            student = copy.deepcopy(model)
            checkpoints = ScoreAtSteps(steps, score)
            config = kd_lib.TrainConfig(num_epochs=-(-steps[-1] * LM_RECIPE["batch_size"] // LM_STORIES),
                                        **LM_RECIPE, seed=seed("student", offset), progress=False, device="cpu")
            kd_lib.train(student, data, teacher=None if recovery == "labels" else teacher,
                         loss_fn=None if recovery == "labels" else kd_lib.kd_loss, config=config,
                         callbacks=[checkpoints])
            rows.append({"start": start, "recovery": recovery, "offset": offset, "before": score(model),
                         "kl": checkpoints.curve(), "steps": steps,
                         "parameters": count_parameters(student), "kept_block": best_block})
            print(rows[-1], flush=True)
    return rows


def part_gpt_pruning() -> dict:
    grammar, teacher = Grammar(), load_pretrained("tiny_gpt_teacher").float()
    score = truth_scorer(grammar, *lm_data(grammar.sample(VAL_STORIES, seed=VAL_SEED)))
    return {"gpt-pruning": [row for offset in OFFSETS for row in gpt_routes(teacher, grammar, score, offset)],
            "gpt_teacher_kl": score(teacher)}


PARTS = {"data-free": part_data_free, "cnn-pruning": part_cnn_pruning, "gpt-pruning": part_gpt_pruning}


def settings() -> dict:
    return {"offsets": OFFSETS, "seed_stride": SEED_STRIDE, "seeds": SEEDS, "set_size": SET_SIZE,
            "few_per_class": FEW_PER_CLASS, "transfer_size": TRANSFER_SIZE, "student_hidden": STUDENT_HIDDEN,
            "temperature": TEMPERATURE, "steps": STEPS, "distil": DISTIL, "transfer_epochs": TRANSFER_EPOCHS,
            "inversion": INVERSION, "dafl": DAFL, "dafl_bn_weight": DAFL_BN_WEIGHT, "pruned_cnn": PRUNED_CNN,
            "calibration": CALIBRATION, "cnn_budget": CNN_BUDGET, "cnn_recipe": CNN_RECIPE,
            "checkpoints": CHECKPOINTS, "lm_budget": LM_BUDGET, "lm_recipe": LM_RECIPE,
            "lm_stories": LM_STORIES, "lm_calibration": LM_CALIBRATION, "val_stories": VAL_STORIES,
            "val_seed": VAL_SEED, "gpt_width": GPT_WIDTH, "threads": 1, "torch": torch.__version__,
            "numerics": str(NUMERICS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=list(PARTS), action="append")
    parser.add_argument("--merge", action="store_true", help="merge the parts' files into the sweep file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = DATA_DIR / "data_free_pruning_sweep.json"
    parts_dir = Path("/tmp") / "data_free_pruning_parts"
    parts_dir.mkdir(exist_ok=True)
    for name in args.part or ([] if args.merge else list(PARTS)):
        started = time.process_time()
        result = PARTS[name]()
        result["cpu_seconds"] = time.process_time() - started
        (parts_dir / f"{name}.json").write_text(json.dumps(result))
    if args.merge or not args.part:
        merged = {"made_by": "python scripts/sweep_data_free_pruning.py", "settings": settings(), "cpu_seconds": 0.0}
        for name in PARTS:
            part = json.loads((parts_dir / f"{name}.json").read_text())
            merged["cpu_seconds"] += part.pop("cpu_seconds")
            merged.update(part)
        out.write_text(json.dumps(merged, indent=1) + "\n")
        print("wrote", out)


if __name__ == "__main__":
    main()
