"""Chapter 07's comparison of objectives, too long for the chapter: writes data/lm_objectives_sweep.json.

    python scripts/sweep_language_models.py          # ~20 CPU-minutes on one thread

Chapter 07 loads the JSON, re-trains two of its students live (scratch and forward KL) and
asserts that they reproduce the stored ones; tests/test_pretrained_scripts.py re-trains another.
The other objectives' code paths are covered by kd_lib's unit tests, not by a re-run.

**Seeds are the chapter's seed offsets.** Run ``i`` of every objective is what the chapter
computes at ``KD_BOOK_SEED_OFFSET=i`` (``kd_lib.lab.notebook``): student seed ``shifted_seed(0)``,
transfer set ``grammar.sample(2000, seed=shifted_seed(10))``, teacher samples for
sequence-level KD from ``shifted_seed(5)``. Each run draws its own initial weights, batch order
and stories; the validation stories (seed 11) are the same for all.

Every student is the same one-block GPT (36k parameters, 9.7x smaller than the shipped teacher)
trained with the same recipe (``RECIPE``: Adam, cosine decay, gradient clipping) for
``EPOCHS`` passes over its data. Only the objective changes (``OBJECTIVES``):

* from a random start, on the fixed transfer set: cross-entropy (scratch), forward KL, reverse
  KL, generalized JSD (beta 0.1, 0.5, 0.9), skew KL 0.1, forward KL at T = 2, forward KL from a
  top-1 cache with the tail renormalised; cross-entropy on stories sampled from the teacher
  (sequence-level KD);
* from a *warm start* (the first ``WARM_EPOCHS`` of forward KL), then the last epochs with
  forward or reverse KL, on the fixed data or on-policy (GKD: half the batches replaced by the
  student's own samples, scored by the live teacher). This 2 x 2 separates the divergence from
  the data source, and comparing "reverse KL, warm start" with "reverse KL" separates the start;
* with 200 instead of 2,000 stories and ten times the epochs (the same number of steps):
  scratch and forward KL (data efficiency);
* scratch and forward KL with half the passes (3), the chapter's earlier recipe, to show how
  seed-sensitive a shorter budget is.

Each student is scored on the validation stories: cross-entropy, KL to the true language, and
the share of ``NUM_SAMPLES`` sampled stories that the grammar accepts.
"""
import argparse
import json
import time
from functools import partial
from pathlib import Path

import torch

import kd_lib
from kd_lib.lm.generation import OnPolicy, sample
from kd_lib.lm.gpt import GPT, GPTConfig
from kd_lib.lm.language import BOS, EOS, PAD, Grammar, lm_data
from kd_lib.lm.metrics import lm_metrics
from kd_lib.lab.numerics import use_portable_numerics
from kd_lib.lab import DATA_DIR
from kd_lib.pretrained import load_pretrained
from kd_lib.lm.topk import CachedTeacher, TopKCache, topk_cache

NUMERICS = use_portable_numerics()  # before the first tensor operation (kd_lib/numerics.py)

OFFSETS = list(range(8))  # run i = the chapter at KD_BOOK_SEED_OFFSET=i
SEED_STRIDE = 1000  # kd_lib.lab.notebook.SEED_STRIDE
STUDENT_SEED, TRANSFER_SEED, TEACHER_SAMPLE_SEED, VAL_SEED = 0, 10, 5, 11
TRANSFER_STORIES, SMALL_STORIES, VAL_STORIES, NUM_SAMPLES = 2000, 200, 300, 1000
STUDENT = dict(n_layer=1, n_head=2, n_embd=48)
EPOCHS, WARM_EPOCHS = 6, 4  # warm start: WARM_EPOCHS of forward KL, then EPOCHS - WARM_EPOCHS more
RECIPE = dict(batch_size=16, lr=1e-2, lr_schedule="cosine", warmup_steps=20, max_grad_norm=1.0)
STUDENT_FRACTION = 0.5  # GKD's lambda: share of on-policy batches sampled from the student


def seeds_at(offset: int) -> dict:
    shift = SEED_STRIDE * offset
    return {"student": STUDENT_SEED + shift, "transfer": TRANSFER_SEED + shift,
            "teacher_samples": TEACHER_SAMPLE_SEED + shift}


def make_student(grammar: Grammar, seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=grammar.vocab_size, block_size=grammar.max_len, **STUDENT))


def recipe(seed: int, epochs: int = EPOCHS) -> kd_lib.TrainConfig:
    return kd_lib.TrainConfig(num_epochs=epochs, seed=seed, progress=False, cache_teacher_logits=False,
                              device="cpu", **RECIPE)


DIVERGENCES = {
    "forward KL": kd_lib.kd_loss,
    "reverse KL": kd_lib.reverse_kl,
    "JSD beta=0.1": partial(kd_lib.generalized_jsd, beta=0.1),
    "JSD beta=0.5": partial(kd_lib.generalized_jsd, beta=0.5),
    "JSD beta=0.9": partial(kd_lib.generalized_jsd, beta=0.9),
    "skew KL 0.1": partial(kd_lib.skew_kl, skew=0.1),
}


