"""Chapter 06's teachers and grid of trainings: writes kd_lib/weights/scheme_teachers.* and
data/training_schemes_sweep.json.

    python scripts/sweep_training_schemes.py             # ~20 CPU-minutes on one thread
    python scripts/sweep_training_schemes.py --part ensemble   # or one part at a time, then --merge

Chapter 06 loads both, re-trains one teacher and one student of each part live and asserts
that they reproduce the stored ones, so the files cannot drift from the code.

**Seeds are the chapter's seed offsets.** Run ``i`` of every recipe is what the chapter computes
at ``KD_BOOK_SEED_OFFSET=i``: student seed ``shifted_seed(0)`` (a second student of a cohort:
``shifted_seed(500)``), transfer-set seed ``shifted_seed(1)``, as in chapter 04. The five
ensemble teachers are fixed (seeds 100-104), like the book's other shipped teachers.

Data: MNIST-1D's standard split (4,000 labelled training examples, 1,000 test); a transfer set
of the 4,000 training inputs plus 20,000 fresh unlabelled ones. Models: chapter 04's CNNs at
width ``c`` (channels ``(c, 2c, 2c)``, dense ``4c``). Recipes: chapter 04's ``SCRATCH`` (160
epochs over the 4,000 labels) and ``DISTIL`` (30 epochs over the 24,000 transfer inputs,
``kd_loss`` at T = 1), Adam with a cosine schedule.

* ``ensemble``: five c = 8 teachers trained from scratch with different seeds; a c = 4 student
  distilled from each alone, from the probability average of the first k = 2..5, and from the
  logit average of all five; plus the c = 4 student from scratch.
* ``born-again``: c = 8 networks, generation 0 from scratch, generation g distilled from
  generation g - 1 on the same 4,000 labelled inputs (``distillation_loss``, T = 4,
  alpha = 0.5, the SCRATCH recipe), three generations (Furlanello et al. 2018).
* ``mutual``: two c = 4 students trained together with deep mutual learning (Zhang et al.
  2018) on the 4,000 labels, against the same two students (same initial weights) alone.
* ``progressive``: the shipped c = 32 teacher distilled into c = 4 directly, and through a
  chain c = 32 -> 16 -> 8 -> 4 (every stage on the transfer set), with each student's
  top-1 agreement with its own teacher on the test inputs.
* ``task``: chapter 07's task-specific setting with five runs instead of two (the tiny GPT
  teacher, the *pet stories* sub-language, chapter 07's one-block student and recipe): a
  student on 500 pet stories from scratch, distilled from the general teacher, or from the
  teacher fine-tuned on 640 other pet stories; and two two-stage routes that first distil the
  student on 2,000 general stories from the general teacher, then either fine-tune it on the
  pet stories (DistilBERT's order) or distil it again from the fine-tuned teacher (TinyBERT's);
  and their control, the same two stages with cross-entropy on the general stories instead of
  the teacher. Every student is scored by its KL to the true pet language.
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
from kd_lib.lm.gpt import GPT, GPTConfig
from kd_lib.lm.language import Grammar, GrammarConfig, lm_data
from kd_lib.lm.metrics import kl_to_truth
from kd_lib.metrics import accuracy, agreement, count_parameters, predict_logits
from kd_lib.models import CNN1D, CNN1DConfig
from kd_lib.lab.numerics import use_portable_numerics
from kd_lib.lab import DATA_DIR
from kd_lib.pretrained import load_collection, load_pretrained, save_collection

NUMERICS = use_portable_numerics()  # before the first tensor operation (kd_lib/numerics.py)

OFFSETS = list(range(5))
SEED_STRIDE = 1000  # kd_lib.lab.notebook.SEED_STRIDE
STUDENT_SEED, PEER_SEED, TRANSFER_SEED = 0, 500, 1
TEACHER_SEEDS = [100, 101, 102, 103, 104]
TRANSFER_SIZE = 20000
SCRATCH = dict(num_epochs=160, batch_size=512, lr=5e-3, lr_schedule="cosine")
DISTIL = dict(num_epochs=30, batch_size=512, lr=5e-3, lr_schedule="cosine")
TEACHER_WIDTH, STUDENT_WIDTH, GENERATIONS = 8, 4, 3
BORN_AGAIN = dict(temperature=4.0, alpha=0.5)
CHAIN = [16, 8, 4]
# part task: chapter 07's pet-story setting (its student, recipe and seeds)
PET_GRAMMAR = dict(heroes=("dog", "cat"), verbs={"found": 3.0, "played": 3.0, "liked": 2.0, "went": 1.0})
PET_SEED, PET_VAL_SEED, FINE_TUNE_SEED, GENERAL_SEED = 20, 21, 22, 10
PET_STORIES, FINE_TUNE_STORIES, GENERAL_STORIES, PET_VAL_STORIES = 500, 640, 2000, 300
LM_STUDENT = dict(n_layer=1, n_head=2, n_embd=48)  # scripts/sweep_language_models.py STUDENT
LM_RECIPE = dict(batch_size=16, lr=1e-2, lr_schedule="cosine", warmup_steps=20, max_grad_norm=1.0)
LM_EPOCHS = 6
FINE_TUNE = dict(num_epochs=1, batch_size=32, lr=1e-3)  # chapter 07's teacher fine-tuning


def cnn(width: int, seed: int) -> CNN1D:
    torch.manual_seed(seed)
    return CNN1D(CNN1DConfig(channels=(width, 2 * width, 2 * width), hidden=4 * width))


def config(recipe: dict, seed: int) -> kd_lib.TrainConfig:
    return kd_lib.TrainConfig(**recipe, seed=seed, progress=False, device="cpu")


def scratch(width: int, seed: int, data) -> CNN1D:
    model = cnn(width, seed)
    kd_lib.train(model, data, config=config(SCRATCH, seed))
    return model


def distil(width: int, seed: int, inputs, teacher, loss_fn=kd_lib.kd_loss) -> CNN1D:
    model = cnn(width, seed)
    kd_lib.train(model, (inputs, None), teacher=teacher, loss_fn=loss_fn, config=config(DISTIL, seed))
    return model


def seeds_at(offset: int):
    shift = SEED_STRIDE * offset
    return STUDENT_SEED + shift, PEER_SEED + shift, TRANSFER_SEED + shift


def transfer_inputs(split, offset: int):
    fresh = make_mnist1d(TRANSFER_SIZE, seed=seeds_at(offset)[2], train_split=1.0)
    return torch.cat([split.x_train, fresh.x_train])


def train_teachers(split) -> dict:
    teachers = {f"teacher {i}": scratch(TEACHER_WIDTH, seed, (split.x_train, split.y_train))
                for i, seed in enumerate(TEACHER_SEEDS)}
    info = {"description": "five c=8 CNN teachers for chapter 06 (ensembles)",
            "made_by": "python scripts/sweep_training_schemes.py --part teachers",
            "seeds": TEACHER_SEEDS, "recipe": SCRATCH, "torch": torch.__version__, "numerics": str(NUMERICS),
            "test_accuracy": {k: accuracy(predict_logits(m, split.x_test), split.y_test) for k, m in teachers.items()}}
    save_collection(teachers, "scheme_teachers", info)
    return info


def score(model, split) -> float:
    return accuracy(predict_logits(model, split.x_test), split.y_test)


def run_ensemble(split, offsets) -> list:
    teachers = list(load_collection("scheme_teachers").values())
    recipes = {f"teacher {i}": t for i, t in enumerate(teachers)}
    recipes.update({f"ensemble of {k}, probabilities": kd_lib.Ensemble(teachers[:k]) for k in range(2, 6)})
    recipes["ensemble of 5, logits"] = kd_lib.Ensemble(teachers, average="logits")
    rows = []
    for offset in offsets:
        seed, _, _ = seeds_at(offset)
        inputs = transfer_inputs(split, offset)
        for name, teacher in recipes.items():
            started = time.process_time()
            student = distil(STUDENT_WIDTH, seed, inputs, teacher)
            rows.append({"recipe": name, "offset": offset, "seed": seed, "accuracy": score(student, split),
                         "cpu_seconds": round(time.process_time() - started, 1)})
            print(json.dumps(rows[-1]), flush=True)
        student = scratch(STUDENT_WIDTH, seed, (split.x_train, split.y_train))
        rows.append({"recipe": "scratch", "offset": offset, "seed": seed, "accuracy": score(student, split)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def run_born_again(split, offsets) -> list:
    data = (split.x_train, split.y_train)
    loss_fn = partial(kd_lib.distillation_loss, **BORN_AGAIN)
    rows = []
    for offset in offsets:
        seed, _, _ = seeds_at(offset)
        model = scratch(TEACHER_WIDTH, seed, data)
        generations = [model]
        for generation in range(1, GENERATIONS + 1):
            student = cnn(TEACHER_WIDTH, seed + generation)  # each generation has its own initial weights
            kd_lib.train(student, data, teacher=generations[-1], loss_fn=loss_fn,
                         config=config(SCRATCH, seed + generation))
            generations.append(student)
        for generation, model in enumerate(generations):
            rows.append({"generation": generation, "offset": offset, "seed": seed, "accuracy": score(model, split),
                         "ensemble_so_far": score(kd_lib.Ensemble(generations[: generation + 1]), split)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def run_mutual(split, offsets) -> list:
    data = (split.x_train, split.y_train)
    rows = []
    for offset in offsets:
        seed, peer, _ = seeds_at(offset)
        cohort = kd_lib.Cohort([cnn(STUDENT_WIDTH, seed), cnn(STUDENT_WIDTH, peer)])
        kd_lib.train(cohort, data, loss_fn=kd_lib.mutual_learning_loss, config=config(SCRATCH, seed))
        alone = [scratch(STUDENT_WIDTH, s, data) for s in (seed, peer)]
        for member, (together, single) in enumerate(zip(cohort.members, alone)):
            rows.append({"member": member, "offset": offset, "seed": seed, "mutual": score(together, split),
                         "alone": score(single, split)})
            print(json.dumps(rows[-1]), flush=True)
        rows[-1]["cohort_ensemble"] = score(cohort, split)
    return rows


def run_progressive(split, offsets) -> list:
    shipped = load_pretrained("mnist1d_cnn")
    rows = []
    for offset in offsets:
        seed, _, _ = seeds_at(offset)
        inputs = transfer_inputs(split, offset)
        teacher = shipped
        for width in CHAIN:
            student = distil(width, seed, inputs, teacher)
            rows.append({"route": "chain", "width": width, "offset": offset, "seed": seed,
                         "accuracy": score(student, split), "agreement_with_own_teacher": agreement(
                             predict_logits(student, split.x_test), predict_logits(teacher, split.x_test))})
            print(json.dumps(rows[-1]), flush=True)
            teacher = student.eval()
        student = distil(CHAIN[-1], seed, inputs, shipped)
        rows.append({"route": "direct", "width": CHAIN[-1], "offset": offset, "seed": seed,
                     "accuracy": score(student, split), "agreement_with_own_teacher": agreement(
                         predict_logits(student, split.x_test), predict_logits(shipped, split.x_test))})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def lm_config(seed: int, **changes) -> kd_lib.TrainConfig:
    return kd_lib.TrainConfig(**{"num_epochs": LM_EPOCHS, **LM_RECIPE, **changes}, seed=seed, progress=False,
                              device="cpu")


def run_task(split, offsets) -> list:
    grammar, teacher = Grammar(), load_pretrained("tiny_gpt_teacher")
    pets = Grammar(GrammarConfig(**PET_GRAMMAR))
    val = lm_data(pets.sample(PET_VAL_STORIES, seed=PET_VAL_SEED))
    rows = []
    for offset in offsets:
        shift = SEED_STRIDE * offset
        seed = STUDENT_SEED + shift
        task_data = lm_data(pets.sample(PET_STORIES, seed=PET_SEED + shift))
        general = lm_data(grammar.sample(GENERAL_STORIES, seed=GENERAL_SEED + shift))
        fine_tuned = copy.deepcopy(teacher)
        kd_lib.train(fine_tuned, lm_data(pets.sample(FINE_TUNE_STORIES, seed=FINE_TUNE_SEED + shift)),
                     config=kd_lib.TrainConfig(**FINE_TUNE, seed=seed, progress=False, device="cpu"))
        fine_tuned.eval()

        def student():
            torch.manual_seed(seed)
            return GPT(GPTConfig(vocab_size=grammar.vocab_size, block_size=grammar.max_len, **LM_STUDENT))

        def fit(model, data, teacher_model=None):
            kd_lib.train(model, data, teacher=teacher_model, loss_fn=kd_lib.kd_loss if teacher_model else None,
                         config=lm_config(seed))
            return model

        general_student = fit(student(), general, teacher)
        general_scratch = fit(student(), general)  # the control: the same first stage, no teacher
        routes = {
            "scratch": lambda: fit(student(), task_data),
            "general teacher": lambda: fit(student(), task_data, teacher),
            "fine-tuned teacher": lambda: fit(student(), task_data, fine_tuned),
            "general distillation, then fine-tuning": lambda: fit(copy.deepcopy(general_student), task_data),
            "general distillation, then task distillation": lambda: fit(copy.deepcopy(general_student), task_data,
                                                                        fine_tuned),
            "general scratch, then fine-tuning": lambda: fit(copy.deepcopy(general_scratch), task_data),
        }
        for name, route in routes.items():
            rows.append({"route": name, "offset": offset, "seed": seed,
                         "kl_to_pets": round(kl_to_truth(route(), pets, *val), 6)})
            print(json.dumps(rows[-1]), flush=True)
        rows.append({"route": "teachers", "offset": offset, "seed": seed,
                     "general_teacher_kl": round(kl_to_truth(teacher, pets, *val), 6),
                     "fine_tuned_teacher_kl": round(kl_to_truth(fine_tuned, pets, *val), 6)})
    return rows


PARTS = {"ensemble": run_ensemble, "born-again": run_born_again, "mutual": run_mutual,
         "progressive": run_progressive, "task": run_task}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DATA_DIR / "training_schemes_sweep.json")
    parser.add_argument("--part", choices=["teachers", *PARTS, "all"], default="all")
    parser.add_argument("--offsets", type=int, nargs="*", default=OFFSETS)
    parser.add_argument("--merge", type=Path, nargs="+", help="combine per-part files into --out")
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        result = {**parts[0], "cpu_seconds": round(sum(p["cpu_seconds"] for p in parts), 1)}
        for part in parts[1:]:
            result.update({k: v for k, v in part.items() if k in PARTS})
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
        return
    torch.set_num_threads(1)
    started = time.process_time()
    split = make_mnist1d(5000, seed=42)
    if args.part in ("teachers", "all"):
        print(json.dumps(train_teachers(split)["test_accuracy"]))
        if args.part == "teachers":
            return
    result = {"made_by": "python scripts/sweep_training_schemes.py",
              "settings": {"offsets": args.offsets, "seed_stride": SEED_STRIDE, "student_seed": STUDENT_SEED,
                           "peer_seed": PEER_SEED, "transfer_seed": TRANSFER_SEED, "transfer_size": TRANSFER_SIZE,
                           "scratch": SCRATCH, "distil": DISTIL, "teacher_width": TEACHER_WIDTH,
                           "student_width": STUDENT_WIDTH, "generations": GENERATIONS, "born_again": BORN_AGAIN,
                           "chain": CHAIN, "pet_grammar": PET_GRAMMAR, "pet_seed": PET_SEED,
                           "pet_val_seed": PET_VAL_SEED, "fine_tune_seed": FINE_TUNE_SEED,
                           "general_seed": GENERAL_SEED, "pet_stories": PET_STORIES,
                           "fine_tune_stories": FINE_TUNE_STORIES, "general_stories": GENERAL_STORIES,
                           "pet_val_stories": PET_VAL_STORIES, "lm_student": LM_STUDENT, "lm_recipe": LM_RECIPE,
                           "lm_epochs": LM_EPOCHS, "fine_tune": FINE_TUNE, "threads": 1, "torch": torch.__version__, "numerics": str(NUMERICS)}}
    for name, run in PARTS.items():
        if args.part in (name, "all"):
            result[name] = run(split, args.offsets)
    result["cpu_seconds"] = round(time.process_time() - started, 1)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} in {result['cpu_seconds']} CPU-s")


if __name__ == "__main__":
    main()
