"""Chapter 05's grid of trainings, too long for the chapter: writes data/feature_distillation_sweep.json.

    python scripts/sweep_feature_distillation.py               # both parts, ~25 CPU-minutes
    python scripts/sweep_feature_distillation.py --part cnn    # or one part (cnn | lm), then
    python scripts/sweep_feature_distillation.py --merge a.json b.json   # combine the two files

Chapter 05 loads the JSON, re-trains one run of each part live and asserts that it reproduces
the stored one, so the file cannot drift from the code.

**Seeds are the chapter's seed offsets.** Run ``i`` of every recipe is what the chapter computes
at ``KD_BOOK_SEED_OFFSET=i`` (student seed ``shifted_seed(0)``; for the language models also the
transfer stories, ``shifted_seed(10)``). Every recipe of a part trains for the same number of
optimizer steps; only the objective (and, for DistilBERT, the initial weights) changes.

Part ``cnn`` (MNIST-1D, the shipped CNN teacher, the 4,000 labelled training examples):

* a thin CNN student (channels 4-8-8, 53x fewer parameters than the teacher): scratch
  (cross-entropy), logit KD (``distillation_loss``, T = 4, alpha = 0.5), logit KD + a FitNets
  hint (Romero et al. 2015) on the middle conv block through a learned 1x1-conv regressor,
  jointly at four hint weights and in two stages (hint only for the first quarter of the
  epochs, then logit KD), and logit KD + attention transfer (Zagoruyko & Komodakis 2017) on
  all three conv blocks at three weights (beta 1000 is the paper's);
* an MLP student (64-64): scratch, logit KD, logit KD + a hint from its second hidden layer
  onto the teacher's dense layer through a learned linear projection, at the same four hint
  weights (attention transfer does not apply: an MLP has no spatial map).

Part ``lm`` (the tiny GPT teacher of chapter 07, 2,000 transfer stories, 6 passes):

* a one-block student (48 wide, 4 heads like the teacher): scratch, logit KD (forward KL),
  logit KD + TinyBERT's attention-score and hidden-state losses (Jiao et al. 2020; the
  student's block mapped to the teacher's last, embeddings to embeddings, widths projected),
  logit KD + MiniLM's attention and value-relation losses (Wang et al. 2020);
* DistilBERT's recipe (Sanh et al. 2019) on a two-block student of the teacher's width:
  random init + logit KD, init from teacher blocks 0 and 2 + logit KD, and that + the cosine
  loss on the last hidden states.

Each LM student is scored by validation cross-entropy, KL to the true language and the share
of sampled stories the grammar accepts.
"""
import argparse
import json
import time
from functools import partial
from pathlib import Path

import torch
from torch import nn

import kd_lib
from kd_lib.data import make_mnist1d
from kd_lib.lm.gpt import GPT, GPTConfig, init_from_teacher
from kd_lib.lm.language import Grammar, lm_data
from kd_lib.lm.metrics import lm_metrics
from kd_lib.metrics import accuracy, count_parameters, predict_logits
from kd_lib.models import CNN1D, CNN1DConfig, MLP, MLPConfig
from kd_lib.lab.numerics import use_portable_numerics
from kd_lib.lab import DATA_DIR
from kd_lib.pretrained import load_pretrained

NUMERICS = use_portable_numerics()  # before the first tensor operation (kd_lib/numerics.py)

OFFSETS = list(range(5))
SEED_STRIDE = 1000  # kd_lib.lab.notebook.SEED_STRIDE

# ----------------------------------------------------------------------------- part cnn
CNN = dict(channels=(4, 8, 8), hidden=16)
MLP_HIDDEN = (64, 64)
CNN_RECIPE = dict(num_epochs=60, batch_size=128, lr=3e-3, lr_schedule="cosine")
TEMPERATURE, ALPHA = 4.0, 0.5
HINT_WEIGHTS = [0.001, 0.01, 0.1, 1.0]
HINT_EPOCHS = 15  # two stages: hint only for HINT_EPOCHS, then logit KD
AT_BETAS = [10.0, 100.0, 1000.0]  # 1000: the paper's
GUIDED, HINT = "features.7", "features.7"  # the student's middle block, the teacher's middle block
AT_LAYERS = ["features.3", "features.7", "features.11"]