class Setting:
    """The data and teachers of one offset: what the chapter builds before training students."""

    def __init__(self, grammar: Grammar, teacher, offset: int):
        seeds = seeds_at(offset)
        self.grammar, self.teacher, self.seed = grammar, teacher, seeds["student"]
        self.ids = dict(bos_id=grammar.index[BOS], eos_id=grammar.index[EOS], pad_id=grammar.index[PAD])
        self.train = lm_data(grammar.sample(TRANSFER_STORIES, seed=seeds["transfer"]))
        self.small = (self.train[0][:SMALL_STORIES], self.train[1][:SMALL_STORIES])
        full = topk_cache(teacher, self.train[0], k=grammar.vocab_size, dtype=torch.float32)
        self.cached = CachedTeacher(self.train[0], full)
        self.live = CachedTeacher(self.train[0], full, fallback=teacher)  # the student's samples go to the teacher
        top1 = TopKCache(full.values[..., :1].half(), full.indices[..., :1].short(), grammar.vocab_size)
        self.top1 = CachedTeacher(self.train[0], top1, tail="renormalize")
        self.teacher_stories = lm_data(sample(teacher, TRANSFER_STORIES, grammar.max_len,
                                              generator=torch.Generator().manual_seed(seeds["teacher_samples"]),
                                              **self.ids))
        small_cache = topk_cache(teacher, self.small[0], k=grammar.vocab_size, dtype=torch.float32)
        self.small_cached = CachedTeacher(self.small[0], small_cache)

    def distil(self, data=None, epochs=EPOCHS, student=None, **kwargs):
        student = student if student is not None else make_student(self.grammar, self.seed)
        kd_lib.train(student, data if data is not None else self.train, config=recipe(self.seed, epochs), **kwargs)
        return student

    def warm_then(self, divergence, on_policy: bool):
        student = self.distil(epochs=WARM_EPOCHS, teacher=self.cached, loss_fn=kd_lib.kd_loss)
        if not on_policy:
            return self.distil(student=student, epochs=EPOCHS - WARM_EPOCHS, teacher=self.cached,
                               loss_fn=divergence)
        policy = OnPolicy(student, max_len=self.train[0].shape[1],
                          student_fraction=STUDENT_FRACTION, **self.ids)
        return self.distil(student=student, epochs=EPOCHS - WARM_EPOCHS, teacher=self.live, loss_fn=divergence,
                           augment=policy.augment)


OBJECTIVES = {
    "scratch": lambda s: s.distil(),
    **{name: (lambda s, d=d: s.distil(teacher=s.cached, loss_fn=d)) for name, d in DIVERGENCES.items()},
    "forward KL, T=2": lambda s: s.distil(teacher=s.cached, loss_fn=partial(kd_lib.kd_loss, temperature=2.0)),
    "forward KL, top-1 renormalised": lambda s: s.distil(teacher=s.top1, loss_fn=kd_lib.kd_loss),
    "sequence-level KD": lambda s: s.distil(data=s.teacher_stories),
    "forward KL, warm start": lambda s: s.warm_then(kd_lib.kd_loss, on_policy=False),
    "reverse KL, warm start": lambda s: s.warm_then(kd_lib.reverse_kl, on_policy=False),
    "on-policy forward KL": lambda s: s.warm_then(kd_lib.kd_loss, on_policy=True),
    "on-policy reverse KL": lambda s: s.warm_then(kd_lib.reverse_kl, on_policy=True),
    "scratch, 3 passes": lambda s: s.distil(epochs=3),
    "forward KL, 3 passes": lambda s: s.distil(epochs=3, teacher=s.cached, loss_fn=kd_lib.kd_loss),
    "scratch, 200 stories": lambda s: s.distil(data=s.small, epochs=10 * EPOCHS),
    "forward KL, 200 stories": lambda s: s.distil(data=s.small, epochs=10 * EPOCHS, teacher=s.small_cached,
                                                  loss_fn=kd_lib.kd_loss),
}


def validation(grammar: Grammar):
    return lm_data(grammar.sample(VAL_STORIES, seed=VAL_SEED))


def score(student, grammar, val, seed):
    return {k: round(v, 6) for k, v in lm_metrics(student, grammar, *val, num_samples=NUM_SAMPLES, seed=seed).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DATA_DIR / "lm_objectives_sweep.json")
    parser.add_argument("--offsets", type=int, nargs="*", default=OFFSETS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.process_time()
    grammar, teacher = Grammar(), load_pretrained("tiny_gpt_teacher")
    val = validation(grammar)
    runs = []
    for offset in args.offsets:
        setting = Setting(grammar, teacher, offset)
        for name, train_objective in OBJECTIVES.items():
            run_started = time.process_time()
            student = train_objective(setting)
            runs.append({"objective": name, "offset": offset, "seed": setting.seed,
                         **score(student, grammar, val, setting.seed),
                         "cpu_seconds": round(time.process_time() - run_started, 1)})
            print(json.dumps(runs[-1]), flush=True)
    result = {
        "made_by": "python scripts/sweep_language_models.py",
        "settings": {"offsets": args.offsets, "seed_stride": SEED_STRIDE, "student_seed": STUDENT_SEED,
                     "transfer_seed": TRANSFER_SEED, "teacher_sample_seed": TEACHER_SAMPLE_SEED, "val_seed": VAL_SEED,
                     "transfer_stories": TRANSFER_STORIES, "small_stories": SMALL_STORIES, "val_stories": VAL_STORIES,
                     "num_samples": NUM_SAMPLES, "student": STUDENT, "epochs": EPOCHS, "warm_epochs": WARM_EPOCHS,
                     "recipe": RECIPE, "student_fraction": STUDENT_FRACTION, "threads": 1,
                     "torch": torch.__version__, "numerics": str(NUMERICS)},
        "teacher": score(teacher, grammar, val, 0),
        "runs": runs,
        "cpu_seconds": round(time.process_time() - started, 1),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}: {len(runs)} runs in {result['cpu_seconds']} CPU-s")


if __name__ == "__main__":
    main()
