"""Pretrain the book's language-model teacher (a tiny GPT) and ship it to kd_lib/weights/tiny_gpt_teacher.*.

    python scripts/train_gpt_teacher.py            # ~4 min on one CPU thread

Data: stories of the synthetic language of kd_lib.lm.language, generated from a seed (nothing is
downloaded). The teacher trains with kd_lib.train on cross-entropy; the manifest records the
recipe, the data seeds, the first step losses (tests/test_gpt_teacher_script.py re-runs those
steps and compares) and the final metrics, measured on the float16 weights that are shipped.
"""
import argparse
import copy
import time

import torch

import kd_lib
from kd_lib.lm.gpt import GPT, GPTConfig
from kd_lib.lm.language import Grammar, lm_data
from kd_lib.lm.metrics import lm_metrics
from kd_lib.metrics import count_parameters
from kd_lib.pretrained import save_pretrained
from kd_lib.lab.numerics import use_portable_numerics

NUMERICS = use_portable_numerics()  # before the first tensor operation (kd_lib/numerics.py)

NAME = "tiny_gpt_teacher"
MODEL = dict(n_layer=3, n_head=4, n_embd=96)
DATA = dict(train_stories=32000, train_seed=1, val_stories=1000, val_seed=2)
RECIPE = dict(num_epochs=3, batch_size=64, lr=2e-3, optimizer="adamw", weight_decay=0.01, lr_schedule="cosine",
              warmup_steps=100, max_grad_norm=1.0, seed=0)
LOGGED_STEPS = 5  # the first step losses, recorded so that a test can check they reproduce


class _Stop(Exception):
    pass


class _StepLog:
    """Records the first step losses and every 100th; optionally stops after ``stop_after`` steps."""

    def __init__(self, stop_after=None):
        self.first, self.every_100, self.stop_after = [], {}, stop_after

    def on_step_end(self, state) -> None:
        if state.step <= LOGGED_STEPS:
            self.first.append(float(state.last_loss))
        if state.step % 100 == 0:
            self.every_100[state.step] = round(float(state.last_loss), 4)
        if self.stop_after is not None and state.step >= self.stop_after:
            raise _Stop


def make_data(grammar: Grammar):
    train = lm_data(grammar.sample(DATA["train_stories"], seed=DATA["train_seed"]))
    val = lm_data(grammar.sample(DATA["val_stories"], seed=DATA["val_seed"]))
    return train, val


def build_and_train(stop_after=None, progress: bool = True):
    """Train from scratch; with ``stop_after`` (steps) return early. Returns (model, history, log)."""
    torch.set_num_threads(1)
    grammar = Grammar()
    train, val = make_data(grammar)
    kd_lib.seed_everything(RECIPE["seed"])
    model = GPT(GPTConfig(vocab_size=grammar.vocab_size, block_size=grammar.max_len, **MODEL))
    log = _StepLog(stop_after)
    config = kd_lib.TrainConfig(**RECIPE, device="cpu", progress=progress, desc="teacher")
    history = None
    try:
        history = kd_lib.train(model, train, config=config, eval_data=val, callbacks=[log])
    except _Stop:
        pass
    return model, history, log


def first_step_losses(num_steps: int = LOGGED_STEPS):
    """The losses of the first ``num_steps`` optimizer steps of the recipe (for the reproducibility test)."""
    return build_and_train(stop_after=num_steps, progress=False)[2].first[:num_steps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None, help="folder to write to (default: the repository's data/)")
    args = parser.parse_args()
    started, cpu_started = time.perf_counter(), time.process_time()
    model, history, log = build_and_train()
    shipped = copy.deepcopy(model).half()  # float16 on disk; load_pretrained casts back to float32
    rounded = copy.deepcopy(shipped).float()
    grammar = Grammar()
    _, (val_inputs, val_targets) = make_data(grammar)
    metrics = lm_metrics(rounded, grammar, val_inputs, val_targets, num_samples=1000, seed=0)
    manifest = save_pretrained(shipped, NAME, {
        "description": "tiny GPT teacher for the synthetic story language (book chapter 07)",
        "made_by": "python scripts/train_gpt_teacher.py",
        "dtype": "float16",
        "data": {"language": "kd_lib.lm.language.Grammar(GrammarConfig())", **DATA,
                 "sequence_length": int(val_inputs.shape[1])},
        "training": {**RECIPE, "steps": history.final["step"], "threads": 1, "torch": torch.__version__,
                     "numerics": str(NUMERICS),
                     "first_step_losses": log.first, "loss_every_100_steps": log.every_100},
        "parameters": count_parameters(model),
        "metrics": {**{k: round(v, 5) for k, v in metrics.items()},
                    "val_accuracy": round(history.final["eval_accuracy"], 5),
                    "measured_on": f"{DATA['val_stories']} val stories (seed {DATA['val_seed']}), "
                                   "1000 samples (seed 0) for grammatical, float16 weights"},
        "seconds": round(time.perf_counter() - started, 1),
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
    }, data_dir=args.out)
    print({k: manifest[k] for k in ("parameters", "metrics", "sha256", "seconds", "cpu_seconds")})


if __name__ == "__main__":
    main()