def cnn_student(seed: int) -> CNN1D:
    torch.manual_seed(seed)
    return CNN1D(CNN1DConfig(**CNN))


def mlp_student(seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP(MLPConfig(hidden=MLP_HIDDEN))


def cnn_config(seed: int, **changes) -> kd_lib.TrainConfig:
    return kd_lib.TrainConfig(**{**CNN_RECIPE, **changes}, seed=seed, progress=False, device="cpu")


logit_kd = partial(kd_lib.distillation_loss, temperature=TEMPERATURE, alpha=ALPHA)
hint = partial(kd_lib.hint_loss, student_layer=GUIDED, teacher_layer=HINT)


def regressor(student: nn.Module, teacher: nn.Module) -> nn.Module:
    """FitNets' regressor: a 1x1 convolution from the student's channels to the teacher's."""
    return nn.Conv1d(student.config.channels[1], teacher.config.channels[1], kernel_size=1)


def cnn_recipes(teacher: nn.Module) -> dict:
    """name -> fn(seed, data) returning the trained student (the part of it that is deployed)."""
    def scratch(make):
        def fit(seed, data):
            student = make(seed)
            kd_lib.train(student, data, config=cnn_config(seed))
            return student
        return fit

    def kd(make):
        def fit(seed, data):
            student = make(seed)
            kd_lib.train(student, data, teacher=teacher, loss_fn=logit_kd, config=cnn_config(seed))
            return student
        return fit

    def joint_hint(weight):
        def fit(seed, data):
            student = cnn_student(seed)
            tapped = kd_lib.Tapped(student, {GUIDED: regressor(student, teacher)})
            loss = kd_lib.weighted_sum(kd=(1.0, logit_kd), hint=(weight, hint))
            kd_lib.train(tapped, data, teacher=kd_lib.Tapped(teacher, [HINT]), loss_fn=loss,
                         config=cnn_config(seed))
            return student
        return fit

    def staged_hint(seed, data):
        student = cnn_student(seed)
        tapped = kd_lib.Tapped(student, {GUIDED: regressor(student, teacher)})
        kd_lib.train(tapped, data, teacher=kd_lib.Tapped(teacher, [HINT]), loss_fn=hint,
                     config=cnn_config(seed, num_epochs=HINT_EPOCHS))
        kd_lib.train(student, data, teacher=teacher, loss_fn=logit_kd,
                     config=cnn_config(seed, num_epochs=CNN_RECIPE["num_epochs"] - HINT_EPOCHS))
        return student

    def attention_transfer(beta):
        def fit(seed, data):
            student = cnn_student(seed)
            at = partial(kd_lib.attention_transfer_loss, layer_pairs=[(n, n) for n in AT_LAYERS], beta=beta)
            loss = kd_lib.weighted_sum(kd=(1.0, logit_kd), at=(1.0, at))
            kd_lib.train(kd_lib.Tapped(student, AT_LAYERS), data, teacher=kd_lib.Tapped(teacher, AT_LAYERS),
                         loss_fn=loss, config=cnn_config(seed))
            return student
        return fit

    def mlp_hint(weight):
        def fit(seed, data):
            student = mlp_student(seed)
            tapped = kd_lib.Tapped(student, {"body.3": nn.Linear(MLP_HIDDEN[-1], teacher.config.hidden)})
            loss = kd_lib.weighted_sum(kd=(1.0, logit_kd), hint=(weight, partial(
                kd_lib.hint_loss, student_layer="body.3", teacher_layer="dense.2")))
            kd_lib.train(tapped, data, teacher=kd_lib.Tapped(teacher, ["dense.2"]), loss_fn=loss,
                         config=cnn_config(seed))
            return student
        return fit

    recipes = {("CNN", "scratch"): scratch(cnn_student), ("CNN", "logit KD"): kd(cnn_student)}
    recipes.update({("CNN", f"logit KD + hint, weight {w:g}"): joint_hint(w) for w in HINT_WEIGHTS})
    recipes[("CNN", "hint, then logit KD")] = staged_hint
    recipes.update({("CNN", f"logit KD + attention transfer, beta {b:g}"): attention_transfer(b) for b in AT_BETAS})
    recipes.update({("MLP", "scratch"): scratch(mlp_student), ("MLP", "logit KD"): kd(mlp_student)})
    recipes.update({("MLP", f"logit KD + hint, weight {w:g}"): mlp_hint(w) for w in HINT_WEIGHTS})
    return recipes


def run_cnn(offsets) -> dict:
    split, teacher = make_mnist1d(5000, seed=42), load_pretrained("mnist1d_cnn")
    data = (split.x_train, split.y_train)
    runs = []
    for offset in offsets:
        seed = SEED_STRIDE * offset
        for (student_kind, recipe), fit in cnn_recipes(teacher).items():
            started = time.process_time()
            student = fit(seed, data)
            runs.append({"student": student_kind, "recipe": recipe, "offset": offset, "seed": seed,
                         "accuracy": accuracy(predict_logits(student, split.x_test), split.y_test),
                         "parameters": count_parameters(student),
                         "cpu_seconds": round(time.process_time() - started, 1)})
            print(json.dumps(runs[-1]), flush=True)
    settings = {"student_cnn": CNN, "student_mlp": list(MLP_HIDDEN), "recipe": CNN_RECIPE, "temperature": TEMPERATURE,
                "alpha": ALPHA, "hint_weights": HINT_WEIGHTS,
                "hint_epochs": HINT_EPOCHS, "at_betas": AT_BETAS, "guided": GUIDED, "hint": HINT,
                "at_layers": AT_LAYERS, "teacher_parameters": count_parameters(teacher),
                "teacher_accuracy": accuracy(predict_logits(teacher, split.x_test), split.y_test)}
    return {"settings": settings, "runs": runs}


# ----------------------------------------------------------------------------- part lm
TRANSFER_SEED, VAL_SEED = 10, 11
TRANSFER_STORIES, VAL_STORIES, NUM_SAMPLES = 2000, 300, 1000
LM_STUDENT = dict(n_layer=1, n_head=4, n_embd=48)
LM_EPOCHS = 6
LM_RECIPE = dict(batch_size=16, lr=1e-2, lr_schedule="cosine", warmup_steps=20, max_grad_norm=1.0)
DISTILBERT_LAYERS = [0, 2]  # one teacher block in two


def lm_config(seed: int) -> kd_lib.TrainConfig:
    return kd_lib.TrainConfig(num_epochs=LM_EPOCHS, seed=seed, progress=False, device="cpu",
                              cache_teacher_logits=False, **LM_RECIPE)


def lm_student(grammar: Grammar, seed: int, **changes) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=grammar.vocab_size, block_size=grammar.max_len, **{**LM_STUDENT, **changes}))


def lm_recipes(grammar: Grammar, teacher: GPT) -> dict:
    last = teacher.config.n_layer  # hidden.{last} is the teacher's last block output
    width, teacher_width = LM_STUDENT["n_embd"], teacher.config.n_embd

    def fit(student, loss=None, student_layers=None, teacher_layers=None):
        def run(seed, data):
            model = student(seed)
            trained = model if student_layers is None else kd_lib.Tapped(model, student_layers())
            live_teacher = teacher if teacher_layers is None else kd_lib.Tapped(teacher, teacher_layers)
            kd_lib.train(trained, data, teacher=None if loss is None else live_teacher, loss_fn=loss,
                         config=lm_config(seed))
            return model
        return run

    small = lambda seed: lm_student(grammar, seed)  # noqa: E731
    wide = lambda seed: lm_student(grammar, seed, n_layer=2, n_embd=teacher_width)  # noqa: E731
    from_teacher = lambda seed: init_from_teacher(teacher, DISTILBERT_LAYERS)  # noqa: E731
    tinybert = kd_lib.weighted_sum(
        kd=(1.0, kd_lib.kd_loss),
        attention=(1.0, partial(kd_lib.attention_loss, layer_map=[(0, last - 1)])),
        hidden=(1.0, partial(kd_lib.hidden_state_loss, layer_map=[(0, 0), (1, last)])))
    minilm = kd_lib.weighted_sum(kd=(1.0, kd_lib.kd_loss), minilm=(1.0, kd_lib.minilm_loss))
    cosine = kd_lib.weighted_sum(kd=(1.0, kd_lib.kd_loss), cosine=(1.0, kd_lib.cosine_hidden_loss))
    return {
        "scratch": fit(small),
        "logit KD": fit(small, kd_lib.kd_loss),
        "logit KD + TinyBERT": fit(
            small, tinybert,
            lambda: {"scores.0": None, "hidden.0": nn.Linear(width, teacher_width),
                     "hidden.1": nn.Linear(width, teacher_width)},
            [f"scores.{last - 1}", "hidden.0", f"hidden.{last}"]),
        "logit KD + MiniLM": fit(small, minilm, lambda: ["attention.0", "values.0"],
                                 [f"attention.{last - 1}", f"values.{last - 1}"]),
        "2 blocks, random init + logit KD": fit(wide, kd_lib.kd_loss),
        "2 blocks, teacher init + logit KD": fit(from_teacher, kd_lib.kd_loss),
        "2 blocks, teacher init + logit KD + cosine": fit(from_teacher, cosine, lambda: ["hidden.2"],
                                                          [f"hidden.{last}"]),
    }


def run_lm(offsets) -> dict:
    grammar, teacher = Grammar(), load_pretrained("tiny_gpt_teacher")
    val = lm_data(grammar.sample(VAL_STORIES, seed=VAL_SEED))
    runs = []
    for offset in offsets:
        seed = SEED_STRIDE * offset
        data = lm_data(grammar.sample(TRANSFER_STORIES, seed=TRANSFER_SEED + seed))
        for recipe, fit in lm_recipes(grammar, teacher).items():
            started = time.process_time()
            student = fit(seed, data)
            metrics = lm_metrics(student, grammar, *val, num_samples=NUM_SAMPLES, seed=seed)
            runs.append({"recipe": recipe, "offset": offset, "seed": seed, "parameters": count_parameters(student),
                         **{k: round(v, 6) for k, v in metrics.items()},
                         "cpu_seconds": round(time.process_time() - started, 1)})
            print(json.dumps(runs[-1]), flush=True)
    teacher_metrics = lm_metrics(teacher, grammar, *val, num_samples=NUM_SAMPLES, seed=0)
    settings = {"student": LM_STUDENT, "epochs": LM_EPOCHS, "recipe": LM_RECIPE, "transfer_seed": TRANSFER_SEED,
                "val_seed": VAL_SEED, "transfer_stories": TRANSFER_STORIES, "val_stories": VAL_STORIES,
                "num_samples": NUM_SAMPLES, "distilbert_layers": DISTILBERT_LAYERS,
                "teacher": {**{k: round(v, 6) for k, v in teacher_metrics.items()},
                            "parameters": count_parameters(teacher)}}
    return {"settings": settings, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DATA_DIR / "feature_distillation_sweep.json")
    parser.add_argument("--part", choices=["cnn", "lm", "both"], default="both")
    parser.add_argument("--offsets", type=int, nargs="*", default=OFFSETS)
    parser.add_argument("--merge", type=Path, nargs=2, metavar=("CNN_JSON", "LM_JSON"))
    args = parser.parse_args()
    if args.merge:
        cnn, lm = (json.loads(p.read_text()) for p in args.merge)
        result = {**cnn, "lm": lm["lm"], "cpu_seconds": round(cnn["cpu_seconds"] + lm["cpu_seconds"], 1)}
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
        return
    torch.set_num_threads(1)
    started = time.process_time()
    result = {"made_by": "python scripts/sweep_feature_distillation.py", "offsets": args.offsets,
              "seed_stride": SEED_STRIDE, "threads": 1, "torch": torch.__version__, "numerics": str(NUMERICS)}
    if args.part in ("cnn", "both"):
        result["cnn"] = run_cnn(args.offsets)
    if args.part in ("lm", "both"):
        result["lm"] = run_lm(args.offsets)
    result["cpu_seconds"] = round(time.process_time() - started, 1)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} in {result['cpu_seconds']} CPU-s")


if __name__ == "__main__":
    main()
